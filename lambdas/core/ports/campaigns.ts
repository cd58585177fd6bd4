import type { UpdateStatus } from '../../../protocol/schemas.js';
import type { Page, TransferTotals } from './updates.js';

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
  readonly policy: import('../campaign-policy.js').RolloutPolicy;
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
