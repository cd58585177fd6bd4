import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { issueToken, parseBearer, verifyToken } from '../../lambdas/core/token.js';
import { KeyFileSigner, keyIdOf, trustedKeysFromPems } from '../../protocol/signatures.js';

const VIN = '1HGCM82633A004352';

function signer() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
}

async function setup() {
  const s = signer();
  const pem = await s.publicKeyPem();
  const keys = trustedKeysFromPems([pem]);
  const { token } = await issueToken(s, keyIdOf(pem), {
    vin: VIN,
    deviceKeyId: 'a'.repeat(16),
    nowSeconds: 1000,
    ttlSeconds: 900,
  });
  return { s, keys, token };
}

describe('vehicle tokens', { timeout: 60_000 }, () => {
  it('round-trips claims while valid', async () => {
    const { keys, token } = await setup();
    const claims = verifyToken(token, keys, 1500);
    assert.equal(claims.sub, VIN);
    assert.equal(claims.exp, 1900);
  });

  it('expires', async () => {
    const { keys, token } = await setup();
    assert.throws(
      () => verifyToken(token, keys, 1900),
      (e: Error & { code?: string }) => e.code === 'token_expired',
    );
  });

  it('refuses a token whose claims were edited', async () => {
    const { keys, token } = await setup();
    const [v, payload, sig] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
    claims.sub = '5YJSA1E26HF000001';
    const forged = `${v}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
    assert.throws(
      () => verifyToken(forged, keys, 1500),
      (e: Error & { statusCode?: number }) => e.statusCode === 401,
    );
  });

  it('refuses a token signed by another key', async () => {
    const { keys } = await setup();
    const other = signer();
    const otherPem = await other.publicKeyPem();
    const { token } = await issueToken(other, keyIdOf(otherPem), {
      vin: VIN,
      deviceKeyId: 'a'.repeat(16),
      nowSeconds: 1000,
      ttlSeconds: 900,
    });
    assert.throws(() => verifyToken(token, keys, 1500), /invalid/);
  });

  it('refuses tokens issued in the future and garbage', async () => {
    const { keys, token } = await setup();
    assert.throws(() => verifyToken(token, keys, 900), /invalid/);
    for (const bad of ['', 'v1..', 'v2.a.b', 'x'.repeat(5000), 'v1.e30.AAAA']) {
      assert.throws(() => verifyToken(bad, keys, 1500), /invalid/);
    }
  });

  it('parses only well-formed bearer headers', () => {
    assert.equal(parseBearer('Bearer abc.def'), 'abc.def');
    assert.throws(() => parseBearer(undefined), /required/);
    assert.throws(() => parseBearer('Basic abc'), /Bearer/);
  });
});
