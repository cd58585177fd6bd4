/** The TCU's all-or-nothing bundle install over three ECUs with A/B slots, on real files; power cuts simulated. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type SignedAssignment, signAssignment } from '../../protocol/assignment.js';
import { BUNDLE_ASSIGNMENT_ECU, bundleDigest, type SignedBundle } from '../../protocol/bundle.js';
import type { SignedRollbackAuthorisation } from '../../protocol/rollback.js';
import type { BundleOffer } from '../../vehicle/bundle-install.js';
import {
  authorisation,
  p256Key,
  release,
  signedBundle,
  type TestKey,
  type TestRelease,
} from '../support/bundle-fixtures.js';
import { bootVehicle, PowerCut, type SimVehicleOptions } from '../support/bundle-vehicle.js';

const HOOK_TIMEOUT = { timeout: 30_000 };
const VIN = '1HGCM82633A004352';
const root = mkdtempSync(join(tmpdir(), 'bundle-install-'));
after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);

let oem: TestKey;
let backend: TestKey;
let rogue: TestKey;
const v1: Record<string, TestRelease> = {};
const v2: Record<string, TestRelease> = {};
let bundle2: SignedBundle;
let bundle1: SignedBundle;
let otherBundle: SignedBundle;
const images = new Map<string, Buffer>();
let counter = 0;
let n = 0;
const signal = new AbortController().signal;

before(async () => {
  oem = p256Key();
  backend = p256Key();
  rogue = p256Key();
  for (const [ecu, hw, a, b] of [
    ['gateway', 'GW-1', '1.0.0', '2.0.0'],
    ['bcm', 'BCM-A', '1.4.0', '2.1.0'],
    ['ivi', 'IVI-9', '5.0.0', '5.1.0'],
  ] as const) {
    v1[ecu] = await release(oem, ecu, hw, a);
    v2[ecu] = await release(oem, ecu, hw, b);
    images.set(v1[ecu].manifest.sha256, v1[ecu].image);
    images.set(v2[ecu].manifest.sha256, v2[ecu].image);
  }
  bundle1 = await signedBundle(oem, 'body', '1.0.0', [v1.gateway!, v1.bcm!, v1.ivi!]);
  bundle2 = await signedBundle(
    oem,
    'body',
    '2.0.0',
    [v2.gateway!, v2.bcm!, v2.ivi!],
    [{ member: 'ivi', requires: 'gateway', min_version: '2.0.0' }],
  );
  const bcm22 = await release(oem, 'bcm', 'BCM-A', '2.2.0');
  otherBundle = await signedBundle(oem, 'body-b', '2.0.0', [v2.gateway!, bcm22, v2.ivi!]);
}, HOOK_TIMEOUT);

async function assignmentFor(b: SignedBundle, campaign: string | null = 'c-1'): Promise<SignedAssignment> {
  const now = Date.now();
  return signAssignment(
    {
      schema: 'ota.assignment/v1',
      vin: VIN,
      update_id: `u-${++counter}`,
      campaign_id: campaign,
      release_id: b.bundle.bundle_id,
      version: b.bundle.version,
      ecu: BUNDLE_ASSIGNMENT_ECU,
      manifest_sha256: bundleDigest(b.bundle),
      counter,
      issued_at: new Date(now - 1000).toISOString(),
      expires_at: new Date(now + 3600_000).toISOString(),
    },
    backend.signer,
  );
}

async function offerOf(
  b: SignedBundle,
  members: readonly TestRelease[],
  opts: { campaign?: string; auth?: SignedRollbackAuthorisation } = {},
): Promise<BundleOffer> {
  const assignment = await assignmentFor(b, opts.campaign ?? 'c-1');
  return {
    update_id: assignment.assignment.update_id,
    campaign_id: assignment.assignment.campaign_id,
    bundle: b,
    assignment,
    manifests: members.map((r) => r.signed),
    ...(opts.auth ? { rollback_authorisation: opts.auth } : {}),
  };
}

function vehicle(extra: Partial<SimVehicleOptions> = {}) {
  const dir = join(root, `car${++n}`);
  const base: SimVehicleOptions = {
    dir,
    vin: VIN,
    releaseKeys: oem.trusted,
    backendKeys: backend.trusted,
    factory: v1,
    images,
    ...extra,
  };
  return { base, boot: (more: Partial<SimVehicleOptions> = {}) => bootVehicle({ ...base, ...more }) };
}

/** A power cut: the process stops here, so nothing after it runs (the signal tells the installer it died). */
function cut(power: AbortController): never {
  power.abort();
  throw new PowerCut('power cut');
}

const ALL_OLD = { gateway: '1.0.0', bcm: '1.4.0', ivi: '5.0.0' };
const ALL_NEW = { gateway: '2.0.0', bcm: '2.1.0', ivi: '5.1.0' };
const members2 = () => [v2.gateway!, v2.bcm!, v2.ivi!];

describe('bundle install on a 3-ECU vehicle', { timeout: 120_000 }, () => {
  it('installs all three in order and reports per-ECU progress', async () => {
    const car = vehicle().boot();
    const out = await car.installer.run(await offerOf(bundle2, members2()), 0, signal);
    assert.equal(out.status, 'completed', out.reason);
    assert.deepEqual(out.versions, ALL_NEW);
    assert.deepEqual(await car.versions(), ALL_NEW);
    const phases = (ecu: string) => [
      ...new Set(car.progress.filter((p) => p.ecu === ecu).map((p) => p.phase)),
    ];
    for (const ecu of ['gateway', 'bcm', 'ivi']) {
      assert.deepEqual(phases(ecu), [
        'downloading',
        'downloaded',
        'writing',
        'written',
        'activated',
        'healthy',
        'committed',
      ]);
    }
    const activations = car.progress.filter((p) => p.phase === 'activated').map((p) => p.ecu);
    assert.deepEqual(activations, ['gateway', 'bcm', 'ivi']);
  });

  it("returns all three to the old versions when one member's health check fails, naming it", async () => {
    const car = vehicle({ unhealthy: new Set(['bcm']) }).boot();
    const out = await car.installer.run(await offerOf(bundle2, members2()), 0, signal);
    assert.equal(out.status, 'rolled_back');
    assert.equal(out.failed_member, 'bcm');
    assert.match(out.reason ?? '', /health check of bcm 2.1.0 failed/);
    assert.deepEqual(await car.versions(), ALL_OLD);
    assert.ok(car.progress.some((p) => p.ecu === 'ivi' && p.phase === 'reverted'));
  });

  it('recovers to all old after a power cut between the second and third activation', async () => {
    const v = vehicle();
    const power = new AbortController();
    const car = v.boot({
      beforeStep: (step, ecu) => {
        if (step === 'activate' && ecu === 'ivi') cut(power);
      },
    });
    await assert.rejects(car.installer.run(await offerOf(bundle2, members2()), 0, power.signal), PowerCut);
    const reboot = v.boot();
    assert.equal((await reboot.ecus.bcm!.read()).state, 'trial', 'the cut left bcm on trial');
    const out = await reboot.installer.recover();
    assert.equal(out?.status, 'rolled_back');
    assert.deepEqual(await reboot.versions(), ALL_OLD);
    assert.equal(await reboot.installer.recover(), undefined, 'settled once');
  });

  it('recovers to all new after a power cut once the bundle was decided, before the last commit', async () => {
    const v = vehicle();
    const car = v.boot({
      beforeStep: (step, ecu) => {
        if (step === 'commit' && ecu === 'ivi') throw new PowerCut('power cut');
      },
    });
    await assert.rejects(car.installer.run(await offerOf(bundle2, members2()), 0, signal), PowerCut);
    const reboot = v.boot();
    const out = await reboot.installer.recover();
    assert.equal(out?.status, 'completed');
    assert.deepEqual(await reboot.versions(), ALL_NEW);
    assert.equal((await reboot.ecus.ivi!.read()).state, 'committed');
  });

  it('gives an unconfirmed slot up after its boot budget, and the bundle then settles all old', async () => {
    const v = vehicle({ bootBudget: 2 });
    // The TCU dies after activating everything, before any health check or decision.
    const power = new AbortController();
    const car = v.boot({
      beforeStep: (step) => {
        if (step === 'health') cut(power);
      },
    });
    await assert.rejects(car.installer.run(await offerOf(bundle2, members2()), 0, power.signal), PowerCut);
    const ivi = v.boot().ecus.ivi!;
    assert.equal((await ivi.boot()).bootsLeft, 1);
    assert.equal((await ivi.boot()).bootsLeft, 0);
    assert.equal((await ivi.active()).version, '5.1.0', 'still on trial within its budget');
    const third = await ivi.boot();
    assert.equal(third.gaveUp?.version, '5.1.0');
    assert.equal(third.active.version, '5.0.0', 'the bootloader switched back on its own');
    const out = await v.boot().installer.recover();
    assert.equal(out?.status, 'rolled_back');
    assert.deepEqual(await v.boot().versions(), ALL_OLD);
  });

  it('undoes committed members when another fell back on its boot counter before its commit', async () => {
    const v = vehicle({ bootBudget: 0 });
    const car = v.boot({
      beforeStep: (step, ecu) => {
        if (step === 'commit' && ecu === 'ivi') throw new PowerCut('power cut');
      },
    });
    await assert.rejects(car.installer.run(await offerOf(bundle2, members2()), 0, signal), PowerCut);
    const reboot = v.boot();
    await reboot.ecus.ivi!.boot(); // the ECU restarted before the TCU: budget 0, switched back
    const out = await reboot.installer.recover();
    assert.equal(out?.status, 'rolled_back');
    assert.equal(out?.failed_member, 'ivi');
    assert.deepEqual(await reboot.versions(), ALL_OLD);
  });

  it('refuses a partial bundle and a mix-and-match offer before downloading anything', async () => {
    const car = vehicle().boot();
    const partial = await car.installer.run(await offerOf(bundle2, [v2.gateway!, v2.bcm!]), 0, signal);
    assert.equal(partial.status, 'rejected');
    assert.match(partial.reason ?? '', /bundle_incomplete.*ivi/);
    // Members of another bundle under this bundle's signature and assignment.
    const bcm22 = await release(oem, 'bcm', 'BCM-A', '2.2.0');
    const mixed = await car.installer.run(await offerOf(bundle2, [v2.gateway!, bcm22, v2.ivi!]), 0, signal);
    assert.equal(mixed.status, 'rejected');
    assert.match(mixed.reason ?? '', /bundle_mix_and_match/);
    // The other bundle's assignment with this bundle's document: the assignment binds another digest.
    const swapped = { ...(await offerOf(otherBundle, members2())), bundle: bundle2 };
    const s = await car.installer.run(swapped, 0, signal);
    assert.equal(s.status, 'rejected');
    assert.match(s.reason ?? '', /bundle_assignment/);
    assert.deepEqual(car.fetched, [], 'nothing was downloaded');
    assert.deepEqual(await car.versions(), ALL_OLD);
  });

  it('names the member whose download fails and installs nothing', async () => {
    const car = vehicle({
      images: new Map([...images].filter(([k]) => k !== v2.ivi!.manifest.sha256)),
    }).boot();
    const out = await car.installer.run(await offerOf(bundle2, members2()), 0, signal);
    assert.equal(out.status, 'failed');
    assert.equal(out.failed_member, 'ivi');
    assert.deepEqual(await car.versions(), ALL_OLD);
  });
});

describe('rollback of a bundle on the vehicle', { timeout: 120_000 }, () => {
  const pairs = () => ['gateway', 'bcm', 'ivi'].map((e) => ({ from: v2[e]!, to: v1[e]! }));

  async function upgraded() {
    const v = vehicle();
    const car = v.boot();
    assert.equal(
      (await car.installer.run(await offerOf(bundle2, members2()), 0, signal)).status,
      'completed',
    );
    return v;
  }

  it('installs the previous versions with a valid authorisation, and never twice with the same one', async () => {
    const v = await upgraded();
    const auth = await authorisation(oem, pairs(), { campaignId: 'rb', vins: [VIN] });
    const car = v.boot();
    const back = await car.installer.run(
      await offerOf(bundle1, Object.values(v1), { campaign: 'rb', auth }),
      0,
      signal,
    );
    assert.equal(back.status, 'completed', back.reason);
    assert.deepEqual(await car.versions(), ALL_OLD);
    assert.equal(
      (await car.installer.run(await offerOf(bundle2, members2()), 0, signal)).status,
      'completed',
    );
    const replay = await car.installer.run(
      await offerOf(bundle1, Object.values(v1), { campaign: 'rb', auth }),
      0,
      signal,
    );
    assert.equal(replay.status, 'rejected');
    assert.match(replay.reason ?? '', /rollback_authorisation_used/);
    assert.deepEqual(await car.versions(), ALL_NEW);
  });

  it('refuses a rollback with a missing, forged, expired or other-VIN authorisation', async () => {
    const v = await upgraded();
    const car = v.boot();
    const cases: [SignedRollbackAuthorisation | undefined, RegExp][] = [
      [undefined, /rollback_unauthorised/],
      [await authorisation(rogue, pairs(), { campaignId: 'rb' }), /rollback_authorisation_signature/],
      [
        await authorisation(oem, pairs(), { campaignId: 'rb', now: new Date(Date.now() - 7200_000) }),
        /rollback_authorisation_expired/,
      ],
      [
        await authorisation(oem, pairs(), { campaignId: 'rb', vins: ['2HGCM82633A004352'] }),
        /rollback_authorisation_vin/,
      ],
    ];
    for (const [auth, expected] of cases) {
      const out = await car.installer.run(
        await offerOf(bundle1, Object.values(v1), { campaign: 'rb', ...(auth ? { auth } : {}) }),
        0,
        signal,
      );
      assert.equal(out.status, 'rejected');
      assert.match(out.reason ?? '', expected);
    }
    assert.deepEqual(car.fetched, []);
    assert.deepEqual(await car.versions(), ALL_NEW);
  });
});
