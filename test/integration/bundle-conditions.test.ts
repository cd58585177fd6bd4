/**
 * Campaign conditions on multi-ECU bundles, end to end against a private local cloud (real gateway, lambdas,
 * emulators, MQTT over mutual TLS) with three-ECU agents: the driver asked once for the whole bundle through the head
 * unit (postponed, declined, accepted, kept across a restart) before anything is downloaded; downloads only on an
 * unmetered link, a member paused at its checkpoint when the car moves onto a metered one; no slot written outside the
 * maintenance window, also when the car becomes safe only after it closed; and a campaign cancelled while the car
 * waited, which the vehicle stands down from. An injected vehicle clock and a switchable network drive the conditions.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { VehicleAgent } from '../../vehicle/agent.js';
import { HeadUnitClient } from '../../vehicle/head-unit-client.js';
import { startHeadUnitServer } from '../../vehicle/head-unit-server.js';
import { StaticVehicleState } from '../../vehicle/vehicle-state.js';
import { type AgentCloud, startAgent, startAgentCloud, waitUntil } from '../support/agent-cloud.js';
import {
  assertAllRun,
  assertEnded as assertEndedOf,
  assertRuns,
  type BundleFixture,
  bundleVehicle as bundleVehicleOf,
  campaignUpdate as campaignUpdateOf,
  ECUS,
  factoryImageOf,
  publishBundles,
  requestOffsets,
  resumableBundle as resumableBundleOf,
  slotVersions,
  startBundleCampaign,
  untilInventory,
  withConditions,
} from '../support/bundles.js';

let ac: AgentCloud;
let f: BundleFixture;
const HOOK_TIMEOUT = { timeout: 120_000 };
let vinSeq = 0;
const nextVin = () => `1HGCM82633A${String(600_000 + ++vinSeq)}`;

before(async () => {
  ac = await startAgentCloud();
  f = await publishBundles(ac);
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

const bundleVehicle = (vin: string, overrides: Parameters<typeof startAgent>[3] = {}) =>
  bundleVehicleOf(ac, vin, overrides);
const campaignUpdate = (id: string, vin: string) => campaignUpdateOf(ac, id, vin);
const assertEnded = (v: { agent: VehicleAgent }, dir: string, campaign: string, vin: string) =>
  assertEndedOf(ac, v, dir, campaign, vin);
const KiB = 1024;
const MiB = 1024 * KiB;

describe('campaign conditions on bundles', { timeout: 600_000 }, () => {
  it('a bundle campaign with a maintenance window and unmetered-only downloads: nothing fetched on a metered link, nothing written outside the window', async () => {
    const vin = nextVin();
    let network: 'metered' | 'unmetered' = 'metered';
    let clock = Date.parse('2026-12-05T12:00:00Z');
    const { dir, v } = await bundleVehicle(vin, {
      conditions: { network: () => network, now: () => clock, timeZone: 'UTC', recheckMs: 100 },
    });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-window', 'body-2-0', [vin], {
      ...withConditions({ network: 'unmetered', maintenance_window: { start: '02:00', end: '04:00' } }),
    });
    const deferred = (pattern: RegExp) => (e: { type: string; reason?: string }) =>
      e.type === 'deferred' && pattern.test(e.reason ?? '');
    await v.events.waitFor(deferred(/unmetered network/), 30_000, 'waiting for an unmetered link');
    await sleep(500);
    assert.deepEqual(requestOffsets(v), [], 'nothing downloaded on a metered link');

    network = 'unmetered';
    await v.events.waitFor(deferred(/maintenance window 02:00-04:00/), 30_000, 'waiting for the window');
    const phases = (phase: string) =>
      v.events.events.filter((e) => e.type === 'bundle_progress' && e.phase === phase).length;
    assert.equal(phases('downloaded'), 3, 'every member is downloaded and verified before the window');
    await sleep(500);
    assert.equal(phases('writing'), 0, 'no slot is written outside the window');
    assert.deepEqual(slotVersions(dir), { gw: '1.0.0', bcm: '1.0.0', ivi: '1.0.0' });

    clock = Date.parse('2026-12-06T02:30:00Z'); // the car's night
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertAllRun(dir, f, '2.0.0');
    await v.close();
  });

  it('a car that becomes safe only after the window closed waits for the next window before writing a slot', async () => {
    const vin = nextVin();
    let clock = Date.parse('2026-12-06T02:30:00Z'); // inside the window, but the car is driving
    const car = new StaticVehicleState({ parked: false, batteryPercent: 90 });
    const { dir, v } = await bundleVehicle(vin, {
      vehicleState: car,
      safety: { pollMs: 50 },
      conditions: { now: () => clock, timeZone: 'UTC', recheckMs: 100 },
    });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-late-park', 'body-2-0', [vin], {
      ...withConditions({ maintenance_window: { start: '02:00', end: '04:00' } }),
    });
    await v.events.waitFor(
      (e) => e.type === 'deferred' && !/maintenance window/.test(e.reason),
      60_000,
      'every member downloaded, waiting for the car to park',
    );
    clock = Date.parse('2026-12-06T05:00:00Z'); // the window closes while it drives
    car.set({ parked: true });
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /maintenance window/.test(e.reason),
      30_000,
      'back to waiting for the window',
    );
    await sleep(500);
    const writing = () =>
      v.events.events.filter((e) => e.type === 'bundle_progress' && e.phase === 'writing').length;
    assert.equal(writing(), 0, 'nothing written outside the window');
    clock = Date.parse('2026-12-07T02:10:00Z');
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertAllRun(dir, f, '2.0.0');
    await v.close();
  });

  it('stands down when its bundle campaign is cancelled while it waits for the window: nothing written, cancelled kept', async () => {
    const vin = nextVin();
    let clock = Date.parse('2026-12-05T12:00:00Z');
    const { dir, v } = await bundleVehicle(vin, {
      conditions: { now: () => clock, timeZone: 'UTC', recheckMs: 100 },
    });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-cancel', 'body-2-0', [vin], {
      ...withConditions({ maintenance_window: { start: '02:00', end: '04:00' } }),
    });
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /maintenance window/.test(e.reason),
      60_000,
      'every member downloaded, waiting for the window',
    );
    const cancelled = await ac.operator.call('POST', '/campaigns/bundle-cancel/cancel', {});
    assert.equal(cancelled.status, 202, cancelled.raw.toString());
    await waitUntil(
      async () => (await ac.operator.call('GET', '/campaigns/bundle-cancel')).json.status === 'cancelled',
      30_000,
      'the campaign cancelled',
    );
    clock = Date.parse('2026-12-06T02:30:00Z');
    const outcome = await v.events.outcome('2.0.0', 60_000);
    assert.equal(outcome.status, 'rejected');
    assert.match(outcome.reason ?? '', /cancelled the update before installation/);
    assert.equal(
      v.events.events.filter((e) => e.type === 'bundle_progress' && e.phase === 'writing').length,
      0,
      'no slot written',
    );
    assert.deepEqual(slotVersions(dir), { gw: '1.0.0', bcm: '1.0.0', ivi: '1.0.0' });
    await v.agent.whenIdle();
    assert.equal(
      (await campaignUpdate('bundle-cancel', vin))?.status,
      'cancelled',
      'the stand-down stays cancelled',
    );
    await v.close();
  });

  it('asks the driver through the head unit before a consent bundle downloads anything: declined ends it, accepted installs it', async () => {
    const consent = withConditions({
      consent: { deadline_seconds: 3600, max_postponements: 1, postpone_seconds: 600 },
      release_notes: 'Gateway, body and infotainment 2.0.0',
    });
    const car = async () => {
      const vin = nextVin();
      const { dir, v } = await bundleVehicle(vin);
      const server = await startHeadUnitServer(v.agent, { socket: join(dir, 'head-unit.sock') });
      ac.track(() => server.close());
      await untilInventory(ac, vin, '1.0.0');
      return { vin, dir, v, client: new HeadUnitClient({ socket: server.address }) };
    };
    const yes = await car();
    const no = await car();
    await startBundleCampaign(ac, 'bundle-consent-yes', 'body-2-0', [yes.vin], consent);
    await startBundleCampaign(ac, 'bundle-consent-no', 'body-2-0', [no.vin], consent);
    for (const c of [yes, no]) {
      await c.v.events.waitFor(
        (e) => e.type === 'consent' && e.decision === 'ask',
        30_000,
        'the driver asked',
      );
    }
    // What the driver sees: the whole bundle, its notes, the question; nothing downloaded meanwhile.
    const view = (await yes.client.view()).pending;
    assert.deepEqual(
      [view?.version, view?.ecus, view?.release_notes, view?.phase, view?.consent?.postponements_left],
      ['2.0.0', ['gw', 'bcm', 'ivi'], 'Gateway, body and infotainment 2.0.0', 'consent_asking', 1],
    );
    await waitUntil(
      async () => (await campaignUpdate('bundle-consent-yes', yes.vin))?.status === 'awaiting_consent',
      20_000,
      'the backend shows the car waiting for its driver',
    );
    await yes.client.postpone();
    assert.equal((await yes.client.view()).pending?.phase, 'consent_postponed');
    await waitUntil(
      async () => (await campaignUpdate('bundle-consent-yes', yes.vin))?.status === 'postponed',
      20_000,
      'the backend shows the postponement',
    );
    await sleep(300);
    assert.deepEqual(
      [...requestOffsets(yes.v), ...requestOffsets(no.v)],
      [],
      'nothing downloaded before consent',
    );

    await no.client.decline();
    const declined = await no.v.events.outcome('2.0.0', 30_000);
    assert.equal(declined.status, 'declined', declined.reason);
    assert.deepEqual(slotVersions(no.dir), { gw: '1.0.0', bcm: '1.0.0', ivi: '1.0.0' });
    assert.deepEqual(requestOffsets(no.v), []);
    await waitUntil(
      async () => (await campaignUpdate('bundle-consent-no', no.vin))?.status === 'declined',
      20_000,
      'the backend records the decline',
    );

    // A restart while postponed: the agent runs the bundle again and keeps the driver's answer (not asked again).
    await yes.v.close();
    const again = await startAgent(ac, yes.vin, yes.dir, { ecus: ECUS, factoryImage: factoryImageOf });
    const server = await startHeadUnitServer(again.agent, { socket: join(yes.dir, 'head-unit-2.sock') });
    ac.track(() => server.close());
    const client = new HeadUnitClient({ socket: server.address });
    await waitUntil(
      async () => (await client.view()).pending !== null,
      30_000,
      'the bundle back after the restart',
    );
    const kept = (await client.view()).pending;
    assert.deepEqual([kept?.phase, kept?.consent?.postponements_left], ['consent_postponed', 0]);
    assert.equal(again.events.events.filter((e) => e.type === 'consent' && e.decision === 'ask').length, 0);

    await client.accept();
    const outcome = await again.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertAllRun(yes.dir, f, '2.0.0');
    assert.equal((await client.view()).pending, null);
    await assertEnded(again, yes.dir, 'bundle-consent-yes', yes.vin);
    await again.close();
    await no.v.close();
  });

  it('a member download pauses when the car moves onto a metered link and resumes from its checkpoint after', async () => {
    const members = await resumableBundleOf(ac);
    const vin = nextVin();
    let network: 'metered' | 'unmetered' = 'unmetered';
    const { dir, v } = await bundleVehicle(vin, {
      conditions: { network: () => network, recheckMs: 100 },
      // Paced so the switch lands mid-member; a checkpoint at every chunk, so the resume shows to the byte.
      download: {
        backoff: { baseMs: 50, maxMs: 500 },
        minBytesPerSecond: 0,
        maxBytesPerSecond: 256 * KiB,
        checkpointIntervalMs: 0,
      },
    });
    await startBundleCampaign(ac, 'bundle-metered', 'body-3-0', [vin], {
      ...withConditions({ network: 'unmetered' }),
    });
    await v.events.waitFor(
      (e) =>
        e.type === 'bundle_progress' &&
        e.ecu === 'bcm' &&
        e.phase === 'downloading' &&
        (e.percent ?? 0) >= 40,
      60_000,
      'the second member half downloaded',
    );
    network = 'metered';
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /unmetered network/.test(e.reason),
      20_000,
      'the member download to pause',
    );
    const pausedAt = requestOffsets(v).length;
    const resume = JSON.parse(readFileSync(join(dir, 'bundle', 'members', 'resume.json'), 'utf8')) as {
      runs: number;
      verified: Record<string, number>;
    };
    const verified = resume.verified[members[1]!.signed.manifest.sha256] ?? 0;
    await sleep(1000);
    assert.equal(requestOffsets(v).length, pausedAt, 'no request on the metered link');
    assert.ok(verified >= 256 * KiB && verified < MiB, `bcm paused at ${verified} verified bytes`);
    assert.equal(resume.runs, 0, 'a pause spends none of the download budget');

    network = 'unmetered';
    const outcome = await v.events.outcome('3.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertRuns(dir, members, '3.0.0');
    // The bcm went on from its last verified chunk; only the ivi started from zero after the pause.
    const after = requestOffsets(v).slice(pausedAt);
    assert.equal(after[0], verified, `requests after the pause: ${after.join(', ')}`);
    assert.deepEqual(after.slice(1), [0]);
    await assertEnded(v, dir, 'bundle-metered', vin);
    await v.close();
  });
});
