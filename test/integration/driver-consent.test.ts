/**
 * The driver in the loop (issue 16), end to end on a private local cloud: campaigns with conditions signed into
 * their offers, agents over mutual-TLS MQTT, and the head-unit API each agent serves on a Unix socket, driven by
 * the example client (vehicle/head-unit-client.ts). What the S3 emulator served shows that nothing is downloaded
 * before the driver accepts; an injected vehicle clock moves through the maintenance window and past a consent
 * deadline; a switchable network shows the unmetered-only policy.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentEvent } from '../../vehicle/agent.js';
import { HeadUnitClient, type HeadUnitError, type HeadUnitEvent } from '../../vehicle/head-unit-client.js';
import { type HeadUnitServer, startHeadUnitServer } from '../../vehicle/head-unit-server.js';
import type { CreateAgentOptions } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  flipStoredByte,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  s3ObjectFile,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';

let ac: AgentCloud;
let rel: PublishedRelease;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud();
  rel = await publishRelease(ac, { version: '3.0.1', size: 200 * 1024 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

/** Image bytes the S3 emulator has served for the release so far (publication reads it once to check it). */
const imageBytesServed = () => ac.cloud.s3ServedBytes(`/releases/${rel.signed.manifest.release_id}/`);

/** A registered agent with its head-unit API on a Unix socket, and the example client on it. */
async function vehicleWithHeadUnit(vin: string, overrides: Partial<CreateAgentOptions> = {}) {
  const dir = await registerAgentVehicle(ac, vin);
  const v = await startAgent(ac, vin, dir, { installEstimateSeconds: 300, ...overrides });
  const server: HeadUnitServer = await startHeadUnitServer(v.agent, { socket: join(dir, 'head-unit.sock') });
  ac.track(() => server.close());
  ac.track(() => v.close());
  await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
  return { ...v, dir, server, client: new HeadUnitClient({ socket: server.address }) };
}

async function campaign(id: string, vins: string[], conditions: Record<string, unknown>, extra = {}) {
  const created = await ac.operator.createCampaign({
    campaign_id: id,
    name: id,
    release_id: rel.signed.manifest.release_id,
    targets: { vins },
    policy: {
      waves: [100],
      skip_canary: true,
      halt_failure_count: 1,
      halt_min_outcomes: 1,
      conditions,
      ...extra,
    },
  });
  assert.equal(created.json.status, 'created', created.raw.toString());
  assert.equal((await ac.operator.call('POST', `/campaigns/${id}/start`, {})).status, 200);
}

const backendStatus = async (vin: string) => backendUpdate(await backendVehicle(ac, vin), '3.0.1')?.status;
const untilBackend = (vin: string, status: string) =>
  waitUntil(async () => (await backendStatus(vin)) === status, 20_000, `${vin} recorded ${status}`);

describe('driver consent, conditions and the head-unit API', { timeout: 240_000 }, () => {
  it('refuses invalid combinations of conditions with a clear 400', async () => {
    const bad = await ac.operator.call('POST', '/campaigns', {
      name: 'bad',
      release_id: rel.signed.manifest.release_id,
      targets: { vins: ['1HGCM82633A160099'] },
      policy: {
        conditions: { consent: { deadline_seconds: 600, max_postponements: 3, postpone_seconds: 300 } },
      },
    });
    assert.equal(bad.status, 400, bad.raw.toString());
    assert.equal(bad.json.error.code, 'invalid_conditions');
    assert.match(bad.json.error.message, /do not fit before the deadline/);
    const window = await ac.operator.call('POST', '/campaigns', {
      name: 'bad',
      release_id: rel.signed.manifest.release_id,
      targets: { vins: ['1HGCM82633A160099'] },
      policy: { conditions: { maintenance_window: { start: '02:00', end: '02:00' } } },
    });
    assert.equal(window.status, 400);
    assert.equal(window.json.error.code, 'invalid_conditions');
  });

  // A car that never answers (registered, never connected): the tick's deadline sweep must end its update expired.
  // Started here and checked by the last test, so its minute of consent time runs while the others do.
  const silentVin = '1HGCM82633A160009';
  it('offers a consent campaign to a car that never answers', async () => {
    await registerAgentVehicle(ac, silentVin);
    await campaign(
      'silent',
      [silentVin],
      { consent: { deadline_seconds: 60 } },
      { vehicle_timeout_seconds: 1 },
    );
    await untilBackend(silentVin, 'offered');
  });

  it('downloads nothing before accept; postpone asks again after its interval and stops at the limit; a decline is no failure', async () => {
    const a = await vehicleWithHeadUnit('1HGCM82633A160001');
    const b = await vehicleWithHeadUnit('1HGCM82633A160002');
    const published = imageBytesServed();
    const seen: HeadUnitEvent[] = [];
    const stop = a.client.events((e) => seen.push(e));
    ac.track(stop);
    await campaign('consent', [a.agent.vin, b.agent.vin], {
      consent: { deadline_seconds: 3600, max_postponements: 1, postpone_seconds: 2 },
      release_notes: 'Faster charging estimates.',
      install_minutes: 7,
    });

    for (const v of [a, b]) {
      await waitUntil(
        async () => (await v.client.view()).pending?.consent?.state === 'asking',
        // The offer goes through the pacer, the offers queue and a function instance: slow on a loaded machine.
        30_000,
        'asked',
      ).catch(async (err: Error) => {
        // Say where the offer stopped (campaign counts, the agent's last events) if it never reached the driver.
        const c = (await ac.operator.call('GET', '/campaigns/consent')).json;
        const last = JSON.stringify(v.events.events.slice(-6));
        throw new Error(
          `${err.message}: ${v.agent.vin}, campaign ${JSON.stringify(c.counts)}, events ${last}`,
        );
      });
      await untilBackend(v.agent.vin, 'awaiting_consent');
    }
    const view = await a.client.view();
    assert.deepEqual(
      {
        version: view.pending?.version,
        ecus: view.pending?.ecus,
        size: view.pending?.size,
        notes: view.pending?.release_notes,
        install: view.pending?.expected_install_seconds,
        park: view.pending?.must_park,
        left: view.pending?.consent?.postponements_left,
      },
      {
        version: '3.0.1',
        ecus: ['tcu'],
        size: 200 * 1024,
        notes: 'Faster charging estimates.',
        install: 420,
        park: true,
        left: 1,
      },
    );
    assert.equal(imageBytesServed() - published, 0, 'no image byte served while the drivers are asked');

    // A postpones: reported, asked again after 2 s, and no second postponement.
    await a.client.postpone();
    await untilBackend(a.agent.vin, 'postponed');
    await assert.rejects(a.client.postpone(), (e: HeadUnitError) => e.code === 'already_postponed');
    const asks = () => a.events.events.filter((e) => e.type === 'consent' && e.decision === 'ask').length;
    await waitUntil(async () => asks() === 2, 15_000, 'asked again after the postponement');
    await untilBackend(a.agent.vin, 'awaiting_consent');
    await assert.rejects(
      a.client.postpone(),
      (e: HeadUnitError) => e.status === 409 && e.code === 'postpone_limit',
    );
    assert.equal(imageBytesServed() - published, 0, 'still nothing served');

    // B declines: recorded, not a failure; A accepts and installs.
    await b.client.decline();
    assert.equal((await b.events.outcome('3.0.1')).status, 'declined');
    await untilBackend(b.agent.vin, 'declined');
    assert.match(
      (await b.client.view()).last_outcome?.message ?? '',
      /Update 3\.0\.1 declined; your car still runs 1\.0\.0/,
    );
    await a.client.accept();
    assert.equal((await a.events.outcome('3.0.1')).status, 'completed');
    const served = imageBytesServed() - published;
    assert.ok(served >= 200 * 1024, `the image was served after accept: ${served}`);
    assert.equal((await a.client.view()).last_outcome?.message, 'Update 3.0.1 installed');
    assert.ok(
      seen.some((e) => e.type === 'progress'),
      'progress streamed to the head unit',
    );
    assert.ok(
      seen.some((e) => e.type === 'outcome' && e.data.message === 'Update 3.0.1 installed'),
      'the outcome streamed with its message',
    );

    // Counted apart, no halt: the campaign completes with one install and one decline.
    await waitUntil(
      async () => (await ac.operator.call('GET', '/campaigns/consent')).json.status === 'completed',
      20_000,
      'the campaign to complete',
    );
    const c = (await ac.operator.call('GET', '/campaigns/consent')).json;
    assert.deepEqual(c.counts, { completed: 1, declined: 1 });
    assert.equal(c.waves[0].failed, 0);
  });

  it('ends expired, not failed, when the consent deadline passes (vehicle clock moved on)', async () => {
    let offset = 0;
    const v = await vehicleWithHeadUnit('1HGCM82633A160003', {
      conditions: { now: () => Date.now() + offset, recheckMs: 100 },
    });
    await campaign('deadline', [v.agent.vin], { consent: { deadline_seconds: 120 } });
    await waitUntil(
      async () => (await v.client.view()).pending?.consent?.state === 'asking',
      20_000,
      'asked',
    );
    offset = 121_000;
    assert.equal((await v.events.outcome('3.0.1')).status, 'expired');
    await untilBackend(v.agent.vin, 'expired');
    const c = (await ac.operator.call('GET', '/campaigns/deadline')).json;
    assert.equal(c.status === 'halted', false, 'an expired consent halts nothing');
    assert.equal(c.waves[0].failed, 0);
  });

  it('an absolute consent date: signed as the deadline, expired once the vehicle clock passes it', async () => {
    const refused = await ac.operator.createCampaign({
      campaign_id: 'deadline-past',
      name: 'deadline-past',
      release_id: rel.signed.manifest.release_id,
      targets: { vins: ['1HGCM82633A160010'] },
      policy: {
        waves: [100],
        skip_canary: true,
        conditions: { consent: { deadline_at: '2020-01-01T00:00:00Z' } },
      },
    });
    assert.equal(refused.status, 400, refused.raw.toString());
    assert.equal(refused.json.error.code, 'invalid_conditions');
    assert.match(refused.json.error.message, /not in the future/);

    let offset = 0;
    const v = await vehicleWithHeadUnit('1HGCM82633A160010', {
      conditions: { now: () => Date.now() + offset, recheckMs: 100 },
    });
    const date = new Date(Date.now() + 600_000).toISOString();
    // A week after each offer, but the date first.
    await campaign('deadline-at', [v.agent.vin], {
      consent: { deadline_at: date, deadline_seconds: 604_800 },
    });
    await waitUntil(
      async () => (await v.client.view()).pending?.consent?.state === 'asking',
      20_000,
      'asked',
    );
    assert.equal((await v.client.view()).pending?.consent?.deadline, date, 'the date is the signed deadline');
    offset = 601_000;
    assert.equal((await v.events.outcome('3.0.1')).status, 'expired');
    await untilBackend(v.agent.vin, 'expired');
  });

  it('installs only inside the maintenance window of the vehicle local time', async () => {
    // 12:00 UTC on the injected vehicle clock; the window is 02:00-04:00 in the vehicle's zone (UTC here).
    let now = Date.parse('2026-12-04T12:00:00Z');
    const v = await vehicleWithHeadUnit('1HGCM82633A160004', {
      conditions: { now: () => now, timeZone: 'UTC', recheckMs: 100 },
    });
    await campaign('window', [v.agent.vin], { maintenance_window: { start: '02:00', end: '04:00' } });
    const deferred = await v.events.waitFor(
      (e) => e.type === 'deferred' && /maintenance window/.test(e.reason),
      20_000,
      'the install to wait for the window',
    );
    assert.match((deferred as { reason: string }).reason, /02:00-04:00 \(local time; opens in 840 min\)/);
    assert.equal(v.agent.state?.current?.phase, 'verified', 'downloaded and verified, not installed');
    await sleep(500);
    assert.ok(!v.events.events.some((e) => e.type === 'outcome'), 'no install outside the window');
    now = Date.parse('2026-12-05T02:30:00Z');
    assert.equal((await v.events.outcome('3.0.1')).status, 'completed');
    await v.agent.whenIdle();
    assertVehicleRuns(v.dir, '3.0.1', rel.image);
  });

  it('does not start an install after the window closed while it waited for the car to be parked', async () => {
    let now = Date.parse('2026-12-04T02:30:00Z');
    let parked = false;
    const v = await vehicleWithHeadUnit('1HGCM82633A160007', {
      conditions: { now: () => now, timeZone: 'UTC', recheckMs: 100 },
      vehicleState: { read: async () => ({ parked, batteryPercent: 90 }) },
      safety: { pollMs: 100 },
    });
    await campaign('window-park', [v.agent.vin], { maintenance_window: { start: '02:00', end: '04:00' } });
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /park/i.test(e.reason),
      20_000,
      'the install to wait for the car to be parked, inside the window',
    );
    // The window closes while the car is driven; it is parked only afterwards.
    now = Date.parse('2026-12-04T04:30:00Z');
    parked = true;
    // Inside the window the car only waited to be parked: a deferral for the window comes after it closed.
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /maintenance window/.test(e.reason),
      20_000,
      'the install to wait for the next window',
    );
    assert.equal(v.agent.state?.current?.phase, 'verified', 'not installed outside the window');
    assert.ok(!v.events.events.some((e) => e.type === 'outcome'), 'no outcome outside the window');
    now = Date.parse('2026-12-05T02:10:00Z');
    assert.equal((await v.events.outcome('3.0.1')).status, 'completed');
    await v.agent.whenIdle();
    assertVehicleRuns(v.dir, '3.0.1', rel.image);
  });

  it('an unmetered-only campaign waits until the network is unmetered', async () => {
    let network: 'metered' | 'unmetered' = 'metered';
    const v = await vehicleWithHeadUnit('1HGCM82633A160005', {
      conditions: { network: () => network, recheckMs: 100 },
    });
    const before = imageBytesServed();
    await campaign('network', [v.agent.vin], { network: 'unmetered' });
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /unmetered network/.test(e.reason),
      20_000,
      'the download to wait for an unmetered network',
    );
    await sleep(500);
    assert.equal(imageBytesServed(), before, 'nothing downloaded on the metered link');
    network = 'unmetered';
    assert.equal((await v.events.outcome('3.0.1')).status, 'completed');
    assert.ok(imageBytesServed() > before);
  });

  it('an unmetered-only download pauses when the car moves onto a metered link, and resumes after', async () => {
    const big = await publishRelease(ac, { version: '3.0.4', size: 1024 * 1024 });
    const served = () => ac.cloud.s3ServedBytes(`/releases/${big.signed.manifest.release_id}/`);
    let network: 'metered' | 'unmetered' = 'unmetered';
    const v = await vehicleWithHeadUnit('1HGCM82633A160008', {
      conditions: { network: () => network, recheckMs: 100 },
      // Paced so the switch lands mid-download; a checkpoint at every chunk, so a resume shows to the byte.
      download: {
        backoff: { baseMs: 50, maxMs: 500 },
        minBytesPerSecond: 0,
        maxBytesPerSecond: 128 * 1024,
        checkpointIntervalMs: 0,
      },
    });
    const created = await ac.operator.createCampaign({
      campaign_id: 'metered-switch',
      name: 'metered-switch',
      release_id: big.signed.manifest.release_id,
      targets: { vins: [v.agent.vin] },
      policy: { waves: [100], skip_canary: true, conditions: { network: 'unmetered' } },
    });
    assert.equal(created.json.status, 'created', created.raw.toString());
    assert.equal((await ac.operator.call('POST', '/campaigns/metered-switch/start', {})).status, 200);
    await v.events.waitFor(
      (e) => e.type === 'progress' && e.phase === 'downloading' && e.bytes >= 512 * 1024,
      60_000,
      'half the image downloaded',
    );
    network = 'metered';
    await v.events.waitFor(
      (e) => e.type === 'deferred' && /unmetered network/.test(e.reason),
      20_000,
      'the download to pause for an unmetered network',
    );
    const requests = () =>
      v.events.events.filter(
        (e): e is Extract<AgentEvent, { type: 'request' }> =>
          e.type === 'request' && e.update_id === 'campaign#metered-switch',
      );
    const pausedAt = requests().length;
    const verified = v.agent.state?.current?.verified_bytes ?? 0;
    await sleep(1000);
    assert.equal(requests().length, pausedAt, 'no request on the metered link');
    assert.equal(v.agent.state?.current?.phase, 'downloading', 'paused, not ended');
    assert.ok(verified >= 512 * 1024 && verified < 1024 * 1024, `paused at ${verified} verified bytes`);
    network = 'unmetered';
    assert.equal((await v.events.outcome('3.0.4', 60_000)).status, 'completed');
    await v.agent.whenIdle();
    assertVehicleRuns(v.dir, '3.0.4', big.image);
    // Resumed from the last verified chunk, not from the start.
    const after = requests().slice(pausedAt);
    assert.ok(after.length >= 1, 'the download went on');
    assert.ok(
      after.every((r) => r.offset >= verified),
      `requests after the pause start at ${after.map((r) => r.offset).join(', ')}, verified ${verified}`,
    );
    assert.ok(served() > 0);
  });

  it('a failed update is retried from the head-unit API and succeeds', async () => {
    const retryRel = await publishRelease(ac, { version: '3.0.2', size: 128 * 1024 });
    const file = s3ObjectFile(ac, retryRel.signed.manifest);
    flipStoredByte(file, 50_000);
    const v = await vehicleWithHeadUnit('1HGCM82633A160006');
    await publishOffer(ac, v.agent.vin, await initiateOffer(v, '3.0.2'));
    assert.equal((await v.events.outcome('3.0.2')).status, 'verification_failed');
    const failed = (await v.client.view()).last_outcome;
    assert.equal(
      failed?.message,
      'Update failed: the download was damaged; your car still runs 1.0.0; retry?',
    );
    assert.equal(failed?.retry_possible, true);

    flipStoredByte(file, 50_000); // storage repaired
    await v.agent.whenIdle();
    assert.deepEqual(await v.client.retry(), { version: '3.0.2' });
    await v.events.waitFor(
      (e) => e.type === 'outcome' && e.firmware_version === '3.0.2' && e.status === 'completed',
      30_000,
      'the retried update to complete',
    );
    await v.agent.whenIdle();
    assertVehicleRuns(v.dir, '3.0.2', retryRel.image);
    const done = (await v.client.view()).last_outcome;
    assert.equal(done?.message, 'Update 3.0.2 installed');
    assert.equal(done?.retry_possible, false);
    await assert.rejects(
      v.client.retry(),
      (e: HeadUnitError) => e.status === 409 && e.code === 'nothing_to_retry',
    );
  });

  it('ends the silent car expired by the deadline sweep, not timed out, and counts no failure', async () => {
    await waitUntil(
      async () => (await backendStatus(silentVin)) === 'expired',
      90_000,
      'the sweep to expire it',
    );
    const c = (await ac.operator.call('GET', '/campaigns/silent')).json;
    assert.deepEqual(c.counts, { expired: 1 });
    assert.equal(c.waves[0].failed, 0);
    await waitUntil(
      async () => (await ac.operator.call('GET', '/campaigns/silent')).json.status === 'completed',
      20_000,
      'the campaign to complete',
    );
  });
});
