import type { UpdateConditions } from '../../../protocol/conditions.js';
import type { UpdateStatus } from '../../../protocol/schemas.js';
import type { TransferReport } from './campaigns.js';

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
