/**
 * ECDSA P-256 / SHA-256 signatures, DER-encoded and base64 on the wire (the format AWS KMS returns), with key ids
 * derived from the public key so a verifier can pick the right key from a trusted set without trusting the signer.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Anything that can sign: a local key, or KMS on AWS. */
export interface Signer {
  /** PEM (SPKI) of the public key. */
  publicKeyPem(): Promise<string>;
  /** DER-encoded ECDSA signature over SHA-256 of data. */
  sign(data: Buffer): Promise<Buffer>;
}

export interface TrustedKey {
  readonly keyId: string;
  readonly key: KeyObject;
}

/** First 16 hex characters of SHA-256 over the DER SPKI of the key. */
export function keyIdOf(publicKey: KeyObject | string): string {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const der = key.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex').slice(0, 16);
}

/** Parses PEM public keys, accepting only ECDSA P-256. Throws on anything else: a bad trust store is fatal. */
export function trustedKeysFromPems(pems: readonly string[]): TrustedKey[] {
  return pems.map((pem) => {
    const key = createPublicKey(pem);
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new Error('trusted keys must be ECDSA P-256 public keys');
    }
    return { keyId: keyIdOf(key), key };
  });
}

/**
 * The P-256 public key of a base64 DER SPKI (a delegated key), when it is one and has this key id; undefined
 * otherwise, never throws.
 */
export function p256KeyWithId(spkiB64: string, keyId: string): KeyObject | undefined {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spkiB64, 'base64'), format: 'der', type: 'spki' });
  } catch {
    return undefined;
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    return undefined;
  return keyIdOf(key) === keyId ? key : undefined;
}

/** True only when signatureB64 is a valid DER ECDSA-SHA256 signature of data by key. Never throws on bad input. */
export function verifyEcdsa(key: KeyObject, data: Buffer, signatureB64: string): boolean {
  try {
    const sig = Buffer.from(signatureB64, 'base64');
    if (sig.length < 8 || sig.length > 80) return false;
    return verify('sha256', data, { key, dsaEncoding: 'der' }, sig);
  } catch {
    return false;
  }
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A signer over a PEM private key (OEM release keys, the local cloud's backend key). */
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
