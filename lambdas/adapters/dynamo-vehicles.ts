import { type DynamoDBDocumentClient, GetCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { EcuRecord, InventoryRecord, VehicleRecord, VehicleRepository } from '../core/ports.js';
import {
  conditionally,
  createOnce,
  decodeCursor,
  encodeCursor,
  isConditionFailure,
} from './dynamo-common.js';

type StoredVehicle = VehicleRecord & {
  /** Items written before challenges had their own table may still hold one; never read. */
  challenge?: { nonce: string; expiresAt: number };
  assignmentCounter?: number;
  offerCounter?: number;
  campaignLocks?: Record<string, string>;
};

/** The domain record without the bookkeeping attributes (challenge, counters, locks, rate windows). */
function toVehicle(item: Record<string, unknown>): VehicleRecord {
  const {
    challenge: _c,
    assignmentCounter: _n,
    offerCounter: _o,
    campaignLocks: _l,
    ...rest
  } = item as unknown as StoredVehicle;
  return Object.fromEntries(
    Object.entries(rest).filter(([k]) => !k.startsWith('rate_')),
  ) as unknown as VehicleRecord;
}

export class DynamoVehicleRepository implements VehicleRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async get(vin: string): Promise<VehicleRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { vin }, ConsistentRead: true }),
    );
    return out.Item ? toVehicle(out.Item) : undefined;
  }

  async create(vehicle: VehicleRecord): Promise<void> {
    // campaignLocks starts as an empty map so per-ECU locks can be set with a nested path.
    await createOnce(this.db, this.table, { ...vehicle, campaignLocks: {} }, 'vin', {
      code: 'vehicle_exists',
      message: `Vehicle ${vehicle.vin} is already registered`,
    });
  }

  async scan(cursor?: string): Promise<{ items: VehicleRecord[]; cursor?: string }> {
    const out = await this.db.send(
      new ScanCommand({ TableName: this.table, Limit: 500, ExclusiveStartKey: decodeCursor(cursor) }),
    );
    return { items: (out.Items ?? []).map(toVehicle), cursor: encodeCursor(out.LastEvaluatedKey) };
  }

  async scanSegment(
    segment: number,
    totalSegments: number,
    limit: number,
    cursor?: string,
  ): Promise<{ items: VehicleRecord[]; cursor?: string }> {
    const out = await this.db.send(
      new ScanCommand({
        TableName: this.table,
        Limit: limit,
        ...(totalSegments > 1 ? { Segment: segment, TotalSegments: totalSegments } : {}),
        ExclusiveStartKey: decodeCursor(cursor),
      }),
    );
    return { items: (out.Items ?? []).map(toVehicle), cursor: encodeCursor(out.LastEvaluatedKey) };
  }

  async lockCampaign(vin: string, ecu: string, campaignId: string): Promise<boolean> {
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { vin },
          UpdateExpression: 'SET campaignLocks.#ecu = :c',
          ConditionExpression: 'attribute_not_exists(campaignLocks.#ecu) OR campaignLocks.#ecu = :c',
          ExpressionAttributeNames: { '#ecu': ecu },
          ExpressionAttributeValues: { ':c': campaignId },
        }),
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      if (!(err instanceof Error && err.name === 'ValidationException')) throw err;
    }
    // An item written before campaignLocks existed: create the map with this lock, if still absent.
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { vin },
          UpdateExpression: 'SET campaignLocks = :locks',
          ConditionExpression: 'attribute_exists(vin) AND attribute_not_exists(campaignLocks)',
          ExpressionAttributeValues: { ':locks': { [ecu]: campaignId } },
        }),
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return this.lockCampaign(vin, ecu, campaignId);
      throw err;
    }
  }

  async unlockCampaign(vin: string, ecu: string, campaignId: string): Promise<void> {
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { vin },
          UpdateExpression: 'REMOVE campaignLocks.#ecu',
          ConditionExpression: 'campaignLocks.#ecu = :c',
          ExpressionAttributeNames: { '#ecu': ecu },
          ExpressionAttributeValues: { ':c': campaignId },
        }),
      );
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
    }
  }

  async campaignLock(vin: string, ecu: string): Promise<string | undefined> {
    const out = await this.db.send(
      new GetCommand({
        TableName: this.table,
        Key: { vin },
        ProjectionExpression: 'campaignLocks',
        ConsistentRead: true,
      }),
    );
    return (out.Item?.campaignLocks as Record<string, string> | undefined)?.[ecu];
  }

  async reserveOffer(vin: string, updateId: string): Promise<number> {
    // One write for the offer's counter (recorded as the latest offer) and the vehicle's active update.
    const out = await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { vin },
        UpdateExpression:
          'SET assignmentCounter = if_not_exists(assignmentCounter, :zero) + :one, offerCounter = if_not_exists(assignmentCounter, :zero) + :one, activeUpdateId = :u',
        ConditionExpression: 'attribute_exists(vin)',
        ExpressionAttributeValues: { ':one': 1, ':zero': 0, ':u': updateId },
        ReturnValues: 'UPDATED_NEW',
      }),
    );
    return Number(out.Attributes?.assignmentCounter);
  }

  async setActiveUpdate(vin: string, updateId: string): Promise<void> {
    await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { vin },
        UpdateExpression: 'SET activeUpdateId = :u',
        ConditionExpression: 'attribute_exists(vin)',
        ExpressionAttributeValues: { ':u': updateId },
      }),
    );
  }

  async takeRateToken(
    vin: string,
    window: number,
    limit: number,
    reserveCounter = false,
  ): Promise<{ vehicle: VehicleRecord; counter?: number } | undefined> {
    try {
      const out = await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { vin },
          // One attribute per window; the previous window's is removed in the same write, so the item never grows.
          UpdateExpression: reserveCounter
            ? 'ADD #cur :one, assignmentCounter :one REMOVE #prev'
            : 'ADD #cur :one REMOVE #prev',
          ConditionExpression: 'attribute_exists(vin) AND (attribute_not_exists(#cur) OR #cur < :limit)',
          ExpressionAttributeNames: { '#cur': `rate_${window}`, '#prev': `rate_${window - 1}` },
          ExpressionAttributeValues: { ':one': 1, ':limit': limit },
          // The vehicle as written: the caller needs it anyway, and this is consistent with the write.
          ReturnValues: 'ALL_NEW',
        }),
      );
      const item = out.Attributes ?? {};
      return {
        vehicle: toVehicle(item),
        ...(reserveCounter ? { counter: Number(item.assignmentCounter) } : {}),
      };
    } catch (err) {
      if (isConditionFailure(err)) return undefined;
      throw err;
    }
  }

  async nextAssignmentCounter(vin: string, offer = false): Promise<number> {
    // For an offer, the same write records the new counter as the latest offer (both computed from the old value).
    const out = await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { vin },
        UpdateExpression: offer
          ? 'SET assignmentCounter = if_not_exists(assignmentCounter, :zero) + :one, offerCounter = if_not_exists(assignmentCounter, :zero) + :one'
          : 'ADD assignmentCounter :one',
        ConditionExpression: 'attribute_exists(vin)',
        ExpressionAttributeValues: offer ? { ':one': 1, ':zero': 0 } : { ':one': 1 },
        ReturnValues: 'UPDATED_NEW',
      }),
    );
    return Number(out.Attributes?.assignmentCounter);
  }

  async revoke(vin: string, revokedAt: string, reason: string): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { vin },
        UpdateExpression: 'SET revokedAt = :at, revokedReason = :r REMOVE challenge',
        ConditionExpression: 'attribute_exists(vin) AND attribute_not_exists(revokedAt)',
        ExpressionAttributeValues: { ':at': revokedAt, ':r': reason },
      }),
    );
  }

  async recordCompletion(
    vehicle: VehicleRecord,
    ecu: string,
    version: string,
    campaignId?: string,
  ): Promise<void> {
    const index = vehicle.ecus.findIndex((e) => e.ecu === ecu);
    if (index < 0) return;
    const setVersion = {
      TableName: this.table,
      Key: { vin: vehicle.vin },
      UpdateExpression: `SET ecus[${index}].version = :v`,
      // The list position must still hold that ECU; inventories are written once at registration.
      ConditionExpression: `ecus[${index}].ecu = :ecu`,
      ExpressionAttributeValues: { ':v': version, ':ecu': ecu } as Record<string, unknown>,
    };
    if (campaignId !== undefined) {
      // The usual case: the lock is still this campaign's, and both go in one write.
      const both = await conditionally(
        this.db,
        new UpdateCommand({
          ...setVersion,
          UpdateExpression: `${setVersion.UpdateExpression} REMOVE campaignLocks.#ecu`,
          ConditionExpression: `${setVersion.ConditionExpression} AND campaignLocks.#ecu = :c`,
          ExpressionAttributeNames: { '#ecu': ecu },
          ExpressionAttributeValues: { ...setVersion.ExpressionAttributeValues, ':c': campaignId },
        }),
      );
      if (both) return;
      // The lock is gone or another campaign's (released by a cancel meanwhile): the version alone.
    }
    await this.db.send(new UpdateCommand(setVersion));
  }

  async recordInventory(
    vin: string,
    inventory: InventoryRecord,
    ecus: readonly EcuRecord[],
  ): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { vin },
        UpdateExpression: 'SET inventory = :inv, ecus = :ecus',
        // Registered vehicles only; a late report never overwrites a newer one.
        ConditionExpression:
          'attribute_exists(vin) AND (attribute_not_exists(inventory) OR inventory.#seq < :seq)',
        ExpressionAttributeNames: { '#seq': 'sequence' },
        ExpressionAttributeValues: { ':inv': inventory, ':ecus': ecus, ':seq': inventory.sequence },
      }),
    );
  }
}
