/**
 * The narrow interfaces the domain needs from the outside world. Each has one AWS implementation in
 * lambdas/adapters; the local cloud reuses those same implementations against emulators.
 */
import type { Readable } from 'node:stream';
import type { SignedManifest } from '../../protocol/manifest.js';
import type { UpdateOffer } from '../../protocol/offer.js';
import type { UpdateStatus } from '../../protocol/schemas.js';

export type ReleaseStatus = 'pending_upload' | 'published';

export interface ReleaseRecord {
  readonly releaseId: string;
  readonly version: string;
  readonly ecu: string;
  readonly status: ReleaseStatus;
  readonly signedManifest: SignedManifest;
  readonly objectKey: string;
  /** S3 object version pinned at publish time (AWS only: the local S3 emulator has no versioning). */
  readonly objectVersionId?: string;
  readonly createdAt: string;
  readonly publishedAt?: string;
  /** The multipart upload the backend started for this release, the only one publish will complete. */
  readonly uploadId?: string;
}

export interface ReleaseRepository {
  get(releaseId: string): Promise<ReleaseRecord | undefined>;
  /** Fails with a ConflictError when the id exists. */
  create(release: ReleaseRecord): Promise<void>;
  /** Moves pending_upload -> published; false when the release was not pending. */
  markPublished(
    releaseId: string,
    publishedAt: string,
    objectVersionId: string | undefined,
  ): Promise<boolean>;
  listByVersion(version: string): Promise<ReleaseRecord[]>;
  /** Records the multipart upload started for a pending release. */
  setUploadId(releaseId: string, uploadId: string): Promise<void>;
  list(limit: number, token?: string): Promise<Page<ReleaseRecord>>;
}

export interface EcuRecord {
  readonly ecu: string;
  readonly hardware_id: string;
  readonly version: string;
}

export interface VehicleRecord {
  readonly vin: string;
  readonly model: string;
  readonly ecus: readonly EcuRecord[];
  readonly certificatePem: string;
  readonly certificateId: string;
  /** SPKI PEM of the device key; tokens are bound to its key id. */
  readonly publicKeyPem: string;
  readonly deviceKeyId: string;
  readonly registeredAt: string;
  readonly activeUpdateId?: string;
}

export interface VehicleRepository {
  get(vin: string): Promise<VehicleRecord | undefined>;
  /** Fails with a ConflictError when the VIN is registered. */
  create(vehicle: VehicleRecord): Promise<void>;
  /** Stores the one outstanding auth challenge of a known vehicle; unknown VINs are ignored (no enumeration). */
  putChallenge(vin: string, nonce: string, expiresAtSeconds: number): Promise<void>;
  /** Atomically removes the challenge if it matches and is unexpired; true when it was consumed. */
  consumeChallenge(vin: string, nonce: string, nowSeconds: number): Promise<boolean>;
  setActiveUpdate(vin: string, updateId: string): Promise<void>;
  /**
   * Counts one request in the vehicle's current rate window; false when the window already holds limit requests.
   * Windows are fixed (e.g. one minute), keyed by their start time.
   */
  takeRateToken(vin: string, window: number, limit: number): Promise<boolean>;
  /** Atomically increments and returns the vehicle's assignment counter (1 on first use). */
  nextAssignmentCounter(vin: string): Promise<number>;
  /** Every registered vehicle, a page at a time (campaign targeting by filter). */
  scan(cursor?: string): Promise<{ items: VehicleRecord[]; cursor?: string }>;
  /** Takes the vehicle's per-ECU campaign lock; false when another campaign holds it. */
  lockCampaign(vin: string, ecu: string, campaignId: string): Promise<boolean>;
  unlockCampaign(vin: string, ecu: string, campaignId: string): Promise<void>;
  /** Which campaign holds the vehicle's lock for that ECU, if any. */
  campaignLock(vin: string, ecu: string): Promise<string | undefined>;
  /** Records the version now running on an ECU after a completed update. */
  setEcuVersion(vin: string, ecu: string, version: string): Promise<void>;
}

export interface UpdateRecord {
  readonly vin: string;
  readonly updateId: string;
  readonly releaseId: string;
  readonly version: string;
  readonly ecu: string;
  readonly campaignId?: string;
  readonly status: UpdateStatus;
  readonly progress: number;
  readonly lastSequence: number;
  readonly attempt: number;
  readonly reason?: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Optimistic-concurrency revision: every write is conditional on the one it read. */
  readonly revision: number;
  /** Campaign updates: the wave, and the index key `<wave, 3 digits>#<VIN>`. */
  readonly wave?: number;
  readonly waveKey?: string;
  /** When the current offer was sent, and by when the vehicle must have finished. */
  readonly offeredAt?: string;
  readonly deadline?: string;
}

export interface UpdateRepository {
  get(vin: string, updateId: string): Promise<UpdateRecord | undefined>;
  listForVehicle(vin: string): Promise<UpdateRecord[]>;
  /**
   * Writes next if the stored revision still equals expectedRevision (0 = item must not exist). False when
   * another writer got there first; the caller re-reads and decides again.
   */
  put(next: UpdateRecord, expectedRevision: number): Promise<boolean>;
  /** A campaign's updates in one wave (through the sparse byCampaign index), VIN order. */
  listByCampaignWave(campaignId: string, wave: number): Promise<UpdateRecord[]>;
  /** One page of listByCampaignWave; token from the previous page (400 when it is not one). */
  pageByCampaignWave(
    campaignId: string,
    wave: number,
    limit: number,
    token?: string,
  ): Promise<Page<UpdateRecord>>;
}

/** One page of a listing: the items, and the token of the next page when there is one. */
export interface Page<T> {
  readonly items: T[];
  readonly token?: string;
}

export interface Exclusion {
  readonly vin: string;
  readonly reason: string;
}

/** Targets a campaign left out, one item each (never a list in the campaign item). */
export interface ExclusionRepository {
  putAll(campaignId: string, exclusions: readonly Exclusion[]): Promise<void>;
  page(campaignId: string, limit: number, token?: string): Promise<Page<Exclusion>>;
}

export type CampaignStatus = 'created' | 'running' | 'paused' | 'halted' | 'cancelled' | 'completed';

export interface CampaignRecord {
  readonly campaignId: string;
  readonly name: string;
  readonly releaseId: string;
  readonly version: string;
  readonly ecu: string;
  readonly status: CampaignStatus;
  readonly policy: import('./campaign-policy.js').RolloutPolicy;
  /** Per wave: how many vehicles, and when it started. */
  readonly waves: readonly { readonly size: number; readonly startedAt?: string }[];
  readonly currentWave: number;
  readonly targetCount: number;
  /** How many targets were excluded, per reason (a bounded set); the VINs are in the ExclusionRepository. */
  readonly excludedByReason: Readonly<Record<string, number>>;
  readonly haltReason?: string;
  /** counts[`w${wave}`][status] = vehicles in that state; maintained by atomic ADDs at every transition. */
  readonly counts: Record<string, Record<string, number>>;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly revision: number;
}

export type CampaignChanges = Partial<
  Pick<CampaignRecord, 'status' | 'waves' | 'currentWave' | 'haltReason'>
>;

export interface CampaignRepository {
  create(campaign: CampaignRecord): Promise<void>;
  get(campaignId: string): Promise<CampaignRecord | undefined>;
  list(limit: number, token?: string): Promise<Page<CampaignRecord>>;
  listByStatus(status: CampaignStatus): Promise<CampaignRecord[]>;
  /** Applies changes if the revision is still expectedRevision; counts are never touched by this. */
  change(
    campaignId: string,
    expectedRevision: number,
    changes: CampaignChanges,
    updatedAt: string,
  ): Promise<boolean>;
  /** Moves one vehicle between states in a wave's counts (from undefined: a new vehicle). */
  count(campaignId: string, wave: number, from: string | undefined, to: string): Promise<void>;
  /** Replaces a wave's counts with a recount of its vehicles (repair after a lost count write). */
  resetCounts(campaignId: string, wave: number, counts: Readonly<Record<string, number>>): Promise<void>;
}

export interface HistoryEvent {
  readonly vin: string;
  readonly updateId: string;
  readonly status: UpdateStatus;
  readonly progress?: number;
  readonly sequence?: number;
  readonly reason?: string;
  readonly source: 'https' | 'mqtt' | 'backend';
  readonly applied: boolean;
  readonly at: string;
}

export interface HistoryRepository {
  append(event: HistoryEvent): Promise<void>;
  listForVehicle(vin: string, limit: number): Promise<HistoryEvent[]>;
}

export interface UploadTarget {
  readonly method: 'PUT';
  readonly url: string;
  readonly expiresAt: string;
}
export interface MultipartUploadTarget {
  readonly uploadId: string;
  readonly partSize: number;
  readonly parts: { readonly partNumber: number; readonly url: string }[];
  readonly expiresAt: string;
}

export interface ObjectStore {
  presignGet(key: string, versionId: string | undefined, ttlSeconds: number): Promise<string>;
  presignPut(key: string, size: number, ttlSeconds: number): Promise<string>;
  createMultipartUpload(
    key: string,
    size: number,
    partSize: number,
    ttlSeconds: number,
  ): Promise<MultipartUploadTarget>;
  completeMultipartUpload(
    key: string,
    uploadId: string,
    parts: { partNumber: number; etag: string }[],
  ): Promise<void>;
  head(key: string): Promise<{ size: number; versionId?: string } | undefined>;
  read(key: string, versionId?: string): Promise<Readable>;
  delete(key: string): Promise<void>;
}

export interface IssuedCertificate {
  readonly certificatePem: string;
  readonly certificateId: string;
}

export interface CertificateIssuer {
  /** Creates the vehicle's identity (IoT thing + certificate on AWS) from a verified CSR. */
  issue(vin: string, csrPem: string): Promise<IssuedCertificate>;
  /** Best-effort undo when registration loses a race. */
  revoke(vin: string, certificateId: string): Promise<void>;
}

export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };

/** Publishes offers to vehicles (IoT Data Plane on AWS and on the local cloud). */
export interface OfferPublisher {
  publish(vin: string, offer: UpdateOffer): Promise<void>;
}
