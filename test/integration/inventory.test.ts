/**
 * The vehicle's software inventory against a private local cloud: the real agent reports what its ECU runs (with
 * the image digest) right after registration and again after an install; GET /vehicles/{vin} and `ota vehicles
 * show` show it; a late older report does not overwrite a newer one.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { renderVehicle } from '../../cli/render.js';
import type { VehicleView } from '../../protocol/operator-responses.js';
import {
  type AgentCloud,
  FACTORY_IMAGE,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  sha256,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';

let ac: AgentCloud;
let v2: PublishedRelease;
let v3: PublishedRelease;
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud();
  v2 = await publishRelease(ac, { version: '2.0.0', size: 200 * 1024 });
  v3 = await publishRelease(ac, { version: '3.0.0', size: 100 * 1024 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

async function view(vin: string): Promise<VehicleView> {
  const res = await ac.operator.call('GET', `/vehicles/${vin}`);
  assert.equal(res.status, 200, res.raw.toString());
  return res.json as VehicleView;
}

describe('vehicle software inventory', { timeout: 180_000 }, () => {
  it('is reported after registration and after an install, and shown to operators', async () => {
    const vin = '1HGCM82633A200001';
    const dir = await registerAgentVehicle(ac, vin);
    const before = await view(vin);
    assert.equal(before.inventory, null, 'nothing reported before the agent ran');
    assert.match(renderVehicle(before).join('\n'), /inventory not reported yet/);
    const vehicle = await startAgent(ac, vin, dir);
    try {
      await vehicle.events.waitFor(
        (e) => e.type === 'inventory' && e.applied,
        45_000,
        'first inventory report',
      );
      const first = await view(vin);
      assert.deepEqual(first.inventory?.ecus, [
        { ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0', sha256: sha256(FACTORY_IMAGE) },
      ]);
      await vehicle.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
      await publishOffer(ac, vin, await initiateOffer(vehicle, '2.0.0'));
      const outcome = await vehicle.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      await waitUntil(
        async () => (await view(vin)).inventory?.ecus[0]?.version === '2.0.0',
        45_000,
        'inventory 2.0.0',
      );
      const after = await view(vin);
      assert.equal(after.inventory?.ecus[0]?.sha256, sha256(v2.image));
      assert.ok((after.inventory?.sequence ?? 0) > (first.inventory?.sequence ?? 0));
      assert.equal(after.ecus[0]?.version, '2.0.0');
      const shown = renderVehicle(after).join('\n');
      assert.match(shown, /inventory reported .* \(sequence \d+\)/);
      assert.match(shown, new RegExp(`tcu\\s+TCU-HW-1\\s+2\\.0\\.0\\s+${sha256(v2.image).slice(0, 16)}`));

      // A report older than the stored one (a late retry) changes nothing.
      const late = await vehicle.api.reportInventory?.({
        sequence: first.inventory?.sequence ?? 0,
        ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0', sha256: sha256(FACTORY_IMAGE) }],
      });
      assert.equal(late?.applied, false);
      assert.equal((await view(vin)).inventory?.ecus[0]?.version, '2.0.0');
    } finally {
      await vehicle.close();
    }
  });

  it('targets a campaign by the inventory: only vehicles whose ECU runs the version pattern', async () => {
    // 1HGCM82633A200001 reported tcu 2.0.0 in the test above; this one is registered at 1.0.0 and never reports.
    const quiet = '1HGCM82633A200002';
    await registerAgentVehicle(ac, quiet);
    const created = await ac.operator.call('POST', '/campaigns', {
      campaign_id: 'by-inventory',
      name: 'tcu 2.x to 3.0.0',
      release_id: v3.signed.manifest.release_id,
      targets: { filter: { runs: { ecu: 'tcu', version: '2.x' } } },
      policy: { waves: [100], skip_canary: true },
    });
    assert.equal(created.status, 202, created.raw.toString());
    let campaign = await ac.operator.call('GET', '/campaigns/by-inventory');
    for (let i = 0; i < 300 && campaign.json.status === 'preparing'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      campaign = await ac.operator.call('GET', '/campaigns/by-inventory');
    }
    assert.equal(campaign.json.status, 'created', JSON.stringify(campaign.json));
    assert.equal(campaign.json.target_count, 1, JSON.stringify(campaign.json));
    const bad = await ac.operator.call('POST', '/campaigns', {
      name: 'bad pattern',
      release_id: v3.signed.manifest.release_id,
      targets: { filter: { runs: { ecu: 'tcu', version: '2.*' } } },
    });
    assert.equal(bad.status, 400, bad.raw.toString());
  });
});
