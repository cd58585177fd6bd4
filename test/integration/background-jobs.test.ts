/**
 * Background jobs on the local cloud, through the same worker code and the queue stand-in with the function
 * timeout enforced: a release verified outside the request with progress, resumed after its worker is stopped
 * mid-way; a cancel of a campaign of thousands of vehicles withdrawn in slices, stopped mid-way and completed by
 * the redelivery with every vehicle withdrawn exactly once; a vehicle not yet reached refused meanwhile.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { DynamoCampaignRepository } from '../../lambdas/adapters/dynamo-campaigns.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { counterKey } from '../../lambdas/adapters/dynamo-counters.js';
import { shardOf, shardsFor } from '../../lambdas/core/campaign-counters.js';
import { DEFAULT_POLICY } from '../../lambdas/core/campaign-policy.js';
import { campaignUpdateId, waveKeyPrefix } from '../../lambdas/core/campaigns.js';
import type { UpdateRecord } from '../../lambdas/core/ports.js';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';

const releaseKey = newReleaseKey();
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let operator: Operator;
let dataDir: string;
const MiB = 1024 * 1024;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-jobs-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0, jobs: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
    throttle: { ratePerSecond: 10000, burst: 10000 },
    // A short function timeout so a stopped invocation is redelivered within the test.
    jobs: { timeoutMs: 20_000, visibilityTimeoutMs: 21_000 },
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  // A small release first: warms the worker sandbox (its cold start) and is what the campaign below rolls out.
  const image = randomBytes(64 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  const { published } = await operator.publish(signed, image);
  assert.equal(published?.json.status, 'published', published?.raw.toString());
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

// biome-ignore lint/suspicious/noExplicitAny: scanned items are checked field by field below
type ScanPage = { Items?: Record<string, any>[]; LastEvaluatedKey?: Record<string, unknown> };
const dynamo = () => documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`${what} not reached in ${timeoutMs} ms`);
    await sleep(25);
  }
}

describe('background jobs', { timeout: 480_000 }, () => {
  it('publish answers 202 and verifies in the background with progress, resuming after its worker is stopped', async () => {
    const image = randomBytes(48 * MiB);
    const signed = await signedRelease(image, {
      releaseId: 'tcu-3.0.0',
      version: '3.0.0',
      signer: releaseKey.signer,
    });
    const created = await operator.call('POST', '/releases', signed);
    assert.equal(created.status, 201);
    const { https } = await import('../support/https.js');
    await https(created.json.upload.url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(image.length) },
      body: image,
      ca: cloud.caCertPem,
    });
    const before = { ...cloud.jobs.stats };
    const accepted = await operator.call('POST', '/releases/tcu-3.0.0/publish', {});
    assert.equal(accepted.status, 202, accepted.raw.toString());
    assert.equal(accepted.json.status, 'verifying');
    assert.deepEqual(accepted.json.verification.bytes_verified, 0);

    // Part-way through, the worker is stopped (the sandbox terminated, as a crash or timeout would).
    const checkpoint = await until('part of the image verified', async () => {
      const r = await operator.call('GET', '/releases/tcu-3.0.0');
      const done = r.json.verification.bytes_verified as number;
      return done > 0 && done < image.length ? done : undefined;
    });
    assert.ok(cloud.jobs.crash(), 'an invocation was running');
    const seen: number[] = [];
    const final = await until('published', async () => {
      const r = await operator.call('GET', '/releases/tcu-3.0.0');
      if (r.json.status === 'verifying') seen.push(r.json.verification.bytes_verified);
      return r.json.status === 'verifying' ? undefined : r.json;
    });
    assert.equal(final.status, 'published');
    // Resumed from its checkpoint, not restarted: the progress never went back below it.
    assert.ok(
      seen.every((n) => n >= checkpoint),
      `progress after the stop ${seen.slice(0, 5)} >= ${checkpoint}`,
    );
    assert.equal(cloud.jobs.stats.stopped - before.stopped, 1);
    assert.ok(cloud.jobs.stats.invocations - before.invocations >= 2, 'the job was delivered again');
    assert.equal(cloud.jobs.stats.deadLettered, 0);
    // Publishing a published release answers it as it is.
    const again = await operator.call('POST', '/releases/tcu-3.0.0/publish', {});
    assert.equal(again.status, 200);
    assert.equal(again.json.status, 'published');
  });

  it('a failed verification marks the release failed and keeps an object another release uses', async () => {
    // Two manifests for one image (same content address): the first publishes; the second claims other chunk
    // digests, so it fails, and the object the first depends on must stay.
    const image = randomBytes(256 * 1024);
    const good = await signedRelease(image, {
      releaseId: 'gw-1.0.0',
      ecu: 'gw',
      version: '1.0.0',
      signer: releaseKey.signer,
      hardwareIds: ['GW-1'],
    });
    assert.equal((await operator.publish(good, image)).published?.json.status, 'published');
    const lying = await signedRelease(image, {
      releaseId: 'gw-1.0.1',
      ecu: 'gw',
      version: '1.0.1',
      signer: releaseKey.signer,
      hardwareIds: ['GW-1'],
    });
    const manifest = {
      ...lying.manifest,
      chunks: lying.manifest.chunks.map((c, i) => (i === 1 ? '0'.repeat(64) : c)),
    };
    const { signManifest } = await import('../../protocol/manifest.js');
    const bad = await signManifest(manifest, [releaseKey.signer]);
    const { published } = await operator.publish(bad, image);
    assert.equal(published?.json.status, 'failed');
    assert.match(published?.json.failure_reason, /chunk 1 differs/);
    const vehicle = await TestVehicle.create('WVWZZZ1JZXW000777');
    assert.equal(
      (
        await operator.call(
          'POST',
          '/vehicles',
          vehicle.registration([{ ecu: 'gw', hardware_id: 'GW-1', version: '0.9.0' }]),
        )
      ).status,
      201,
    );
    const token = await vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const dl = await jsonRequest(
      cloud.endpoints.api,
      'POST',
      `/updates/${vehicle.vin}/download`,
      cloud.caCertPem,
      { firmware_version: '1.0.0' },
      token,
    );
    assert.equal(dl.status, 200, dl.raw.toString());
    const { https } = await import('../support/https.js');
    const bytes = await https(dl.json.download_url, { ca: cloud.caCertPem });
    assert.equal(bytes.raw.length, image.length, 'the published release still downloads');
  });

  it('cancel withdraws a 2,000-vehicle campaign in slices, resumes after a stop, withdraws each exactly once', async () => {
    const N = 2000;
    const campaignId = 'big-cancel';
    const release = (await operator.call('GET', '/releases/tcu-2.0.0')).json;
    const db = dynamo();
    const now = new Date().toISOString();
    // The vehicles, their campaign updates (offered) and locks, seeded straight into the tables; one real vehicle
    // in the last wave, reached last.
    const real = await TestVehicle.create('1HGCM82633A009999');
    assert.equal((await operator.call('POST', '/vehicles', real.registration())).status, 201);
    const vins = Array.from({ length: N }, (_, i) => `5YJSA1E26HF${String(100000 + i).padStart(6, '0')}`);
    const update = (vin: string, wave: number): UpdateRecord => ({
      vin,
      updateId: campaignUpdateId(campaignId),
      releaseId: 'tcu-2.0.0',
      version: '2.0.0',
      ecu: 'tcu',
      campaignId,
      wave,
      waveKey: `${waveKeyPrefix(wave)}#${vin}`,
      status: 'offered',
      progress: 0,
      lastSequence: -1,
      attempt: 1,
      createdAt: now,
      updatedAt: now,
      revision: 2,
      offeredAt: now,
      deadline: new Date(Date.now() + 3600_000).toISOString(),
      shard: shardOf(vin, shardsFor(wave === 0 ? N : 1)),
    });
    // Their counts, in the wave's counter shards (campaign-counters.ts), as the offers would have left them.
    const shardCounts = new Map<string, { key: string; shard: string; n_offered: number }>();
    for (const [vin, wave] of [...vins.map((v) => [v, 0] as const), [real.vin, 1] as const]) {
      const key = counterKey(campaignId, wave, update(vin, wave).shard!);
      const id = `${key.key}/${key.shard}`;
      shardCounts.set(id, { ...key, n_offered: (shardCounts.get(id)?.n_offered ?? 0) + 1 });
    }
    const items = [
      ...[...shardCounts.values()].map((item) => ({ table: cloud.tables.counters, item })),
      ...vins.map((vin) => ({ table: cloud.tables.updates, item: update(vin, 0) })),
      { table: cloud.tables.updates, item: update(real.vin, 1) },
      ...vins.map((vin) => ({
        table: cloud.tables.vehicles,
        item: {
          vin,
          model: 'Model T',
          ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }],
          campaignLocks: { tcu: campaignId },
        },
      })),
    ];
    for (let i = 0; i < items.length; i += 25) {
      const batch = items.slice(i, i + 25);
      const byTable: Record<string, { PutRequest: { Item: Record<string, unknown> } }[]> = {};
      for (const b of batch) {
        const requests = byTable[b.table] ?? [];
        requests.push({ PutRequest: { Item: b.item as unknown as Record<string, unknown> } });
        byTable[b.table] = requests;
      }
      let out = await db.send(new BatchWriteCommand({ RequestItems: byTable }));
      while (Object.keys(out.UnprocessedItems ?? {}).length > 0) {
        out = await db.send(new BatchWriteCommand({ RequestItems: out.UnprocessedItems! }));
      }
    }
    const campaigns = new DynamoCampaignRepository(db, cloud.tables.campaigns);
    await campaigns.create({
      campaignId,
      name: 'big',
      releaseId: release.release_id,
      version: '2.0.0',
      ecu: 'tcu',
      status: 'running',
      policy: DEFAULT_POLICY,
      waves: [
        { size: N, startedAt: now },
        { size: 1, startedAt: now },
      ],
      currentWave: 1,
      targetCount: N + 1,
      excludedByReason: {},
      createdAt: now,
      updatedAt: now,
      revision: 1,
    });

    const cancelled = await operator.call('POST', `/campaigns/${campaignId}/cancel`, {});
    assert.equal(cancelled.status, 202, cancelled.raw.toString());
    assert.equal(cancelled.json.status, 'cancelling');
    // Part-way, the worker is stopped.
    await until('some vehicles withdrawn', async () => {
      const c = (await operator.call('GET', `/campaigns/${campaignId}`)).json;
      return (c.counts.cancelled ?? 0) > 0 ? c : undefined;
    });
    const before = { ...cloud.jobs.stats };
    assert.ok(cloud.jobs.crash(), 'the withdrawal was running');
    const mid = (await operator.call('GET', `/campaigns/${campaignId}`)).json;
    assert.equal(mid.status, 'cancelling');
    assert.ok(mid.counts.cancelled < N, `stopped mid-way (${mid.counts.cancelled} of ${N})`);

    // Meanwhile the vehicle not reached yet cannot get the cancelled release: refused, and withdrawn on the spot.
    const token = await real.token(cloud.endpoints.api, cloud.caCertPem);
    const dl = await jsonRequest(
      cloud.endpoints.api,
      'POST',
      `/updates/${real.vin}/download`,
      cloud.caCertPem,
      { firmware_version: '2.0.0' },
      token,
    );
    assert.equal(dl.status, 409, dl.raw.toString());
    assert.equal(dl.json.error.code, 'campaign_cancelled');
    // Cancel again while it runs: safe (queues the job again; the duplicate finds its slices done).
    assert.equal((await operator.call('POST', `/campaigns/${campaignId}/cancel`, {})).status, 202);

    const done = await until(
      'cancelled',
      async () => {
        const c = (await operator.call('GET', `/campaigns/${campaignId}`)).json;
        return c.status === 'cancelled' ? c : undefined;
      },
      240_000,
    );
    assert.deepEqual(done.counts, { cancelled: N + 1 });
    assert.ok(cloud.jobs.stats.invocations - before.invocations >= 1, 'redelivered after the stop');
    assert.equal(cloud.jobs.stats.deadLettered, 0);
    // Once cancelled, cancel changes nothing and answers 200.
    const again = await operator.call('POST', `/campaigns/${campaignId}/cancel`, {});
    assert.equal(again.status, 200);
    assert.equal(again.json.status, 'cancelled');

    // Every vehicle withdrawn exactly once: each update item cancelled by exactly one write (its revision moved
    // from the seeded 2 to 3; a second withdrawal would have moved it again), never two backend 'cancelled'
    // history events for one vehicle, and every campaign lock released.
    const revisions = new Map<string, { status: string; revision: number }>();
    let start: Record<string, unknown> | undefined;
    do {
      const page: ScanPage = await db.send(
        new ScanCommand({ TableName: cloud.tables.updates, ExclusiveStartKey: start }),
      );
      for (const u of page.Items ?? []) {
        if (u.campaignId === campaignId) revisions.set(u.vin, { status: u.status, revision: u.revision });
      }
      start = page.LastEvaluatedKey;
    } while (start);
    assert.equal(revisions.size, N + 1);
    assert.deepEqual(
      [...new Set([...revisions.values()].map((r) => `${r.status}@${r.revision}`))],
      ['cancelled@3'],
      'each update withdrawn by exactly one write',
    );
    // The history is on the update item, written with the withdrawal itself: every update has its one
    // 'cancelled' transition by the backend, even those a stopped worker withdrew, and none has two.
    const events = new Map<string, number>();
    start = undefined;
    do {
      const page: ScanPage = await db.send(
        new ScanCommand({ TableName: cloud.tables.updates, ExclusiveStartKey: start }),
      );
      for (const u of page.Items ?? []) {
        if (u.updateId !== campaignUpdateId(campaignId)) continue;
        const cancelled = ((u.history ?? []) as { status: string; source: string }[]).filter(
          (e) => e.status === 'cancelled' && e.source === 'backend',
        );
        events.set(u.vin, cancelled.length);
      }
      start = page.LastEvaluatedKey;
    } while (start);
    assert.equal(events.size, N + 1, 'a withdrawal event on every update');
    assert.deepEqual([...new Set(events.values())], [1], 'no vehicle withdrawn twice');
    const locked: string[] = [];
    start = undefined;
    do {
      const page: ScanPage = await db.send(
        new ScanCommand({ TableName: cloud.tables.vehicles, ExclusiveStartKey: start }),
      );
      for (const v of page.Items ?? []) if (v.campaignLocks?.tcu === campaignId) locked.push(v.vin);
      start = page.LastEvaluatedKey;
    } while (start);
    assert.deepEqual(locked, []);
  });
});
