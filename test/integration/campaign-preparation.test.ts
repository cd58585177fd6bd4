/**
 * Asynchronous campaign creation on the local cloud (issue 12 point 1), through the real operator API, the jobs
 * queue stand-in and the jobs-worker code: vehicles are seeded straight into the vehicles table (no certificates
 * needed to be targeted). A 50,000-target filter campaign is prepared by parallel scan segments with its worker
 * stopped mid-way, and ends with exactly one target item per eligible vehicle; a VIN list uploaded through the
 * presigned URL; bad lists refused with a 400 naming the problem; a cancel during preparation releases every lock.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, QueryCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DEFAULT_POLICY, waveSizes } from '../../lambdas/core/campaign-policy.js';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease } from '../support/fleet.js';
import { https } from '../support/https.js';

const releaseKey = newReleaseKey();
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let operator: Operator;
let dataDir: string;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 600_000 };

/** The 50,000; PREP_TEST_TARGETS runs the same test smaller (a loaded machine, a quick check). */
const BIG = Number(process.env.PREP_TEST_TARGETS ?? 50_000);
/** VINs: a letter per group (never I, O, Q) and a 16-digit number. */
const vin = (group: string, i: number) => `${group}${String(i).padStart(16, '0')}`;
const db = () => documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));

type Seed = { vin: string; model: string; version?: string; revoked?: boolean; lockedBy?: string };

async function seed(vehicles: readonly Seed[]) {
  const client = db();
  const items = vehicles.map((v) => ({
    PutRequest: {
      Item: {
        vin: v.vin,
        model: v.model,
        ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: v.version ?? '1.0.0' }],
        campaignLocks: v.lockedBy ? { tcu: v.lockedBy } : {},
        registeredAt: '2026-01-01T00:00:00.000Z',
        ...(v.revoked ? { revokedAt: '2026-01-02T00:00:00.000Z', revokedReason: 'test' } : {}),
      },
    },
  }));
  const batches = Array.from({ length: Math.ceil(items.length / 25) }, (_, i) =>
    items.slice(i * 25, i * 25 + 25),
  );
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        let request: Record<string, unknown[]> = { [cloud.tables.vehicles]: batches[next++]! };
        while (Object.keys(request).length > 0) {
          const out = await client.send(new BatchWriteCommand({ RequestItems: request as never }));
          request = (out.UnprocessedItems ?? {}) as Record<string, unknown[]>;
        }
      }
    }),
  );
}

/** Sums Select COUNT over every page of a Query or Scan (a page stops at 1 MB of items read). */
async function countPages(
  page: (start: Record<string, unknown> | undefined) => QueryCommand | ScanCommand,
): Promise<number> {
  const client = db();
  let count = 0;
  let start: Record<string, unknown> | undefined;
  do {
    const out = await client.send(page(start) as QueryCommand);
    count += out.Count ?? 0;
    start = out.LastEvaluatedKey;
  } while (start);
  return count;
}

/** Target items of a campaign not yet given a wave, counted by the index (Select COUNT, page by page). */
const countQueued = (campaignId: string, status?: string) =>
  countPages(
    (start) =>
      new QueryCommand({
        TableName: cloud.tables.updates,
        IndexName: 'byCampaign',
        KeyConditionExpression: 'campaignId = :c AND begins_with(waveKey, :q)',
        ...(status ? { FilterExpression: '#s = :s', ExpressionAttributeNames: { '#s': 'status' } } : {}),
        ExpressionAttributeValues: { ':c': campaignId, ':q': 'q#', ...(status ? { ':s': status } : {}) },
        Select: 'COUNT',
        ExclusiveStartKey: start,
      }),
  );

/** Vehicles whose tcu lock is held by the campaign (a filtered scan). */
const countLocked = (campaignId: string) =>
  countPages(
    (start) =>
      new ScanCommand({
        TableName: cloud.tables.vehicles,
        FilterExpression: 'campaignLocks.tcu = :c',
        ExpressionAttributeValues: { ':c': campaignId },
        Select: 'COUNT',
        ExclusiveStartKey: start,
      }),
  );

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`${what} not reached in ${timeoutMs} ms`);
    await sleep(200);
  }
}

/** GET /campaigns/{id}; a poll that timed out (the operator function's 10 s on a loaded machine) is asked again. */
const get = async (id: string) => {
  for (let attempt = 1; ; attempt++) {
    const res = await operator.call('GET', `/campaigns/${id}`);
    if (res.status === 200) return res.json;
    if (res.status < 500 || attempt === 5)
      assert.fail(`GET /campaigns/${id}: ${res.status} ${res.raw.toString()}`);
  }
};
const settled = (id: string, timeoutMs = 300_000) =>
  until(
    `${id} prepared`,
    async () => {
      const c = await get(id);
      return c.status === 'preparing' || c.status === 'cancelling' ? undefined : c;
    },
    timeoutMs,
  );

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-prep-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0, jobs: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
    throttle: { ratePerSecond: 10000, burst: 10000 },
    // A short function timeout so a stopped invocation is redelivered within the test.
    jobs: { timeoutMs: 60_000, visibilityTimeoutMs: 61_000 },
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(64 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.json.status, 'published');
  const started = Date.now();
  await seed([
    // The big campaign's fleet, and its exclusions: at the version already, revoked, held by another campaign.
    ...Array.from({ length: BIG }, (_, i) => ({ vin: vin('T', i), model: 'Model T' })),
    ...Array.from({ length: 100 }, (_, i) => ({ vin: vin('U', i), model: 'Model T', version: '2.0.0' })),
    ...Array.from({ length: 50 }, (_, i) => ({ vin: vin('R', i), model: 'Model T', revoked: true })),
    ...Array.from({ length: 50 }, (_, i) => ({
      vin: vin('H', i),
      model: 'Model T',
      lockedBy: 'other-holder',
    })),
    // For the VIN list and the cancel.
    ...Array.from({ length: 3000 }, (_, i) => ({ vin: vin('L', i), model: 'Model L' })),
    ...Array.from({ length: 4000 }, (_, i) => ({ vin: vin('C', i), model: 'Model C' })),
  ]);
  process.stderr.write(`# seeded ${BIG + 7200} vehicles in ${Date.now() - started} ms\n`);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('asynchronous campaign creation', { timeout: 3_600_000 }, () => {
  it(`prepares ${BIG} targets by parallel scan, its worker stopped mid-way: exactly one target item each`, async () => {
    const started = Date.now();
    const res = await operator.call('POST', '/campaigns', {
      campaign_id: 'fleet-wide',
      name: 'fleet wide',
      release_id: 'tcu-2.0.0',
      targets: { filter: { model: 'Model T' } },
    });
    assert.equal(res.status, 202, res.raw.toString());
    assert.equal(res.json.status, 'preparing');
    const answeredMs = Date.now() - started;
    // Progress shows in GET while it runs; part-way, the worker is stopped (as a crash or timeout would).
    const mid = await until(
      'part of the targets written',
      async () => {
        const c = await get('fleet-wide');
        return c.preparation.targeted > Math.min(2000, BIG / 4) ? c : undefined;
      },
      900_000,
    );
    const before = { ...cloud.jobs.stats };
    assert.ok(cloud.jobs.crash(), 'a preparation invocation was running');
    assert.equal(mid.status, 'preparing');
    assert.ok(mid.preparation.targeted < BIG, `stopped mid-way (${mid.preparation.targeted} of ${BIG})`);
    assert.equal(mid.target_count, 0, 'sized only at the end');

    const c = await settled('fleet-wide', 2_400_000);
    const tookMs = Date.now() - started;
    process.stderr.write(
      `# ${BIG} targets: 202 in ${answeredMs} ms, created in ${tookMs} ms; jobs ${JSON.stringify(cloud.jobs.stats)}\n`,
    );
    assert.equal(c.status, 'created', JSON.stringify(c));
    assert.equal(c.target_count, BIG);
    assert.deepEqual(c.excluded, {
      count: 200,
      by_reason: { already_at_or_above_version: 100, revoked: 50, in_other_campaign: 50 },
    });
    assert.deepEqual(
      c.waves.map((w: { size: number }) => w.size),
      waveSizes(BIG, DEFAULT_POLICY.waves),
    );
    assert.equal(c.preparation.segments.done, c.preparation.segments.total);
    assert.equal(c.preparation.duplicates, 0);
    // Exactly one target item per eligible vehicle (items are keyed by VIN and campaign, so the count is the
    // check), each vehicle locked by it, and the redelivery happened.
    assert.equal(await countQueued('fleet-wide'), BIG);
    assert.equal(await countLocked('fleet-wide'), BIG);
    assert.equal(cloud.jobs.stats.stopped - before.stopped, 1);
    assert.equal(cloud.jobs.stats.deadLettered, 0);
    const excluded = await operator.call('GET', '/campaigns/fleet-wide/excluded?limit=1000');
    assert.equal(excluded.json.excluded.length, 200);
    // It starts like any created campaign.
    assert.equal((await operator.call('POST', '/campaigns/fleet-wide/start', {})).status, 200);
  });

  it('refuses bad targets with a 400 naming the problem, before anything is written', async () => {
    const create = (targets: unknown, id?: string) =>
      operator.call('POST', '/campaigns', {
        ...(id ? { campaign_id: id } : {}),
        name: 'bad',
        release_id: 'tcu-2.0.0',
        targets,
      });
    const tooBig = await create({ vin_list: { size: 24_000_001 } });
    assert.equal(tooBig.status, 400, tooBig.raw.toString());
    assert.match(tooBig.raw.toString(), /at most 24000000 bytes/);
    const both = await create({ vins: [vin('L', 0)], vin_list: { size: 100 } });
    assert.equal(both.status, 400);
    assert.equal(both.json.error.code, 'invalid_targets');

    // Uploaded lists: checked when the upload is said complete.
    const upload = async (id: string, text: string) => {
      const res = await create({ vin_list: { size: Buffer.byteLength(text) } }, id);
      assert.equal(res.status, 202, res.raw.toString());
      assert.equal(res.json.status, 'preparing');
      assert.equal(res.json.preparation.state, 'awaiting_targets');
      const early = await operator.call('POST', `/campaigns/${id}/targets`, {});
      assert.equal(early.status, 409, 'nothing uploaded yet');
      assert.equal(early.json.error.code, 'targets_not_uploaded');
      await https(res.json.upload.url, {
        method: 'PUT',
        headers: res.json.upload.headers,
        body: Buffer.from(text),
        ca: cloud.caCertPem,
      });
      return operator.call('POST', `/campaigns/${id}/targets`, {});
    };
    const malformed = await upload('bad-lines', `${vin('L', 0)}\n${vin('L', 1)}\nHELLO\n`);
    assert.equal(malformed.status, 400, malformed.raw.toString());
    assert.equal(malformed.json.error.code, 'malformed_vin_list');
    assert.match(malformed.json.error.message, /line 3 /);
    const empty = await upload('empty-list', '\r\n\n  \n'.repeat(4));
    assert.equal(empty.status, 400);
    assert.equal(empty.json.error.code, 'no_targets');
    // Refused lists leave the campaign waiting, untouched: nothing locked, nothing written.
    const still = await get('bad-lines');
    assert.equal(still.status, 'preparing');
    assert.equal(still.preparation.state, 'awaiting_targets');
    assert.equal(await countQueued('bad-lines'), 0);
    assert.equal(await countLocked('bad-lines'), 0);
    // A filter nothing matches can only be known at the end: the campaign fails, and says why.
    const none = await operator.createCampaign({
      campaign_id: 'matches-nothing',
      name: 'none',
      release_id: 'tcu-2.0.0',
      targets: { filter: { model: 'Model Nope' } },
    });
    assert.equal(none.json.status, 'failed', none.raw.toString());
    assert.match(none.json.preparation.failure_reason, /^no_targets: /);
    assert.equal(none.json.preparation.scanned, BIG + 7200, 'every vehicle read once by the segments');
  });

  it('prepares an uploaded VIN list: duplicates and unknown VINs counted, each target written once', async () => {
    const vins = Array.from({ length: 3000 }, (_, i) => vin('L', i));
    // CR LF lines, a blank line, a VIN listed twice and one nobody registered.
    const text = `${[...vins.slice(0, 1500), '', vins[7], vin('Z', 1), ...vins.slice(1500)].join('\r\n')}\r\n`;
    const res = await operator.call('POST', '/campaigns', {
      campaign_id: 'by-list',
      name: 'by list',
      release_id: 'tcu-2.0.0',
      targets: { vin_list: { size: Buffer.byteLength(text) } },
    });
    assert.equal(res.status, 202, res.raw.toString());
    assert.equal(res.json.upload.method, 'PUT');
    await https(res.json.upload.url, {
      method: 'PUT',
      headers: res.json.upload.headers,
      body: Buffer.from(text),
      ca: cloud.caCertPem,
    });
    const started = await operator.call('POST', '/campaigns/by-list/targets', {});
    assert.equal(started.status, 202, started.raw.toString());
    const c = await settled('by-list');
    assert.equal(c.status, 'created', JSON.stringify(c));
    assert.equal(c.target_count, 3000);
    assert.deepEqual(c.excluded, { count: 1, by_reason: { unknown_vehicle: 1 } });
    assert.equal(c.preparation.duplicates, 1);
    assert.deepEqual(
      c.waves.map((w: { size: number }) => w.size),
      waveSizes(3000, DEFAULT_POLICY.waves),
    );
    assert.equal(await countQueued('by-list'), 3000);
    assert.equal(await countLocked('by-list'), 3000);
  });

  it('cancel during preparation stops the segments, takes back every target and releases every lock', async () => {
    const res = await operator.call('POST', '/campaigns', {
      campaign_id: 'cancel-early',
      name: 'cancel early',
      release_id: 'tcu-2.0.0',
      targets: { filter: { model: 'Model C' } },
    });
    assert.equal(res.status, 202, res.raw.toString());
    await until(
      'some targets written',
      async () => {
        const c = await get('cancel-early');
        return c.preparation.targeted > 0 ? c : undefined;
      },
      120_000,
    );
    const cancelled = await operator.call('POST', '/campaigns/cancel-early/cancel', {});
    assert.equal(cancelled.status, 202, cancelled.raw.toString());
    assert.equal(cancelled.json.status, 'cancelling');
    const c = await until(
      'cancelled',
      async () => {
        const x = await get('cancel-early');
        return x.status === 'cancelled' ? x : undefined;
      },
      300_000,
    );
    assert.ok(c.preparation.targeted < 4000, `stopped mid-way (${c.preparation.targeted} of 4000)`);
    assert.equal(await countLocked('cancel-early'), 0, 'every lock released');
    assert.equal(await countQueued('cancel-early', 'scheduled'), 0, 'no target left scheduled');
    assert.ok((await countQueued('cancel-early', 'cancelled')) >= c.preparation.targeted);
    // The freed vehicles can join another campaign at once.
    const next = await operator.createCampaign({
      campaign_id: 'after-cancel',
      name: 'after',
      release_id: 'tcu-2.0.0',
      targets: { vins: [vin('C', 0), vin('C', 3999)] },
      policy: { waves: [50, 100] },
    });
    assert.equal(next.json.status, 'created', next.raw.toString());
    assert.equal(next.json.target_count, 2);
  });
});
