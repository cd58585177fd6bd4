/** The API client: challenge login, token reuse and refresh, one retry on 401, error mapping, answer validation. */
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { describe, it } from 'node:test';
import { challengeSigningInput } from '../../protocol/challenge.js';
import { generateKeyAndCsr } from '../../protocol/x509.js';
import { VehicleApiClient } from '../../vehicle/api-client.js';
import { ApiError } from '../../vehicle/errors.js';
import type { HttpRequest } from '../../vehicle/http-transport.js';
import { challengeSigner } from '../../vehicle/provisioning.js';
import { FakeRuntime, FakeTransport, json } from '../support/agent-fakes.js';

const VIN = '1HGCM82633A004352';

async function setup(
  route: (
    req: HttpRequest,
    body: Record<string, unknown>,
    logins: number,
  ) => ReturnType<typeof json> | undefined,
) {
  const { privateKeyPem } = await generateKeyAndCsr(VIN);
  const runtime = new FakeRuntime();
  let logins = 0;
  const signatures: { nonce: string; signature: string }[] = [];
  const transport = new FakeTransport((req) => {
    const body = req.body ? JSON.parse(String(req.body)) : {};
    if (req.url.endsWith('/auth/challenge'))
      return json(200, { nonce: `nonce-${logins}-${'n'.repeat(32)}`, expires_at: '' });
    if (req.url.endsWith('/auth/token')) {
      logins++;
      signatures.push({ nonce: body.nonce, signature: body.signature });
      return json(200, { token: `token-${logins}`, token_type: 'Bearer', expires_in: 900, expires_at: '' });
    }
    return route(req, body, logins) ?? json(404, { error: { code: 'not_found', message: 'nope' } });
  });
  const client = new VehicleApiClient({
    baseUrl: 'https://api.example/',
    vin: VIN,
    signChallenge: challengeSigner({ vin: VIN, keyPem: privateKeyPem }),
    transport,
    runtime,
  });
  return { client, transport, runtime, signatures, keyPem: privateKeyPem, logins: () => logins };
}

const listing = { vin: VIN, active_update_id: null, updates: [], pending: [] };

describe('VehicleApiClient', { timeout: 60_000 }, () => {
  it('logs in by signing the challenge with the device key, then reuses the token', async () => {
    const t = await setup((req) => (req.url.endsWith(`/updates/${VIN}`) ? json(200, listing) : undefined));
    await t.client.listUpdates();
    await t.client.listUpdates();
    assert.equal(t.logins(), 1);
    const auth = t.transport.requests
      .filter((r) => r.url.endsWith(`/updates/${VIN}`))
      .map((r) => r.headers?.authorization);
    assert.deepEqual(auth, ['Bearer token-1', 'Bearer token-1']);
    const { nonce, signature } = t.signatures[0]!;
    const pub = createPublicKey(t.keyPem);
    assert.ok(
      verify(
        'sha256',
        challengeSigningInput(VIN, nonce),
        { key: pub, dsaEncoding: 'der' },
        Buffer.from(signature, 'base64'),
      ),
      'signature verifies',
    );
  });

  it('refreshes the token before it expires', async () => {
    const t = await setup((req) => (req.url.endsWith(`/updates/${VIN}`) ? json(200, listing) : undefined));
    await t.client.listUpdates();
    t.runtime.time += 800_000; // 100 s left: still fine with the 60 s margin
    await t.client.listUpdates();
    assert.equal(t.logins(), 1);
    t.runtime.time += 50_000; // 50 s left: refresh
    await t.client.listUpdates();
    assert.equal(t.logins(), 2);
  });

  it('logs in again once on 401 and retries; a second 401 is an error', async () => {
    let refusals = 1;
    const t = await setup((req) => {
      if (!req.url.endsWith(`/updates/${VIN}`)) return undefined;
      if (refusals-- > 0)
        return json(401, { error: { code: 'invalid_token', message: 'The bearer token is invalid' } });
      return json(200, listing);
    });
    await t.client.listUpdates();
    assert.equal(t.logins(), 2);
    refusals = 5;
    await assert.rejects(t.client.listUpdates(), (e: unknown) => e instanceof ApiError && e.status === 401);
  });

  it('logs in with a fresh challenge when the answer to one is refused (expired, or spent by a lost answer), twice at most', async () => {
    const { privateKeyPem } = await generateKeyAndCsr(VIN);
    let challenges = 0;
    let refuse = 2;
    const transport = new FakeTransport((req) => {
      if (req.url.endsWith('/auth/challenge'))
        return json(200, { nonce: `nonce-${++challenges}-${'n'.repeat(32)}`, expires_at: '' });
      if (req.url.endsWith('/auth/token')) {
        if (refuse-- > 0)
          return json(401, {
            error: { code: 'invalid_challenge', message: 'The challenge answer is invalid or expired' },
          });
        return json(200, { token: 'token-ok', token_type: 'Bearer', expires_in: 900, expires_at: '' });
      }
      return req.url.endsWith(`/updates/${VIN}`)
        ? json(200, listing)
        : json(404, { error: { code: 'not_found', message: 'nope' } });
    });
    const client = new VehicleApiClient({
      baseUrl: 'https://api.example/',
      vin: VIN,
      signChallenge: challengeSigner({ vin: VIN, keyPem: privateKeyPem }),
      transport,
      runtime: new FakeRuntime(),
    });
    await client.listUpdates();
    assert.equal(challenges, 3, 'two refused answers, then a fresh challenge that works');
    assert.equal(
      transport.requests.find((r) => r.url.endsWith(`/updates/${VIN}`))?.headers?.authorization,
      'Bearer token-ok',
    );
    // A key the backend never accepts: three challenges, then the refusal goes up.
    refuse = 10;
    challenges = 0;
    client.invalidateToken();
    await assert.rejects(
      client.listUpdates(),
      (e: unknown) => e instanceof ApiError && e.code === 'invalid_challenge',
    );
    assert.equal(challenges, 3);
  });

  it('maps error bodies and retry-after, and classifies what is worth retrying', async () => {
    const t = await setup((req) => {
      if (req.url.endsWith('/status'))
        return json(429, { error: { code: 'rate_limited', message: 'slow' } }, { 'retry-after': '3' });
      if (req.url.endsWith('/download'))
        return json(409, { error: { code: 'downgrade_refused', message: 'older' } });
      return undefined;
    });
    await assert.rejects(t.client.reportStatus({ status: 'completed' }), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.code, 'rate_limited');
      assert.equal(e.retryAfterMs, 3000);
      assert.equal(e.transient, true);
      return true;
    });
    await assert.rejects(
      t.client.download('1.0.0'),
      (e: unknown) => e instanceof ApiError && e.code === 'downgrade_refused' && !e.transient,
    );
  });

  it('refuses an answer that does not match the contract (e.g. a plain-http download URL)', async () => {
    const t = await setup((req) =>
      req.url.endsWith('/download') ? json(200, { download_url: 'http://insecure/x' }) : undefined,
    );
    await assert.rejects(
      t.client.download('2.0.0'),
      (e: unknown) => e instanceof ApiError && e.code === 'invalid_response',
    );
  });

  it('reports no answer at all as a transient error', async () => {
    const { privateKeyPem } = await generateKeyAndCsr(VIN);
    const client = new VehicleApiClient({
      baseUrl: 'https://api.example',
      vin: VIN,
      signChallenge: challengeSigner({ vin: VIN, keyPem: privateKeyPem }),
      transport: {
        send: async () => {
          const { TransportError } = await import('../../vehicle/http-transport.js');
          throw new TransportError('ECONNREFUSED', 'connection refused');
        },
        close() {},
      },
    });
    await assert.rejects(
      client.listUpdates(),
      (e: unknown) => e instanceof ApiError && e.status === 0 && e.transient,
    );
  });
});
