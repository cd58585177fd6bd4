/**
 * The offer worker's memory does not grow with the wave (issue 12 #2): a running campaign of 10,000 targets and one
 * of 50,000, each a single wave, are seeded straight into the local cloud's DynamoDB (queued targets, and vehicle
 * items for the first 6,000 of each in queue order; no certificates: the offers go to VINs nobody is connected as), and the local cloud's own tick, offers
 * queue and offer-worker instances pace them. The heap in use is measured inside the worker at the end of every
 * invocation (lambdas/offer-worker/handler.ts answers it; local/job-queue.ts records it) over the first 3,000 offers
 * of each wave: the largest differs by less than 20%. Each wave also takes no more than its size.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { DynamoCampaignRepository } from '../../lambdas/adapters/dynamo-campaigns.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoCounterRepository } from '../../lambdas/adapters/dynamo-counters.js';
import { DEFAULT_POLICY } from '../../lambdas/core/campaign-policy.js';
import type { CampaignRecord } from '../../lambdas/core/ports.js';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease } from '../support/fleet.js';

const SMALL = 10_000;
const LARGE = 50_000;
/** Offers measured per wave: three pacer pages at 1,000 a second. */
const MEASURED = 3_000;
const HOOK_TIMEOUT = { timeout: 600_000 };

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
const releaseKey = newReleaseKey();
const db = () => documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
const vin = (i: number) => `SCALE${String(i).padStart(12, '0')}`;

/** Writes items 25 to a BatchWriteItem, 8 batches in flight, retrying what DynamoDB leaves unprocessed. */
async function seed(table: string, items: Record<string, unknown>[]) {
  const client = db();
  const batches: Record<string, unknown>[][] = [];
  for (let i = 0; i < items.length; i += 25) batches.push(items.slice(i, i + 25));
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        let requests = batches[next++]!.map((Item) => ({ PutRequest: { Item } }));
        while (requests.length > 0) {
          const out = await client.send(new BatchWriteCommand({ RequestItems: { [table]: requests } }));
          requests = (out.UnprocessedItems?.[table] ?? []) as typeof requests;
        }
      }
    }),
  );
}

function campaign(id: string, size: number, now: string): CampaignRecord {
  return {
    campaignId: id,
    name: id,
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    ecu: 'tcu',
    status: 'running',
    policy: { ...DEFAULT_POLICY, waves: [100], skipCanary: true, notifyPerSecond: 1000, haltMinOutcomes: 1 },
    waves: [{ size, startedAt: now }],
    currentWave: 0,
    targetCount: size,
    excludedByReason: {},
    createdAt: now,
    updatedAt: now,
    revision: 1,
  };
}

/** The queued targets of a campaign over the first `size` seeded vehicles (CAMPAIGN12.md: wave -1, q# keys). */
function targets(id: string, size: number, now: string) {
  return Array.from({ length: size }, (_, i) => ({
    vin: vin(i),
    updateId: `campaign#${id}`,
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    ecu: 'tcu',
    campaignId: id,
    wave: -1,
    waveKey: `q#${createHash('sha256')
      .update(`${id}:${vin(i)}`)
      .digest('hex')}#${vin(i)}`,
    status: 'scheduled',
    progress: 0,
    lastSequence: -1,
    attempt: 0,
    createdAt: now,
    updatedAt: now,
    revision: 1,
  }));
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-offer-scale-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0, jobs: 0, offers: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 1000,
  });
  const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(64 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
  const now = new Date().toISOString();
  const small = targets('scale-small', SMALL, now);
  const large = targets('scale-large', LARGE, now);
  // Vehicle items for the targets each campaign offers first (queue order), a margin beyond what is measured;
  // a target further down is taken as withdrawn (no vehicle), which the measurement does not reach.
  const first = (t: { vin: string; waveKey: string }[]) =>
    [...t].sort((a, b) => (a.waveKey < b.waveKey ? -1 : 1)).slice(0, 2 * MEASURED);
  const vins = [...new Set([...first(small), ...first(large)].map((t) => t.vin))];
  await seed(
    cloud.tables.vehicles,
    vins.map((v) => ({
      vin: v,
      model: 'Scale',
      ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }],
      certificatePem: '-',
      certificateId: '-',
      publicKeyPem: '-',
      deviceKeyId: '-',
      registeredAt: now,
      campaignLocks: {},
    })),
  );
  await seed(cloud.tables.updates, small);
  await seed(cloud.tables.updates, large);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('offer worker at scale', { timeout: 900_000 }, () => {
  it('uses the same heap for a 10,000 and a 50,000 wave, and a wave takes no more than its size', async () => {
    const client = db();
    const campaigns = new DynamoCampaignRepository(client, cloud.tables.campaigns);
    const counters = new DynamoCounterRepository(client, cloud.tables.counters);
    const offered = async (id: string) => (await counters.waveCounts(id, 0)).offered ?? 0;

    /**
     * Starts a campaign, waits for MEASURED offers, then stops it (marked cancelling: its pacer stops and the offers
     * already queued take their targets as cancelled); the heap samples taken meanwhile.
     */
    const measure = async (id: string, size: number) => {
      const from = cloud.offers.stats.heapSamples.length;
      await campaigns.create(campaign(id, size, new Date().toISOString()));
      const deadline = Date.now() + 300_000;
      while ((await offered(id)) < MEASURED) {
        assert.ok(Date.now() < deadline, `${id}: ${await offered(id)} offered in 300 s`);
        await sleep(500);
      }
      const c = (await campaigns.get(id))!;
      assert.ok(await campaigns.change(id, c.revision, { status: 'cancelling' }, new Date().toISOString()));
      const samples = cloud.offers.stats.heapSamples.slice(from);
      assert.ok(samples.length >= 100, `${id}: ${samples.length} invocations measured`);
      return { peak: Math.max(...samples), samples: samples.length };
    };

    const small = await measure('scale-small', SMALL);
    const large = await measure('scale-large', LARGE);
    const ratio = large.peak / small.peak;
    process.stdout.write(
      `# offer-worker heap peak: ${(small.peak / 2 ** 20).toFixed(1)} MiB at a ${SMALL} wave (${small.samples} invocations), ${(large.peak / 2 ** 20).toFixed(1)} MiB at a ${LARGE} wave (${large.samples}); ratio ${ratio.toFixed(3)}\n`,
    );
    assert.ok(Math.abs(ratio - 1) < 0.2, `heap ratio ${ratio}`);

    // Nothing was taken beyond what the pacer handed out; the counts equal what the pacer recorded as taken.
    await cloud.offers.idle();
    for (const [id, size] of [
      ['scale-small', SMALL],
      ['scale-large', LARGE],
    ] as const) {
      const counts = await counters.waveCounts(id, 0);
      const taken = Object.values(counts).reduce((a, b) => a + b, 0);
      const pacer = (await counters.pacer(id))!;
      assert.equal(taken, pacer.taken, `${id}: every target the pacer took is counted once`);
      assert.ok(taken <= size);
    }
  });
});
