/**
 * What a vehicle can do with its updates: ask for a firmware version (answering a short-lived download URL and
 * the signed manifest), report status, and list its updates. Every state change is a single-item conditional
 * write that only moves forward; every report lands in the status history whether it changed state or not.
 */

import { manifestDigest, type SignedAssignment, signAssignment } from '../../protocol/assignment.js';
import type { ReleaseManifest } from '../../protocol/manifest.js';
import type { DownloadAnswer, UpdateView } from '../../protocol/responses.js';
import type { StatusReport } from '../../protocol/schemas.js';
import type { Signer } from '../../protocol/signatures.js';
import { compareVersions } from '../../protocol/versions.js';
import { ConflictError, NotFoundError, OtaError } from './errors.js';
import type {
  CampaignRepository,
  Clock,
  HistoryRepository,
  ObjectStore,
  ReleaseRecord,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
  VehicleRepository,
} from './ports.js';
import { applyReport, isTerminal } from './update-state.js';

export interface UpdateStatusDeps {
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly history: HistoryRepository;
  readonly clock: Clock;
  /** Campaign counts follow every transition of a campaign update. */
  readonly campaigns?: Pick<CampaignRepository, 'count'>;
}

export interface FirmwareOfferDeps extends UpdateStatusDeps {
  readonly releases: ReleaseRepository;
  readonly objects: ObjectStore;
  readonly presignTtlSeconds: number;
  /** Signs the per-vehicle assignment that accompanies every offer. */
  readonly signer: Signer;
  /** Seconds an assignment stays valid. @default 86400 */
  readonly assignmentTtlSeconds?: number;
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

/** Signs per-vehicle assignments, each with the vehicle's next counter value. */
export class AssignmentIssuer {
  constructor(
    private readonly deps: {
      readonly vehicles: Pick<VehicleRepository, 'nextAssignmentCounter'>;
      readonly signer: Signer;
      readonly clock: Clock;
      /** Seconds an assignment stays valid. @default 86400 */
      readonly ttlSeconds?: number;
    },
  ) {}

  async assign(
    vehicle: VehicleRecord,
    update: UpdateRecord,
    manifest: ReleaseManifest,
    /** offer: the assignment goes out in a pushed offer, which the freshness statement then commits to. */
    purpose: 'offer' | 'answer' = 'answer',
  ): Promise<SignedAssignment> {
    const now = this.deps.clock.now();
    const counter = await this.deps.vehicles.nextAssignmentCounter(vehicle.vin, purpose === 'offer');
    return signAssignment(
      {
        schema: 'ota.assignment/v1',
        vin: vehicle.vin,
        update_id: update.updateId,
        campaign_id: update.campaignId ?? null,
        release_id: manifest.release_id,
        version: manifest.version,
        ecu: manifest.ecu,
        manifest_sha256: manifestDigest(manifest),
        counter,
        issued_at: now.toISOString(),
        expires_at: new Date(now.getTime() + (this.deps.ttlSeconds ?? 86400) * 1000).toISOString(),
      },
      this.deps.signer,
    );
  }
}

export class FirmwareOfferService {
  private readonly assignments: AssignmentIssuer;

  constructor(private readonly deps: FirmwareOfferDeps) {
    this.assignments = new AssignmentIssuer({
      vehicles: deps.vehicles,
      signer: deps.signer,
      clock: deps.clock,
      ttlSeconds: deps.assignmentTtlSeconds,
    });
  }

  /** The published release of that version built for one of this vehicle's ECUs. */
  async resolveRelease(vehicle: VehicleRecord, version: string): Promise<ReleaseRecord> {
    const candidates = (await this.deps.releases.listByVersion(version)).filter(
      (r) => r.status === 'published',
    );
    if (candidates.length === 0) {
      throw new NotFoundError('unknown_version', `No published firmware ${version}`);
    }
    const compatible = candidates.filter((r) =>
      vehicle.ecus.some(
        (e) => e.ecu === r.ecu && r.signedManifest.manifest.hardware_ids.includes(e.hardware_id),
      ),
    );
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

  /**
   * initiate: starts (or restarts after a failure) the vehicle's update to that version.
   * download: answers a fresh URL for an update already started, starting one if there is none (older clients
   * call download alone).
   */
  async requestFirmware(
    vehicle: VehicleRecord,
    version: string,
    mode: 'initiate' | 'download',
  ): Promise<DownloadOffer> {
    const release = await this.resolveRelease(vehicle, version);
    const ecu = vehicle.ecus.find((e) => e.ecu === release.ecu)!;
    // A vehicle offered this release by a campaign downloads it as part of that campaign.
    const campaignUpdate = await this.campaignUpdateFor(vehicle, release.releaseId);
    const updateId = campaignUpdate?.updateId ?? directUpdateId(release.releaseId);
    let update = campaignUpdate ?? (await this.deps.updates.get(vehicle.vin, updateId));

    if (compareVersions(version, ecu.version) < 0) {
      throw new ConflictError(
        'downgrade_refused',
        `The ${ecu.ecu} ECU runs ${ecu.version}; ${version} is older`,
      );
    }
    if (mode === 'initiate' && update?.status === 'completed') {
      throw new ConflictError('already_installed', `Firmware ${version} is already installed`);
    }
    if (!update || (mode === 'initiate' && isTerminal(update.status))) {
      update = await this.startAttempt(vehicle, release, update);
    }

    const ttl = this.deps.presignTtlSeconds;
    const url = await this.deps.objects.presignGet(release.objectKey, release.objectVersionId, ttl);
    const m = release.signedManifest.manifest;
    const assignment = await this.assignments.assign(vehicle, update, m);
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

  private async startAttempt(
    vehicle: VehicleRecord,
    release: ReleaseRecord,
    previous: UpdateRecord | undefined,
  ): Promise<UpdateRecord> {
    const now = this.deps.clock.now().toISOString();
    const next: UpdateRecord = {
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
    };
    if (!(await this.deps.updates.put(next, previous?.revision ?? 0))) {
      // Someone else (a concurrent retry of the same request) started it; use theirs.
      const current = await this.deps.updates.get(vehicle.vin, next.updateId);
      if (!current) throw new ConflictError('concurrent_update', 'The update changed concurrently; retry');
      return current;
    }
    await this.deps.vehicles.setActiveUpdate(vehicle.vin, next.updateId);
    await this.deps.history.append({
      vin: vehicle.vin,
      updateId: next.updateId,
      status: 'initiated',
      source: 'backend',
      applied: true,
      at: now,
    });
    return next;
  }
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
      const chosen =
        matching.find((u) => u.updateId === vehicle.activeUpdateId) ??
        matching.find((u) => !isTerminal(u.status)) ??
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
   * Applies a vehicle's report. Duplicates, late and out-of-order reports are recorded in the history and
   * change nothing; the answer says whether the state moved.
   */
  async reportStatus(
    vehicle: VehicleRecord,
    input: StatusInput,
    source: 'https' | 'mqtt',
  ): Promise<{ update: UpdateRecord; applied: boolean }> {
    let target = await this.findTarget(vehicle, input);
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const result = applyReport(target, input);
      const now = this.deps.clock.now().toISOString();
      if (!result.next) {
        await this.recordHistory(vehicle.vin, target.updateId, input, source, false, now);
        return { update: target, applied: false };
      }
      const next: UpdateRecord = result.applied
        ? {
            ...target,
            ...result.next,
            reason: input.reason ?? (isTerminal(result.next.status) ? undefined : target.reason),
            updatedAt: now,
            revision: target.revision + 1,
          }
        : { ...target, lastSequence: result.next.lastSequence, revision: target.revision + 1 };
      if (await this.deps.updates.put(next, target.revision)) {
        await this.recordHistory(vehicle.vin, target.updateId, input, source, result.applied, now);
        if (result.applied && next.status === 'completed') {
          await this.deps.vehicles.setEcuVersion(vehicle.vin, next.ecu, next.version);
        }
        if (result.applied && next.campaignId !== undefined) {
          await this.deps.campaigns?.count(next.campaignId, next.wave ?? 0, target.status, next.status);
          if (isTerminal(next.status))
            await this.deps.vehicles.unlockCampaign(vehicle.vin, next.ecu, next.campaignId);
        }
        return { update: next, applied: result.applied };
      }
      const reread = await this.deps.updates.get(vehicle.vin, target.updateId);
      if (!reread) throw new NotFoundError('unknown_update', 'The update no longer exists');
      target = reread;
    }
    throw new OtaError('concurrent_update', 'The update is changing concurrently; retry', 409);
  }

  private async recordHistory(
    vin: string,
    updateId: string,
    input: StatusInput,
    source: 'https' | 'mqtt',
    applied: boolean,
    at: string,
  ): Promise<void> {
    await this.deps.history.append({
      vin,
      updateId,
      status: input.status,
      progress: input.progress,
      sequence: input.sequence,
      reason: input.reason,
      source,
      applied,
      at,
    });
  }

  /**
   * What the vehicle may see: its updates, newest first, and the pending ones it should act on. Campaign updates
   * still scheduled for a later wave are not shown: the vehicle learns of them when its wave is offered.
   */
  async list(vehicle: VehicleRecord) {
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
