/**
 * Property: nothing a vehicle (or anyone on the open routes) sends makes the backend fail. Every field of every
 * vehicle-facing schema (challenge, token, initiate/download, status over HTTPS; progress and status over MQTT)
 * gets generated values, hostile ones included (5e-324, 1e-131, 1e308, control characters, lone surrogates,
 * wrong types), through both channels of a private local cloud: real HTTPS, the MQTT broker over mutual TLS, the
 * rules router and the ingest handler writing to DynamoDB. No answer may be a 5xx and no message a dead letter.
 * Found by this test first: issue 18, finding 13 (numbers DynamoDB refuses).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { startLocalCloud } from '../../local/cloud.js';
import { bodies } from '../../protocol/routes.js';
import { VEHICLE_STATUSES } from '../../protocol/schemas.js';
import { mqttReportSchema, vehicleTopic } from '../../protocol/topics.js';
import type * as z from '../../protocol/zod.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { VehicleConnection, waitFor } from '../support/mqtt-clients.js';

const VIN = '1HGCM82633A004352';
/** Generated values per field, beyond the hostile examples. */
const RUNS = 5;
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let car: TestVehicle;
let token: string;
let mqtt: VehicleConnection;

/** Values DynamoDB or a terminal would choke on: every field gets each of them first (fast-check examples). */
const HOSTILE: readonly unknown[] = [5e-324, 1e-131, 1e126, '\x1b[2J', '\ud800', 'a'.repeat(10_000)];

const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    -1e-131,
    1e308,
    -0,
    Number.MAX_SAFE_INTEGER + 2,
    0.1 + 0.2,
    '',
    '\u009b31m',
    '\u202e',
    null,
  ),
  fc.double(),
  fc.double({ min: 0, max: 100, noNaN: true }),
  fc.integer(),
  fc.string({ unit: 'binary', maxLength: 600 }),
  fc.constantFrom(...VEHICLE_STATUSES, '2.0.0', '3.0.1', 'c-guess'),
  fc.boolean(),
  fc.array(fc.oneof(fc.integer(), fc.string()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.integer(), fc.string()), { maxKeys: 3 }),
);

/**
 * Checks `send` for one field of a schema: a valid body with that field set to each hostile value, then to
 * generated ones (any JSON type), then removed. Every field of the schema is covered this way.
 */
async function eachField(
  schema: z.ZodMiniObject,
  valid: Record<string, unknown>,
  send: (body: unknown) => Promise<void>,
): Promise<void> {
  for (const field of Object.keys(schema.shape)) {
    const withField = (v: unknown) => ({ ...valid, [field]: v });
    await fc.assert(
      fc.asyncProperty(anyJson, (v) => send(withField(v))),
      { numRuns: HOSTILE.length + RUNS, examples: HOSTILE.map((v) => [v]) },
    );
    await send(withField(undefined));
  }
  await fc.assert(fc.asyncProperty(anyJson, send), { numRuns: RUNS });
}

/** JSON text of a generated body; JSON.stringify turns NaN/Infinity into null, as any client would. */
const text = (body: unknown) => JSON.stringify(body) ?? 'null';

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-input-property-'));
  // Limits would answer 429 before a body is even read: raised so every request reaches validation.
  process.env.VEHICLE_RATE_PER_MINUTE = '1000000';
  const releaseKey = newReleaseKey();
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
    challengesPerVinPerMinute: 1_000_000,
    throttle: { ratePerSecond: 100_000, burst: 100_000 },
  });
  const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(64 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
  car = await TestVehicle.create(VIN);
  const reg = await operator.call('POST', '/vehicles', car.registration());
  assert.equal(reg.status, 201, reg.raw.toString());
  token = await car.token(cloud.endpoints.api, cloud.caCertPem);
  // An update under way, so status reports have something to apply to.
  const started = await jsonRequest(
    cloud.endpoints.api,
    'POST',
    `/updates/${VIN}/initiate`,
    cloud.caCertPem,
    { firmware_version: '2.0.0' },
    token,
  );
  assert.equal(started.status, 200, started.raw.toString());
  mqtt = await VehicleConnection.connect({
    url: cloud.endpoints.mqtt,
    caPem: cloud.caCertPem,
    clientId: VIN,
    identity: { keyPem: car.keyPem, certPem: reg.json.certificate_pem },
  });
}, HOOK_TIMEOUT);

after(async () => {
  await mqtt?.end();
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
  delete process.env.VEHICLE_RATE_PER_MINUTE;
}, HOOK_TIMEOUT);

describe('generated vehicle input never fails the backend', { timeout: 120_000 }, () => {
  const routes: [string, string, z.ZodMiniObject, Record<string, unknown>, boolean][] = [
    ['POST', '/auth/challenge', bodies.challenge, { vin: VIN }, false],
    [
      'POST',
      '/auth/token',
      bodies.token,
      { vin: VIN, nonce: 'n'.repeat(43), signature: 'A'.repeat(96) },
      false,
    ],
    ['POST', `/updates/${VIN}/initiate`, bodies.firmwareRequest, { firmware_version: '2.0.0' }, true],
    ['POST', `/updates/${VIN}/download`, bodies.firmwareRequest, { firmware_version: '2.0.0' }, true],
    ['POST', `/updates/${VIN}/status`, bodies.status, { status: 'downloading', progress: 10 }, true],
  ];
  for (const [method, path, schema, valid, authorized] of routes) {
    it(`HTTPS ${method} ${path}: every answer is below 500`, async () => {
      const seen = new Set<number>();
      await eachField(schema, valid, async (body) => {
        const res = await jsonRequest(
          cloud.endpoints.api,
          method,
          path,
          cloud.caCertPem,
          text(body),
          authorized ? token : undefined,
        );
        seen.add(res.status);
        assert.ok(res.status < 500, `${res.status} for ${text(body).slice(0, 300)}: ${res.raw.toString()}`);
        if (res.status >= 400) assert.equal(typeof res.json?.error?.code, 'string', res.raw.toString());
      });
      assert.ok(seen.has(400), `some bodies were refused as invalid: ${[...seen]}`);
    });
  }

  for (const channel of ['progress', 'status'] as const) {
    it(`MQTT ${channel}: every message is recorded or refused, none dead-lettered`, async () => {
      const valid = { status: 'downloading', progress: 10, timestamp: Date.now() };
      await eachField(mqttReportSchema, valid, async (body) => {
        const before = cloud.rules.stats();
        await mqtt.publish(vehicleTopic(VIN, channel), text(body));
        const handled = () => {
          const now = cloud.rules.stats();
          return now.delivered + now.failed > before.delivered + before.failed;
        };
        assert.ok(await waitFor(handled, 10_000), 'the rules router handed the message on');
        await cloud.rules.idle();
        assert.equal(cloud.rules.stats().failed, 0, `dead letter for ${text(body).slice(0, 300)}`);
      });
      assert.deepEqual(cloud.rules.deadLetters(), []);
    });
  }
});
