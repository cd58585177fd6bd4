/**
 * Multi-ECU bundles end to end against a private local cloud (real gateway, lambdas, DynamoDB and S3 emulators,
 * MQTT over mutual TLS): a vehicle of three ECUs (gateway, body controller, infotainment) is offered an OEM-signed
 * bundle by a campaign, fetches it and its members over HTTPS, and installs all or nothing. Failures on the
 * vehicle (a member's health check, a power cut between activations, a bootloader giving a trial up) end with every
 * ECU on its old image; offers a compromised backend makes of part of a bundle or of members from elsewhere are
 * refused before anything is downloaded. A member download cut mid-way, or stopped by a restart, resumes after its
 * verified chunks (the bytes the S3 emulator served say so).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { signBundle } from '../../protocol/bundle.js';
import type { VehicleAgent } from '../../vehicle/agent.js';
import { HeadUnitClient } from '../../vehicle/head-unit-client.js';
import { startHeadUnitServer } from '../../vehicle/head-unit-server.js';
import { FileSlotInstaller } from '../../vehicle/installer.js';
import { ecuDir } from '../../vehicle/setup.js';
import { StaticVehicleState } from '../../vehicle/vehicle-state.js';
import {
  type AgentCloud,
  activeSlot,
  backendVehicle,
  downloadsLeft,
  type EventLog,
  type PublishedRelease,
  publishRelease,
  readAgentState,
  registerAgentVehicle,
  sha256,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';
import {
  assertAllRun,
  type BundleFixture,
  bundleOf,
  ECUS,
  factoryImageOf,
  publishBundles,
  publishForgedBundleOffer,
  slotVersions,
  startBundleCampaign,
  untilInventory,
} from '../support/bundles.js';
import { patched, proxyToS3, textImage, transportVia } from '../support/delta-vehicle.js';

let ac: AgentCloud;
let f: BundleFixture;
const HOOK_TIMEOUT = { timeout: 120_000 };
let vinSeq = 0;
const nextVin = () => `1HGCM82633A${String(500_000 + ++vinSeq)}`;

before(async () => {
  ac = await startAgentCloud();
  f = await publishBundles(ac);
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

type Overrides = Parameters<typeof startAgent>[3];

async function bundleVehicle(vin: string, overrides: Overrides = {}) {
  const dir = await registerAgentVehicle(ac, vin, ECUS);
  const v = await startAgent(ac, vin, dir, { ecus: ECUS, factoryImage: factoryImageOf, ...overrides });
  await v.events.waitFor((e) => e.type === 'connection' && e.connected, 15_000, 'MQTT connection');
  return { dir, v };
}

async function campaignUpdate(id: string, vin: string) {
  const res = await ac.operator.call('GET', `/campaigns/${id}/vehicles?wave=0`);
  assert.equal(res.status, 200, res.raw.toString());
  return (res.json.vehicles as { vin: string; status: string; reason?: string }[]).find((x) => x.vin === vin);
}

const KiB = 1024;
const MiB = 1024 * KiB;
let resumable: Promise<PublishedRelease[]> | undefined;

/** Bundle body-3-0: members of 1 MiB of random bytes (nothing to compress or reuse: bytes served = bytes fetched). */
function resumableBundle(): Promise<PublishedRelease[]> {
  resumable ??= (async () => {
    const members: PublishedRelease[] = [];
    for (const e of ECUS) {
      members.push(
        await publishRelease(ac, {
          version: '3.0.0',
          ecu: e.ecu,
          hardwareIds: [e.hardware_id],
          releaseId: `${e.ecu}-3.0.0`,
          size: MiB,
        }),
      );
    }
    const signed = await signBundle(
      bundleOf(
        'body-3-0',
        '3.0.0',
        members.map((p) => p.signed),
      ),
      [ac.releaseKey.signer],
    );
    const res = await ac.operator.call('POST', '/bundles', signed);
    assert.equal(res.status, 201, res.raw.toString());
    return members;
  })();
  return resumable;
}

function assertRuns(dir: string, members: readonly PublishedRelease[], version: string): void {
  ECUS.forEach((e, i) => {
    const slot = activeSlot(dir, e.ecu);
    assert.equal(slot.version, version, `${e.ecu} runs ${slot.version}`);
    assert.equal(slot.contentSha256, sha256(members[i]!.image), `${e.ecu} image`);
  });
}

/** Where each image request of the agent started. */
function requestOffsets(v: { events: EventLog }): number[] {
  return v.events.events.flatMap((e) => (e.type === 'request' ? [e.offset] : []));
}

/** The resumable bundle, a fault proxy in front of the S3 emulator, the image transport through it, a fresh VIN. */
async function resumeSetup() {
  const members = await resumableBundle();
  const proxy = await proxyToS3(ac);
  const transport = transportVia(ac, proxy);
  ac.track(() => transport.close());
  return { members, proxy, transport, vin: nextVin() };
}

/** The campaign has the vehicle completed, and no member download is left once the bundle has its outcome. */
async function assertEnded(v: { agent: VehicleAgent }, dir: string, campaign: string, vin: string) {
  await v.agent.whenIdle();
  assert.deepEqual(downloadsLeft(dir), []);
  assert.ok(!existsSync(join(dir, 'bundle', 'members')), 'the member downloads are removed');
  assert.equal((await campaignUpdate(campaign, vin))?.status, 'completed');
}

/** Starts an agent whose hook kills it before `step` of `ecu`; answers once the power is cut. */
async function cutPowerBefore(step: string, ecu: string) {
  const vin = nextVin();
  let agent: VehicleAgent | undefined;
  let cut = false;
  const { dir, v } = await bundleVehicle(vin, {
    hooks: {
      beforeBundleStep: (s, info) => {
        if (s !== step || info.ecu !== ecu) return;
        agent?.kill();
        cut = true;
        return new Promise<void>(() => {}); // the power is off: nothing after this point runs
      },
    },
  });
  agent = v.agent;
  return { vin, dir, v, untilCut: () => waitUntil(() => cut, 60_000, `power cut before ${step} ${ecu}`) };
}

describe('multi-ECU bundles, all or nothing', { timeout: 600_000 }, () => {
  it('installs a bundle on all three ECUs through a campaign; backend and vehicle agree on every version', async () => {
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin);
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-happy', 'body-2-0', [vin]);
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(outcome.update_id, 'campaign#bundle-happy');
    assertAllRun(dir, f, '2.0.0');
    // Per-ECU progress: every member was downloaded, activated, checked healthy and committed, in install order.
    for (const phase of ['downloaded', 'activated', 'healthy', 'committed']) {
      const order = v.events.events
        .filter((e) => e.type === 'bundle_progress' && e.phase === phase)
        .map((e) => (e as { ecu: string }).ecu);
      assert.deepEqual(order, ['gw', 'bcm', 'ivi'], phase);
    }
    await v.agent.whenIdle();
    await untilInventory(ac, vin, '2.0.0');
    const update = await campaignUpdate('bundle-happy', vin);
    assert.equal(update?.status, 'completed');
    // The outcome names every ECU's version; it is what `ota vehicles history` shows. (Per-ECU phase reports go
    // out on MQTT as they happen; on a install this quick they may reach the backend after the outcome, which
    // then ignores them as late.)
    const history = (await ac.operator.call('GET', `/vehicles/${vin}/history`)).json;
    assert.match(JSON.stringify(history), /installed: gw 2\.0\.0, bcm 2\.0\.0, ivi 2\.0\.0/);
    await v.close();
  });

  it("one member's failing health check returns all three ECUs to their old versions and names it", async () => {
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin, {
      healthCheck: (c) => !(c.ecu === 'bcm' && c.version === '2.0.0'),
    });
    await startBundleCampaign(ac, 'bundle-unhealthy', 'body-2-0', [vin]);
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'rolled_back', outcome.reason);
    assert.match(outcome.reason ?? '', /member bcm: health check of bcm 2\.0\.0 failed/);
    assertAllRun(dir, f, '1.0.0');
    await v.agent.whenIdle();
    const update = await campaignUpdate('bundle-unhealthy', vin);
    assert.equal(update?.status, 'rolled_back');
    await v.close();
  });

  it('a power cut between the second and third activation recovers to all-old on restart', async () => {
    const cut = await cutPowerBefore('activate', 'ivi');
    await startBundleCampaign(ac, 'bundle-power-cut', 'body-2-0', [cut.vin]);
    await cut.untilCut();
    // Two ECUs run their new image on trial, the third its old one: a mix, until the restart settles it.
    assert.deepEqual(slotVersions(cut.dir), { gw: '2.0.0', bcm: '2.0.0', ivi: '1.0.0' });
    const again = await startAgent(ac, cut.vin, cut.dir, { ecus: ECUS, factoryImage: factoryImageOf });
    const outcome = await again.events.outcome('2.0.0', 60_000);
    assert.equal(outcome.status, 'rolled_back', outcome.reason);
    assertAllRun(cut.dir, f, '1.0.0');
    await again.agent.whenIdle();
    assert.equal((await campaignUpdate('bundle-power-cut', cut.vin))?.status, 'rolled_back');
    assert.deepEqual(readAgentState(cut.dir).inbox, [], 'the offer is settled, not retried');
    await again.close();
  });

  it('an unconfirmed slot whose boots run out is given up, and the whole bundle with it', async () => {
    // Every member passed its health check and the bundle was decided; the power goes before the confirmations.
    const cut = await cutPowerBefore('commit', 'gw');
    await startBundleCampaign(ac, 'bundle-boot-budget', 'body-2-0', [cut.vin]);
    await cut.untilCut();
    assert.deepEqual(slotVersions(cut.dir), { gw: '2.0.0', bcm: '2.0.0', ivi: '2.0.0' });
    // The vehicle resets a few times before the agent runs again: the body controller's bootloader spends the
    // trial's boots, then switches back to its old slot on its own.
    const bcm = new FileSlotInstaller({
      dir: ecuDir(cut.dir, 'bcm'),
      ecu: 'bcm',
      factory: { version: '1.0.0', image: factoryImageOf({ ecu: 'bcm' }) },
    });
    let gaveUp: string | undefined;
    for (let boot = 0; boot < 10 && !gaveUp; boot++) gaveUp = (await bcm.boot()).gaveUp?.version;
    assert.equal(gaveUp, '2.0.0', 'the bootloader gave the unconfirmed 2.0.0 up');
    assert.deepEqual(slotVersions(cut.dir), { gw: '2.0.0', bcm: '1.0.0', ivi: '2.0.0' });
    const again = await startAgent(ac, cut.vin, cut.dir, { ecus: ECUS, factoryImage: factoryImageOf });
    const outcome = await again.events.outcome('2.0.0', 60_000);
    assert.equal(outcome.status, 'rolled_back', outcome.reason);
    assert.match(outcome.reason ?? '', /member bcm: bcm fell back to 1\.0\.0/);
    assertAllRun(cut.dir, f, '1.0.0');
    await again.close();
  });

  it('refuses a partial bundle and a mix-and-match offer from a compromised backend, installing nothing', async () => {
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin);
    const next = (ecu: string) => f.releases[ecu]!['2.0.0']!.signed;
    // Only two of the three members: the infotainment unit would run 1.0.0 against a 2.0.0 gateway.
    await publishForgedBundleOffer(ac, vin, 'forged-partial', f.next, [next('gw'), next('bcm')]);
    const partial = await v.events.waitFor(
      (e) => e.type === 'outcome' && e.update_id === 'forged-partial',
      60_000,
      'partial bundle refused',
    );
    assert.equal((partial as { status: string }).status, 'rejected');
    assert.match((partial as { reason: string }).reason, /bundle_incomplete/);
    // All three members, but the infotainment one from another bundle (its 1.0.0 release): mix and match.
    await publishForgedBundleOffer(ac, vin, 'forged-mix', f.next, [
      next('gw'),
      next('bcm'),
      f.releases.ivi!['1.0.0']!.signed,
    ]);
    const mixed = await v.events.waitFor(
      (e) => e.type === 'outcome' && e.update_id === 'forged-mix',
      60_000,
      'mix and match refused',
    );
    assert.equal((mixed as { status: string }).status, 'rejected');
    assert.match((mixed as { reason: string }).reason, /bundle_mix_and_match/);
    assert.ok(
      !v.events.events.some((e) => e.type === 'bundle_progress' || e.type === 'request'),
      'nothing was downloaded or written',
    );
    assertAllRun(dir, f, '1.0.0');
    const backend = await backendVehicle(ac, vin);
    assert.ok(backend.ecus.every((e) => e.version === '1.0.0'));
    await v.close();
  });

  it('a connection cut mid-member resumes after its verified chunks and the bundle installs; verified bytes are not fetched again', async () => {
    const { members, proxy, transport, vin } = await resumeSetup();
    // The downloader gives up at the cut (one attempt, the link gone for a second): the bundle's next download run
    // resumes the member from its checkpoint.
    const { dir, v } = await bundleVehicle(vin, {
      downloadTransport: transport,
      download: { maxAttempts: 1, minBytesPerSecond: 0, backoff: { baseMs: 50, maxMs: 500 } },
      budgets: { downloadRuns: 20 },
    });
    proxy.cutAfter(MiB + 768 * KiB, 1000); // three quarters into the second member (bcm)
    await startBundleCampaign(ac, 'bundle-cut', 'body-3-0', [vin]);
    const outcome = await v.events.outcome('3.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(proxy.cuts, 1);
    assertRuns(dir, members, '3.0.0');
    // One request from the start per member; the bcm's next ones start after its verified chunks.
    const offsets = requestOffsets(v);
    assert.equal(offsets.filter((o) => o === 0).length, 3, `requests at ${offsets.join(', ')}`);
    const resumedAt = offsets.find((o) => o > 0) ?? 0;
    assert.ok(resumedAt >= 512 * KiB, `bcm resumed at ${resumedAt}`);
    assert.equal(resumedAt % members[1]!.signed.manifest.chunk_size, 0, 'at a chunk boundary');
    // Bytes the S3 emulator served through the proxy (TLS, headers and the cut chunk's tail as slack): starting the
    // bcm again from zero would have cost its first ~700 KiB a second time.
    assert.ok(
      proxy.bytesToClient < 3 * MiB + 192 * KiB,
      `served ${proxy.bytesToClient} for 3 MiB of members`,
    );
    await assertEnded(v, dir, 'bundle-cut', vin);
    await v.close();
  });

  it('a bundle campaign with a maintenance window and unmetered-only downloads: nothing fetched on a metered link, nothing written outside the window', async () => {
    const vin = nextVin();
    let network: 'metered' | 'unmetered' = 'metered';
    let clock = Date.parse('2026-12-05T12:00:00Z');
    const { dir, v } = await bundleVehicle(vin, {
      conditions: { network: () => network, now: () => clock, timeZone: 'UTC', recheckMs: 100 },
    });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-window', 'body-2-0', [vin], {
      policy: {
        waves: [100],
        skip_canary: true,
        retry_budget: 0,
        conditions: { network: 'unmetered', maintenance_window: { start: '02:00', end: '04:00' } },
      },
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
      policy: {
        waves: [100],
        skip_canary: true,
        retry_budget: 0,
        conditions: { maintenance_window: { start: '02:00', end: '04:00' } },
      },
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
      policy: {
        waves: [100],
        skip_canary: true,
        retry_budget: 0,
        conditions: { maintenance_window: { start: '02:00', end: '04:00' } },
      },
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
    const policy = {
      waves: [100],
      skip_canary: true,
      retry_budget: 0,
      conditions: {
        consent: { deadline_seconds: 3600, max_postponements: 1, postpone_seconds: 600 },
        release_notes: 'Gateway, body and infotainment 2.0.0',
      },
    };
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
    await startBundleCampaign(ac, 'bundle-consent-yes', 'body-2-0', [yes.vin], { policy });
    await startBundleCampaign(ac, 'bundle-consent-no', 'body-2-0', [no.vin], { policy });
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
    const members = await resumableBundle();
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
      policy: { waves: [100], skip_canary: true, retry_budget: 0, conditions: { network: 'unmetered' } },
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

  it("compressed members are built from each ECU's installed image; the campaign counts the bytes the vehicle saved", async () => {
    // Each ECU runs a 400 KiB image of its own; bundle 4.0.0 carries a patch of each, stored compressed, the
    // gateway's with a precomputed delta from the image it runs.
    const installed = (e: { ecu: string }) => textImage(400 * KiB, `installed ${e.ecu}`);
    const members: PublishedRelease[] = [];
    for (const e of ECUS) {
      members.push(
        await publishRelease(ac, {
          version: '4.0.0',
          ecu: e.ecu,
          hardwareIds: [e.hardware_id],
          releaseId: `${e.ecu}-4.0.0`,
          image: patched(installed(e)),
          compressed: true,
          ...(e.ecu === 'gw' ? { deltaFrom: [{ version: '1.0.0', image: installed(e) }] } : {}),
        }),
      );
    }
    const signed = await signBundle(
      bundleOf(
        'body-4-0',
        '4.0.0',
        members.map((p) => p.signed),
      ),
      [ac.releaseKey.signer],
    );
    const res = await ac.operator.call('POST', '/bundles', signed);
    assert.equal(res.status, 201, res.raw.toString());
    const proxy = await proxyToS3(ac);
    const transport = transportVia(ac, proxy);
    ac.track(() => transport.close());
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin, { factoryImage: installed, downloadTransport: transport });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-reuse', 'body-4-0', [vin]);
    const outcome = await v.events.outcome('4.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertRuns(dir, members, '4.0.0');
    // Only the frames the installed images lack were served: a fraction of the compressed objects.
    const objects = members.reduce((n, p) => n + p.signed.manifest.compression!.object_size, 0);
    const images = members.reduce((n, p) => n + p.image.length, 0);
    assert.ok(
      proxy.bytesToClient < objects * 0.4,
      `served ${proxy.bytesToClient}, compressed objects ${objects}`,
    );
    const paths = v.events.events.flatMap((e) =>
      e.type === 'downloaded' ? [[e.ecu, e.path, e.fallback]] : [],
    );
    assert.deepEqual(paths, [
      ['gw', 'delta', undefined],
      ['bcm', 'chunk-reuse', undefined],
      ['ivi', 'chunk-reuse', undefined],
    ]);
    await assertEnded(v, dir, 'bundle-reuse', vin);
    // The outcome report carried what the members cost; the campaign sums it (bytes saved across the fleet).
    const campaign = await ac.operator.call('GET', '/campaigns/bundle-reuse');
    assert.equal(campaign.status, 200, campaign.raw.toString());
    const t = campaign.json.transfer as Record<string, number>;
    assert.equal(t.downloads, 1);
    assert.equal(t.bytes_image, images);
    assert.ok(t.bytes_reused! > images * 0.7, `reused ${t.bytes_reused} of ${images}`);
    assert.ok(t.bytes_fetched! > 0 && t.bytes_fetched! <= proxy.bytesToClient, `fetched ${t.bytes_fetched}`);
    assert.equal(t.bytes_saved, images - t.bytes_fetched!);
    await v.close();
  });

  it('an agent whose power is cut mid-member and started again on its state resumes the member from its checkpoint', async () => {
    const { members, proxy, transport, vin } = await resumeSetup();
    const chunk = members[1]!.signed.manifest.chunk_size;
    let agent: VehicleAgent | undefined;
    let cut = false;
    const { dir, v: first } = await bundleVehicle(vin, {
      downloadTransport: transport,
      // A resume point at every verified chunk: the cut below leaves one at a known place.
      download: { checkpointIntervalMs: 0, minBytesPerSecond: 0 },
      hooks: {
        onChunkVerified: ({ ecu, verifiedBytes }) => {
          if (ecu !== 'bcm' || verifiedBytes !== 512 * KiB) return;
          agent?.kill();
          cut = true;
          // The power is off: the download ends here (a hook that never returned would leave its timers running).
          throw new Error('power cut');
        },
      },
    });
    agent = first.agent;
    await startBundleCampaign(ac, 'bundle-restart', 'body-3-0', [vin]);
    await waitUntil(() => cut, 60_000, 'the power cut half way through bcm');
    const kept = JSON.parse(readFileSync(join(dir, 'bundle', 'members', 'resume.json'), 'utf8')) as {
      verified: Record<string, number>;
    };
    const verifiedBcm = kept.verified[members[1]!.signed.manifest.sha256] ?? 0;
    assert.equal(
      verifiedBcm,
      512 * KiB - chunk,
      'the resume point of the last chunk checkpointed before the cut',
    );
    assert.ok(!first.events.events.some((e) => e.type === 'outcome'), 'no outcome before the restart');
    // The cut connection's last bytes have reached the proxy's count.
    let servedFirst = -1;
    await waitUntil(
      async () => {
        const before = proxy.bytesToClient;
        await sleep(200);
        if (before === proxy.bytesToClient) servedFirst = before;
        return servedFirst >= 0;
      },
      10_000,
      'the first run served',
    );

    const second = await startAgent(ac, vin, dir, {
      ecus: ECUS,
      factoryImage: factoryImageOf,
      downloadTransport: transport,
    });
    const outcome = await second.events.outcome('3.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertRuns(dir, members, '3.0.0');
    // The gateway image verified before the stop is checked on disk, not fetched; bcm goes on from its checkpoint.
    assert.deepEqual(requestOffsets(second), [verifiedBcm, 0], 'bcm from its checkpoint, then ivi');
    const servedSecond = proxy.bytesToClient - servedFirst;
    assert.ok(
      servedSecond < 2 * MiB - verifiedBcm + 64 * KiB,
      `the restarted agent was served ${servedSecond}`,
    );
    await assertEnded(second, dir, 'bundle-restart', vin);
    await second.close();
  });
});
