import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  type Assignment,
  checkAssignment,
  manifestDigest,
  signAssignment,
} from '../../protocol/assignment.js';
import { KeyFileSigner, trustedKeysFromPems } from '../../protocol/signatures.js';
import { SAMPLE_MANIFEST } from '../support/fleet.js';

const VIN = '1HGCM82633A004352';
const manifest = SAMPLE_MANIFEST;

function backendKey() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
}

const base: Assignment = {
  schema: 'ota.assignment/v1',
  vin: VIN,
  update_id: 'release#tcu-3.0.1',
  campaign_id: null,
  release_id: 'tcu-3.0.1',
  version: '3.0.1',
  ecu: 'tcu',
  manifest_sha256: manifestDigest(manifest),
  counter: 7,
  issued_at: '2026-11-27T00:00:00.000Z',
  expires_at: '2026-11-28T00:00:00.000Z',
};
const now = new Date('2026-11-27T12:00:00.000Z');

describe('assignments', { timeout: 60_000 }, () => {
  it('accepts a fresh, signed assignment for this VIN and manifest', async () => {
    const signer = backendKey();
    const keys = trustedKeysFromPems([await signer.publicKeyPem()]);
    const signed = await signAssignment(base, signer);
    assert.deepEqual(checkAssignment(signed, { keys, vin: VIN, now, lastCounter: 6, manifest }), {
      ok: true,
    });
  });

  it('refuses each kind of defect with its reason', async () => {
    const signer = backendKey();
    const keys = trustedKeysFromPems([await signer.publicKeyPem()]);
    const signed = await signAssignment(base, signer);
    const ctx = { keys, vin: VIN, now, lastCounter: 6, manifest };
    const reason = (r: ReturnType<typeof checkAssignment>) => (r.ok ? 'ok' : r.reason);

    assert.equal(
      reason(checkAssignment({ ...signed, assignment: { ...base, counter: 99 } }, ctx)),
      'bad_signature',
    );
    const rogue = await signAssignment(base, backendKey());
    assert.equal(reason(checkAssignment(rogue, ctx)), 'bad_signature');
    assert.equal(reason(checkAssignment(signed, { ...ctx, vin: '5YJSA1E26HF000337' })), 'wrong_vin');
    assert.equal(
      reason(checkAssignment(signed, { ...ctx, now: new Date('2026-11-28T00:00:00.000Z') })),
      'expired',
    );
    assert.equal(reason(checkAssignment(signed, { ...ctx, lastCounter: 7 })), 'stale_counter');
    assert.equal(
      reason(checkAssignment(signed, { ...ctx, manifest: { ...manifest, size: 11 } })),
      'manifest_mismatch',
    );
  });
});
