import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { keyIdOf } from '../../protocol/signatures.js';
import { parseTrustDocument, trustDocument } from '../../protocol/trust-document.js';
import { trustDocumentHealthCheck } from '../../vehicle/trust-store.js';

const ec = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const pem = (k: ReturnType<typeof ec>) => k.publicKey.export({ type: 'spki', format: 'pem' }).toString();

describe('release-key set documents', { timeout: 60_000 }, () => {
  it('round-trips a set of P-256 public keys', () => {
    const a = ec();
    const b = ec();
    const keys = parseTrustDocument(trustDocument([pem(a), pem(b)]));
    assert.deepEqual(
      keys.map((k) => k.keyId),
      [keyIdOf(pem(a)), keyIdOf(pem(b))],
    );
  });

  it('never writes a private key into a set, nor a key of another kind', () => {
    const a = ec();
    const privatePem = a.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    assert.throws(() => trustDocument([privatePem]), /private key/);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    assert.throws(
      () => trustDocument([rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString()]),
      /P-256/,
    );
  });

  it('refuses documents that are not a non-empty set of keys, and the health check says so', async () => {
    const bad = [
      '',
      '{"schema":"ota.release-keys/v1","release_keys":[]}',
      '{"schema":"ota.release-keys/v2","release_keys":["x"]}',
      '{"schema":"ota.release-keys/v1","release_keys":["not a key"]}',
      '{"schema":"ota.release-keys/v1","release_keys":[],"extra":1}',
    ];
    const dir = mkdtempSync(join(tmpdir(), 'trust-store-'));
    /** The health check's verdict on a slot holding `content`. */
    const healthy = async (content: string | Buffer) => {
      writeFileSync(join(dir, 'slot.img'), content);
      return trustDocumentHealthCheck({ ecu: 'release-keys', version: '1', location: join(dir, 'slot.img') });
    };
    try {
      for (const text of bad) {
        assert.throws(() => parseTrustDocument(Buffer.from(text)), Error, text);
        assert.equal(await healthy(text), false, text);
      }
      assert.equal(await healthy(trustDocument([pem(ec())])), true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
