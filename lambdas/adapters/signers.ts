/** Backend signers: KMS (ECC_NIST_P256) on AWS, a PEM key file on the local cloud. Both produce DER ECDSA. */
import { createPrivateKey, createPublicKey, type KeyObject, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GetPublicKeyCommand, type KMSClient, SignCommand } from '@aws-sdk/client-kms';
import type { Signer } from '../core/signatures.js';

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

export class KeyFileSigner implements Signer {
  private readonly key: KeyObject;

  constructor(privateKeyPem: string) {
    this.key = createPrivateKey(privateKeyPem);
    if (this.key.asymmetricKeyType !== 'ec' || this.key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new Error('signing key must be an ECDSA P-256 private key');
    }
  }

  static fromFile(path: string): KeyFileSigner {
    return new KeyFileSigner(readFileSync(path, 'utf8'));
  }

  async publicKeyPem(): Promise<string> {
    return createPublicKey(this.key).export({ type: 'spki', format: 'pem' }).toString();
  }

  async sign(data: Buffer): Promise<Buffer> {
    return sign('sha256', data, { key: this.key, dsaEncoding: 'der' });
  }
}
