import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { CliError } from '../../cli/errors.js';
import { backendPublicKeyPem } from '../../cli/keys.js';

describe('ota keys backend: the PEM of a KMS GetPublicKey answer', { timeout: 10_000 }, () => {
  const p256 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey;
  const der = new Uint8Array(p256.export({ type: 'spki', format: 'der' }));

  it('writes the SPKI DER KMS answers as the PEM vehicles load', () => {
    const pem = backendPublicKeyPem({ PublicKey: der, KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
    assert.match(pem, /^-----BEGIN PUBLIC KEY-----\n[\s\S]+\n-----END PUBLIC KEY-----\n$/);
    assert.ok(createPublicKey(pem).equals(p256));
  });

  it('refuses a key that is not the backend signing key', () => {
    const rsa = new Uint8Array(
      generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }),
    );
    for (const answer of [
      { PublicKey: rsa, KeySpec: 'RSA_2048', KeyUsage: 'SIGN_VERIFY' },
      { PublicKey: der, KeySpec: 'ECC_NIST_P256', KeyUsage: 'ENCRYPT_DECRYPT' },
      { KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' },
    ]) {
      assert.throws(() => backendPublicKeyPem(answer), CliError);
    }
  });
});
