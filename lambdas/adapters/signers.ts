/** The backend's signer on AWS: KMS (ECC_NIST_P256), DER ECDSA like protocol/signatures.ts KeyFileSigner (the local cloud's). */
import { createPublicKey } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { threadId, workerData } from 'node:worker_threads';
import { GetPublicKeyCommand, type KMSClient, SignCommand } from '@aws-sdk/client-kms';
import { KeyFileSigner, type Signer } from '../../protocol/signatures.js';

export class KmsSigner implements Signer {
  private publicKey?: Promise<string>;

  constructor(
    private readonly kms: KMSClient,
    private readonly keyArn: string,
  ) {}

  publicKeyPem(): Promise<string> {
    this.publicKey ??= this.kms.send(new GetPublicKeyCommand({ KeyId: this.keyArn })).then((out) =>
      createPublicKey({ key: Buffer.from(out.PublicKey!), format: 'der', type: 'spki' })
        .export({ type: 'spki', format: 'pem' })
        .toString(),
    );
    return this.publicKey;
  }

  async sign(data: Buffer): Promise<Buffer> {
    const out = await this.kms.send(
      new SignCommand({
        KeyId: this.keyArn,
        Message: data,
        MessageType: 'RAW',
        SigningAlgorithm: 'ECDSA_SHA_256',
      }),
    );
    return Buffer.from(out.Signature!);
  }
}

/** One backend signature as the local KMS stand-in records it (what CloudTrail would show of a KMS Sign). */
export interface SignLogEntry {
  readonly at: string;
  /** The function and the instance (worker thread) that signed. */
  readonly fn: string;
  readonly instance: number;
  /** What was signed: the domain-separation prefix of the message (its first line), never the message itself. */
  readonly context: string;
}

/** Where the local cloud's stand-in records the signatures made with a key file. */
export function signLogFile(keyFile: string): string {
  return `${keyFile}.signs.jsonl`;
}

/**
 * The local cloud's KMS stand-in: a key file signer that appends one line per Sign to signLogFile(keyFile), so
 * tests and benchmarks count backend signatures over every function instance (worker threads) honestly, as
 * CloudTrail counts KMS Sign calls on AWS. The line names what kind of document was signed, not its content.
 */
export class LoggedKeyFileSigner implements Signer {
  private readonly inner: KeyFileSigner;
  private readonly log: string;

  constructor(keyFile: string) {
    this.inner = KeyFileSigner.fromFile(keyFile);
    this.log = signLogFile(keyFile);
  }

  publicKeyPem(): Promise<string> {
    return this.inner.publicKeyPem();
  }

  async sign(data: Buffer): Promise<Buffer> {
    const signature = await this.inner.sign(data);
    const newline = data.indexOf(0x0a);
    const entry: SignLogEntry = {
      at: new Date().toISOString(),
      fn: (workerData as { fn?: string } | null)?.fn ?? 'main',
      instance: threadId,
      context: data.subarray(0, newline >= 0 ? Math.min(newline, 48) : 0).toString('utf8'),
    };
    appendFileSync(this.log, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
    return signature;
  }
}
