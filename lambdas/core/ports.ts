/**
 * The narrow interfaces the domain needs from the outside world. Each has one AWS implementation in
 * lambdas/adapters; the local cloud reuses those same implementations against emulators.
 */

import type { Readable } from 'node:stream';
import type { UpdateConditions } from '../../protocol/conditions.js';
import type { FreshnessAlert, ProofStep, SignedFreshness } from '../../protocol/freshness.js';
import type { SignedManifest } from '../../protocol/manifest.js';
import type { UpdateOffer } from '../../protocol/offer.js';
import type { UpdateStatus } from '../../protocol/schemas.js';

/**
 * pending_upload -> verifying (publish asked; a background job hashes the object) -> published, or -> failed (the
 * object differs from the signed manifest). A failed release can be created again to upload anew. withdrawn: taken
 * back by an operator (kill switch); never offered again, and final.
 */
export type ReleaseStatus = 'pending_upload' | 'verifying' | 'published' | 'failed' | 'withdrawn';

/** Where a release's verification job is: saved after every chunk so a stopped worker resumes, not restarts. */
export interface VerificationCheckpoint {
  /** Bytes hashed and found to match so far (a multiple of the chunk size, or the whole size). */
  readonly bytesVerified: number;
  /** The whole-image SHA-256 state after those bytes (sha256-state.ts); absent at 0. */
  readonly hashState?: string;
  /** The object version being verified (pinned at publish; AWS only). */
  readonly objectVersionId?: string;
  readonly startedAt: string;
  readonly updatedAt: string;
}

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
  readonly withdrawnAt?: string;
  readonly withdrawnReason?: string;
  readonly verification?: VerificationCheckpoint;
  /** Why verification failed (status failed). */
  readonly failureReason?: string;
}

export interface ReleaseRepository {
  get(releaseId: string): Promise<ReleaseRecord | undefined>;
  /** Fails with a ConflictError when the id exists. */
  create(release: ReleaseRecord): Promise<void>;
  /** Moves verifying -> published; false when the release was not verifying. */
  markPublished(
    releaseId: string,
    publishedAt: string,
    objectVersionId: string | undefined,
  ): Promise<boolean>;
  /** Moves any status but withdrawn -> withdrawn; false when it was already withdrawn or does not exist. */
  markWithdrawn(releaseId: string, withdrawnAt: string, reason: string): Promise<boolean>;
  /** Moves pending_upload or failed -> verifying with a fresh checkpoint; false from any other status. */
  startVerification(releaseId: string, checkpoint: VerificationCheckpoint): Promise<boolean>;
  /**
   * Saves a verifying release's checkpoint if the stored one still has expectedBytes verified, so of two workers
   * running the same job only one advances; false otherwise.
   */
  saveVerification(
    releaseId: string,
    expectedBytes: number,
    checkpoint: VerificationCheckpoint,
  ): Promise<boolean>;
  /** Moves verifying -> failed with the reason; false when the release was not verifying. */
  markFailed(releaseId: string, reason: string, at: string): Promise<boolean>;
  /** Failed -> pending_upload (an operator uploads again); false from any other status. */
  reopen(releaseId: string): Promise<boolean>;
  listByVersion(version: string): Promise<ReleaseRecord[]>;
  /** Records the multipart upload started for a pending release. */
  setUploadId(releaseId: string, uploadId: string): Promise<void>;
  list(limit: number, token?: string): Promise<Page<ReleaseRecord>>;
}

/**
 * An OEM-signed bundle (protocol/bundle.ts) the backend keeps for campaigns. Stored in the releases table under
 * its id (bundle and release ids share one namespace), so no function needs a new table or grant to read it.
 */
export interface BundleRecord {
  readonly bundleId: string;
  readonly version: string;
  readonly signedBundle: import('../../protocol/bundle.js').SignedBundle;
  /** SHA-256 of the canonical bundle: what the per-vehicle assignments bind. */
  readonly digest: string;
  readonly createdAt: string;
}

export interface BundleRepository {
  get(bundleId: string): Promise<BundleRecord | undefined>;
  /** Fails with a ConflictError when the id exists (as a bundle or a release). */
  create(bundle: BundleRecord): Promise<void>;
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
  /** Set by an operator's revoke (kill switch): no token, no message and no offer for this vehicle any more. */
  readonly revokedAt?: string;
  readonly revokedReason?: string;
  /** The last freshness alert the vehicle reported (lambdas/core/freshness.ts). */
  readonly freshnessAlert?: FreshnessAlertRecord;
  /** The software inventory the vehicle last reported (protocol/inventory.ts). */
  readonly inventory?: InventoryRecord;
}

export interface InventoryRecord {
  readonly ecus: readonly { ecu: string; hardware_id: string; version: string; sha256: string }[];
  readonly sequence: number;
  readonly reportedAt: string;
}

export interface FreshnessAlertRecord {
  readonly kind: FreshnessAlert['kind'];
  readonly sequence: number;
  readonly detail: string;
  readonly at: string;
}

/**
 * Login challenges. Every challenge is stored on its own, so any number may be outstanding for a VIN and issuing
 * one never invalidates another (one slot per VIN let anyone who knows a VIN keep the car from logging in).
 */
export interface ChallengeRepository {
  /**
   * Issues a challenge: counts it in the VIN's fixed window and stores it there, in one write; false when the
   * window already holds `limit`. Counted for any VIN, registered or not, so the answer does not reveal which VINs
   * exist. Each challenge is kept on its own until spent or expired, so issuing one never displaces another.
   */
  issue(
    vin: string,
    window: number,
    limit: number,
    nonce: string,
    expiresAtSeconds: number,
  ): Promise<boolean>;
  /** Spends the challenge if it was issued for this VIN in that window and is unexpired: true exactly once. */
  consume(vin: string, window: number, nonce: string, nowSeconds: number): Promise<boolean>;
}

export interface VehicleRepository {
  get(vin: string): Promise<VehicleRecord | undefined>;
  /** Fails with a ConflictError when the VIN is registered. */
  create(vehicle: VehicleRecord): Promise<void>;
  setActiveUpdate(vin: string, updateId: string): Promise<void>;
  /**
   * An offer's counter (the vehicle's next assignment counter, recorded as its latest offer) and its active update,
   * in one write.
   */
  reserveOffer(vin: string, updateId: string): Promise<number>;
  /**
   * Counts one request in the vehicle's current rate window and answers the vehicle as that write left it (no
   * second read); undefined when the window already holds limit requests or the vehicle does not exist. Windows
   * are fixed (e.g. one minute), keyed by their start time. reserveCounter: the same write also takes the vehicle's
   * next assignment counter (for a request that answers an assignment: one write instead of two).
   */
  takeRateToken(
    vin: string,
    window: number,
    limit: number,
    reserveCounter?: boolean,
  ): Promise<{ vehicle: VehicleRecord; counter?: number } | undefined>;
  /**
   * Atomically increments and returns the vehicle's assignment counter (1 on first use). offer: the assignment
   * goes out in an offer the backend pushes, and the same write records the counter as the vehicle's latest
   * offer (the leaf of its freshness statement).
   */
  nextAssignmentCounter(vin: string, offer?: boolean): Promise<number>;
  /** Every registered vehicle, a page at a time (campaign targeting by filter). */
  scan(cursor?: string): Promise<{ items: VehicleRecord[]; cursor?: string }>;
  /**
   * One page of one segment of a parallel scan (DynamoDB Segment/TotalSegments): the segments are disjoint and
   * together cover the table, so each can be walked by its own worker (campaign preparation).
   */
  scanSegment(
    segment: number,
    totalSegments: number,
    limit: number,
    cursor?: string,
  ): Promise<{ items: VehicleRecord[]; cursor?: string }>;
  /** Takes the vehicle's per-ECU campaign lock; false when another campaign holds it. */
  lockCampaign(vin: string, ecu: string, campaignId: string): Promise<boolean>;
  unlockCampaign(vin: string, ecu: string, campaignId: string): Promise<void>;
  /** Which campaign holds the vehicle's lock for that ECU, if any. */
  campaignLock(vin: string, ecu: string): Promise<string | undefined>;
  /** Marks the vehicle revoked and drops its outstanding challenge; false when it is unknown or already revoked. */
  revoke(vin: string, revokedAt: string, reason: string): Promise<boolean>;
  /**
   * After a completed update: records the version now running on the ECU and, for a campaign update, releases that
   * campaign's lock on it, in one write to the vehicle item (the record locates the ECU in the inventory).
   */
  recordCompletion(vehicle: VehicleRecord, ecu: string, version: string, campaignId?: string): Promise<void>;
  /**
   * Stores a reported inventory and the versions it names in the registered ECU list, in one write; false (and
   * nothing written) when a report with this or a higher sequence is already stored.
   */
  recordInventory(vin: string, inventory: InventoryRecord, ecus: readonly EcuRecord[]): Promise<boolean>;
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
  /**
   * The counter of the assignment sent with the current offer (or attempt). A report naming an older counter is
   * about an earlier offer and is refused.
   */
  readonly offerCounter?: number;
  /**
   * The signed conditions of the current campaign offer (consent deadline, window, network): kept so that every
   * assignment of this offer (the pushed one, and the one a /download answer carries) signs the same conditions.
   */
  readonly conditions?: UpdateConditions;
  /** The counter shard its campaign counts go to, chosen when it is taken into its wave (campaign-counters.ts). */
  readonly shard?: number;
  /**
   * Campaign preparation: the slice that wrote this target item (`<segment>:<slice>`). A slice run again after a
   * stop finds its own items and counts them again; an item of another slice means a VIN listed twice.
   */
  readonly preparedBy?: string;
  /** Its status changes, oldest first, bounded (update-history.ts): the update's history. */
  readonly history?: readonly UpdateTransition[];
}

/** One stored status change of an update, kept on the update item (update-history.ts). */
export interface UpdateTransition {
  readonly status: UpdateStatus;
  readonly progress?: number;
  readonly sequence?: number;
  readonly reason?: string;
  readonly source: 'https' | 'mqtt' | 'backend';
  readonly at: string;
}

/** One vehicle moving between statuses in a campaign wave's counts (from undefined: newly counted in the wave). */
export interface CountMove {
  readonly campaignId: string;
  readonly wave: number;
  readonly shard: number;
  readonly from?: string;
  /** Absent: the vehicle leaves this count (a withdrawn queued target taken into a wave). */
  readonly to?: string;
  /** What the vehicle's download cost, added to the shard's transfer totals by the same write ('verifying'). */
  readonly transfer?: TransferReport;
}

/** Download totals of a campaign (or a wave): how many downloads reported, and their bytes. */
export interface TransferTotals {
  readonly downloads: number;
  readonly fetched: number;
  readonly reused: number;
  readonly image: number;
}

export interface UpdateRepository {
  get(vin: string, updateId: string): Promise<UpdateRecord | undefined>;
  listForVehicle(vin: string): Promise<UpdateRecord[]>;
  /**
   * Writes next if the stored revision still equals expectedRevision (0 = item must not exist). False when
   * another writer got there first; the caller re-reads and decides again. With moves, the campaign counts move in
   * the same transaction: a write that fails its condition (a duplicate, a stale read) counts nothing.
   */
  put(next: UpdateRecord, expectedRevision: number, moves?: readonly CountMove[]): Promise<boolean>;
  /**
   * One page of a campaign's targets not yet taken into a wave (the `q#` range of byCampaign, queue order), from
   * after `cursor`; the cursor of the last item read, absent at the end.
   */
  pageQueued(
    campaignId: string,
    limit: number,
    cursor?: string,
  ): Promise<{ items: UpdateRecord[]; cursor?: string }>;
  /** At most `limit` of a campaign's in-flight updates whose deadline is before `before` (sparse byDeadline index). */
  listDue(campaignId: string, before: string, limit: number): Promise<UpdateRecord[]>;
  /**
   * Direct (vehicle-initiated) updates of a release that are not finished, a page at a time. A full-table read
   * (no index by release): an operator's rare withdraw, never a vehicle's request.
   */
  listOpenDirectUpdates(
    releaseId: string,
    cursor?: string,
  ): Promise<{ items: UpdateRecord[]; cursor?: string }>;
  /**
   * One page of a wave's updates, VIN order: the listing route, and work done in bounded slices (campaign cancel).
   * token from the previous page (400 when it is not one).
   */
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
  /**
   * Writes one exclusion unless the VIN is already excluded by another writer (marker: the preparation slice).
   * True when written now or earlier by the same marker (a slice run again), false for a VIN listed twice.
   */
  putOnce(campaignId: string, exclusion: Exclusion, marker: string): Promise<boolean>;
  page(campaignId: string, limit: number, token?: string): Promise<Page<Exclusion>>;
}

/**
 * preparing: its targets are being written in the background (campaign-preparation.ts), then created, or failed
 * (no targets, a VIN list that went bad, a halt guardrail that cannot fire with the final wave sizes).
 * cancelling: offers are being withdrawn in the background (campaign-cancel.ts); then cancelled.
 */
export type CampaignStatus =
  | 'preparing'
  | 'failed'
  | 'created'
  | 'running'
  | 'paused'
  | 'halted'
  | 'cancelling'
  | 'cancelled'
  | 'completed';

/**
 * How far a cancel's withdrawal got: the next page to withdraw, saved after every slice. wave = waves.length: the
 * targets still queued.
 */
export interface CancelCheckpoint {
  readonly wave: number;
  readonly cursor?: string;
  readonly startedAt: string;
}

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
  readonly cancel?: CancelCheckpoint;
  /** How the targets are (or were) written; absent on campaigns created before preparation was asynchronous. */
  readonly preparation?: PreparationRecord;
  /**
   * Failures in the halted wave when the engine halted it. A late outcome that corrects one of them (a timed-out
   * vehicle that did install) lowers the wave's count below this, and the engine looks at the halt again.
   */
  readonly haltFailures?: number;
  /**
   * Campaigns stored before counts were sharded carried them here; never written now (counts live in counter
   * shards, CounterRepository).
   */
  readonly counts?: Record<string, Record<string, number>>;
  /** A bundle campaign: releaseId is the bundle id, ecu BUNDLE_ASSIGNMENT_ECU (protocol/bundle.ts). */
  readonly bundle?: true;
  /** A rollback campaign: the campaign it takes back and the OEM-signed authorisation its offers carry. */
  readonly rollback?: { readonly campaignId: string; readonly authorisation: unknown };
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly revision: number;
}

export type CampaignChanges = Partial<
  Pick<
    CampaignRecord,
    | 'status'
    | 'waves'
    | 'currentWave'
    | 'haltReason'
    | 'cancel'
    | 'haltFailures'
    | 'preparation'
    | 'targetCount'
    | 'excludedByReason'
    | 'policy'
    | 'counts'
  >
>;

/** What a preparation counted: summed over its segments' committed slices (each counted exactly once). */
export interface PreparationTotals {
  /** Vehicles read by the scan, or lines read from the VIN list. */
  readonly scanned: number;
  /** Target items written (or found written by the same slice). */
  readonly targeted: number;
  readonly excluded: Readonly<Record<string, number>>;
  /** VINs met a second time (listed twice, or in both the list and the filter): neither targeted nor excluded. */
  readonly duplicates: number;
  /** VIN list lines that are not a VIN (the list is checked when uploaded, so only a list changed since then). */
  readonly invalid: number;
}

/** Where the targets come from: a filter scan (filter {} = every vehicle) and/or a VIN list object. */
export interface PreparationSource {
  readonly filter?: {
    readonly model?: string;
    readonly hardware_id?: string;
    readonly current_version?: string;
    /** The vehicle runs this version pattern (e.g. 2.x) on that ECU, by its reported inventory. */
    readonly runs?: { readonly ecu: string; readonly version: string };
  };
  readonly list?: {
    readonly key: string;
    readonly size: number;
    readonly versionId?: string;
    readonly lines?: number;
    /** Uploaded by the operator through a presigned URL (false: the VINs came in the request). */
    readonly uploaded: boolean;
  };
}

export interface PreparationRecord {
  /** awaiting_targets: an uploaded VIN list is expected; running: segments at work; finished: counted. */
  readonly state: 'awaiting_targets' | 'running' | 'finished';
  readonly source: PreparationSource;
  /** Parallel scan segments (0 without a filter) and VIN list byte ranges (0 without a list). */
  readonly scanSegments: number;
  readonly listSegments: number;
  /** The operator left halt_min_outcomes to its default, which is lowered to the largest wave at the end. */
  readonly defaultHaltMinOutcomes: boolean;
  readonly uploadExpiresAt?: string;
  readonly startedAt: string;
  readonly finishedAt?: string;
  readonly totals?: PreparationTotals;
  /** Why the campaign failed (status failed): `<code>: <message>`. */
  readonly failure?: string;
  /** Taking back the targets of a cancelled or failed preparation: the next page, and items seen so far. */
  readonly sweep?: { readonly cursor?: string; readonly seen: number; readonly done?: boolean };
}

/** One segment's checkpoint, its own item: progress is counted without a campaign-wide hot item. */
export interface SegmentState extends PreparationTotals {
  readonly segment: number;
  /** Slices committed so far; the checkpoint is written conditionally on it, so a slice counts once. */
  readonly slices: number;
  /** Where the next slice starts: a scan key, or a byte offset in the VIN list. Absent before the first. */
  readonly cursor?: string;
  /** stopped: the campaign left `preparing` (cancelled) and this segment stopped at a slice boundary. */
  readonly state: 'running' | 'done' | 'stopped';
}

export interface PreparationRepository {
  /** The segments' checkpoints, in order; undefined for a segment not started. */
  segments(campaignId: string, segments: readonly number[]): Promise<(SegmentState | undefined)[]>;
  /** Saves a checkpoint if the stored one still has expectedSlices slices (0: none stored yet). */
  save(campaignId: string, state: SegmentState, expectedSlices: number): Promise<boolean>;
}

/** One vehicle's download: bytes fetched, image bytes rebuilt locally, image size. */
export interface TransferReport {
  readonly fetched: number;
  readonly reused: number;
  readonly image: number;
}

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
}

/** Where a campaign's offer pacer is (offer-pacing.ts): one item per campaign, never the campaign item. */
export interface PacerState {
  /** Sequence of the pacer message that may take the next step; any other is a duplicate or a late one. */
  readonly seq: number;
  /** The wave being filled, and how many targets it has taken. */
  readonly wave: number;
  readonly taken: number;
  /** Queue position after the last target taken (UpdateRepository.pageQueued). */
  readonly cursor?: string;
  /** The wave is full: no step is pending until the tick advances the wave and starts the pacer again. */
  readonly idle: boolean;
  /** The chain stopped because the campaign was not running; the tick starts it again when it runs. */
  readonly waiting?: boolean;
  /** When the last step ran: a pacer silent for long (a lost message) is started again by the tick. */
  readonly steppedAt: string;
  /**
   * The page the last step saved before sending its takes, until it confirms they were sent: a step stopped in
   * between is redone from it (offer-pacing.ts), so a saved page is never lost and never read twice.
   */
  readonly pending?: PacerPage;
}

/** A pacer step's page of the queue: the targets after `after` up to `lastKey`, all for wave `wave`. */
export interface PacerPage {
  /** The step's sequence number. */
  readonly seq: number;
  readonly wave: number;
  /** Queue position before the page (UpdateRepository.pageQueued); absent: the queue's start. */
  readonly after?: string;
  /** waveKey of the page's last target. */
  readonly lastKey: string;
  readonly count: number;
}

/** Campaign counters sharded per wave (campaign-counters.ts), and the offer pacer's state. */
export interface CounterRepository {
  /** A wave's counts summed over its shards, one Query (wave -1: targets withdrawn while still queued). */
  waveCounts(campaignId: string, wave: number): Promise<Record<string, number>>;
  /** The same Query, with the wave's download totals summed too. */
  waveTotals(
    campaignId: string,
    wave: number,
  ): Promise<{ counts: Record<string, number>; transfer: TransferTotals }>;
  pacer(campaignId: string): Promise<PacerState | undefined>;
  /** Stores next if the stored sequence is still expectedSeq (undefined: no state yet); false otherwise. */
  savePacer(campaignId: string, expectedSeq: number | undefined, next: PacerState): Promise<boolean>;
}

/** A campaign's offer fan-out: the pacer's chain of steps and the offers it spreads (SQS on AWS). */
export type OfferMessage =
  | { readonly kind: 'pace'; readonly campaignId: string; readonly seq: number }
  /** Take a queued target into wave `wave` and offer it. */
  | { readonly kind: 'take'; readonly campaignId: string; readonly vin: string; readonly wave: number }
  /** Offer again an update whose deadline passed (still at `revision`). */
  | {
      readonly kind: 'reoffer';
      readonly campaignId: string;
      readonly vin: string;
      readonly revision: number;
    };

export interface OfferQueue {
  /** Sends the messages, each after its delay in seconds (0-900). */
  send(messages: readonly { readonly message: OfferMessage; readonly delaySeconds: number }[]): Promise<void>;
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

/** A vehicle's status history, newest first: read from its update items (update-history.ts). */
export interface HistoryRepository {
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
  /** The object's bytes from offset start (a ranged GET) to its end, or to endInclusive. */
  read(key: string, versionId?: string, start?: number, endInclusive?: number): Promise<Readable>;
  /** Writes a small object (a campaign's inline VIN list). */
  put(key: string, body: string): Promise<void>;
  /** With a versionId, removes only that version (a versioned bucket keeps the others). */
  delete(key: string, versionId?: string): Promise<void>;
  /**
   * Makes a verified object version permanent: no overwrite, no deletion, no lifecycle expiry (S3 Object Lock legal
   * hold on that version; the local S3 front refuses every later write or delete of the key).
   */
  protect(key: string, versionId: string | undefined): Promise<void>;
}

export interface IssuedCertificate {
  readonly certificatePem: string;
  readonly certificateId: string;
}

export interface CertificateIssuer {
  /** Creates the vehicle's identity (IoT thing + certificate on AWS) from a verified CSR. */
  issue(vin: string, csrPem: string): Promise<IssuedCertificate>;
  /**
   * Revokes a certificate (IoT Core: status REVOKED, so connections with it are refused; locally: the broker's
   * revocation list). Also the undo when registration loses a race.
   */
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

/** Background jobs: an SQS queue feeding the jobs-worker function on AWS, a local stand-in on the local cloud. */
export interface JobQueue {
  send(job: import('./jobs.js').Job): Promise<void>;
}

/** Freshness statements (lambdas/core/freshness.ts): the leaves they commit to and where they are kept. */
export interface FreshnessRepository {
  /** A page of (VIN, latest offer counter), 0 for a vehicle never offered anything: a scan of the vehicles. */
  latestOffers(cursor?: string): Promise<{ items: { vin: string; counter: number }[]; cursor?: string }>;
  /** The newest statement and how many buckets its leaves were stored in. */
  latest(): Promise<{ signed: SignedFreshness; bucketCount: number } | undefined>;
  /** One bucket of a statement: its leaves in order and its bucket root's path to the statement root. */
  bucket(
    sequence: number,
    index: number,
  ): Promise<{ leaves: { vin: string; counter: number }[]; path: ProofStep[] } | undefined>;
  /** Stores a statement's buckets, then the statement; false when a statement of that sequence exists already. */
  publish(
    signed: SignedFreshness,
    buckets: readonly { leaves: { vin: string; counter: number }[]; path: ProofStep[] }[],
    expiresAtSeconds: number,
  ): Promise<boolean>;
  /** Records the vehicle's latest freshness alert on its record. */
  recordAlert(vin: string, alert: FreshnessAlertRecord): Promise<void>;
}
