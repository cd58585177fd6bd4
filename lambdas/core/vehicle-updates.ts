/**
 * What a vehicle can do with its updates: ask for a firmware version (answering a short-lived download URL and
 * the signed manifest), report status, and list its updates. Every state change is a single-item conditional
 * write that only moves forward; progress is stored at coarse steps (storeDecision) and the status history (status
 * changes only) is kept on the update item in the same write (update-history.ts), so a vehicle's writes do not grow with the number of reports it sends.
 */

import type { SignedAssignment } from '../../protocol/assignment.js';
import { BUNDLE_ASSIGNMENT_ECU } from '../../protocol/bundle.js';
import type { DownloadAnswer, UpdateList, UpdateView } from '../../protocol/responses.js';
import type { StatusReport } from '../../protocol/schemas.js';
import type { Signer } from '../../protocol/signatures.js';
import { compareVersions } from '../../protocol/versions.js';
import { AssignmentIssuer, type AssignmentSigning, type AssignmentTarget } from './assignment-issuer.js';
import { withdrawUpdate } from './campaign-cancel.js';
import { countMove } from './campaign-counters.js';
import { ConflictError, NotFoundError, OtaError } from './errors.js';
import type {
  CampaignRepository,
  Clock,
  ObjectStore,
  ReleaseRecord,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
  VehicleRepository,
} from './ports.js';
import { withTransition } from './update-history.js';
import { applyReport, BEFORE_INSTALL_STATUSES, isTerminal } from './update-state.js';

export interface UpdateStatusDeps {
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly clock: Clock;
  /** @default PROGRESS_STORE_SECONDS */
  readonly progressStoreSeconds?: number;
}

export interface FirmwareOfferDeps extends UpdateStatusDeps {
  /** A campaign's status decides whether its updates may still be downloaded (cancelling: no). */
  readonly campaigns?: Pick<CampaignRepository, 'get'>;
  readonly releases: ReleaseRepository;
  readonly objects: Pick<ObjectStore, 'presignGet'>;
  readonly presignTtlSeconds: number;
  /** The backend key (KMS on AWS): certifies the online key that signs the per-vehicle assignments. */
  readonly signer: Signer;
  /** Seconds an assignment stays valid. @default 86400 */
  readonly assignmentTtlSeconds?: number;
  /** How assignments are signed (ENV.assignmentSigning). @default 'delegated' */
  readonly assignmentSigning?: AssignmentSigning;
}

/** The answer of POST /updates/{vin}/initiate and /download (protocol/responses.ts). */
export type DownloadOffer = DownloadAnswer;

/** A status report as received over HTTPS or MQTT (protocol/schemas.ts). */
export type StatusInput = StatusReport;

const MAX_WRITE_ATTEMPTS = 5;

export function directUpdateId(releaseId: string): string {
  return `release#${releaseId}`;
}

export function toUpdateView(u: UpdateRecord): UpdateView {
  return {
    update_id: u.updateId,
    release_id: u.releaseId,
    firmware_version: u.version,
    ecu: u.ecu,
    campaign_id: u.campaignId,
    status: u.status,
    progress: u.progress,
    attempt: u.attempt,
    reason: u.reason,
    pending: !isTerminal(u.status),
    created_at: u.createdAt,
    updated_at: u.updatedAt,
  };
}

export class FirmwareOfferService {
  private readonly assignments: AssignmentIssuer;

  constructor(private readonly deps: FirmwareOfferDeps) {
    this.assignments = new AssignmentIssuer({
      vehicles: deps.vehicles,
      signer: deps.signer,
      clock: deps.clock,
      ttlSeconds: deps.assignmentTtlSeconds,
      signing: deps.assignmentSigning,
    });
  }

  /**
   * An assignment of another target for one of this vehicle's updates (a bundle, POST /updates/{vin}/bundle), with
   * the counter the request's rate window reserved, signed by this service's key like a /download answer's.
   */
  assignTarget(
    vehicle: VehicleRecord,
    update: UpdateRecord,
    target: AssignmentTarget,
    reservedCounter?: number,
  ): Promise<SignedAssignment> {
    return this.assignments.assignTarget(vehicle, update, target, reservedCounter);
  }

  /** The published release of that version built for one of this vehicle's ECUs. */
  async resolveRelease(vehicle: VehicleRecord, version: string): Promise<ReleaseRecord> {
    const all = await this.deps.releases.listByVersion(version);
    const candidates = all.filter((r) => r.status === 'published');
    if (candidates.length === 0) {
      // A withdrawn release is gone for good (kill switch): say so rather than "unknown".
      if (all.some((r) => r.status === 'withdrawn' && this.fits(vehicle, r))) {
        throw new OtaError('release_withdrawn', `Firmware ${version} was withdrawn`, 410);
      }
      throw new NotFoundError('unknown_version', `No published firmware ${version}`);
    }
    const compatible = candidates.filter((r) => this.fits(vehicle, r));
    if (compatible.length === 0) {
      throw new NotFoundError(
        'no_compatible_release',
        `Firmware ${version} is not built for this vehicle's ECUs`,
      );
    }
    if (compatible.length > 1) {
      throw new ConflictError(
        'ambiguous_version',
        `Firmware ${version} exists for several of this vehicle's ECUs`,
      );
    }
    return compatible[0]!;
  }

  private fits(vehicle: VehicleRecord, r: ReleaseRecord): boolean {
    return vehicle.ecus.some(
      (e) => e.ecu === r.ecu && r.signedManifest.manifest.hardware_ids.includes(e.hardware_id),
    );
  }

  /**
   * initiate: starts (or restarts after a failure) the vehicle's update to that version.
   * download: answers a fresh URL for an update already started, starting one if there is none (older clients
   * call download alone).
   */
  async requestFirmware(
    vehicle: VehicleRecord,
    version: string,
    mode: 'initiate' | 'download',
    /** The vehicle's next assignment counter, already taken (authorizeVehicleRequest); else taken here. */
    reservedCounter?: number,
  ): Promise<DownloadOffer> {
    const release = await this.resolveRelease(vehicle, version);
    const ecu = vehicle.ecus.find((e) => e.ecu === release.ecu)!;
    // A vehicle offered this release by a campaign downloads it as part of that campaign.
    const campaignUpdate = await this.campaignUpdateFor(vehicle, release.releaseId);
    if (campaignUpdate) await this.refuseIfCancelled(campaignUpdate);
    const updateId = campaignUpdate?.updateId ?? directUpdateId(release.releaseId);
    let update = campaignUpdate ?? (await this.deps.updates.get(vehicle.vin, updateId));
    if (!campaignUpdate) await this.refuseOutsideCampaign(vehicle, release.releaseId, update);

    if (compareVersions(version, ecu.version) < 0) {
      throw new ConflictError(
        'downgrade_refused',
        `The ${ecu.ecu} ECU runs ${ecu.version}; ${version} is older`,
      );
    }
    if (mode === 'initiate' && update?.status === 'completed') {
      throw new ConflictError('already_installed', `Firmware ${version} is already installed`);
    }
    // One counter per answer: the reserved one, or one taken now.
    let counter = reservedCounter;
    if (!update || (mode === 'initiate' && isTerminal(update.status))) {
      // The attempt records the counter of its first assignment, so reports about an older attempt are told apart.
      counter ??= await this.assignments.reserveCounter(vehicle.vin);
      update = await this.startAttempt(vehicle, release, update, counter);
      if (update.offerCounter !== counter) counter = undefined;
    }

    const ttl = this.deps.presignTtlSeconds;
    const url = await this.deps.objects.presignGet(release.objectKey, release.objectVersionId, ttl);
    const m = release.signedManifest.manifest;
    const assignment = await this.assignments.assign(vehicle, update, m, counter);
    return {
      download_url: url,
      expires_at: new Date(this.deps.clock.now().getTime() + ttl * 1000).toISOString(),
      expires_in: ttl,
      firmware_version: m.version,
      release_id: release.releaseId,
      ecu: m.ecu,
      size: m.size,
      sha256: m.sha256,
      update_id: update.updateId,
      status: update.status,
      manifest: release.signedManifest,
      assignment,
    };
  }

  /**
   * A campaign being cancelled withdraws its updates in the background, which can take a while for a large one; a
   * vehicle not reached yet that asks for the release meanwhile is withdrawn here and refused, so no car gets a
   * cancelled campaign's assignment. One already installing goes on (it has the image; cancel never interrupts
   * an install).
   */
  private async refuseIfCancelled(update: UpdateRecord): Promise<void> {
    const campaigns = this.deps.campaigns;
    if (!update.campaignId || !campaigns || !BEFORE_INSTALL_STATUSES.has(update.status)) return;
    const campaign = await campaigns.get(update.campaignId);
    if (campaign?.status !== 'cancelling' && campaign?.status !== 'cancelled') return;
    await withdrawUpdate(this.deps, campaign, update);
    throw new ConflictError('campaign_cancelled', `Campaign ${campaign.campaignId} was cancelled`);
  }

  /**
   * The campaign update offering this release to the vehicle, if one is under way. The vehicle's active update is
   * the fast path; the vehicle's own updates are the truth, because a request can arrive between the campaign
   * marking the update offered and recording it as active (or after another update took the active slot), and
   * must not then start a second, direct update of the same release beside the campaign's.
   */
  private async campaignUpdateFor(
    vehicle: VehicleRecord,
    releaseId: string,
  ): Promise<UpdateRecord | undefined> {
    const underWay = (u: UpdateRecord | undefined): u is UpdateRecord =>
      !!u &&
      u.updateId.startsWith('campaign#') &&
      u.releaseId === releaseId &&
      u.status !== 'scheduled' &&
      !isTerminal(u.status);
    if (vehicle.activeUpdateId?.startsWith('campaign#')) {
      const active = await this.deps.updates.get(vehicle.vin, vehicle.activeUpdateId);
      if (underWay(active)) return active;
    }
    return (await this.deps.updates.listForVehicle(vehicle.vin)).find(underWay);
  }

  /**
   * A vehicle a campaign targets with this release gets it through that campaign only. Cancelling a campaign is
   * the operator saying "not this release to these cars": a car of it (in any wave, offered or not yet) that asked
   * for the release directly got a freshly signed assignment and installed it anyway. Likewise a car whose wave has
   * not come yet would jump the staged rollout. Such a request is refused, unless the vehicle's own direct update
   * of the release was already under way before (it was allowed independently of the campaign) or a later
   * campaign offers it again.
   */
  private async refuseOutsideCampaign(
    vehicle: VehicleRecord,
    releaseId: string,
    direct: UpdateRecord | undefined,
  ): Promise<void> {
    if (direct && !isTerminal(direct.status)) return;
    // The latest campaign of this release for the vehicle decides.
    const latest = (await this.deps.updates.listForVehicle(vehicle.vin))
      .filter((u) => u.campaignId !== undefined && u.releaseId === releaseId)
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1))
      .at(-1);
    if (latest?.status === 'scheduled') {
      throw new ConflictError(
        'not_yet_offered',
        'This release reaches this vehicle through a campaign whose wave has not started',
      );
    }
    if (latest?.status === 'cancelled') {
      throw new ConflictError(
        'campaign_cancelled',
        'The campaign that offered this release to this vehicle was cancelled',
      );
    }
  }

  private async startAttempt(
    vehicle: VehicleRecord,
    release: ReleaseRecord,
    previous: UpdateRecord | undefined,
    offerCounter: number,
  ): Promise<UpdateRecord> {
    const now = this.deps.clock.now().toISOString();
    const started: UpdateRecord = {
      vin: vehicle.vin,
      updateId: directUpdateId(release.releaseId),
      releaseId: release.releaseId,
      version: release.version,
      ecu: release.ecu,
      status: 'initiated',
      progress: 0,
      lastSequence: previous?.lastSequence ?? -1,
      attempt: (previous?.attempt ?? 0) + 1,
      createdAt: previous?.createdAt ?? now,
      updatedAt: now,
      revision: (previous?.revision ?? 0) + 1,
      offerCounter,
      ...(previous?.history ? { history: previous.history } : {}),
    };
    const next = withTransition(started, { status: 'initiated', source: 'backend', at: now });
    if (!(await this.deps.updates.put(next, previous?.revision ?? 0))) {
      // Someone else (a concurrent retry of the same request) started it; use theirs.
      const current = await this.deps.updates.get(vehicle.vin, next.updateId);
      if (!current) throw new ConflictError('concurrent_update', 'The update changed concurrently; retry');
      return current;
    }
    await this.deps.vehicles.setActiveUpdate(vehicle.vin, next.updateId);
    return next;
  }
}

/**
 * The update was offered to the vehicle: a campaign offer was sent (attempt 1 or more, not back to scheduled) or
 * the vehicle started it itself. A scheduled update, or one cancelled before its wave, was never offered.
 */
export function wasOffered(u: UpdateRecord): boolean {
  return u.status !== 'scheduled' && u.attempt > 0;
}

/**
 * A vehicle reports only on what it was offered, and about the current offer: an outcome on a later wave's update
 * would set the registry's version for a car that downloaded nothing and count towards (even halt) the campaign.
 */
function refuseUnoffered(target: UpdateRecord, input: StatusInput): void {
  if (!wasOffered(target)) {
    throw new ConflictError('not_offered', 'This update has not been offered to the vehicle');
  }
  const counter = input.assignment_counter;
  if (counter !== undefined && target.offerCounter !== undefined && counter < target.offerCounter) {
    throw new ConflictError(
      'stale_offer',
      `assignment_counter ${counter} belongs to an earlier offer of this update (current: ${target.offerCounter})`,
    );
  }
}

/**
 * Seconds after which a progress report within the same status is stored again. Status changes are always stored;
 * progress in between only when the stored value is this old, so an operator watching a slow download sees it move
 * at least every 5 minutes, and a vehicle costs writes per status change and per 5 minutes of a long phase, not per
 * message (the agent sends a progress report every 5 % or 2 s: about 20 per phase).
 */
export const PROGRESS_STORE_SECONDS = 300;

/**
 * Whether a forward transition is worth a write: a new status, a new reason, or progress within the same status
 * when the stored one is at least `intervalSeconds` old.
 */
export function storeDecision(
  stored: UpdateRecord,
  next: UpdateRecord,
  now: Date,
  intervalSeconds: number,
): boolean {
  if (next.status !== stored.status || next.reason !== stored.reason) return true;
  return now.getTime() - Date.parse(stored.updatedAt) >= intervalSeconds * 1000;
}

export class UpdateStatusService {
  constructor(private readonly deps: UpdateStatusDeps) {}

  /** Which update a report is about: the one it names, or else the vehicle's active update. */
  async findTarget(
    vehicle: VehicleRecord,
    input: { campaign_id?: string; firmware_version?: string },
  ): Promise<UpdateRecord> {
    if (input.campaign_id !== undefined) {
      const byCampaign = await this.deps.updates.get(vehicle.vin, `campaign#${input.campaign_id}`);
      if (!byCampaign)
        throw new NotFoundError('unknown_campaign', 'This vehicle has no update in that campaign');
      return byCampaign;
    }
    if (input.firmware_version !== undefined) {
      const all = await this.deps.updates.listForVehicle(vehicle.vin);
      const matching = all.filter((u) => u.version === input.firmware_version);
      // Updates never offered (a later wave's) are not candidates; if only those match, the report is refused.
      const offered = matching.filter(wasOffered);
      const chosen =
        offered.find((u) => u.updateId === vehicle.activeUpdateId) ??
        offered.find((u) => !isTerminal(u.status)) ??
        offered[0] ??
        matching[0];
      if (!chosen)
        throw new NotFoundError('unknown_update', `This vehicle has no update to ${input.firmware_version}`);
      return chosen;
    }
    if (!vehicle.activeUpdateId)
      throw new ConflictError('no_active_update', 'This vehicle has no active update');
    const active = await this.deps.updates.get(vehicle.vin, vehicle.activeUpdateId);
    if (!active) throw new ConflictError('no_active_update', 'This vehicle has no active update');
    return active;
  }

  /**
   * Applies a vehicle's report. Each report is validated and guarded (offered update, current offer counter,
   * sequence), then written only when it is worth a write (`storeDecision`): a status change always is; a progress
   * report within the same status only at the coarse steps; a duplicate, late or out-of-order report never (it
   * changes nothing, so writing it would only cost a write). The answer says whether the report moved the state.
   */
  async reportStatus(
    vehicle: VehicleRecord,
    input: StatusInput,
    source: 'https' | 'mqtt',
  ): Promise<{ update: UpdateRecord; applied: boolean }> {
    let target = await this.findTarget(vehicle, input);
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      refuseUnoffered(target, input);
      const result = applyReport(target, input);
      if (!result.applied) return { update: target, applied: false };
      const now = this.deps.clock.now();
      const next: UpdateRecord = {
        ...target,
        ...result.next,
        reason: input.reason ?? (isTerminal(result.next.status) ? undefined : target.reason),
        updatedAt: now.toISOString(),
        revision: target.revision + 1,
      };
      if (!storeDecision(target, next, now, this.deps.progressStoreSeconds ?? PROGRESS_STORE_SECONDS)) {
        // Acknowledged, not stored: the stored state keeps the last coarse step and the sequence of the report that
        // wrote it. A replay of this report later is judged against that state, where it can at most do what it
        // would have done now (move progress forward within the same status).
        return { update: { ...target, progress: next.progress }, applied: true };
      }
      // A campaign update's count moves in the same transaction as its state: a duplicate or reordered report
      // fails the revision condition and counts nothing.
      const counted = countMove(target, next.status);
      // What the download cost rides on the count write of its outcome report (bytes saved across the fleet).
      const move =
        counted && input.bytes_fetched !== undefined && input.bytes_image !== undefined
          ? {
              ...counted,
              transfer: {
                fetched: input.bytes_fetched,
                reused: input.bytes_reused ?? 0,
                image: input.bytes_image,
              },
            }
          : counted;
      const stored =
        next.status === target.status
          ? next
          : withTransition(next, {
              status: input.status,
              progress: input.progress,
              sequence: input.sequence,
              reason: input.reason,
              source,
              at: next.updatedAt,
            });
      if (await this.deps.updates.put(stored, target.revision, move ? [move] : [])) {
        await this.afterStateChange(vehicle, stored);
        return { update: stored, applied: true };
      }
      const reread = await this.deps.updates.get(vehicle.vin, target.updateId);
      if (!reread) throw new NotFoundError('unknown_update', 'The update no longer exists');
      target = reread;
    }
    throw new OtaError('concurrent_update', 'The update is changing concurrently; retry', 409);
  }

  /** The write a stored outcome owes beyond its count and history (both in its own write): the registry's. */
  private async afterStateChange(vehicle: VehicleRecord, next: UpdateRecord): Promise<void> {
    if (!isTerminal(next.status)) return;
    const unlock = next.campaignId;
    if (next.status === 'completed' && next.ecu === BUNDLE_ASSIGNMENT_ECU) {
      // A bundle moves several ECUs: their versions come with the inventory the vehicle reports after it.
      if (unlock !== undefined) await this.deps.vehicles.unlockCampaign(vehicle.vin, next.ecu, unlock);
    } else if (next.status === 'completed') {
      // The registry's version and the campaign lock are one write to the vehicle item.
      await this.deps.vehicles.recordCompletion(vehicle, next.ecu, next.version, unlock);
    } else if (unlock !== undefined) {
      await this.deps.vehicles.unlockCampaign(vehicle.vin, next.ecu, unlock);
    }
  }

  /**
   * What the vehicle may see: its updates, newest first, and the pending ones it should act on. Campaign updates
   * still scheduled for a later wave are not shown: the vehicle learns of them when its wave is offered.
   */
  async list(vehicle: VehicleRecord): Promise<UpdateList> {
    const updates = (await this.deps.updates.listForVehicle(vehicle.vin)).filter(
      (u) => u.status !== 'scheduled',
    );
    updates.sort((a, b) => (a.updatedAt < b.updatedAt ? 1 : -1));
    return {
      vin: vehicle.vin,
      active_update_id: vehicle.activeUpdateId ?? null,
      updates: updates.map(toUpdateView),
      pending: updates.filter((u) => !isTerminal(u.status)).map(toUpdateView),
    };
  }
}
