import type { FreshnessAlert } from '../../../protocol/freshness.js';

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
