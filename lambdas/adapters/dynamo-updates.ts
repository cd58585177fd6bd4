import {
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteCommand,
} from '@aws-sdk/lib-dynamodb';
import { QUEUE_KEY_PREFIX } from '../core/campaign-counters.js';
import { waveKeyPrefix } from '../core/campaigns.js';
import { BadRequestError } from '../core/errors.js';
import type { CountMove, Page, UpdateRecord, UpdateRepository } from '../core/ports.js';
import { isTerminal, TERMINAL_STATUSES } from '../core/update-state.js';
import {
  conditionally,
  decodeCursor,
  encodeCursor,
  isTransactionConditionFailure,
  isTransactionConflict,
} from './dynamo-common.js';
import { counterKey } from './dynamo-counters.js';
import { decodePageToken, encodePageToken } from './page-token.js';

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
