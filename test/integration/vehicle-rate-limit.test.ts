/** Per-vehicle rate limits: a vehicle over its budget gets 429 with Retry-After, and nothing it sends changes state. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';

const LIMIT = 5;
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-rate-'));
  process.env.VEHICLE_RATE_PER_MINUTE = String(LIMIT);
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [newReleaseKey().publicPem],
    campaignTickMs: 0,
  });
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

it('limits each vehicle separately and answers 429 with a JSON error', { timeout: 300_000 }, async () => {
  const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const a = await TestVehicle.create('1HGCM82633A004352');
  const b = await TestVehicle.create('5YJSA1E26HF000337');
  for (const v of [a, b])
    assert.equal((await operator.call('POST', '/vehicles', v.registration())).status, 201);
  const tokenA = await a.token(cloud.endpoints.api, cloud.caCertPem);
  const tokenB = await b.token(cloud.endpoints.api, cloud.caCertPem);

  const statuses: number[] = [];
  for (let i = 0; i < LIMIT + 3; i++) {
    statuses.push(
      (await jsonRequest(cloud.endpoints.api, 'GET', `/updates/${a.vin}`, cloud.caCertPem, undefined, tokenA))
        .status,
    );
  }
  // A minute boundary can fall inside the loop and refill the budget once; never more than two windows' worth.
  const ok = statuses.filter((s) => s === 200).length;
  assert.ok(
    ok >= LIMIT && ok <= 2 * LIMIT,
    `between ${LIMIT} and ${2 * LIMIT} requests allowed, got ${statuses}`,
  );
  assert.ok(statuses.includes(429), `some requests were refused: ${statuses}`);

  const refused = await jsonRequest(
    cloud.endpoints.api,
    'POST',
    `/updates/${a.vin}/status`,
    cloud.caCertPem,
    { status: 'failed' },
    tokenA,
  );
  assert.equal(refused.status, 429);
  assert.equal(refused.json.error.code, 'rate_limited');
  assert.equal(refused.headers['retry-after'], '1');
  const other = await jsonRequest(
    cloud.endpoints.api,
    'GET',
    `/updates/${b.vin}`,
    cloud.caCertPem,
    undefined,
    tokenB,
  );
  assert.equal(other.status, 200, 'another vehicle is not affected');
  const seen = await operator.call('GET', `/vehicles/${a.vin}`);
  assert.deepEqual(seen.json.updates, [], 'a refused request changed nothing');
});
