/**
 * Campaigns on the local cloud with simulated vehicles answering over MQTT: staged waves gated by their success
 * threshold, automatic halt on injected failures, pause/resume/cancel, timeouts with a retry budget, conflicts,
 * and aggregate counts that always equal the per-vehicle states.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { DynamoCampaignRepository } from '../../lambdas/adapters/dynamo-campaigns.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoUpdateRepository } from '../../lambdas/adapters/dynamo-updates.js';
import { DynamoVehicleRepository } from '../../lambdas/adapters/dynamo-vehicles.js';
import { CampaignCanceller } from '../../lambdas/core/campaign-cancel.js';
import { shuffleKey } from '../../lambdas/core/campaigns.js';
import { FUNCTION_SETTINGS } from '../../lambdas/core/functions.js';
import {
  type CountMove,
  systemClock,
  type UpdateRecord,
  type UpdateRepository,
} from '../../lambdas/core/ports.js';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { type Behaviour, SIM_TRANSFER, SimVehicle } from '../support/sim-vehicle.js';

const TICK_MS = 500;
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let operator: Operator;
const releaseKey = newReleaseKey();
const sims = new Map<string, SimVehicle>();
const testVehicles = new Map<string, TestVehicle>();

const vin = (group: string, i: number) => `TEST${group}${String(i).padStart(12, '0')}`;
const group = (g: string, n: number) => Array.from({ length: n }, (_, i) => vin(g, i));

async function register(
  vins: string[],
  behaviour: Behaviour,
  opts: { model?: string; hardwareId?: string } = {},
) {
  for (const v of vins) {
    const vehicle = await TestVehicle.create(v);
    testVehicles.set(v, vehicle);
    const reg = await operator.call('POST', '/vehicles', {
      ...vehicle.registration([{ ecu: 'tcu', hardware_id: opts.hardwareId ?? 'TCU-HW-1', version: '1.0.0' }]),
      model: opts.model ?? 'Model T',
    });
    assert.equal(reg.status, 201, reg.raw.toString());
    const sim = new SimVehicle(v, { keyPem: vehicle.keyPem, certPem: reg.json.certificate_pem }, behaviour);
    await sim.connect(cloud.endpoints.mqtt, cloud.caCertPem);
    sims.set(v, sim);
  }
}

/** A document client on the local cloud's DynamoDB, for tests that reach under the API. */
const dynamo = () => documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));

/** A call of the vehicle API as the registered vehicle `car` (bearer token from its device key). */
async function asVehicle(car: string, method: string, path: string, body?: unknown) {
  const token = await testVehicles.get(car)!.token(cloud.endpoints.api, cloud.caCertPem);
  return jsonRequest(cloud.endpoints.api, method, path, cloud.caCertPem, body, token);
}

async function campaign(id: string) {
  const res = await operator.call('GET', `/campaigns/${id}`);
  assert.equal(res.status, 200, res.raw.toString());
  return res.json;
}

// biome-ignore lint/suspicious/noExplicitAny: the campaign view is JSON read back from the API
type Json = any;

async function until(id: string, predicate: (c: Json) => boolean, timeoutMs = 20000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await campaign(id);
    if (predicate(c)) return c;
    if (Date.now() > deadline)
      assert.fail(
        `campaign ${id}: ${what} not reached: ${JSON.stringify({ status: c.status, counts: c.counts, halt: c.halt_reason, wave: c.current_wave })}`,
      );
    await sleep(100);
  }
}

async function waveVehicles(id: string, wave: number) {
  // At most 1000 per page; no wave of these tests is that large.
  const res = await operator.call('GET', `/campaigns/${id}/vehicles?wave=${wave}&limit=1000`);
  assert.equal(res.status, 200, res.raw.toString());
  assert.equal(res.json.next_token, null, 'one page');
  return res.json.vehicles as {
    vin: string;
    status: string;
    attempt: number;
    offered_at: string | null;
    updated_at: string;
  }[];
}

/**
 * The campaign's counters must equal a tally of its per-vehicle items, wave by wave: the vehicles the wave took
 * (listed by wave), and its places not taken yet (scheduled, still queued: CAMPAIGN12.md).
 */
async function assertCountsMatch(id: string) {
  await cloud.rules.idle();
  await cloud.offers.idle();
  const c = await campaign(id);
  // A wave not started has no vehicles yet (its targets get the wave when it starts), only its size.
  for (const w of c.waves.filter((x: Json) => x.started_at !== null)) {
    const tally: Record<string, number> = {};
    const listed = await waveVehicles(id, w.wave);
    for (const v of listed) tally[v.status] = (tally[v.status] ?? 0) + 1;
    if (listed.length < w.size && c.status !== 'cancelled') tally.scheduled = w.size - listed.length;
    if (listed.length < w.size && c.status === 'cancelled')
      tally.cancelled = (tally.cancelled ?? 0) + w.size - listed.length;
    assert.deepEqual(w.counts, tally, `campaign ${id} wave ${w.wave}`);
  }
}

/** The order the pacer takes a campaign's targets in (CAMPAIGN12.md: shuffleKey, a hash of campaign and VIN). */
function queueOrder(campaignId: string, vins: readonly string[]): string[] {
  const key = (v: string) => shuffleKey(campaignId, v);
  return [...vins].sort((a, b) => (key(a) < key(b) ? -1 : 1));
}

/** Creates a campaign and waits out its preparation (202 preparing, then created). */
async function create(body: Record<string, unknown>) {
  const res = await operator.createCampaign({ release_id: 'tcu-2.0.0', ...body });
  assert.equal(res.json.status, 'created', res.raw.toString());
  return res.json;
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-campaigns-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: TICK_MS,
    throttle: { ratePerSecond: 10000, burst: 10000 },
    // These tests are about rollouts, not timeouts (aws-limits.test.ts is). Creating the 60-vehicle campaign makes
    // about 250 calls to the DynamoDB emulator, which on a loaded 2-core machine took over the deployed 10 s
    // (DynamoDB answers them in a fraction of that): the operator function gets API Gateway's 29 s here instead.
    functionSettings: { 'operator-api': { ...FUNCTION_SETTINGS['operator-api'], timeoutSeconds: 29 } },
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(64 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
}, HOOK_TIMEOUT);

after(async () => {
  await Promise.all([...sims.values()].map((s) => s.end()));
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

// 180 s: the functions now run in worker-thread instances (local/lambda-runtime.ts), which on a loaded 2-core
// machine made this suite about 40% slower than with the handlers in the test's own process (109 s then).
describe('campaigns', { timeout: 180000 }, () => {
  it('rolls out to 60 vehicles in three waves, each starting only after the previous reached its threshold', async () => {
    await register(group('A', 60), 'succeed', { model: 'Roadster' });
    await register([vin('X', 1)], 'succeed', { model: 'Roadster', hardwareId: 'TCU-HW-OLD' });
    const created = await create({
      campaign_id: 'wave-rollout',
      name: 'Roadster TCU 2.0.0',
      targets: { filter: { model: 'Roadster' }, vins: ['TESTZ000000000099'] },
      policy: {
        waves: [10, 50, 100],
        advance_success_percent: 90,
        halt_failure_percent: 30,
        halt_min_outcomes: 3,
      },
    });
    assert.equal(created.target_count, 60);
    assert.deepEqual(created.excluded, {
      count: 2,
      by_reason: { incompatible_hardware: 1, unknown_vehicle: 1 },
    });
    const excluded = await operator.call('GET', '/campaigns/wave-rollout/excluded');
    assert.deepEqual(
      excluded.json.excluded.map((e: { vin: string; reason: string }) => [e.vin, e.reason]).sort(),
      [
        [vin('X', 1), 'incompatible_hardware'],
        ['TESTZ000000000099', 'unknown_vehicle'],
      ],
    );
    assert.deepEqual(
      created.waves.map((w: { size: number }) => w.size),
      [6, 24, 30],
    );

    await sleep(3 * TICK_MS);
    assert.equal((await campaign('wave-rollout')).counts.offered ?? 0, 0, 'nothing is offered before start');
    assert.equal((await operator.call('POST', '/campaigns/wave-rollout/start', {})).status, 200);
    const done = await until('wave-rollout', (c) => c.status === 'completed', 60000, 'completion');
    assert.equal(done.counts.completed, 60);
    // Bytes saved across the fleet: the sum of the 60 vehicles' download reports.
    assert.deepEqual(done.transfer, {
      downloads: 60,
      bytes_fetched: 60 * SIM_TRANSFER.bytes_fetched,
      bytes_reused: 60 * SIM_TRANSFER.bytes_reused,
      bytes_image: 60 * SIM_TRANSFER.bytes_image,
      bytes_saved: 60 * (SIM_TRANSFER.bytes_image - SIM_TRANSFER.bytes_fetched),
    });

    for (let k = 0; k < 2; k++) {
      const current = await waveVehicles('wave-rollout', k);
      const next = await waveVehicles('wave-rollout', k + 1);
      const completions = current.map((v) => Date.parse(v.updated_at)).sort((a, b) => a - b);
      const thresholdReachedAt = completions[Math.ceil(0.9 * current.length) - 1]!;
      const firstOffer = Math.min(...next.map((v) => Date.parse(v.offered_at!)));
      assert.ok(firstOffer >= thresholdReachedAt, `wave ${k + 1} offered before wave ${k} reached 90%`);
    }
    const seen = await operator.call('GET', `/vehicles/${vin('A', 0)}`);
    assert.equal(seen.json.ecus[0].version, '2.0.0', 'the ECU inventory follows the completed update');
    await assertCountsMatch('wave-rollout');
  });

  it('halts itself when failures in a wave cross the threshold, and says why', async () => {
    await register(group('B', 20), 'fail');
    await create({
      campaign_id: 'failing',
      name: 'bad batch',
      targets: { vins: group('B', 20) },
      policy: { waves: [20, 100], halt_failure_percent: 50, halt_min_outcomes: 3 },
    });
    await operator.call('POST', '/campaigns/failing/start', {});
    const halted = await until('failing', (c) => c.status === 'halted', 20000, 'halt');
    assert.match(halted.halt_reason, /wave 0: .*failed/);
    assert.equal(halted.current_wave, 0);
    await sleep(3 * TICK_MS);
    const later = await campaign('failing');
    assert.equal(later.status, 'halted');
    assert.deepEqual(later.waves[1].counts, { scheduled: 16 }, 'the next wave was never offered');
    // A vehicle of a wave not yet offered does not see the update, even when it polls.
    const offered = new Set((await waveVehicles('failing', 0)).map((v) => v.vin));
    assert.deepEqual(await waveVehicles('failing', 1), [], 'wave 1 took nobody');
    const waiting = group('B', 20).find((v) => !offered.has(v))!;
    const polled = await asVehicle(waiting, 'GET', `/updates/${waiting}`);
    assert.equal(polled.status, 200);
    assert.deepEqual([polled.json.updates, polled.json.pending], [[], []]);
    await assertCountsMatch('failing');
  });

  it('pause stops offers, resume continues, cancel withdraws what was not started while installs finish', async () => {
    await register(group('C', 12), 'hold');
    await create({
      campaign_id: 'operator-control',
      name: 'paced',
      targets: { vins: group('C', 12) },
      policy: { waves: [100], skip_canary: true, notify_per_second: 1, halt_failure_percent: 50 },
    });
    assert.equal(
      (await operator.call('POST', '/campaigns/operator-control/pause', {})).status,
      409,
      'cannot pause before start',
    );
    await operator.call('POST', '/campaigns/operator-control/start', {});
    await until('operator-control', (c) => (c.counts.installing ?? 0) >= 2, 10000, 'two installs');
    assert.equal((await operator.call('POST', '/campaigns/operator-control/pause', {})).status, 200);
    await cloud.rules.idle();
    const paused = await campaign('operator-control');
    await sleep(4 * TICK_MS);
    const stillPaused = await campaign('operator-control');
    assert.equal(stillPaused.status, 'paused');
    assert.equal(stillPaused.counts.scheduled, paused.counts.scheduled, 'no offers while paused');

    assert.equal((await operator.call('POST', '/campaigns/operator-control/resume', {})).status, 200);
    await until(
      'operator-control',
      (c) => c.counts.scheduled < paused.counts.scheduled,
      10000,
      'offers after resume',
    );

    const cancelled = await operator.call('POST', '/campaigns/operator-control/cancel', {});
    assert.equal(cancelled.status, 202, 'withdrawn in the background');
    assert.equal(cancelled.json.status, 'cancelling');
    await until('operator-control', (c) => c.status === 'cancelled', 30000, 'the withdrawal job');
    await cloud.rules.idle();
    const afterCancel = await campaign('operator-control');
    assert.ok((afterCancel.counts.cancelled ?? 0) > 0, 'scheduled vehicles were withdrawn');
    assert.equal(afterCancel.counts.scheduled ?? 0, 0);
    const installing = afterCancel.counts.installing ?? 0;
    assert.ok(installing >= 2, 'vehicles already installing keep going');

    const offersBefore = [...sims.values()].reduce((n, s) => n + s.offers.length, 0);
    await sleep(3 * TICK_MS);
    assert.equal(
      [...sims.values()].reduce((n, s) => n + s.offers.length, 0),
      offersBefore,
      'no offer after cancel',
    );

    for (const v of group('C', 12)) await sims.get(v)!.release('completed');
    // Every install under way finishes and is recorded, including one whose 'installing' report was still in
    // flight when the cancel withdrew its offer (the car's outcome wins over the cancel).
    const finished = await until(
      'operator-control',
      (c) => (c.counts.installing ?? 0) === 0 && (c.counts.completed ?? 0) >= installing,
      10000,
      'installs finishing',
    );
    assert.equal((finished.counts.completed ?? 0) + (finished.counts.cancelled ?? 0), 12);
    assert.equal(finished.status, 'cancelled');
    assert.equal(
      (await operator.call('POST', '/campaigns/operator-control/resume', {})).status,
      409,
      'a cancelled campaign stays cancelled',
    );
    await assertCountsMatch('operator-control');
  });

  it('cancel withdraws an update whose car reported in the same moment, and frees the car for the next campaign', async () => {
    const [car] = group('X', 1) as [string];
    await register([car], 'silent');
    await create({
      campaign_id: 'cancel-race',
      name: 'raced',
      targets: { vins: [car] },
      policy: { waves: [100], skip_canary: true },
    });
    await operator.call('POST', '/campaigns/cancel-race/start', {});
    await until('cancel-race', (c) => (c.counts.offered ?? 0) === 1, 10000, 'the offer');

    // The operator's cancel, through the real repositories, with the car's 'downloading' report (through the real
    // API) landing between the cancel's read of the update and its conditional write: the write loses the race.
    const db = dynamo();
    const updates = new DynamoUpdateRepository(db, cloud.tables.updates, cloud.tables.counters);
    let raced = 0;
    const racingUpdates: UpdateRepository = Object.assign(Object.create(updates) as UpdateRepository, {
      put: async (next: UpdateRecord, expectedRevision: number, moves?: readonly CountMove[]) => {
        if (next.status === 'cancelled' && raced++ === 0) {
          const report = await asVehicle(car, 'POST', `/updates/${car}/status`, { status: 'downloading' });
          assert.equal(report.status, 200, report.raw.toString());
        }
        return updates.put(next, expectedRevision, moves);
      },
    });
    // The cancel's withdrawal job, run here on the racing repository (the operator's cancel would queue it for
    // the jobs worker); the campaign is marked cancelling as the operator route does.
    const campaigns = new DynamoCampaignRepository(db, cloud.tables.campaigns);
    const before = (await campaigns.get('cancel-race'))!;
    const now = new Date().toISOString();
    assert.ok(
      await campaigns.change(
        'cancel-race',
        before.revision,
        { status: 'cancelling', cancel: { wave: 0, startedAt: now } },
        now,
      ),
    );
    const canceller = new CampaignCanceller({
      campaigns,
      vehicles: new DynamoVehicleRepository(db, cloud.tables.vehicles),
      updates: racingUpdates,
      clock: systemClock,
    });
    assert.equal(await canceller.run('cancel-race', () => false), 'done');
    assert.equal((await campaign('cancel-race')).status, 'cancelled');
    const [update] = await waveVehicles('cancel-race', 0);
    assert.equal(update?.status, 'cancelled', 'the raced update is withdrawn, not left downloading');
    assert.ok(raced >= 2, 'the first withdrawal lost the race and was tried again');
    await assertCountsMatch('cancel-race');
    // Its campaign lock is gone: the car can join the next campaign (a stuck lock answers 409 campaign_conflict).
    const next = await create({ campaign_id: 'after-race', name: 'next', targets: { vins: [car] } });
    assert.equal(next.target_count, 1);
    await operator.call('POST', '/campaigns/after-race/cancel', {});
  });

  it('times out silent vehicles after re-offering them within the retry budget', async () => {
    await register(group('D', 4), 'silent');
    await create({
      campaign_id: 'silent-fleet',
      name: 'timeouts',
      targets: { vins: group('D', 4) },
      policy: {
        waves: [100],
        skip_canary: true,
        vehicle_timeout_seconds: 1,
        retry_budget: 1,
        halt_failure_percent: 100,
        halt_min_outcomes: 4,
      },
    });
    await operator.call('POST', '/campaigns/silent-fleet/start', {});
    // A wave where every vehicle timed out cannot reach its success threshold, so the campaign halts.
    const c = await until('silent-fleet', (x) => x.status === 'halted', 20000, 'timeouts and halt');
    assert.equal(c.counts.timed_out, 4);
    assert.match(c.halt_reason, /4 of 4 outcomes failed/);
    const vehicles = await waveVehicles('silent-fleet', 0);
    assert.deepEqual(
      vehicles.map((v) => [v.status, v.attempt]),
      Array(4).fill(['timed_out', 2]),
    );
    for (const v of group('D', 4))
      assert.equal(sims.get(v)!.offers.length, 2, `${v} was offered exactly twice`);
    await assertCountsMatch('silent-fleet');
  });

  it('keeps watching a vehicle left behind in an earlier wave, and completes only when it has its outcome', async () => {
    await register(group('F', 4), 'succeed');
    await create({
      campaign_id: 'laggard',
      name: 'laggard',
      targets: { vins: group('F', 4) },
      policy: {
        waves: [50, 100],
        advance_success_percent: 50,
        // Every vehicle but the laggard's first offer must report before its deadline, and the laggard's second
        // offer too: 1 s was shorter than a report's round trip on a loaded machine (load 15-25), so a vehicle that
        // did succeed was timed out first (`timed_out: 1`). 6 s still makes the silent first offer time out.
        vehicle_timeout_seconds: 6,
        retry_budget: 1,
        halt_failure_percent: 100,
        halt_min_outcomes: 2,
      },
    });
    // One canary of wave 0 (the first target in the pacer's order) loses its first offer (as a car does when the
    // broker forgets its session).
    const laggard = { vin: queueOrder('laggard', group('F', 4))[0]! };
    const sim = sims.get(laggard.vin)!;
    sim.behaviour = 'silent';
    await operator.call('POST', '/campaigns/laggard/start', {});
    // Only the first offer is lost: the car answers again as soon as that one has been ignored. Switching back only
    // once wave 1 had started raced the re-offer on a loaded machine (the second offer was ignored too: timed_out).
    for (const end = Date.now() + 20000; sim.offers.length === 0; await sleep(50))
      assert.ok(Date.now() < end, 'the laggard got its first offer');
    sim.behaviour = 'succeed';
    const w1 = await until('laggard', (x) => x.current_wave === 1, 30000, 'wave 1 started on 50% success');
    assert.equal(w1.status, 'running', 'wave 1 started while the laggard had no outcome yet');
    const c = await until('laggard', (x) => x.status !== 'running', 40000, 'the campaign to end');
    assert.equal(c.status, 'completed');
    assert.deepEqual(c.counts, { completed: 4 });
    const [w0] = await Promise.all([waveVehicles('laggard', 0)]);
    const again = w0!.find((v) => v.vin === laggard.vin)!;
    assert.deepEqual([again.status, again.attempt], ['completed', 2]);
    assert.equal(sim.offers.length, 2, 'the laggard was offered again after its deadline');
    await assertCountsMatch('laggard');
  });

  it('a download asked for while the campaign offer is in flight joins the campaign update, never a second one', async () => {
    await register(group('G', 1), 'hold');
    const car = vin('G', 0);
    await create({ campaign_id: 'in-flight', name: 'race', targets: { vins: [car] } });
    await operator.call('POST', '/campaigns/in-flight/start', {});
    await until('in-flight', (x) => x.counts.installing === 1, 20000, 'the vehicle to start installing');
    // The window between the engine marking the update offered and recording it as the vehicle's active update
    // (or another update taking that slot): the vehicle record does not point at the campaign update.
    const db = dynamo();
    await db.send(
      new UpdateCommand({
        TableName: cloud.tables.vehicles,
        Key: { vin: car },
        UpdateExpression: 'REMOVE activeUpdateId',
      }),
    );
    const asked = await asVehicle(car, 'POST', `/updates/${car}/download`, { firmware_version: '2.0.0' });
    assert.equal(asked.status, 200, asked.raw.toString());
    const [item] = await waveVehicles('in-flight', 0);
    assert.match(asked.json.update_id, /^campaign#/);
    assert.equal(asked.json.assignment.assignment.campaign_id, 'in-flight');
    const listed = await asVehicle(car, 'GET', `/updates/${car}`);
    assert.deepEqual(
      listed.json.updates.map((u: { update_id: string }) => u.update_id),
      [asked.json.update_id],
      'one update for the release, the campaign one',
    );
    await sims.get(car)!.release('completed');
    const done = await until('in-flight', (x) => x.status === 'completed', 20000, 'completion');
    assert.deepEqual(done.counts, { completed: 1 });
    assert.equal(item!.vin, car);
    await assertCountsMatch('in-flight');
  });

  it('keeps counts exact under duplicated and reordered reports over MQTT and HTTPS', async () => {
    const cars = group('H', 3);
    await register(cars, 'hold');
    await create({
      campaign_id: 'exact-counts',
      name: 'exact counts',
      targets: { vins: cars },
      policy: { waves: [100], skip_canary: true, halt_failure_percent: 100, halt_min_outcomes: 3 },
    });
    await operator.call('POST', '/campaigns/exact-counts/start', {});
    await until('exact-counts', (x) => x.counts.installing === 3, 20000, 'three vehicles installing');
    // Over the car's own mutual-TLS MQTT session, through the rules router and the ingest function.
    const mqttReport = (car: string, body: Record<string, unknown>) =>
      sims.get(car)!.publishRaw('status', body);
    // Each car's outcome sent twice over MQTT (QoS 1 redelivery) and once more over HTTPS, then an older
    // 'downloading' report arriving after the outcome (reordered), over both paths.
    for (const car of cars) {
      const body = { status: 'completed', campaign_id: 'exact-counts', sequence: 100 };
      await Promise.all([
        mqttReport(car, body),
        mqttReport(car, body),
        asVehicle(car, 'POST', `/updates/${car}/status`, body),
      ]);
      await mqttReport(car, {
        status: 'downloading',
        progress: 40,
        campaign_id: 'exact-counts',
        sequence: 50,
      });
      const late = await asVehicle(car, 'POST', `/updates/${car}/status`, {
        status: 'downloading',
        progress: 40,
        campaign_id: 'exact-counts',
        sequence: 50,
      });
      assert.equal(late.status, 200, late.raw.toString());
    }
    await cloud.rules.idle();
    const c = await until('exact-counts', (x) => x.status === 'completed', 20000, 'completion');
    assert.deepEqual(c.counts, { completed: 3 }, 'each car counted once, in its final state');
    assert.deepEqual(c.waves[0].counts, { completed: 3 });
    await assertCountsMatch('exact-counts');
  });

  it('excludes a vehicle held by another active campaign (in_other_campaign), fails a campaign left with none', async () => {
    await register(group('E', 3), 'hold');
    await create({ campaign_id: 'first-claim', name: 'one', targets: { vins: group('E', 3) } });
    // Only a held vehicle: nothing to target, so the campaign fails with the reason; the holder keeps its lock.
    const second = await operator.createCampaign({
      release_id: 'tcu-2.0.0',
      name: 'two',
      targets: { vins: [vin('E', 1)] },
    });
    assert.equal(second.json.status, 'failed', second.raw.toString());
    assert.match(second.json.preparation.failure_reason, /^no_targets/);
    assert.deepEqual(second.json.excluded, { count: 1, by_reason: { in_other_campaign: 1 } });
    // A held vehicle and a free one: the free one is targeted, the held one reported, not silently dropped.
    await register(group('K', 1), 'hold');
    const mixed = await create({
      campaign_id: 'mixed-claim',
      name: 'mixed',
      targets: { vins: [vin('E', 2), vin('K', 0)] },
    });
    assert.equal(mixed.target_count, 1);
    assert.deepEqual(mixed.excluded, { count: 1, by_reason: { in_other_campaign: 1 } });
    const listed = await operator.call('GET', '/campaigns/mixed-claim/excluded');
    assert.deepEqual(listed.json.excluded, [{ vin: vin('E', 2), reason: 'in_other_campaign' }]);
    const bad = await operator.call('POST', '/campaigns', {
      release_id: 'tcu-2.0.0',
      name: 'bad waves',
      targets: { vins: [vin('E', 2)] },
      policy: { waves: [50, 40] },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'invalid_policy');
    assert.equal(
      (await operator.call('POST', '/campaigns', { name: 'x', release_id: 'nope', targets: { vins: [] } }))
        .status,
      404,
    );
    // The same campaign id again, for vehicles nobody holds: 409, and the vehicles stay free.
    await register(group('J', 1), 'hold');
    const again = await operator.call('POST', '/campaigns', {
      campaign_id: 'first-claim',
      release_id: 'tcu-2.0.0',
      name: 'same id',
      targets: { vins: group('J', 1) },
    });
    assert.equal(again.status, 409, again.raw.toString());
    assert.equal(again.json.error.code, 'campaign_exists');
    await create({ campaign_id: 'after-the-refusal', name: 'free', targets: { vins: group('J', 1) } });
  });
});
