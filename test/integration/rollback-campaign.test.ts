/**
 * Fleet rollback against a private local cloud: two 3-ECU vehicles install a bundle through a campaign; the
 * operator then takes that campaign back with a rollback campaign carrying an authorisation signed by the OEM
 * release key, and both vehicles return every ECU to the version it ran before. An authorisation signed by any
 * other key is refused by the backend, and a compromised backend that offers the old bundle anyway (with the forged
 * authorisation, or none) is refused by every vehicle: the backend alone cannot downgrade anyone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  type AgentCloud,
  registerAgentVehicle,
  startAgent,
  startAgentCloud,
} from '../support/agent-cloud.js';
import {
  assertAllRun,
  type BundleFixture,
  ECUS,
  factoryImageOf,
  publishBundles,
  publishForgedBundleOffer,
  rollbackAuthorisation,
  startBundleCampaign,
  untilInventory,
} from '../support/bundles.js';
import { newReleaseKey } from '../support/fleet.js';

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

const OTA = fileURLToPath(new URL('../../bin/ota.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

/** Runs the `ota` CLI against the cloud, in its folder; asserts it succeeded. */
async function ota(...args: string[]): Promise<{ stdout: string }> {
  const child = spawn(process.execPath, ['--import', TSX, OTA, ...args], {
    cwd: ac.root,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: ac.root,
      OTA_ENDPOINT: ac.cloud.endpoints.api,
      OTA_CA_FILE: ac.cloud.caFile,
      OTA_ADMIN_TOKEN_FILE: ac.cloud.adminTokenFile!,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, `ota ${args.join(' ')}: ${stdout} ${stderr}`);
  return { stdout };
}

async function outcomeOf(v: Awaited<ReturnType<typeof startAgent>>, updateId: string) {
  const e = await v.events.waitFor(
    (x) => x.type === 'outcome' && x.update_id === updateId,
    120_000,
    `outcome of ${updateId}`,
  );
  return e as { status: string; reason?: string };
}

describe('fleet rollback of a bundle campaign', { timeout: 600_000 }, () => {
  it('returns the vehicles only under an OEM-signed authorisation; a forged or missing one is refused by every vehicle', async () => {
    const vins = ['1HGCM82633A600001', '1HGCM82633A600002'];
    const cars = [];
    for (const vin of vins) {
      const dir = await registerAgentVehicle(ac, vin, ECUS);
      const v = await startAgent(ac, vin, dir, { ecus: ECUS, factoryImage: factoryImageOf });
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 15_000, 'MQTT connection');
      cars.push({ vin, dir, v });
    }
    await startBundleCampaign(ac, 'fleet-2-0', 'body-2-0', vins);
    for (const c of cars) {
      const o = await outcomeOf(c.v, 'campaign#fleet-2-0');
      assert.equal(o.status, 'completed', o.reason);
      assertAllRun(c.dir, f, '2.0.0');
      await untilInventory(ac, c.vin, '2.0.0');
    }

    // An authorisation not signed by the OEM release key: the backend refuses the rollback campaign.
    const forged = await rollbackAuthorisation(f, 'fleet-2-0', newReleaseKey().signer);
    const refused = await ac.operator.call('POST', '/campaigns', {
      campaign_id: 'fleet-2-0-forged',
      name: 'forged rollback',
      bundle_id: 'body-1-0',
      targets: { vins },
      rollback: { campaign_id: 'fleet-2-0', authorisation: forged },
    });
    assert.equal(refused.status, 400, refused.raw.toString());
    assert.equal(refused.json.error.code, 'rollback_authorisation_signature');

    // A compromised backend offers the old bundle anyway, with the forged authorisation or none: every vehicle
    // refuses before downloading anything.
    const base = ECUS.map((e) => f.releases[e.ecu]!['1.0.0']!.signed);
    for (const c of cars) {
      await publishForgedBundleOffer(ac, c.vin, 'forged-rollback', f.base, base, {
        campaign_id: 'fleet-2-0',
        authorisation: forged,
      });
      const withForged = await outcomeOf(c.v, 'forged-rollback');
      assert.equal(withForged.status, 'rejected');
      assert.match(withForged.reason ?? '', /rollback_authorisation_signature/);
      await publishForgedBundleOffer(ac, c.vin, 'unauthorised-rollback', f.base, base);
      const without = await outcomeOf(c.v, 'unauthorised-rollback');
      assert.equal(without.status, 'rejected');
      assert.match(without.reason ?? '', /rollback_unauthorised/);
      assertAllRun(c.dir, f, '2.0.0');
    }

    // The OEM signs the authorisation (offline, with the release key) and the operator takes the campaign back,
    // both with the CLI: the rollback campaign targets the vehicles that completed fleet-2-0.
    writeFileSync(join(ac.root, 'release.key.pem'), ac.releaseKey.privatePem);
    writeFileSync(join(ac.root, 'body-2-0.json'), JSON.stringify(f.next));
    writeFileSync(join(ac.root, 'body-1-0.json'), JSON.stringify(f.base));
    const signed = await ota(
      'rollbacks',
      'sign',
      '--campaign',
      'fleet-2-0',
      '--from',
      'body-2-0.json',
      '--to',
      'body-1-0.json',
      '--key',
      'release.key.pem',
      '--out',
      'rollback.json',
    );
    assert.match(signed.stdout, /gw 2\.0\.0 -> 1\.0\.0/);
    const created = await ota(
      'campaigns',
      'rollback',
      'fleet-2-0',
      '--bundle-id',
      'body-1-0',
      '--authorisation',
      'rollback.json',
      '--campaign-id',
      'fleet-2-0-rollback',
      '--waves',
      '100',
      '--skip-canary',
    );
    assert.match(
      created.stdout,
      /created rollback campaign fleet-2-0-rollback of fleet-2-0: body-1-0, 2 of 2 vehicle/,
    );
    await ota('campaigns', 'start', 'fleet-2-0-rollback');
    const shown = await ota('bundles', 'show', 'body-1-0');
    assert.match(shown.stdout, /install order: gw -> bcm -> ivi/);
    const view = (await ac.operator.call('GET', '/campaigns/fleet-2-0-rollback')).json;
    assert.equal(view.rollback_of, 'fleet-2-0');
    for (const c of cars) {
      const o = await outcomeOf(c.v, 'campaign#fleet-2-0-rollback');
      assert.equal(o.status, 'completed', o.reason);
      assertAllRun(c.dir, f, '1.0.0');
      await untilInventory(ac, c.vin, '1.0.0');
      await c.v.close();
    }
  });
});
