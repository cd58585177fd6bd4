/**
 * DynamoDB implementations of the domain repositories. Every write is a single-item conditional write, except a
 * campaign update's state change, which moves its counter shard in the same TransactWriteItems (the local cloud's
 * DynamoDB front emulates the call, local/dynamo-transactions.ts).
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { QUEUE_KEY_PREFIX } from '../core/campaign-counters.js';
import { waveKeyPrefix } from '../core/campaigns.js';
import { BadRequestError, ConflictError } from '../core/errors.js';
import type {
  BundleRecord,
  BundleRepository,
  CampaignChanges,
  CampaignRecord,
  CampaignRepository,
  CampaignStatus,
  CountMove,
  EcuRecord,
  InventoryRecord,
  Page,
  ReleaseRecord,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
  VehicleRepository,
  VerificationCheckpoint,
} from '../core/ports.js';
import { isTerminal, TERMINAL_STATUSES } from '../core/update-state.js';
import { counterKey } from './dynamo-counters.js';
import { decodePageToken, encodePageToken } from './page-token.js';

export function documentClient(client: DynamoDBClient): DynamoDBDocumentClient {
  return DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
}

/** Sends a conditional write: true when it applied, false when its condition did not hold. */
export async function conditionally(
  db: DynamoDBDocumentClient,
  command: PutCommand | UpdateCommand | DeleteCommand,
): Promise<boolean> {
  try {
    if (command instanceof PutCommand) await db.send(command);
    else if (command instanceof DeleteCommand) await db.send(command);
    else await db.send(command);
    return true;
  } catch (err) {
    if (isConditionFailure(err)) return false;
    throw err;
  }
}

/** Puts an item that must not exist yet; answers 409 with the given code and message when it does. */
async function createOnce(
  db: DynamoDBDocumentClient,
  table: string,
  item: Record<string, unknown>,
  key: string,
  conflict: { code: string; message: string },
): Promise<void> {
  const put = new PutCommand({
    TableName: table,
    Item: item,
    ConditionExpression: 'attribute_not_exists(#key)',
    ExpressionAttributeNames: { '#key': key },
  });
  if (!(await conditionally(db, put))) throw new ConflictError(conflict.code, conflict.message);
}

export function isConditionFailure(err: unknown): boolean {
  return err instanceof Error && err.name === 'ConditionalCheckFailedException';
}

/** A transaction cancelled because one of its conditions failed (not a conflict with another transaction). */
function isTransactionConditionFailure(err: unknown): boolean {
  const reasons = (err as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
  return (
    err instanceof Error &&
    err.name === 'TransactionCanceledException' &&
    reasons.some((r) => r.Code === 'ConditionalCheckFailed')
  );
}

/** Another transaction held one of the items (a busy counter shard): worth retrying after a short wait. */
function isTransactionConflict(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.name === 'TransactionConflictException' ||
      (err.name === 'TransactionCanceledException' && !isTransactionConditionFailure(err)))
  );
}

export function encodeCursor(key: Record<string, unknown> | undefined): string | undefined {
  return key ? Buffer.from(JSON.stringify(key)).toString('base64url') : undefined;
}

export function decodeCursor(cursor: string | undefined): Record<string, unknown> | undefined {
  if (!cursor) return undefined;
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    return value && typeof value === 'object' ? value : undefined;
  } catch {
    return undefined;
  }
}

export class DynamoReleaseRepository implements ReleaseRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async get(releaseId: string): Promise<ReleaseRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { releaseId }, ConsistentRead: true }),
    );
    return isBundleItem(out.Item) ? undefined : (out.Item as ReleaseRecord | undefined);
  }

  async create(release: ReleaseRecord): Promise<void> {
    await createOnce(this.db, this.table, { ...release }, 'releaseId', {
      code: 'release_exists',
      message: `Release ${release.releaseId} already exists`,
    });
  }

  /** A conditional UpdateItem of one release; `#s` names its status. */
  private updateIf(
    releaseId: string,
    update: string,
    condition: string,
    values: Record<string, unknown>,
  ): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { releaseId },
        UpdateExpression: update,
        ConditionExpression: condition,
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: values,
      }),
    );
  }

  async markWithdrawn(releaseId: string, withdrawnAt: string, reason: string): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { releaseId },
        UpdateExpression: 'SET #s = :withdrawn, withdrawnAt = :at, withdrawnReason = :r',
        ConditionExpression: '#s IN (:pending, :verifying, :failed, :published)',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: {
          ':withdrawn': 'withdrawn',
          ':pending': 'pending_upload',
          ':verifying': 'verifying',
          ':failed': 'failed',
          ':published': 'published',
          ':at': withdrawnAt,
          ':r': reason,
        },
      }),
    );
  }

  async markPublished(
    releaseId: string,
    publishedAt: string,
    objectVersionId: string | undefined,
  ): Promise<boolean> {
    return this.updateIf(
      releaseId,
      objectVersionId
        ? 'SET #s = :published, publishedAt = :at, objectVersionId = :v'
        : 'SET #s = :published, publishedAt = :at',
      '#s = :verifying',
      {
        ':published': 'published',
        ':verifying': 'verifying',
        ':at': publishedAt,
        ...(objectVersionId ? { ':v': objectVersionId } : {}),
      },
    );
  }

  async startVerification(releaseId: string, checkpoint: VerificationCheckpoint): Promise<boolean> {
    return this.updateIf(
      releaseId,
      'SET #s = :verifying, verification = :c REMOVE failureReason',
      '#s IN (:pending, :failed)',
      { ':verifying': 'verifying', ':pending': 'pending_upload', ':failed': 'failed', ':c': checkpoint },
    );
  }

  async saveVerification(
    releaseId: string,
    expectedBytes: number,
    checkpoint: VerificationCheckpoint,
  ): Promise<boolean> {
    return this.updateIf(
      releaseId,
      'SET verification = :c',
      '#s = :verifying AND verification.bytesVerified = :b',
      { ':verifying': 'verifying', ':b': expectedBytes, ':c': checkpoint },
    );
  }

  async markFailed(releaseId: string, reason: string, at: string): Promise<boolean> {
    return this.updateIf(
      releaseId,
      'SET #s = :failed, failureReason = :r, failedAt = :at',
      '#s = :verifying',
      { ':failed': 'failed', ':verifying': 'verifying', ':r': reason, ':at': at },
    );
  }

  async reopen(releaseId: string): Promise<boolean> {
    return this.updateIf(releaseId, 'SET #s = :pending REMOVE verification, uploadId', '#s = :failed', {
      ':pending': 'pending_upload',
      ':failed': 'failed',
    });
  }

  async setUploadId(releaseId: string, uploadId: string): Promise<void> {
    await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { releaseId },
        UpdateExpression: 'SET uploadId = :u',
        ConditionExpression: '#s = :pending',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: { ':u': uploadId, ':pending': 'pending_upload' },
      }),
    );
  }

  async listByVersion(version: string): Promise<ReleaseRecord[]> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: 'byVersion',
        KeyConditionExpression: 'version = :v',
        ExpressionAttributeValues: { ':v': version },
      }),
    );
    return (out.Items ?? []).filter((i) => !isBundleItem(i)) as ReleaseRecord[];
  }

  async list(limit: number, token?: string): Promise<Page<ReleaseRecord>> {
    const start = decodePageToken(token, ['releaseId']);
    const out = await this.db.send(
      new ScanCommand({ TableName: this.table, Limit: limit, ExclusiveStartKey: start }),
    );
    return {
      items: (out.Items ?? []).filter((i) => !isBundleItem(i)) as ReleaseRecord[],
      token: encodePageToken(out.LastEvaluatedKey),
    };
  }
}

/** Bundles share the releases table (one id namespace); release reads never see them. */
function isBundleItem(item: Record<string, unknown> | undefined): boolean {
  return item?.kind === 'bundle';
}

export class DynamoBundleRepository implements BundleRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async get(bundleId: string): Promise<BundleRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { releaseId: bundleId }, ConsistentRead: true }),
    );
    if (!isBundleItem(out.Item)) return undefined;
    const { releaseId, kind: _k, ecu: _e, status: _s, ...rest } = out.Item as Record<string, unknown>;
    return { bundleId: releaseId, ...rest } as unknown as BundleRecord;
  }

  async create(bundle: BundleRecord): Promise<void> {
    const { bundleId, ...rest } = bundle;
    // ecu and status make the item look like no release of any ECU to the byVersion index's readers.
    const item = { releaseId: bundleId, kind: 'bundle', ecu: '@bundle', status: 'published', ...rest };
    await createOnce(this.db, this.table, item, 'releaseId', {
      code: 'bundle_exists',
      message: `A release or bundle ${bundleId} already exists`,
    });
  }
}

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

/** Most attempts of a transaction that conflicts with another one on a counter shard. */
const TRANSACTION_ATTEMPTS = 8;

/**
 * Attributes kept beside an update for its indexes: deadlineKey (`<deadline>#<VIN>`) only while a campaign update is
 * in flight, so the sparse byDeadline index holds exactly what a tick may have to time out or offer again.
 */
function withIndexKeys(u: UpdateRecord): Record<string, unknown> {
  const { deadlineKey: _d, ...item } = u as UpdateRecord & { deadlineKey?: string };
  const inFlight =
    u.campaignId !== undefined &&
    u.deadline !== undefined &&
    u.status !== 'scheduled' &&
    !isTerminal(u.status);
  return inFlight ? { ...item, deadlineKey: `${u.deadline}#${u.vin}` } : item;
}

function toUpdate(item: Record<string, unknown>): UpdateRecord {
  const { deadlineKey: _d, ...rest } = item;
  return rest as unknown as UpdateRecord;
}

export class DynamoUpdateRepository implements UpdateRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
    /** Where campaign counts are sharded (counters table); needed by writers that move counts. */
    private readonly countersTable?: string,
  ) {}

  async get(vin: string, updateId: string): Promise<UpdateRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { vin, updateId }, ConsistentRead: true }),
    );
    return out.Item ? toUpdate(out.Item) : undefined;
  }

  async listForVehicle(vin: string): Promise<UpdateRecord[]> {
    const items: UpdateRecord[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'vin = :vin',
          ExpressionAttributeValues: { ':vin': vin },
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      items.push(...(out.Items ?? []).map(toUpdate));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }

  async pageQueued(
    campaignId: string,
    limit: number,
    cursor?: string,
  ): Promise<{ items: UpdateRecord[]; cursor?: string }> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: 'byCampaign',
        KeyConditionExpression: 'campaignId = :c AND begins_with(waveKey, :q)',
        ExpressionAttributeValues: { ':c': campaignId, ':q': QUEUE_KEY_PREFIX },
        Limit: limit,
        ExclusiveStartKey: decodeCursor(cursor),
      }),
    );
    const items = (out.Items ?? []).map(toUpdate);
    const last = items.at(-1);
    // The position after the last item read, so a step that reads fewer than a page still moves on exactly.
    const next = last
      ? { vin: last.vin, updateId: last.updateId, campaignId, waveKey: last.waveKey }
      : decodeCursor(cursor);
    return { items, cursor: out.LastEvaluatedKey || last ? encodeCursor(next) : cursor };
  }

  async listDue(campaignId: string, before: string, limit: number): Promise<UpdateRecord[]> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: 'byDeadline',
        KeyConditionExpression: 'campaignId = :c AND deadlineKey < :now',
        ExpressionAttributeValues: { ':c': campaignId, ':now': before },
        Limit: limit,
      }),
    );
    return (out.Items ?? []).map(toUpdate);
  }

  async listOpenDirectUpdates(
    releaseId: string,
    cursor?: string,
  ): Promise<{ items: UpdateRecord[]; cursor?: string }> {
    const terminal = [...TERMINAL_STATUSES];
    const out = await this.db.send(
      new ScanCommand({
        TableName: this.table,
        FilterExpression: `updateId = :u AND NOT (#s IN (${terminal.map((_, i) => `:t${i}`).join(', ')}))`,
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: {
          ':u': `release#${releaseId}`,
          ...Object.fromEntries(terminal.map((status, i) => [`:t${i}`, status])),
        },
        ExclusiveStartKey: decodeCursor(cursor),
      }),
    );
    return { items: (out.Items ?? []).map(toUpdate), cursor: encodeCursor(out.LastEvaluatedKey) };
  }

  /** @param limit items per page; undefined: DynamoDB's 1 MB pages */
  async pageByCampaignWave(
    campaignId: string,
    wave: number,
    limit: number | undefined,
    token?: string,
  ): Promise<Page<UpdateRecord>> {
    const start = decodePageToken(token, ['vin', 'updateId', 'campaignId', 'waveKey'], { campaignId });
    if (start && !start.waveKey!.startsWith(`${waveKeyPrefix(wave)}#`)) {
      throw new BadRequestError('invalid_next_token', 'next_token belongs to another wave');
    }
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: 'byCampaign',
        KeyConditionExpression: 'campaignId = :c AND begins_with(waveKey, :w)',
        ExpressionAttributeValues: { ':c': campaignId, ':w': `${waveKeyPrefix(wave)}#` },
        Limit: limit,
        ExclusiveStartKey: start,
      }),
    );
    return { items: (out.Items ?? []).map(toUpdate), token: encodePageToken(out.LastEvaluatedKey) };
  }

  async put(
    next: UpdateRecord,
    expectedRevision: number,
    moves: readonly CountMove[] = [],
  ): Promise<boolean> {
    const condition =
      expectedRevision === 0
        ? { ConditionExpression: 'attribute_not_exists(vin)' }
        : { ConditionExpression: 'revision = :r', ExpressionAttributeValues: { ':r': expectedRevision } };
    const counted = moves.filter((m) => m.from !== m.to);
    if (counted.length === 0) {
      return conditionally(
        this.db,
        new PutCommand({ TableName: this.table, Item: withIndexKeys(next), ...condition }),
      );
    }
    if (!this.countersTable) throw new Error('DynamoUpdateRepository: no counters table to move counts in');
    const countersTable = this.countersTable;
    // The update's conditional write first: if it fails (a duplicate, a stale read) the transaction counts nothing.
    const command = new TransactWriteCommand({
      TransactItems: [
        { Put: { TableName: this.table, Item: withIndexKeys(next), ...condition } },
        ...counted.map((m) => ({
          Update: {
            TableName: countersTable,
            Key: counterKey(m.campaignId, m.wave, m.shard),
            // A download's cost rides on the same shard write (t_* totals): no request of its own.
            UpdateExpression: `ADD ${[
              m.to && '#to :one',
              m.from && '#from :minus',
              m.transfer && 't_downloads :tn, t_fetched :tf, t_reused :tr, t_image :ti',
            ]
              .filter(Boolean)
              .join(', ')}`,
            ExpressionAttributeNames: {
              ...(m.to === undefined ? {} : { '#to': `n_${m.to}` }),
              ...(m.from === undefined ? {} : { '#from': `n_${m.from}` }),
            },
            ExpressionAttributeValues: {
              ...(m.to === undefined ? {} : { ':one': 1 }),
              ...(m.from === undefined ? {} : { ':minus': -1 }),
              ...(m.transfer
                ? { ':tn': 1, ':tf': m.transfer.fetched, ':tr': m.transfer.reused, ':ti': m.transfer.image }
                : {}),
            },
          },
        })),
      ],
    });
    for (let attempt = 1; ; attempt++) {
      try {
        await this.db.send(command);
        return true;
      } catch (err) {
        if (isTransactionConditionFailure(err)) return false;
        if (!isTransactionConflict(err) || attempt >= TRANSACTION_ATTEMPTS) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 20 * 2 ** attempt));
      }
    }
  }
}

export class DynamoCampaignRepository implements CampaignRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async create(campaign: CampaignRecord): Promise<void> {
    await createOnce(this.db, this.table, { ...campaign }, 'campaignId', {
      code: 'campaign_exists',
      message: `Campaign ${campaign.campaignId} already exists`,
    });
  }

  async get(campaignId: string): Promise<CampaignRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { campaignId }, ConsistentRead: true }),
    );
    return out.Item as CampaignRecord | undefined;
  }

  async list(limit: number, token?: string): Promise<Page<CampaignRecord>> {
    const start = decodePageToken(token, ['campaignId']);
    // Preparation checkpoints share the table (dynamo-preparation.ts) and have no status: left out here. A page
    // may then hold fewer than `limit` campaigns while next_token still leads on.
    const out = await this.db.send(
      new ScanCommand({
        TableName: this.table,
        Limit: limit,
        ExclusiveStartKey: start,
        FilterExpression: 'attribute_exists(#s)',
        ExpressionAttributeNames: { '#s': 'status' },
      }),
    );
    return { items: (out.Items ?? []) as CampaignRecord[], token: encodePageToken(out.LastEvaluatedKey) };
  }

  async listByStatus(status: CampaignStatus): Promise<CampaignRecord[]> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: 'byStatus',
        KeyConditionExpression: '#s = :s',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: { ':s': status },
      }),
    );
    return (out.Items ?? []) as CampaignRecord[];
  }

  async change(
    campaignId: string,
    expectedRevision: number,
    changes: CampaignChanges,
    updatedAt: string,
  ): Promise<boolean> {
    const names: Record<string, string> = { '#rev': 'revision', '#at': 'updatedAt' };
    const values: Record<string, unknown> = {
      ':rev': expectedRevision,
      ':next': expectedRevision + 1,
      ':at': updatedAt,
    };
    const sets = ['#rev = :next', '#at = :at'];
    for (const [i, [k, v]] of Object.entries(changes).entries()) {
      if (v === undefined) continue;
      names[`#f${i}`] = k;
      values[`:f${i}`] = v;
      sets.push(`#f${i} = :f${i}`);
    }
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { campaignId },
        UpdateExpression: `SET ${sets.join(', ')}`,
        ConditionExpression: '#rev = :rev',
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
      }),
    );
  }
}
