/**
 * Bundles seen from the backend's side of the vehicle API. A bundle reaches a vehicle that never receives its MQTT
 * offer: an agent without MQTT polls GET /updates/{vin},
 * sees the pending bundle update, asks POST /updates/{vin}/bundle for a freshly signed assignment of it (the offer
 * it missed), and installs the bundle on all three ECUs exactly as from an MQTT offer (every check of the bundle and
 * its members on the vehicle). The answer carries an assignment only when asked: the bundle runner's own calls do
 * not spend a counter write. Withdrawing one member release (the kill switch) cancels the bundle's campaigns and
 * stands its vehicles down: no vehicle could install the bundle any more.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assignmentSignedBy } from '../../protocol/assignment.js';
import { BUNDLE_ASSIGNMENT_ECU, bundleDigest } from '../../protocol/bundle.js';
import { createVehicleAgent } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  agentOptions,
  registerAgentVehicle,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';
import {
  assertAllRun,
  type BundleFixture,
  ECUS,
  factoryImageOf,
  publishBundles,
  startBundleCampaign,
  untilInventory,
} from '../support/bundles.js';

let ac: AgentCloud;
let f: BundleFixture;
const HOOK_TIMEOUT = { timeout: 120_000 };

before(async () => {
  ac = await startAgentCloud();
  f = await publishBundles(ac);
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

describe('bundle offers by polling', { timeout: 300_000 }, () => {
  it('a vehicle without MQTT learns of a bundle by polling and installs it on every ECU', async () => {
    const vin = '1HGCM82633A600001';
    const dir = await registerAgentVehicle(ac, vin, ECUS);
    const v = await startAgent(ac, vin, dir, {
      ecus: ECUS,
      factoryImage: factoryImageOf,
      mqttUrl: undefined,
      polling: { intervalMs: 300 },
    });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-polled', 'body-2-0', [vin]);
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(outcome.update_id, 'campaign#bundle-polled');
    assertAllRun(dir, f, '2.0.0');
    const offers = v.events.events.filter((e) => e.type === 'offer');
    assert.deepEqual(
      offers.map((e) => [(e as { source: string }).source, (e as { update_id: string }).update_id]),
      [['poll', 'campaign#bundle-polled']],
      'one offer, from the poll',
    );
    await v.agent.whenIdle();
    await untilInventory(ac, vin, '2.0.0');
    await v.close();
  });

  it('POST /updates/{vin}/bundle answers a signed assignment of the bundle only when asked for one', async () => {
    const vin = '1HGCM82633A600002';
    const dir = await registerAgentVehicle(ac, vin, ECUS);
    // An agent made, never started: nothing acts on the offer, so the update stays pending for the calls below.
    const created = await createVehicleAgent(agentOptions(ac, vin, dir, { ecus: ECUS, mqttUrl: undefined }));
    ac.track(() => created.close());
    await startBundleCampaign(ac, 'bundle-asked', 'body-2-0', [vin]);
    const api = created.api;
    // Offered once the campaign's pacer takes its wave (until then the update is scheduled, and not shown).
    await waitUntil(
      async () => (await api.listUpdates()).pending.length > 0,
      60_000,
      'the bundle update offered',
    );
    const plain = await api.bundle('body-2-0');
    assert.equal(plain.assignment, undefined, 'no assignment (no counter write) unless asked');
    const asked = await api.bundle('body-2-0', undefined, { assignment: true });
    const signed = asked.assignment;
    assert.ok(signed, 'an assignment when asked');
    assert.equal(assignmentSignedBy(signed, ac.trust.backendKeys), true, 'signed by the backend key');
    const a = signed.assignment;
    assert.equal(a.vin, vin);
    assert.equal(a.ecu, BUNDLE_ASSIGNMENT_ECU);
    assert.equal(a.release_id, 'body-2-0');
    assert.equal(a.update_id, 'campaign#bundle-asked');
    assert.equal(a.campaign_id, 'bundle-asked');
    assert.equal(a.manifest_sha256, bundleDigest(f.next.bundle));
    const again = await api.bundle('body-2-0', undefined, { assignment: true });
    assert.ok(again.assignment!.assignment.counter > a.counter, 'each answer takes a new counter');
    // Another vehicle's bundle is still refused, assignment or not.
    await assert.rejects(api.bundle('body-1-0', undefined, { assignment: true }), {
      status: 409,
      code: 'not_offered',
    });
  });

  it('withdrawing a member release cancels the bundle campaign and stands its vehicles down', async () => {
    const vin = '1HGCM82633A600003';
    const dir = await registerAgentVehicle(ac, vin, ECUS);
    const created = await createVehicleAgent(agentOptions(ac, vin, dir, { ecus: ECUS, mqttUrl: undefined }));
    ac.track(() => created.close());
    await startBundleCampaign(ac, 'bundle-withdrawn', 'body-2-0', [vin]);
    const api = created.api;
    await waitUntil(
      async () => (await api.listUpdates()).pending.length > 0,
      60_000,
      'the bundle update offered',
    );
    const member = f.releases.bcm!['2.0.0']!.signed.manifest.release_id;
    const withdrawn = await ac.operator.call('POST', `/releases/${member}/withdraw`, {
      reason: 'bricks BCM',
    });
    assert.equal(withdrawn.status, 200, withdrawn.raw.toString());
    // This campaign and the previous test's, still running (its vehicle never acted): both offer the bundle, though
    // neither names the release. The first test's completed one is left alone.
    assert.equal(withdrawn.json.campaigns_cancelled, 2, withdrawn.raw.toString());
    for (const id of ['bundle-withdrawn', 'bundle-asked']) {
      await waitUntil(
        async () => (await ac.operator.call('GET', `/campaigns/${id}`)).json.status === 'cancelled',
        60_000,
        `campaign ${id} cancelled`,
      );
    }
    assert.equal((await ac.operator.call('GET', '/campaigns/bundle-polled')).json.status, 'completed');
    // What the agent asks before installing: nothing pending, the update cancelled; the bundle is refused.
    const listed = await api.listUpdates();
    assert.equal(listed.pending.length, 0);
    assert.deepEqual(
      listed.updates.map((u) => [u.update_id, u.status]),
      [['campaign#bundle-withdrawn', 'cancelled']],
    );
    await assert.rejects(api.bundle('body-2-0'), { status: 409 });
  });
});
