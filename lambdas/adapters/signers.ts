/** The backend's signer on AWS: KMS (ECC_NIST_P256), DER ECDSA like protocol/signatures.ts KeyFileSigner (the local cloud's). */
import { createPublicKey } from 'node:crypto';
import { GetPublicKeyCommand, type KMSClient, SignCommand } from '@aws-sdk/client-kms';
import type { Signer } from '../../protocol/signatures.js';
import { recordOperation } from './operation-counter.js';

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

/**
 * Counts the signatures a key makes (kms.sign.<label>), and for the local cloud's key file, which is no SDK client,
 * also the KMS operations it stands in for: Sign per signature, GetPublicKey once per signer as KmsSigner caches it.
 */
export class CountingSigner implements Signer {
  private fetchedPublicKey = false;

  constructor(
    private readonly inner: Signer,
    private readonly label: string,
    private readonly standsInForKms: boolean,
  ) {}

  publicKeyPem(): Promise<string> {
    if (this.standsInForKms && !this.fetchedPublicKey) recordOperation('kms.op.GetPublicKey');
    this.fetchedPublicKey = true;
    return this.inner.publicKeyPem();
  }

  async sign(data: Buffer): Promise<Buffer> {
    recordOperation(`kms.sign.${this.label}`);
    if (this.standsInForKms) recordOperation('kms.op.Sign');
    return this.inner.sign(data);
  }
}
