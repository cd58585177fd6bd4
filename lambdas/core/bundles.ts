/**
 * Bundles in the backend (protocol/bundle.ts, protocol/bundle-api.ts): an operator stores an OEM-signed bundle
 * whose members are published releases; a campaign targets it; the vehicle asks for everything it needs to install
 * it (the signed bundle, every member's signed manifest with a short-lived download URL, a rollback campaign's
 * authorisation). The backend checks what it stores (signature, members published and exactly the manifests the
 * bundle names) so operators learn of a bad bundle at once, but the vehicle checks it all again: a backend that
 * lies can refuse service, never make a car install a mix of releases or go down a version.
 */

import type { SignedAssignment } from '../../protocol/assignment.js';
import { manifestDigest } from '../../protocol/assignment.js';
import { BUNDLE_ASSIGNMENT_ECU, bundleDigest, verifySignedBundle } from '../../protocol/bundle.js';
import type { BundleAnswer, BundleView, RollbackOffer } from '../../protocol/bundle-api.js';
import { ProtocolError } from '../../protocol/errors.js';
import { verifySignedRollbackAuthorisation } from '../../protocol/rollback.js';
import type { TrustedKey } from '../../protocol/signatures.js';
import type { AssignmentTarget } from './assignment-issuer.js';
import { BadRequestError, ConflictError, NotFoundError, OtaError } from './errors.js';
import type {
  BundleRecord,
  BundleRepository,
  CampaignRecord,
  CampaignRepository,
  Clock,
  ObjectStore,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
} from './ports.js';
import { isTerminal } from './update-state.js';

/** What an assignment of this bundle binds: the offer worker's and the /bundle answer's alike. */
export function bundleTarget(b: BundleRecord): AssignmentTarget {
  const bundle = b.signedBundle.bundle;
  return {
    release_id: bundle.bundle_id,
    version: bundle.version,
    ecu: BUNDLE_ASSIGNMENT_ECU,
    manifest_sha256: b.digest,
  };
}

export function bundleView(b: BundleRecord): BundleView {
  const bundle = b.signedBundle.bundle;
  return {
    bundle_id: b.bundleId,
    version: b.version,
    members: bundle.members.map((m) => ({
      ecu: m.ecu,
      release_id: m.release_id,
      version: m.version,
      size: m.size,
    })),
    install_order: bundle.install_order,
    digest: b.digest,
    created_at: b.createdAt,
    signed_bundle: b.signedBundle,
  };
}

export interface BundleServiceDeps {
  readonly bundles: BundleRepository;
  readonly releases: Pick<ReleaseRepository, 'get'>;
  readonly clock: Clock;
  readonly trustedReleaseKeys: readonly TrustedKey[];
}

export class BundleService {
  constructor(private readonly deps: BundleServiceDeps) {}

  /** Stores a signed bundle once every member is a published release with exactly the manifest it names. */
  async create(input: unknown): Promise<BundleView> {
    let signed: ReturnType<typeof verifySignedBundle>;
    try {
      signed = verifySignedBundle(input, this.deps.trustedReleaseKeys);
    } catch (err) {
      if (err instanceof ProtocolError) throw new BadRequestError(err.code, err.message);
      throw err;
    }
    const bundle = signed.bundle;
    for (const m of bundle.members) {
      const r = await this.deps.releases.get(m.release_id);
      if (!r) throw new BadRequestError('unknown_member', `Bundle member ${m.release_id} is no release`);
      if (r.status !== 'published') {
        throw new ConflictError('member_not_published', `Bundle member ${m.release_id} is ${r.status}`);
      }
      if (r.ecu !== m.ecu || manifestDigest(r.signedManifest.manifest) !== m.manifest_sha256) {
        throw new BadRequestError(
          'member_mismatch',
          `Bundle member ${m.release_id} is not the release stored under that id (ECU or manifest differs)`,
        );
      }
    }
    const existing = await this.deps.bundles.get(bundle.bundle_id);
    const digest = bundleDigest(bundle);
    if (existing) {
      // The same bundle again is harmless (a retried request); another one under the same id is not.
      if (existing.digest === digest) return bundleView(existing);
      throw new ConflictError('bundle_exists', `Bundle ${bundle.bundle_id} already exists`);
    }
    const record: BundleRecord = {
      bundleId: bundle.bundle_id,
      version: bundle.version,
      signedBundle: signed,
      digest,
      createdAt: this.deps.clock.now().toISOString(),
    };
    await this.deps.bundles.create(record);
    return bundleView(record);
  }

  async get(bundleId: string): Promise<BundleView> {
    const b = await this.deps.bundles.get(bundleId);
    if (!b) throw new NotFoundError('unknown_bundle', `No bundle ${bundleId}`);
    return bundleView(b);
  }
}

/**
 * A rollback campaign's authorisation as the backend accepts it: well formed, signed by a trusted OEM release key,
 * naming the campaign taken back. The vehicle checks it again against what it runs; checking here only spares
 * operators a campaign every vehicle would refuse.
 */
export function checkRollbackRequest(rollback: RollbackOffer, keys: readonly TrustedKey[], now: Date): void {
  try {
    verifySignedRollbackAuthorisation(rollback.authorisation, keys, now);
  } catch (err) {
    if (err instanceof ProtocolError) throw new BadRequestError(err.code, err.message);
    throw err;
  }
  if (rollback.authorisation.authorisation.campaign_id !== rollback.campaign_id) {
    throw new BadRequestError(
      'rollback_authorisation_campaign',
      `The authorisation is for campaign ${rollback.authorisation.authorisation.campaign_id}, not ${rollback.campaign_id}`,
    );
  }
}

export interface BundleOfferDeps {
  readonly bundles: BundleRepository;
  readonly releases: Pick<ReleaseRepository, 'get'>;
  readonly updates: Pick<UpdateRepository, 'listForVehicle'>;
  readonly campaigns: Pick<CampaignRepository, 'get'>;
  readonly objects: Pick<ObjectStore, 'presignGet'>;
  readonly presignTtlSeconds: number;
}

/**
 * POST /updates/{vin}/bundle: what a vehicle offered a bundle needs to check and install it. With `assign` (the
 * vehicle asked for an assignment: it learnt of the bundle by polling, not from an offer), the answer also carries a
 * freshly signed assignment of the bundle, as /download's answer does for a release: the offer it never received.
 */
export async function bundleAnswer(
  deps: BundleOfferDeps,
  vehicle: VehicleRecord,
  bundleId: string,
  assign?: (update: UpdateRecord, target: AssignmentTarget) => Promise<SignedAssignment>,
): Promise<BundleAnswer> {
  // Only through a campaign that offered it to this vehicle and is still under way.
  const update = (await deps.updates.listForVehicle(vehicle.vin)).find(
    (u) =>
      u.releaseId === bundleId &&
      u.updateId.startsWith('campaign#') &&
      u.status !== 'scheduled' &&
      !isTerminal(u.status),
  );
  if (!update) throw new ConflictError('not_offered', `Bundle ${bundleId} is not offered to this vehicle`);
  const campaign: CampaignRecord | undefined = update.campaignId
    ? await deps.campaigns.get(update.campaignId)
    : undefined;
  if (campaign?.status === 'cancelling' || campaign?.status === 'cancelled') {
    throw new ConflictError('campaign_cancelled', `Campaign ${campaign.campaignId} was cancelled`);
  }
  const b = await deps.bundles.get(bundleId);
  if (!b) throw new NotFoundError('unknown_bundle', `No bundle ${bundleId}`);
  const members: BundleAnswer['members'] = [];
  for (const m of b.signedBundle.bundle.members) {
    const r = await deps.releases.get(m.release_id);
    if (r?.status !== 'published') {
      throw new OtaError('release_withdrawn', `Bundle member ${m.release_id} is not published`, 410);
    }
    members.push({
      ecu: m.ecu,
      release_id: m.release_id,
      manifest: r.signedManifest,
      download_url: await deps.objects.presignGet(r.objectKey, r.objectVersionId, deps.presignTtlSeconds),
      expires_in: deps.presignTtlSeconds,
    });
  }
  const rollback = campaign?.rollback
    ? ({
        campaign_id: campaign.rollback.campaignId,
        authorisation: campaign.rollback.authorisation,
      } as RollbackOffer)
    : null;
  return {
    update_id: update.updateId,
    campaign_id: update.campaignId ?? null,
    bundle: b.signedBundle,
    members,
    rollback,
    ...(assign ? { assignment: await assign(update, bundleTarget(b)) } : {}),
  };
}
