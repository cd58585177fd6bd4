import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { manifestDigest } from '../../protocol/assignment.js';
import {
  type Bundle,
  checkBundleConsistency,
  checkBundleMembers,
  planBundle,
  verifySignedBundle,
} from '../../protocol/bundle.js';
import { ProtocolError } from '../../protocol/errors.js';
import { admitDowngrades, type Downgrade } from '../../protocol/rollback.js';
import {
  authorisation,
  bundleOf,
  p256Key,
  release,
  signedBundle,
  type TestKey,
  type TestRelease,
} from '../support/bundle-fixtures.js';

const HOOK_TIMEOUT = 60_000;
const VIN = '1HGCM82633A004352';
const OTHER_VIN = '2HGCM82633A004352';

function code(expected: string) {
  return (err: unknown) => err instanceof ProtocolError && err.code === expected;
}

let oem: TestKey;
let rogue: TestKey;
let gw1: TestRelease;
let gw2: TestRelease;
let bcm1: TestRelease;
let bcm2: TestRelease;
let ivi1: TestRelease;
let ivi2: TestRelease;
let bcm3: TestRelease;

before(
  async () => {
    oem = p256Key();
    rogue = p256Key();
    gw1 = await release(oem, 'gateway', 'GW-1', '1.0.0');
    gw2 = await release(oem, 'gateway', 'GW-1', '2.0.0');
    bcm1 = await release(oem, 'bcm', 'BCM-A', '1.4.0');
    bcm2 = await release(oem, 'bcm', 'BCM-A', '2.1.0');
    bcm3 = await release(oem, 'bcm', 'BCM-A', '2.2.0');
    ivi1 = await release(oem, 'ivi', 'IVI-9', '5.0.0');
    ivi2 = await release(oem, 'ivi', 'IVI-9', '5.1.0');
  },
  { timeout: HOOK_TIMEOUT },
);

const inventoryV1 = () => ({
  gateway: { hardware_id: 'GW-1', version: '1.0.0', sha256: gw1.manifest.sha256 },
  bcm: { hardware_id: 'BCM-A', version: '1.4.0', sha256: bcm1.manifest.sha256 },
  ivi: { hardware_id: 'IVI-9', version: '5.0.0', sha256: ivi1.manifest.sha256 },
  tcu: { hardware_id: 'TCU-1', version: '7.0.0' },
});

describe('signed bundles', { timeout: 60_000 }, () => {
  it('verifies a bundle signed by a trusted release key and refuses any other signer or edit', async () => {
    const signed = await signedBundle(oem, 'body-2026', '2.0.0', [gw2, bcm2, ivi2]);
    assert.equal(verifySignedBundle(signed, oem.trusted).bundle.bundle_id, 'body-2026');
    assert.throws(() => verifySignedBundle(signed, rogue.trusted), code('bundle_signature'));
    const forged = await signedBundle(rogue, 'body-2026', '2.0.0', [gw2, bcm2, ivi2]);
    assert.throws(() => verifySignedBundle(forged, oem.trusted), code('bundle_signature'));
    const edited = structuredClone(signed);
    edited.bundle.members[1]!.version = '2.9.0';
    assert.throws(() => verifySignedBundle(edited, oem.trusted), code('bundle_signature'));
    assert.throws(
      () => verifySignedBundle({ bundle: {}, signatures: [] }, oem.trusted),
      code('invalid_bundle'),
    );
  });

  it('refuses bundles that contradict themselves', () => {
    const twice: Bundle = { ...bundleOf('b', '1.0.0', [gw2, bcm2]), install_order: ['gateway', 'gateway'] };
    assert.throws(() => checkBundleConsistency(twice), /install_order/);
    const broken = bundleOf(
      'b',
      '1.0.0',
      [gw2, bcm1],
      [{ member: 'gateway', requires: 'bcm', min_version: '2.0.0' }],
    );
    assert.throws(
      () => checkBundleConsistency(broken),
      /requires bcm >= 2.0.0, but the bundle carries 1.4.0/,
    );
    const dup = bundleOf('b', '1.0.0', [bcm2, bcm3]);
    assert.throws(() => checkBundleConsistency(dup), /same ECU/);
  });
});

describe('bundle offers on the vehicle', { timeout: 60_000 }, () => {
  it('accepts exactly the members and answers them in install order', async () => {
    const { bundle } = await signedBundle(oem, 'body-2026', '2.0.0', [gw2, bcm2, ivi2]);
    const ordered = checkBundleMembers(bundle, [ivi2.manifest, gw2.manifest, bcm2.manifest], manifestDigest);
    assert.deepEqual(
      ordered.map((m) => m.ecu),
      ['gateway', 'bcm', 'ivi'],
    );
  });

  it('refuses a partial bundle: a member missing', async () => {
    const { bundle } = await signedBundle(oem, 'body-2026', '2.0.0', [gw2, bcm2, ivi2]);
    assert.throws(
      () => checkBundleMembers(bundle, [gw2.manifest, bcm2.manifest], manifestDigest),
      (e: unknown) => code('bundle_incomplete')(e) && /lacks member\(s\) ivi/.test((e as Error).message),
    );
  });

  it('refuses mix and match: another release of a member, or a release of another bundle', async () => {
    const { bundle } = await signedBundle(oem, 'body-2026', '2.0.0', [gw2, bcm2, ivi2]);
    assert.throws(
      () => checkBundleMembers(bundle, [gw2.manifest, bcm3.manifest, ivi2.manifest], manifestDigest),
      code('bundle_mix_and_match'),
    );
    const tampered = { ...bcm2.manifest, created_at: '2026-12-02T00:00:00.000Z' };
    assert.throws(
      () => checkBundleMembers(bundle, [gw2.manifest, tampered, ivi2.manifest], manifestDigest),
      code('bundle_mix_and_match'),
    );
    const tcu = await release(oem, 'tcu', 'TCU-1', '8.0.0');
    assert.throws(
      () =>
        checkBundleMembers(
          bundle,
          [gw2.manifest, bcm2.manifest, ivi2.manifest, tcu.manifest],
          manifestDigest,
        ),
      code('bundle_mix_and_match'),
    );
  });

  it('plans against the inventory: hardware, outside constraints, unchanged members and downgrades', async () => {
    const b = bundleOf(
      'body',
      '2.0.0',
      [gw2, bcm2, ivi1],
      [{ member: 'gateway', requires: 'tcu', min_version: '7.0.0', below_version: '8.0.0' }],
    );
    const plan = planBundle(b, inventoryV1());
    assert.deepEqual(
      plan.map((s) => [s.ecu, s.from, s.to, s.unchanged, s.downgrade]),
      [
        ['gateway', '1.0.0', '2.0.0', false, false],
        ['bcm', '1.4.0', '2.1.0', false, false],
        ['ivi', '5.0.0', '5.0.0', true, false],
      ],
    );
    assert.throws(
      () => planBundle(b, { ...inventoryV1(), tcu: { hardware_id: 'TCU-1', version: '8.1.0' } }),
      code('bundle_constraint'),
    );
    assert.throws(
      () => planBundle(b, { ...inventoryV1(), bcm: { hardware_id: 'BCM-B', version: '1.4.0' } }),
      code('bundle_hardware_mismatch'),
    );
    const { tcu: _tcu, ...noTcu } = inventoryV1();
    assert.throws(() => planBundle(b, noTcu), code('bundle_constraint'));
    const down = planBundle(bundleOf('old', '1.0.0', [gw1, bcm1]), {
      ...inventoryV1(),
      gateway: { hardware_id: 'GW-1', version: '2.0.0' },
      bcm: { hardware_id: 'BCM-A', version: '2.1.0' },
    });
    assert.deepEqual(
      down.map((s) => s.downgrade),
      [true, true],
    );
  });
});

describe('rollback authorisations', { timeout: 60_000 }, () => {
  const now = new Date('2026-12-04T12:00:00.000Z');
  const ctx = () => ({
    releaseKeys: oem.trusted,
    vin: VIN,
    now,
    campaignId: 'rollback-campaign',
    used: [] as string[],
  });
  const downs = (): Downgrade[] => [
    { ecu: 'gateway', from: '2.0.0', to: '1.0.0', manifestSha256: gw1.digest },
    { ecu: 'bcm', from: '2.1.0', to: '1.4.0', manifestSha256: bcm1.digest },
  ];
  const pairs = () => [
    { from: gw2, to: gw1 },
    { from: bcm2, to: bcm1 },
  ];

  it('admits the downgrades it names exactly, for this VIN, before it expires', async () => {
    const signed = await authorisation(oem, pairs(), { now, vins: [VIN] });
    assert.equal(admitDowngrades(downs(), signed, ctx())?.authorisation_id, 'rb-1');
    assert.equal(admitDowngrades([], undefined, ctx()), undefined);
  });

  it('refuses a missing, forged or edited authorisation', async () => {
    assert.throws(() => admitDowngrades(downs(), undefined, ctx()), code('rollback_unauthorised'));
    const forged = await authorisation(rogue, pairs(), { now });
    assert.throws(() => admitDowngrades(downs(), forged, ctx()), code('rollback_authorisation_signature'));
    const edited = structuredClone(await authorisation(oem, pairs(), { now }));
    edited.authorisation.ecus[0]!.to_version = '0.9.0';
    assert.throws(() => admitDowngrades(downs(), edited, ctx()), code('rollback_authorisation_signature'));
    assert.throws(
      () => admitDowngrades(downs(), { nonsense: true }, ctx()),
      code('rollback_authorisation_invalid'),
    );
  });

  it('refuses an expired one, one for another VIN, another campaign, or one already used', async () => {
    const expired = await authorisation(oem, pairs(), { now: new Date(now.getTime() - 2 * 3600_000) });
    assert.throws(() => admitDowngrades(downs(), expired, ctx()), code('rollback_authorisation_expired'));
    const other = await authorisation(oem, pairs(), { now, vins: [OTHER_VIN] });
    assert.throws(() => admitDowngrades(downs(), other, ctx()), code('rollback_authorisation_vin'));
    const campaign = await authorisation(oem, pairs(), { now, campaignId: 'another' });
    assert.throws(() => admitDowngrades(downs(), campaign, ctx()), code('rollback_authorisation_campaign'));
    const fine = await authorisation(oem, pairs(), { now });
    assert.throws(
      () => admitDowngrades(downs(), fine, { ...ctx(), used: ['rb-1'] }),
      code('rollback_authorisation_used'),
    );
  });

  it('refuses one naming other versions, another image, or not every downgraded ECU', async () => {
    const signed = await authorisation(oem, pairs(), { now });
    const otherFrom = downs().map((d) => (d.ecu === 'bcm' ? { ...d, from: '2.2.0' } : d));
    assert.throws(() => admitDowngrades(otherFrom, signed, ctx()), code('rollback_authorisation_versions'));
    const otherImage = downs().map((d) => (d.ecu === 'bcm' ? { ...d, manifestSha256: bcm3.digest } : d));
    assert.throws(() => admitDowngrades(otherImage, signed, ctx()), code('rollback_authorisation_versions'));
    const gwOnly = await authorisation(oem, [{ from: gw2, to: gw1 }], { now });
    assert.throws(() => admitDowngrades(downs(), gwOnly, ctx()), /does not name bcm 2.1.0 -> 1.4.0/);
  });

  it('is never signed when it licenses an upgrade or a long validity', async () => {
    await assert.rejects(authorisation(oem, [{ from: gw1, to: gw2 }], { now }), /only downgrades/);
    await assert.rejects(authorisation(oem, pairs(), { now, validMs: 40 * 24 * 3600_000 }), /30 days/);
  });
});
