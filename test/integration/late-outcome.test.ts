/**
 * A late outcome is a fact, end to end on the local cloud: a real agent held "not parked" past its campaign's
 * deadline is timed out by the campaign engine (and the one-vehicle campaign halts on it); the car then parks,
 * installs and reports completed. The backend must end up agreeing with the car: the update completed, the ECU
 * at the new version, the campaign counting a success, its halt lifted, and both events in the history.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoUpdateRepository } from '../../lambdas/adapters/dynamo-updates.js';
import { UpdateHistoryReader } from '../../lambdas/core/update-history.js';
import { StaticVehicleState } from '../../vehicle/vehicle-state.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  type PublishedRelease,
  publishRelease,
  registerAgentVehicle,
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
  rel = await publishRelease(ac, { version: '2.0.0', size: 256 * 1024 + 13 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

async function campaign(id: string) {
  await ac.cloud.rules.idle();
  const res = await ac.operator.call('GET', `/campaigns/${id}`);
  assert.equal(res.status, 200, res.raw.toString());
  return res.json as { status: string; halt_reason: string | null; counts: Record<string, number> };
}

async function campaignReaches(id: string, status: string, what: string) {
  await waitUntil(async () => (await campaign(id)).status === status, 20_000, what);
  return campaign(id);
}

describe('a late outcome after the backend timed the vehicle out', { timeout: 90_000 }, () => {
  it('updates the record, the ECU version and the campaign counts, lifts the halt and keeps both events', async () => {
    const vin = '1HGCM82633A700001';
    const dir = await registerAgentVehicle(ac, vin);
    const car = new StaticVehicleState({ parked: false, batteryPercent: 90 });
    const v = await startAgent(ac, vin, dir, { vehicleState: car, safety: { pollMs: 50 } });
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected === true, 10_000, 'MQTT');
      const created = await ac.operator.createCampaign({
        campaign_id: 'late-outcome',
        name: 'late outcome',
        release_id: 'tcu-2.0.0',
        targets: { vins: [vin] },
        policy: { waves: [100], skip_canary: true, vehicle_timeout_seconds: 2, retry_budget: 0 },
      });
      assert.equal(created.json.status, 'created', created.raw.toString());
      assert.equal((await ac.operator.call('POST', '/campaigns/late-outcome/start', {})).status, 200);
      await v.events.waitFor((e) => e.type === 'deferred', 30_000, 'downloaded, waiting to park');

      // The car is still driving when its deadline passes: the engine times it out and, with no retry left and
      // its only vehicle failed, halts the campaign.
      await waitUntil(
        async () => backendUpdate(await backendVehicle(ac, vin), '2.0.0')?.status === 'timed_out',
        20_000,
        'the backend to time the update out',
      );
      const halted = await campaignReaches('late-outcome', 'halted', 'the campaign to halt');
      assert.deepEqual(halted.counts, { timed_out: 1 });
      // With the guardrail's reachable threshold (halt_min_outcomes lowered to the wave's one vehicle) the timeout
      // halts the wave as a failure share.
      assert.match(halted.halt_reason ?? '', /wave 0: 1 of 1 outcomes failed \(100\.0%\)/);
      assert.equal((await backendVehicle(ac, vin)).ecus[0]?.version, '1.0.0');

      // It parks, installs and says so.
      car.set({ parked: true });
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed');
      await v.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', rel.image);

      const backend = await backendVehicle(ac, vin);
      const update = backendUpdate(backend, '2.0.0');
      assert.equal(update?.status, 'completed', 'the late outcome is recorded');
      assert.equal(update?.progress, 100);
      assert.equal(backend.ecus[0]?.version, '2.0.0', 'the backend knows what the car runs');

      // The success is counted instead of the timeout, and the halt for a failure that never was is lifted: the
      // campaign carries on and, its only vehicle updated, completes.
      const done = await campaignReaches(
        'late-outcome',
        'completed',
        'the halt to be lifted and the campaign to complete',
      );
      assert.deepEqual(done.counts, { completed: 1 });
      assert.match(done.halt_reason ?? '', /^halt lifted: late outcomes corrected wave 0 to 0 failure\(s\)/);
      assert.match(done.halt_reason ?? '', /was: wave 0: 1 of 1 outcomes failed \(100\.0%\)/);

      // The history keeps both: the backend's timeout and the car's completion.
      const history = new UpdateHistoryReader(
        new DynamoUpdateRepository(
          documentClient(new DynamoDBClient(clientConfig('DYNAMODB'))),
          ac.cloud.tables.updates,
        ),
      );
      const events = (await history.listForVehicle(vin, 100)).filter(
        (e) => e.updateId === 'campaign#late-outcome',
      );
      const timedOut = events.find((e) => e.status === 'timed_out');
      const completed = events.find((e) => e.status === 'completed' && e.applied);
      assert.equal(timedOut?.source, 'backend');
      assert.ok(timedOut.applied);
      assert.ok(completed, `a completed event from the car: ${JSON.stringify(events.map((e) => e.status))}`);
      assert.notEqual(completed.source, 'backend');
      assert.ok(timedOut.at <= completed.at, 'the timeout came first');
    } finally {
      await v.close();
    }
  });
});
