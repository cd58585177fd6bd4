/**
 * Power cuts and unsafe moments: an agent process SIGKILLed mid-download resumes after its last verified chunk;
 * an agent cut off mid-install comes back to either the old version (and installs again) or, when the new slot
 * was switched to but never confirmed, switches back and says so; a failing health check rolls back; an unsafe
 * vehicle state defers installation until it is safe. Every test ends with the vehicle's slots and state file and
 * with the backend's view.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import type { InstallStep, VehicleAgent } from '../../vehicle/agent.js';
import { createVehicleAgent } from '../../vehicle/setup.js';
import { StaticVehicleState } from '../../vehicle/vehicle-state.js';
import {
  type AgentCloud,
  activeSlot,
  agentOptions,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  FACTORY_IMAGE,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  readAgentState,
  registerAgentVehicle,
  resignAssignment,
  sha256,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';

const KiB = 1024;
const MiB = 1024 * KiB;
let ac: AgentCloud;
let rel: PublishedRelease;
let vinSerial = 0;
const nextVin = () => `1HGCM82633A4${String(++vinSerial).padStart(5, '0')}`;
const children: ChildProcess[] = [];

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud();
  rel = await publishRelease(ac, { version: '2.0.0', size: 2 * MiB + 77 });
}, HOOK_TIMEOUT);

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await ac?.stop();
}, HOOK_TIMEOUT);

async function connected(v: {
  events: {
    waitFor: (
      p: (e: { type: string; connected?: boolean }) => boolean,
      t: number,
      w: string,
    ) => Promise<unknown>;
  };
}) {
  await v.events.waitFor((e) => e.type === 'connection' && e.connected === true, 10_000, 'MQTT connection');
}

/** A new vehicle is offered 2.0.0 and loses power just before the given install step (the agent is killed). */
async function powerCutBefore(cutAt: InstallStep): Promise<{ vin: string; dir: string }> {
  const vin = nextVin();
  const dir = await registerAgentVehicle(ac, vin);
  let first: VehicleAgent | undefined;
  let cutDone = false;
  const v1 = await startAgent(ac, vin, dir, {
    hooks: {
      beforeInstallStep: (step) => {
        if (step !== cutAt) return;
        first?.kill();
        cutDone = true;
        return new Promise<void>(() => {}); // the process is gone: nothing after this point runs
      },
    },
  });
  first = v1.agent;
  await connected(v1);
  await publishOffer(ac, vin, await initiateOffer(v1, '2.0.0'));
  await waitUntil(() => cutDone, 30_000, 'the power cut');
  return { vin, dir };
}

describe('vehicle agent: power cuts, failed installs and unsafe moments', { timeout: 240_000 }, () => {
  it('SIGKILLed mid-download (a real process), resumes after the last verified chunk on restart', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    // The backend has the update pending; the agent process finds it by polling (no MQTT) and starts downloading.
    const setup = await createVehicleAgent(agentOptions(ac, vin, dir, { mqttUrl: undefined }));
    await setup.api.initiate('2.0.0');
    await setup.close();

    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'bin/vehicle-agent.ts',
        ...['--vin', vin, '--state-dir', dir, '--api', ac.cloud.endpoints.api, '--mqtt', 'none'],
        ...['--ca', ac.files.ca, '--release-key', ac.files.releaseKey, '--backend-key', ac.files.backendKey],
        ...['--poll-interval', '0.5', '--max-rate', String(512 * KiB), '--log-level', 'info'],
      ],
      { cwd: join(import.meta.dirname, '..', '..'), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.push(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await waitUntil(
      () => {
        if (child.exitCode !== null)
          throw new Error(`agent process exited early (${child.exitCode}): ${stderr}`);
        try {
          const s = readAgentState(dir);
          return s.current?.phase === 'downloading' && s.current.verified_bytes >= 512 * KiB;
        } catch {
          return false; // not created yet
        }
      },
      30_000,
      'the agent process to checkpoint half a megabyte',
    ).catch((err: Error) => {
      throw new Error(`${err.message}; agent stderr:\n${stderr.slice(-3000)}`);
    });
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const checkpoint = readAgentState(dir).current?.verified_bytes ?? 0;
    assert.ok(
      checkpoint >= 512 * KiB && checkpoint < rel.image.length,
      `killed mid-download at ${checkpoint}`,
    );
    assert.equal(checkpoint % (64 * KiB), 0, 'the checkpoint is a chunk boundary');
    assert.equal(activeSlot(dir).version, '1.0.0', 'nothing installed yet');

    const restarted = await startAgent(ac, vin, dir, { mqttUrl: undefined });
    try {
      const outcome = await restarted.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      const first = restarted.events.events.find((e) => e.type === 'request');
      assert.equal(
        first?.type === 'request' && first.offset,
        checkpoint,
        'the first request after restart starts at the checkpoint',
      );
      await restarted.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', rel.image);
      const backend = await backendVehicle(ac, vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
      assert.equal(backend.ecus[0]?.version, '2.0.0');
    } finally {
      await restarted.close();
    }
  });

  it('power cut after writing the inactive slot, before switching: restart keeps the old version, installs again', async () => {
    const { vin, dir } = await powerCutBefore('activate');

    const cut = readAgentState(dir);
    assert.equal(cut.current?.phase, 'installing', 'the state file says an install was running');
    const slot = activeSlot(dir);
    assert.equal(slot.version, '1.0.0', 'the old slot is still the active one');
    assert.equal(slot.contentSha256, sha256(FACTORY_IMAGE), 'and holds the old image');
    assert.equal(slot.state, 'committed');

    const v2 = await startAgent(ac, vin, dir);
    try {
      const outcome = await v2.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      await v2.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', rel.image);
      const backend = await backendVehicle(ac, vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
      assert.equal(backend.ecus[0]?.version, '2.0.0');
    } finally {
      await v2.close();
    }
  });

  it('power cut after switching slots, before the new version was confirmed: restart switches back, reports rolled_back', async () => {
    const { vin, dir } = await powerCutBefore('commit');

    const slot = activeSlot(dir);
    assert.equal(slot.state, 'trial', 'the new slot was switched to, unconfirmed');
    assert.equal(slot.version, '2.0.0');

    const v2 = await startAgent(ac, vin, dir);
    try {
      const outcome = await v2.events.outcome('2.0.0');
      assert.equal(outcome.status, 'rolled_back', JSON.stringify(outcome));
      assert.match(outcome.reason ?? '', /confirmed healthy.*1\.0\.0 restored/);
      await v2.agent.whenIdle();
      assertVehicleRuns(dir, '1.0.0', FACTORY_IMAGE);
      const backend = await backendVehicle(ac, vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'rolled_back');
      assert.match(backendUpdate(backend, '2.0.0')?.reason ?? '', /restored/);
      assert.equal(backend.ecus[0]?.version, '1.0.0');
    } finally {
      await v2.close();
    }
  });

  it('a failing health check after activation switches back and reports rolled_back', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const checked: string[] = [];
    const v = await startAgent(ac, vin, dir, {
      healthCheck: ({ version }) => {
        checked.push(version);
        return false;
      },
    });
    try {
      await connected(v);
      await publishOffer(ac, vin, await initiateOffer(v, '2.0.0'));
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'rolled_back', JSON.stringify(outcome));
      assert.match(outcome.reason ?? '', /health check failed/);
      assert.deepEqual(checked, ['2.0.0'], 'the health check ran on the new version');
      await v.agent.whenIdle();
      assertVehicleRuns(dir, '1.0.0', FACTORY_IMAGE);
      const backend = await backendVehicle(ac, vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'rolled_back');
      assert.equal(backend.ecus[0]?.version, '1.0.0');
    } finally {
      await v.close();
    }
  });

  it('defers installation while the vehicle is unsafe (driving, weak battery), then installs when it is safe', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const car = new StaticVehicleState({ parked: false, batteryPercent: 90 });
    const v = await startAgent(ac, vin, dir, {
      vehicleState: car,
      safety: { pollMs: 50, minBatteryPercent: 50 },
    });
    try {
      await connected(v);
      await publishOffer(ac, vin, await initiateOffer(v, '2.0.0'));
      await v.events.waitFor(
        (e) => e.type === 'deferred' && /not parked/.test(e.reason),
        30_000,
        'deferral while driving',
      );
      await sleep(300);
      assert.equal(readAgentState(dir).current?.phase, 'verified', 'downloaded and verified, waiting');
      assert.equal(activeSlot(dir).version, '1.0.0', 'nothing written to the ECU');
      assert.ok(
        !v.events.events.some((e) => e.type === 'phase' && e.phase === 'installing'),
        'not installing',
      );
      const waiting = await backendVehicle(ac, vin);
      assert.equal(
        backendUpdate(waiting, '2.0.0')?.status,
        'verifying',
        'the backend sees it verified, not installing',
      );

      car.set({ parked: true, batteryPercent: 20 });
      await v.events.waitFor(
        (e) => e.type === 'deferred' && /battery at 20%/.test(e.reason),
        5000,
        'deferral on a weak battery',
      );
      assert.equal(activeSlot(dir).version, '1.0.0');

      car.set({ batteryPercent: 80 });
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      await v.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', rel.image);
      const backend = await backendVehicle(ac, vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
      assert.equal(backend.ecus[0]?.version, '2.0.0');
    } finally {
      await v.close();
    }
  });
  it('renews an assignment that expired while the car waited, and installs nothing when the backend refuses', async () => {
    const lapse = async (vin: string, dir: string, version: string) => {
      const car = new StaticVehicleState({ parked: false, batteryPercent: 90 });
      const v = await startAgent(ac, vin, dir, { vehicleState: car, safety: { pollMs: 50 } });
      await connected(v);
      const offer = await initiateOffer(v, version);
      // The backend's assignment, re-signed with its key to run out in 4 s: the car is driving meanwhile.
      const expiresAt = new Date(Date.now() + 4000).toISOString();
      await publishOffer(ac, vin, {
        ...offer,
        assignment: await resignAssignment(ac, offer.assignment, { expires_at: expiresAt }),
      });
      await v.events.waitFor((e) => e.type === 'deferred', 30_000, 'deferral while driving');
      await sleep(Math.max(0, Date.parse(expiresAt) - Date.now()) + 200);
      return { v, car };
    };

    // Still wanted: a fresh assignment for the same update, then the install.
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const { v, car } = await lapse(vin, dir, '2.0.0');
    try {
      car.set({ parked: true });
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      const renewed = v.events.events.find((e) => e.type === 'renewed');
      assert.ok(renewed && renewed.type === 'renewed' && Date.parse(renewed.expires_at) > Date.now());
      assert.ok(readAgentState(dir).last_counter > 1, 'the renewal raised the counter');
      await v.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', rel.image);
      assert.equal(backendUpdate(await backendVehicle(ac, vin), '2.0.0')?.status, 'completed');
    } finally {
      await v.close();
    }

    // No longer wanted: the release was taken out of service while the car waited.
    const withdrawn = await publishRelease(ac, { version: '2.7.0', releaseId: 'tcu-2.7.0' });
    const vin2 = nextVin();
    const dir2 = await registerAgentVehicle(ac, vin2);
    const second = await lapse(vin2, dir2, '2.7.0');
    const db = documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
    const setStatus = (status: string) =>
      db.send(
        new UpdateCommand({
          TableName: ac.cloud.tables.releases,
          Key: { releaseId: 'tcu-2.7.0' },
          UpdateExpression: 'SET #s = :s',
          ExpressionAttributeNames: { '#s': 'status' },
          ExpressionAttributeValues: { ':s': status },
        }),
      );
    try {
      await setStatus('pending');
      second.car.set({ parked: true });
      const outcome = await second.v.events.outcome('2.7.0');
      assert.equal(outcome.status, 'rejected');
      assert.match(outcome.reason ?? '', /expired before installation.*no longer offers it: unknown_version/);
      assert.ok(!second.v.events.events.some((e) => e.type === 'phase' && e.phase === 'installing'));
      await second.v.agent.whenIdle();
      assert.equal(activeSlot(dir2).version, '1.0.0', 'nothing installed');
      assert.equal(backendUpdate(await backendVehicle(ac, vin2), '2.7.0')?.status, 'rejected');
      assert.ok(withdrawn.signed.manifest.version === '2.7.0');
    } finally {
      await setStatus('published');
      await second.v.close();
    }
  });
  it('stands down when its campaign is cancelled while it waits to install, and the backend keeps it cancelled', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const car = new StaticVehicleState({ parked: false, batteryPercent: 90 });
    const v = await startAgent(ac, vin, dir, { vehicleState: car, safety: { pollMs: 50 } });
    try {
      await connected(v);
      const created = await ac.operator.createCampaign({
        campaign_id: 'cancel-while-waiting',
        name: 'cancelled before install',
        release_id: 'tcu-2.0.0',
        targets: { vins: [vin] },
        policy: { waves: [100], skip_canary: true },
      });
      assert.equal(created.json.status, 'created', created.raw.toString());
      assert.equal((await ac.operator.call('POST', '/campaigns/cancel-while-waiting/start', {})).status, 200);
      await v.events.waitFor((e) => e.type === 'deferred', 30_000, 'downloaded, waiting to park');
      const cancelled = await ac.operator.call('POST', '/campaigns/cancel-while-waiting/cancel', {});
      assert.equal(cancelled.status, 202, 'withdrawn in the background');
      for (let i = 0; i < 300; i++) {
        if ((await ac.operator.call('GET', '/campaigns/cancel-while-waiting')).json.status === 'cancelled')
          break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(
        backendUpdate(await backendVehicle(ac, vin), '2.0.0')?.status,
        'cancelled',
        'the verified-but-waiting update was withdrawn',
      );
      car.set({ parked: true });
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'rejected');
      assert.match(outcome.reason ?? '', /cancelled the update before installation/);
      assert.ok(!v.events.events.some((e) => e.type === 'phase' && e.phase === 'installing'));
      await v.agent.whenIdle();
      assert.equal(activeSlot(dir).version, '1.0.0', 'nothing written to the ECU');
      const backend = await backendVehicle(ac, vin);
      assert.equal(
        backendUpdate(backend, '2.0.0')?.status,
        'cancelled',
        'the stand-down does not turn into a failure',
      );
      assert.equal(backend.ecus[0]?.version, '1.0.0');
      const campaign = await ac.operator.call('GET', '/campaigns/cancel-while-waiting');
      assert.deepEqual(campaign.json.counts, { cancelled: 1 });
    } finally {
      await v.close();
    }
  });
});
