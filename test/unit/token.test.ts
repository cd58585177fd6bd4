import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  DELEGATION_CONTEXT,
  DelegatedTokenSigner,
  parseBearer,
  verifyToken,
} from '../../lambdas/core/token.js';
import { KeyFileSigner, type Signer, trustedKeysFromPems } from '../../protocol/signatures.js';

const VIN = '1HGCM82633A004352';
const DEVICE = 'a'.repeat(16);

function keySigner() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
}

/** The backend signer with its Sign calls counted, as KMS Sign requests would be. */
class CountingSigner implements Signer {
  signs = 0;
  constructor(readonly inner: Signer) {}
  publicKeyPem() {
    return this.inner.publicKeyPem();
  }
  sign(data: Buffer) {
    this.signs++;
    return this.inner.sign(data);
  }
}

function clockAt(seconds: number) {
  const clock = { t: seconds, now: () => new Date(clock.t * 1000) };
  return clock;
}

async function setup(opts: { delegationSeconds?: number } = {}) {
  const backend = new CountingSigner(keySigner());
  const keys = trustedKeysFromPems([await backend.publicKeyPem()]);
  const clock = clockAt(1000);
  const tokens = new DelegatedTokenSigner(backend, clock, { maxTokenSeconds: 900, ...opts });
  const issue = (ttlSeconds = 900) =>
    tokens.issue({ vin: VIN, deviceKeyId: DEVICE, nowSeconds: clock.t, ttlSeconds }).then((t) => t.token);
  return { backend, keys, clock, tokens, issue, token: await issue() };
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const unb64 = (s: string) => JSON.parse(Buffer.from(s, 'base64url').toString());
const isInvalid = (e: Error & { statusCode?: number }) => e.statusCode === 401;

describe('vehicle tokens', { timeout: 30_000 }, () => {
  it('round-trips claims while valid', async () => {
    const { keys, token } = await setup();
    const claims = verifyToken(token, keys, 1500);
    assert.equal(claims.sub, VIN);
    assert.equal(claims.cnf, DEVICE);
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
    const [v, payload, ...rest] = token.split('.');
    const claims = unb64(payload!);
    claims.sub = '5YJSA1E26HF000001';
    const forged = [v, b64(claims), ...rest].join('.');
    assert.throws(() => verifyToken(forged, keys, 1500), isInvalid);
  });

  it('refuses a token chained to a backend key it does not trust', async () => {
    const { keys } = await setup();
    const other = await setup();
    assert.throws(() => verifyToken(other.token, keys, 1500), isInvalid);
  });

  it('refuses a forged delegation: an own key with a delegation signed by another key or edited', async () => {
    const { keys, token, backend } = await setup();
    const [, , , delegationPart, delegationSig] = token.split('.');
    const delegation = unb64(delegationPart!);

    // An attacker's key, delegated by the attacker's own signer but naming the trusted key as issuer.
    const attacker = await setup();
    const [av, ap, as, adp] = attacker.token.split('.');
    const named = b64({ ...unb64(adp!), iss: delegation.iss });
    const attackerSig = (await attacker.backend.inner.sign(Buffer.from(DELEGATION_CONTEXT + named))).toString(
      'base64url',
    );
    assert.throws(() => verifyToken([av, ap, as, named, attackerSig].join('.'), keys, 1500), isInvalid);

    // The genuine delegation with its expiry pushed out, or its key swapped for the attacker's.
    const [v, p, s] = token.split('.');
    const longer = b64({ ...delegation, exp: delegation.exp + 86400 });
    assert.throws(() => verifyToken([v, p, s, longer, delegationSig].join('.'), keys, 1500), isInvalid);
    const swapped = b64({ ...delegation, pub: unb64(adp!).pub, kid: unb64(adp!).kid });
    assert.throws(() => verifyToken([av, ap, as, swapped, delegationSig].join('.'), keys, 1500), isInvalid);

    // A backend signature over the delegation text without the delegation context (as an assignment would be).
    const raw = (await backend.inner.sign(Buffer.from(delegationPart!))).toString('base64url');
    assert.throws(() => verifyToken([v, p, s, delegationPart, raw].join('.'), keys, 1500), isInvalid);
  });

  it('refuses a token past its delegation, and never issues one that outlives it', async () => {
    const { keys, tokens, clock } = await setup({ delegationSeconds: 1000 });
    clock.t = 1000;
    const t = await tokens.issue({ vin: VIN, deviceKeyId: DEVICE, nowSeconds: clock.t, ttlSeconds: 900 });
    assert.ok(t.claims.exp <= 2000);
    // The delegation expired (2000): refused even though the claims were signed by the delegated key.
    assert.throws(
      () => verifyToken(t.token, keys, 2000),
      (e: Error & { code?: string }) => e.code === 'token_expired',
    );
    // A delegation issued "in the future" (clock skew beyond tolerance) is refused.
    assert.throws(() => verifyToken(t.token, keys, 900), isInvalid);
  });

  it('verifies tokens from a rotated backend key while both keys are trusted, and only then', async () => {
    const before = await setup();
    const after = await setup();
    const both = [...before.keys, ...after.keys];
    assert.equal(verifyToken(before.token, both, 1500).sub, VIN);
    assert.equal(verifyToken(after.token, both, 1500).sub, VIN);
    // Old key retired: its delegations no longer verify, even once cached.
    assert.throws(() => verifyToken(before.token, after.keys, 1500), isInvalid);
  });

  it('costs one backend Sign per instance period, however many logins', async () => {
    const { backend, keys, clock, issue } = await setup({ delegationSeconds: 3600 });
    // A burst of concurrent logins on a cold instance shares the one delegation being made.
    const burst = await Promise.all(Array.from({ length: 500 }, () => issue()));
    assert.equal(backend.signs, 1);
    for (const t of burst.slice(0, 5)) assert.equal(verifyToken(t, keys, clock.t).sub, VIN);
    for (let i = 0; i < 500; i++) {
      clock.t += 2; // 1,000 s of logins, one every 2 s
      await issue();
    }
    assert.equal(backend.signs, 1, '1,000 logins in the first delegation period: one Sign');
    // Renewed once the delegation could not cover a full token (3600 - 900 - skew after it was made).
    clock.t = 1000 + 3600 - 900 - 30;
    const renewed = await issue();
    assert.equal(backend.signs, 2);
    assert.equal(verifyToken(renewed, keys, clock.t).sub, VIN);
    for (let i = 0; i < 1000; i++) {
      clock.t += 1;
      await issue();
    }
    assert.equal(backend.signs, 2);
    // Over a day at one login a second: one Sign per 2,670 s period.
    let logins = 0;
    const end = clock.t + 86400;
    while (clock.t < end) {
      clock.t += 1;
      await issue();
      logins++;
    }
    assert.ok(backend.signs <= 2 + Math.ceil(86400 / (3600 - 900 - 30)), `${backend.signs} Signs`);
    assert.equal(logins, 86400);
  });

  it('refuses tokens issued in the future, old-format tokens and garbage', async () => {
    const { keys, token } = await setup();
    assert.throws(() => verifyToken(token, keys, 900), isInvalid);
    const [, p, s] = token.split('.');
    for (const bad of ['', 'v1..', 'v2.a.b', `v1.${p}.${s}`, 'x'.repeat(5000), 'v2.e30.AAAA.e30.AAAA']) {
      assert.throws(() => verifyToken(bad, keys, 1500), isInvalid);
    }
  });

  it('refuses a delegation period shorter than a token plus skew', () => {
    assert.throws(
      () =>
        new DelegatedTokenSigner(keySigner(), clockAt(0), { maxTokenSeconds: 900, delegationSeconds: 900 }),
      /delegationSeconds/,
    );
  });

  it('parses only well-formed bearer headers', () => {
    assert.equal(parseBearer('Bearer abc.def'), 'abc.def');
    assert.throws(() => parseBearer(undefined), /required/);
    assert.throws(() => parseBearer('Basic abc'), /Bearer/);
  });
});
