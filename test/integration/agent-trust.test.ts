/**
 * Release-key rotation by a signed update, end to end: the agent's trusted release keys are the image of the
 * release-keys pseudo-ECU (vehicle/trust-store.ts). A rotation published and signed with the current key revokes it
 * and trusts a new one; releases are then judged by the new set, a bad key set is rolled back, and the set survives
 * a restart. The backend accepts both keys throughout (as it would while a fleet migrates), so every refusal here
 * is the vehicle's own.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { keyIdOf } from '../../protocol/signatures.js';
import { TRUST_ECU, TRUST_HARDWARE_ID, trustDocument } from '../../protocol/trust-document.js';
import type { EcuConfig } from '../../vehicle/agent.js';
import { installedReleaseKeys } from '../../vehicle/trust-store.js';
import {
  type AgentCloud,
  activeSlot,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  initiateOffer,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  startAgent,
  startAgentCloud,
  TCU,
} from '../support/agent-cloud.js';
import { newReleaseKey } from '../support/fleet.js';

const KEYS: EcuConfig = { ecu: TRUST_ECU, hardware_id: TRUST_HARDWARE_ID, version: '1.0.0' };
const keyB = newReleaseKey();
let ac: AgentCloud;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud({ extraReleaseKeys: [keyB.publicPem] });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

describe('vehicle agent: release keys rotate by a signed update', { timeout: 90_000 }, () => {
  it('revokes the old key and trusts the new one; a bad key set is rolled back; the set survives a restart', async () => {
    const keys = (version: string, image: Buffer, signer = ac.releaseKey.signer) =>
      publishRelease(ac, { ecu: TRUST_ECU, hardwareIds: [TRUST_HARDWARE_ID], version, image, signer });
    const rotation = await keys('1.1.0', trustDocument([keyB.publicPem]));
    await keys(
      '1.2.0',
      Buffer.from(JSON.stringify({ schema: 'ota.release-keys/v1', release_keys: ['not a key'] })),
      keyB.signer,
    );
    await publishRelease(ac, { version: '2.0.0', size: 96 * 1024 });
    await publishRelease(ac, { version: '2.5.0', size: 96 * 1024, signer: keyB.signer });
    const byNewKey = await publishRelease(ac, { version: '3.0.0', size: 96 * 1024, signer: keyB.signer });

    const vin = '1HGCM82633A700001';
    const dir = await registerAgentVehicle(ac, vin, [TCU, KEYS]);
    let v = await startAgent(ac, vin, dir, { ecus: [TCU, KEYS] });
    const update = async (version: string) => {
      await publishOffer(ac, vin, await initiateOffer(v, version));
      const outcome = await v.events.outcome(version, 40_000);
      await v.agent.whenIdle();
      return outcome;
    };
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
      // Factory trust: the configured key only.
      const early = await update('2.5.0');
      assert.equal(early.status, 'rejected', 'a release signed by a key not yet trusted is refused');
      assert.match(early.reason ?? '', /signature/);

      const rotated = await update('1.1.0');
      assert.equal(rotated.status, 'completed', rotated.reason);
      assertVehicleRuns(dir, '1.1.0', rotation.image, TRUST_ECU);
      assert.deepEqual(
        (await installedReleaseKeys(v.installers[TRUST_ECU]))?.map((k) => k.keyId),
        [keyIdOf(keyB.publicPem)],
      );

      const revoked = await update('2.0.0');
      assert.equal(revoked.status, 'rejected', 'the old key is revoked on this vehicle');
      assert.match(revoked.reason ?? '', /signature/);
      const accepted = await update('3.0.0');
      assert.equal(accepted.status, 'completed', accepted.reason);
      assertVehicleRuns(dir, '3.0.0', byNewKey.image);

      const bad = await update('1.2.0');
      assert.equal(bad.status, 'rolled_back', 'a key set that does not parse never replaces the trusted one');
      assert.equal(activeSlot(dir, TRUST_ECU).version, '1.1.0');

      const backend = await backendVehicle(ac, vin);
      assert.equal(backendUpdate(backend, '1.1.0')?.status, 'completed');
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'rejected');
      assert.equal(backendUpdate(backend, '2.5.0')?.status, 'rejected');
      assert.equal(backendUpdate(backend, '3.0.0')?.status, 'completed');
      assert.equal(backendUpdate(backend, '1.2.0')?.status, 'rolled_back');
      const versions = Object.fromEntries(backend.ecus.map((e) => [e.ecu, e.version]));
      assert.deepEqual(versions, { tcu: '3.0.0', [TRUST_ECU]: '1.1.0' });
    } finally {
      await v.close();
    }
    // After a restart the rotated set is what the agent trusts (it reads the active slot, not its configuration).
    v = await startAgent(ac, vin, dir, { ecus: [TCU, KEYS] });
    try {
      assert.deepEqual(
        (await installedReleaseKeys(v.installers[TRUST_ECU]))?.map((k) => k.keyId),
        [keyIdOf(keyB.publicPem)],
      );
    } finally {
      await v.close();
    }
  });
});
