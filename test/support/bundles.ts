/**
 * A 3-ECU vehicle and its bundles against a private local cloud (test/support/agent-cloud.ts): releases of a
 * gateway, a body controller and an infotainment unit at 1.0.0 (the factory images) and 2.0.0, the two OEM-signed
 * bundles of them stored through POST /bundles, and helpers to run bundle campaigns and to play a compromised
 * backend (offers published straight on MQTT with assignments signed by the backend key).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { manifestDigest, signAssignment } from '../../protocol/assignment.js';
import {
  BUNDLE_ASSIGNMENT_ECU,
  type Bundle,
  bundleDigest,
  bundleOfManifests,
  type SignedBundle,
  signBundle,
} from '../../protocol/bundle.js';
import type { SignedManifest } from '../../protocol/manifest.js';
import { offerFor } from '../../protocol/offer.js';
import {
  type RollbackAuthorisation,
  type SignedRollbackAuthorisation,
  signRollbackAuthorisation,
} from '../../protocol/rollback.js';
import type { Signer } from '../../protocol/signatures.js';
import type { EcuConfig, VehicleAgent } from '../../vehicle/agent.js';
import {
  type AgentCloud,
  activeSlot,
  downloadsLeft,
  type EventLog,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  sha256,
  startAgent,
  waitUntil,
} from './agent-cloud.js';

export const ECUS: readonly EcuConfig[] = [
  { ecu: 'gw', hardware_id: 'GW-HW-1', version: '1.0.0' },
  { ecu: 'bcm', hardware_id: 'BCM-HW-1', version: '1.0.0' },
  { ecu: 'ivi', hardware_id: 'IVI-HW-1', version: '1.0.0' },
];

export const factoryImageOf = (e: { ecu: string }) => Buffer.from(`factory image of ${e.ecu} 1.0.0\n`);

export interface BundleFixture {
  /** Per ECU, per version: the signed manifest and the image. */
  readonly releases: Record<string, Record<string, { signed: SignedManifest; image: Buffer }>>;
  /** 1.0.0 of every ECU (the factory images) and 2.0.0 of every ECU. */
  readonly base: SignedBundle;
  readonly next: SignedBundle;
}

export function bundleOf(
  id: string,
  version: string,
  members: readonly SignedManifest[],
  constraints: Bundle['constraints'] = [],
): Bundle {
  return bundleOfManifests(
    id,
    version,
    members.map((s) => s.manifest),
    constraints,
  );
}

/** Publishes the releases and stores both bundles (POST /bundles). */
export async function publishBundles(ac: AgentCloud): Promise<BundleFixture> {
  const releases: BundleFixture['releases'] = {};
  for (const e of ECUS) {
    releases[e.ecu] = {};
    for (const version of ['1.0.0', '2.0.0']) {
      const image =
        version === '1.0.0' ? factoryImageOf(e) : Buffer.from(`${e.ecu} ${version}\n`.repeat(9000));
      const p = await publishRelease(ac, {
        version,
        ecu: e.ecu,
        hardwareIds: [e.hardware_id],
        releaseId: `${e.ecu}-${version}`,
        image,
      });
      releases[e.ecu]![version] = { signed: p.signed, image };
    }
  }
  const signer = ac.releaseKey.signer;
  const members = (v: string) => ECUS.map((e) => releases[e.ecu]![v]!.signed);
  const base = await signBundle(bundleOf('body-1-0', '1.0.0', members('1.0.0')), [signer]);
  // The infotainment 2.0.0 needs the gateway 2.x: a constraint inside the bundle.
  const next = await signBundle(
    bundleOf('body-2-0', '2.0.0', members('2.0.0'), [
      { member: 'ivi', requires: 'gw', min_version: '2.0.0', below_version: '3.0.0' },
    ]),
    [signer],
  );
  for (const b of [base, next]) {
    const res = await ac.operator.call('POST', '/bundles', b);
    assert.equal(res.status, 201, res.raw.toString());
  }
  return { releases, base, next };
}

/** What every ECU of the vehicle in `dir` runs (its active slot). */
export function slotVersions(dir: string): Record<string, string> {
  return Object.fromEntries(ECUS.map((e) => [e.ecu, activeSlot(dir, e.ecu).version]));
}

/** Asserts every ECU runs exactly the images of `version` (factory images for 1.0.0), committed. */
export function assertAllRun(dir: string, f: BundleFixture, version: string): void {
  for (const e of ECUS) {
    const slot = activeSlot(dir, e.ecu);
    assert.equal(slot.version, version, `${e.ecu} runs ${slot.version}`);
    assert.equal(slot.contentSha256, sha256(f.releases[e.ecu]![version]!.image), `${e.ecu} image`);
    assert.equal(slot.state, 'committed', `${e.ecu} is committed`);
  }
}

/** One wave, no canary, no retry: what every bundle campaign of the tests starts with. */
export const BUNDLE_CAMPAIGN_POLICY = { waves: [100], skip_canary: true, retry_budget: 0 } as const;

export async function startBundleCampaign(
  ac: AgentCloud,
  id: string,
  bundleId: string,
  vins: string[],
  extra: Record<string, unknown> = {},
): Promise<void> {
  const created = await ac.operator.createCampaign({
    campaign_id: id,
    name: id,
    bundle_id: bundleId,
    targets: { vins },
    policy: BUNDLE_CAMPAIGN_POLICY,
    ...extra,
  });
  assert.equal(created.json.status, 'created', created.raw.toString());
  assert.equal(created.json.bundle_id, bundleId);
  const started = await ac.operator.call('POST', `/campaigns/${id}/start`, {});
  assert.equal(started.status, 200, started.raw.toString());
}

/** The backend's view of the vehicle's inventory, once it shows `version` on every ECU. */
export async function untilInventory(ac: AgentCloud, vin: string, version: string): Promise<void> {
  await waitUntil(
    async () => {
      const v = (await ac.operator.call('GET', `/vehicles/${vin}`)).json;
      return ECUS.every(
        (e) =>
          v.inventory?.ecus?.find((x: { ecu: string }) => x.ecu === e.ecu)?.version === version &&
          v.ecus?.find((x: { ecu: string }) => x.ecu === e.ecu)?.version === version,
      );
    },
    45_000,
    `backend inventory of ${vin} at ${version}`,
  );
}

let forgedCounter = 1_000_000;

/**
 * A compromised backend: an offer of `bundle` with material of its choosing (inline), under an assignment the
 * backend key signs for this VIN. The vehicle must refuse whatever the OEM did not sign.
 */
export async function publishForgedBundleOffer(
  ac: AgentCloud,
  vin: string,
  updateId: string,
  bundle: SignedBundle,
  manifests: readonly SignedManifest[],
  rollback?: unknown,
): Promise<void> {
  const now = Date.now();
  const assignment = await signAssignment(
    {
      schema: 'ota.assignment/v1',
      vin,
      update_id: updateId,
      campaign_id: null,
      release_id: bundle.bundle.bundle_id,
      version: bundle.bundle.version,
      ecu: BUNDLE_ASSIGNMENT_ECU,
      manifest_sha256: bundleDigest(bundle.bundle),
      counter: forgedCounter++,
      issued_at: new Date(now).toISOString(),
      expires_at: new Date(now + 3600_000).toISOString(),
    },
    ac.backendSigner,
  );
  const offer = {
    ...offerFor(assignment, 1),
    bundle: { bundle, manifests, ...(rollback !== undefined ? { rollback } : {}) },
  };
  await publishOffer(ac, vin, offer);
}

/** An authorisation to take campaign `campaignId` from the `next` bundle back to `base`. */
export async function rollbackAuthorisation(
  f: BundleFixture,
  campaignId: string,
  signer: Signer,
  change: Partial<RollbackAuthorisation> = {},
): Promise<SignedRollbackAuthorisation> {
  const now = Date.now();
  return signRollbackAuthorisation(
    {
      schema: 'ota.rollback-authorisation/v1',
      authorisation_id: `rb-${campaignId}`,
      campaign_id: campaignId,
      bundle_id: f.next.bundle.bundle_id,
      ecus: ECUS.map((e) => ({
        ecu: e.ecu,
        from_version: '2.0.0',
        to_version: '1.0.0',
        to_manifest_sha256: manifestDigest(f.releases[e.ecu]!['1.0.0']!.signed.manifest),
      })),
      issued_at: new Date(now - 60_000).toISOString(),
      expires_at: new Date(now + 86_400_000).toISOString(),
      ...change,
    },
    [signer],
  );
}

/** A registered three-ECU vehicle with its agent started and connected over MQTT. */
export async function bundleVehicle(
  ac: AgentCloud,
  vin: string,
  overrides: Parameters<typeof startAgent>[3] = {},
) {
  const dir = await registerAgentVehicle(ac, vin, ECUS);
  const v = await startAgent(ac, vin, dir, { ecus: ECUS, factoryImage: factoryImageOf, ...overrides });
  await v.events.waitFor((e) => e.type === 'connection' && e.connected, 15_000, 'MQTT connection');
  return { dir, v };
}

/** The vehicle's row in the campaign's first wave, as the operator API lists it. */
export async function campaignUpdate(ac: AgentCloud, id: string, vin: string) {
  const res = await ac.operator.call('GET', `/campaigns/${id}/vehicles?wave=0`);
  assert.equal(res.status, 200, res.raw.toString());
  return (res.json.vehicles as { vin: string; status: string; reason?: string }[]).find((x) => x.vin === vin);
}

const resumable = new WeakMap<AgentCloud, Promise<PublishedRelease[]>>();

/** Bundle body-3-0: members of 1 MiB of random bytes (nothing to compress or reuse: bytes served = bytes fetched). */
export function resumableBundle(ac: AgentCloud): Promise<PublishedRelease[]> {
  let members = resumable.get(ac);
  if (!members) {
    members = (async () => {
      const published: PublishedRelease[] = [];
      for (const e of ECUS) {
        published.push(
          await publishRelease(ac, {
            version: '3.0.0',
            ecu: e.ecu,
            hardwareIds: [e.hardware_id],
            releaseId: `${e.ecu}-3.0.0`,
            size: 1024 * 1024,
          }),
        );
      }
      const signed = await signBundle(
        bundleOf(
          'body-3-0',
          '3.0.0',
          published.map((p) => p.signed),
        ),
        [ac.releaseKey.signer],
      );
      const res = await ac.operator.call('POST', '/bundles', signed);
      assert.equal(res.status, 201, res.raw.toString());
      return published;
    })();
    resumable.set(ac, members);
  }
  return members;
}

/** Every ECU of the vehicle in `dir` runs the member images given (in ECUS order) at `version`. */
export function assertRuns(dir: string, members: readonly PublishedRelease[], version: string): void {
  ECUS.forEach((e, i) => {
    const slot = activeSlot(dir, e.ecu);
    assert.equal(slot.version, version, `${e.ecu} runs ${slot.version}`);
    assert.equal(slot.contentSha256, sha256(members[i]!.image), `${e.ecu} image`);
  });
}

/** Where each image request of the agent started. */
export function requestOffsets(v: { events: EventLog }): number[] {
  return v.events.events.flatMap((e) => (e.type === 'request' ? [e.offset] : []));
}

/** The campaign has the vehicle completed, and no member download is left once the bundle has its outcome. */
export async function assertEnded(
  ac: AgentCloud,
  v: { agent: VehicleAgent },
  dir: string,
  campaign: string,
  vin: string,
) {
  await v.agent.whenIdle();
  assert.deepEqual(downloadsLeft(dir), []);
  assert.ok(!existsSync(join(dir, 'bundle', 'members')), 'the member downloads are removed');
  assert.equal((await campaignUpdate(ac, campaign, vin))?.status, 'completed');
}

/** startBundleCampaign's `extra` for a campaign of one wave with these conditions. */
export const withConditions = (conditions: Record<string, unknown>) => ({
  policy: { ...BUNDLE_CAMPAIGN_POLICY, conditions },
});
