/**
 * Bundle campaigns in the pure parts: which vehicles a bundle (or a rollback of one) targets, and the CLI's reading
 * of --release-id / --bundle-id and of bundle constraints.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../cli/args.js';
import { parseConstraint } from '../../cli/bundles.js';
import { campaignBody } from '../../cli/inputs.js';
import { bundleExclusionReason } from '../../lambdas/core/campaign-eligibility.js';
import type { VehicleRecord } from '../../lambdas/core/ports.js';

const VIN = '1HGCM82633A004352';

function vehicle(versions: Record<string, string>, revoked = false): VehicleRecord {
  return {
    vin: VIN,
    model: 'Model T',
    ecus: Object.entries(versions).map(([ecu, version]) => ({ ecu, hardware_id: `${ecu}-hw`, version })),
    ...(revoked ? { revokedAt: '2026-01-01T00:00:00.000Z' } : {}),
  } as unknown as VehicleRecord;
}

const members = (version: string) =>
  ['gw', 'bcm'].map((ecu) => ({ ecu, hardware_ids: [`${ecu}-hw`], version }));

describe('bundle campaign targets', { timeout: 60_000 }, () => {
  it('targets a vehicle with something to change, never one an upgrade would take down', () => {
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '1.0.0', bcm: '1.0.0' }), members('2.0.0'), false),
      undefined,
    );
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '2.0.0', bcm: '1.0.0' }), members('2.0.0'), false),
      undefined,
    );
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '2.0.0', bcm: '2.0.0' }), members('2.0.0'), false),
      'already_at_version',
    );
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '3.0.0', bcm: '1.0.0' }), members('2.0.0'), false),
      'already_at_or_above_version',
    );
    assert.equal(bundleExclusionReason(vehicle({ gw: '1.0.0' }), members('2.0.0'), false), 'no_bcm_ecu');
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '1.0.0', bcm: '1.0.0' }, true), members('2.0.0'), false),
      'revoked',
    );
  });

  it('a rollback targets vehicles above the bundle, and leaves those already on it', () => {
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '2.0.0', bcm: '2.0.0' }), members('1.0.0'), true),
      undefined,
    );
    assert.equal(
      bundleExclusionReason(vehicle({ gw: '1.0.0', bcm: '1.0.0' }), members('1.0.0'), true),
      'already_at_version',
    );
  });
});

describe('CLI: bundles and rollbacks', { timeout: 60_000 }, () => {
  it('a campaign rolls out a release or a bundle, exactly one', () => {
    const body = campaignBody({ name: 'b', 'bundle-id': 'body-2-0', vin: [VIN] });
    assert.equal((body as { bundle_id?: string }).bundle_id, 'body-2-0');
    assert.equal((body as { release_id?: string }).release_id, undefined);
    for (const values of [
      { name: 'b', vin: [VIN] },
      { name: 'b', 'bundle-id': 'body-2-0', 'release-id': 'tcu-1.0.0', vin: [VIN] },
    ]) {
      assert.throws(
        () => campaignBody(values),
        (e: unknown) => e instanceof UsageError && /--release-id or --bundle-id/.test(e.message),
      );
    }
  });

  it('reads constraints <member>:<ecu>>=<min><<below>', () => {
    assert.deepEqual(parseConstraint('ivi:gw>=2.0.0<3.0.0'), {
      member: 'ivi',
      requires: 'gw',
      min_version: '2.0.0',
      below_version: '3.0.0',
    });
    assert.deepEqual(parseConstraint('ivi:gw<3.0.0'), {
      member: 'ivi',
      requires: 'gw',
      below_version: '3.0.0',
    });
    assert.throws(() => parseConstraint('ivi:gw'), UsageError);
    assert.throws(() => parseConstraint('ivi>=2'), UsageError);
  });
});
