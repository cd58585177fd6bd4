/**
 * A wave never takes more than its planned size, even when two pacer steps run at once (issue 12 #2,
 * docs/architecture.md "campaign fan-out"). The race it guards against: the tick restarts a pacer it believes lost
 * while the old chain's step is in fact still running; that step's takes land, and the new chain reads on from the
 * same saved cursor, past the targets just taken, so both pages would join the wave. Each step now saves its page
 * with a write conditional on its sequence before it sends any take, so of the two only one sends.
 *
 * Runs the campaign engine and the offer worker over the local cloud's DynamoDB emulator (test/support/offer-harness.ts;
 * the conditional writes are the emulator's); campaigns and their queued targets are seeded straight into the tables; the offers queue is
 * a list this test delivers from (so it can run the restart at the worst moment), the publisher a list, and the
 * local cloud's own tick is off.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { PACER_SILENT_MS } from '../../lambdas/core/campaign-engine.js';
import { DEFAULT_POLICY } from '../../lambdas/core/campaign-policy.js';
import { shuffleKey } from '../../lambdas/core/campaigns.js';
import type { OfferMessage } from '../../lambdas/core/ports.js';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease } from '../support/fleet.js';
import { offerHarness } from '../support/offer-harness.js';

/** Wave 0 of 10 places out of 40 queued targets: an over-filled wave 0 would take from wave 1's share. */
const TARGETS = 40;
const WAVE0 = 10;
const HOOK_TIMEOUT = { timeout: 120_000 };

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
const releaseKey = newReleaseKey();
const vin = (c: string, i: number) => `RACE${c}${String(i).padStart(12, '0')}`;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-pacer-race-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
  });
  const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(16 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

/** The engine and worker over the cloud's tables, a list for the offers queue, and a clock the test can move. */
function world() {
  let skewMs = 0;
  const clock = { now: () => new Date(Date.now() + skewMs) };
  const queued: OfferMessage[] = [];
  /** Called with every batch sent, once it is queued: where the test injects the restart. */
  let onSend: (ms: readonly OfferMessage[]) => Promise<void> = async () => {};
  const offers = {
    send: async (ms: readonly { message: OfferMessage }[]) => {
      const batch = ms.map((m) => m.message);
      queued.push(...batch);
      await onSend(batch);
    },
  };
  const warnings: string[] = [];
  const log = { warn: (message: string) => void warnings.push(message) };
  const { db, base, engine, worker } = offerHarness(cloud, {
    offers,
    log,
    clock,
    publisher: { publish: async () => {} },
  });

  /** Seeds a running campaign (waves of WAVE0 and the rest) with TARGETS queued targets and their vehicles. */
  const seed = async (id: string) => {
    const now = new Date().toISOString();
    await base.campaigns.create({
      campaignId: id,
      name: id,
      releaseId: 'tcu-2.0.0',
      version: '2.0.0',
      ecu: 'tcu',
      status: 'running',
      policy: { ...DEFAULT_POLICY, waves: [25, 100], skipCanary: true, notifyPerSecond: 100 },
      waves: [{ size: WAVE0, startedAt: now }, { size: TARGETS - WAVE0 }],
      currentWave: 0,
      targetCount: TARGETS,
      excludedByReason: {},
      createdAt: now,
      updatedAt: now,
      revision: 1,
    });
    for (let i = 0; i < TARGETS; i++) {
      const v = vin(id.slice(-1), i);
      await db.send(
        new PutCommand({
          TableName: cloud.tables.vehicles,
          Item: {
            vin: v,
            model: 'Race',
            ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }],
            certificatePem: '-',
            certificateId: '-',
            publicKeyPem: '-',
            deviceKeyId: '-',
            registeredAt: now,
            campaignLocks: { tcu: id },
          },
        }),
      );
      await base.updates.put(
        {
          vin: v,
          updateId: `campaign#${id}`,
          releaseId: 'tcu-2.0.0',
          version: '2.0.0',
          ecu: 'tcu',
          campaignId: id,
          wave: -1,
          waveKey: `q#${shuffleKey(id, v)}#${v}`,
          status: 'scheduled',
          progress: 0,
          lastSequence: -1,
          attempt: 0,
          createdAt: now,
          updatedAt: now,
          revision: 1,
        },
        0,
      );
    }
  };

  /** Delivers every queued message (and what they queue) until none is left. */
  const drain = async () => {
    while (queued.length > 0) await worker.handle(queued.shift()!);
  };

  /** Wave 0 as stored: its listing (every item in it) and its summed counts. */
  const wave0 = async (id: string) => {
    const listed = await base.updates.pageByCampaignWave(id, 0, 1000);
    const counts = await base.counters.waveCounts(id, 0);
    return {
      listed: listed.items.length,
      counted: Object.values(counts).reduce((a, b) => a + b, 0),
      offered: counts.offered ?? 0,
    };
  };

  return {
    base,
    engine,
    worker,
    queued,
    warnings,
    seed,
    drain,
    wave0,
    skew: (ms: number) => {
      skewMs = ms;
    },
    onSend: (fn: typeof onSend) => {
      onSend = fn;
    },
  };
}

describe('pacer steps racing', { timeout: 120_000 }, () => {
  it('a restart by the tick while the old step still runs: the wave still takes exactly its size', async () => {
    const w = world();
    await w.seed('race-a');
    await w.engine.tick('race-a'); // starts the pacer: seq 1
    const first = w.queued.shift()!;
    assert.deepEqual(first, { kind: 'pace', campaignId: 'race-a', seq: 1 });
    // The worst moment: the old step's takes are out and have landed, and only then does the tick, finding the
    // pacer silent for too long, start a new chain.
    let restarted = false;
    w.onSend(async (batch) => {
      if (restarted || !batch.some((m) => m.kind === 'take')) return;
      restarted = true;
      const takes = w.queued.splice(0).filter((m) => m.kind === 'take');
      for (const t of takes) await w.worker.handle(t);
      w.skew(PACER_SILENT_MS + 1000);
      await w.engine.tick('race-a');
      w.skew(0);
    });
    await w.worker.handle(first);
    assert.ok(restarted, 'the old step sent its takes');
    w.onSend(async () => {});
    await w.drain();
    const got = await w.wave0('race-a');
    assert.deepEqual(got, { listed: WAVE0, counted: WAVE0, offered: WAVE0 }, JSON.stringify(got));
    const pacer = (await w.base.counters.pacer('race-a'))!;
    assert.equal(pacer.taken, WAVE0);
    assert.equal(pacer.idle, true, 'the full wave stops the chain');
    assert.equal(pacer.pending, undefined, 'every saved page was sent');
  });

  it('two steps of the same sequence at once, and two chains stepping side by side: exactly the wave size', async () => {
    const w = world();
    await w.seed('race-b');
    await w.engine.tick('race-b');
    const first = w.queued.shift()!;
    // The same step twice at once (a duplicated message), and the tick restarting the chain at the same time.
    w.skew(PACER_SILENT_MS + 1000);
    await Promise.all([w.worker.handle(first), w.worker.handle(first), w.engine.tick('race-b')]);
    w.skew(0);
    // Then every message delivered two at a time, duplicates included, until none is left.
    while (w.queued.length > 0) {
      const batch = w.queued.splice(0, 2);
      await Promise.all([...batch, ...batch].map((m) => w.worker.handle(m)));
    }
    const got = await w.wave0('race-b');
    assert.deepEqual(got, { listed: WAVE0, counted: WAVE0, offered: WAVE0 }, JSON.stringify(got));
    assert.equal((await w.base.counters.pacer('race-b'))!.taken, WAVE0);
  });

  it('a step stopped after saving its page: its redelivered message sends the page, nothing more', async () => {
    const w = world();
    await w.seed('race-c');
    await w.engine.tick('race-c');
    const first = w.queued.shift()!;
    // The step saves its page, then stops while sending its takes (the invocation crashed): nothing was queued.
    w.onSend(async () => {
      throw new Error('invocation stopped');
    });
    await assert.rejects(w.worker.handle(first), /invocation stopped/);
    w.queued.splice(0);
    w.onSend(async () => {});
    const saved = (await w.base.counters.pacer('race-c'))!;
    assert.equal(saved.pending?.count, WAVE0, 'the page was saved before any take was sent');
    // SQS delivers the message again.
    assert.equal(await w.worker.handle(first), 'paced');
    await w.drain();
    const got = await w.wave0('race-c');
    assert.deepEqual(got, { listed: WAVE0, counted: WAVE0, offered: WAVE0 }, JSON.stringify(got));
    assert.ok(w.warnings.includes('pacer step redone: its takes were saved but not confirmed sent'));
  });
});
