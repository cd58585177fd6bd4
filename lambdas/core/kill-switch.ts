/**
 * The operator's kill switches. Withdrawing a release takes it out of service for good: it is never offered or
 * answered again (initiate, download, campaign ticks), its campaigns (and those of bundles it is a member of) are
 * cancelled and every update of it not yet being installed is withdrawn (agents ask before installing and stand
 * down). Revoking a vehicle cuts it off: its certificate is revoked (IoT Core refuses it; locally the broker's
 * revocation list), its tokens and logins are refused, its MQTT messages are refused by ingest, and its updates not
 * yet being installed are withdrawn.
 * An update already installing finishes on the car; its outcome is still recorded.
 */

import type { ReleaseWithdrawn, VehicleRevoked } from '../../protocol/operator-responses.js';
import { type CampaignService, withdrawUpdate } from './campaigns.js';
import { ConflictError, NotFoundError } from './errors.js';
import type {
  BundleRepository,
  CampaignRecord,
  CampaignRepository,
  CertificateIssuer,
  Clock,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRepository,
} from './ports.js';
import { releaseView } from './releases.js';
import { isTerminal } from './update-state.js';

/** What withdrawing an open update touches (the campaign's counts, the vehicle's lock; its history is on the update). */
interface WithdrawDeps {
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly campaigns: CampaignRepository;
  readonly clock: Clock;
}

export interface KillSwitchDeps extends WithdrawDeps {
  readonly releases: ReleaseRepository;
  /** Where bundle campaigns' bundles are read: a campaign of a bundle with the release among its members goes too. */
  readonly bundles?: Pick<BundleRepository, 'get'>;
  /** Cancels a campaign the way the operator's cancel does. */
  readonly campaignService: Pick<CampaignService, 'act'>;
}

export interface VehicleRevocationDeps extends WithdrawDeps {
  readonly issuer: CertificateIssuer;
}

/** True when this call withdrew the update (it was open and not yet installing). */
async function withdrawOpen(deps: WithdrawDeps, u: UpdateRecord, reason: string): Promise<boolean> {
  if (isTerminal(u.status) || u.status === 'installing') return false;
  const ended = await withdrawUpdate(deps, u, reason);
  return ended?.status === 'cancelled' && ended.reason === reason;
}

/** The release kill switch (operator-api). */
export class KillSwitchService {
  constructor(private readonly deps: KillSwitchDeps) {}

  async withdrawRelease(releaseId: string, reason = 'release withdrawn'): Promise<ReleaseWithdrawn> {
    const release = await this.deps.releases.get(releaseId);
    if (!release) throw new NotFoundError('unknown_release', `No release ${releaseId}`);
    const at = this.deps.clock.now().toISOString();
    // Marked first: from this write on, no request or tick hands out the release, whatever follows.
    if (!(await this.deps.releases.markWithdrawn(releaseId, at, reason)) && release.status !== 'withdrawn') {
      throw new ConflictError('concurrent_update', 'The release changed concurrently; retry');
    }
    // Repeating a withdraw finishes what an interrupted one left open.
    let campaignsCancelled = 0;
    let cursor: string | undefined;
    // A bundle with the release among its members can no longer install anywhere (every vehicle would be refused
    // the member): its campaigns are cancelled like the release's own.
    const bundleHasIt = new Map<string, Promise<boolean>>();
    const offers = (c: CampaignRecord): Promise<boolean> => {
      if (c.releaseId === releaseId) return Promise.resolve(true);
      if (!c.bundle || !this.deps.bundles) return Promise.resolve(false);
      let known = bundleHasIt.get(c.releaseId);
      if (!known) {
        known = this.deps.bundles
          .get(c.releaseId)
          .then((b) => !!b?.signedBundle.bundle.members.some((m) => m.release_id === releaseId));
        bundleHasIt.set(c.releaseId, known);
      }
      return known;
    };
    do {
      const page = await this.deps.campaigns.list(100, cursor);
      for (const c of page.items) {
        if (['cancelled', 'completed'].includes(c.status) || !(await offers(c))) continue;
        await this.deps.campaignService.act(c.campaignId, 'cancel');
        campaignsCancelled++;
      }
      cursor = page.token;
    } while (cursor);
    let updatesWithdrawn = 0;
    cursor = undefined;
    do {
      const page = await this.deps.updates.listOpenDirectUpdates(releaseId, cursor);
      for (const u of page.items) if (await withdrawOpen(this.deps, u, reason)) updatesWithdrawn++;
      cursor = page.cursor;
    } while (cursor);
    return {
      ...releaseView((await this.deps.releases.get(releaseId))!),
      campaigns_cancelled: campaignsCancelled,
      updates_withdrawn: updatesWithdrawn,
    };
  }
}

/**
 * The vehicle kill switch (registry-api, the one function allowed to revoke a certificate).
 */
export class VehicleRevocationService {
  constructor(private readonly deps: VehicleRevocationDeps) {}

  async revokeVehicle(vin: string, reason = 'vehicle revoked'): Promise<VehicleRevoked> {
    const vehicle = await this.deps.vehicles.get(vin);
    if (!vehicle) throw new NotFoundError('unknown_vehicle', `No vehicle ${vin}`);
    const at = this.deps.clock.now().toISOString();
    // The registry flag first (tokens, logins and ingest check it), then the certificate; a repeated revoke
    // retries the certificate and the updates.
    await this.deps.vehicles.revoke(vin, at, reason);
    await this.deps.issuer.revoke(vin, vehicle.certificateId);
    let updatesWithdrawn = 0;
    for (const u of await this.deps.updates.listForVehicle(vin)) {
      if (await withdrawOpen(this.deps, u, reason)) updatesWithdrawn++;
    }
    const revoked = (await this.deps.vehicles.get(vin))!;
    return {
      vin,
      certificate_id: vehicle.certificateId,
      revoked_at: revoked.revokedAt ?? at,
      reason: revoked.revokedReason ?? reason,
      updates_withdrawn: updatesWithdrawn,
    };
  }
}
