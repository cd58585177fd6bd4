/**
 * Campaign counters sharded per wave, and each campaign's offer pacer state, in the counters table (TABLES). A wave's
 * shards share the partition key `<campaign>#<wave>`, one item per shard (sort key), each holding one `n_<status>`
 * number per status, moved by ADDs in the same transaction as the update's state change (DynamoUpdateRepository.put);
 * a wave is read back with one Query and summed. The pacer's item (`<campaign>`, `pacer`) is written by a
 * conditional put on its sequence, once per pacer step.
 */
import { type DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { sumCounts } from '../core/campaign-counters.js';
import type { CounterRepository, PacerState, TransferTotals } from '../core/ports.js';

const TRANSFER_KEYS = ['downloads', 'fetched', 'reused', 'image'] as const;

import { conditionally } from './dynamo-common.js';

/** The key of one counter shard item. */
export function counterKey(campaignId: string, wave: number, shard: number): { key: string; shard: string } {
  return { key: `${campaignId}#${wave}`, shard: String(shard).padStart(3, '0') };
}

const pacerKey = (campaignId: string) => ({ key: campaignId, shard: 'pacer' });

export class DynamoCounterRepository implements CounterRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async waveCounts(campaignId: string, wave: number): Promise<Record<string, number>> {
    return (await this.waveTotals(campaignId, wave)).counts;
  }

  async waveTotals(
    campaignId: string,
    wave: number,
  ): Promise<{ counts: Record<string, number>; transfer: TransferTotals }> {
    const found: Record<string, number>[] = [];
    const transfer = { downloads: 0, fetched: 0, reused: 0, image: 0 };
    let start: Record<string, unknown> | undefined;
    do {
      // At most COUNTER_SHARDS small items: one page in practice.
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#k = :k',
          ExpressionAttributeNames: { '#k': 'key' },
          ExpressionAttributeValues: { ':k': `${campaignId}#${wave}` },
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      for (const item of out.Items ?? []) {
        found.push(countsOf(item));
        for (const k of TRANSFER_KEYS) transfer[k] += Number(item[`t_${k}`] ?? 0);
      }
      start = out.LastEvaluatedKey;
    } while (start);
    return { counts: sumCounts(found), transfer };
  }

  async pacer(campaignId: string): Promise<PacerState | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: pacerKey(campaignId), ConsistentRead: true }),
    );
    const item = out.Item;
    if (!item) return undefined;
    const { key: _k, shard: _s, ...state } = item;
    return state as unknown as PacerState;
  }

  async savePacer(campaignId: string, expectedSeq: number | undefined, next: PacerState): Promise<boolean> {
    return conditionally(
      this.db,
      new PutCommand({
        TableName: this.table,
        Item: { ...pacerKey(campaignId), ...next },
        ...(expectedSeq === undefined
          ? { ConditionExpression: 'attribute_not_exists(#k)', ExpressionAttributeNames: { '#k': 'key' } }
          : { ConditionExpression: 'seq = :s', ExpressionAttributeValues: { ':s': expectedSeq } }),
      }),
    );
  }
}

function countsOf(item: Record<string, unknown>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const [k, v] of Object.entries(item)) if (k.startsWith('n_')) counts[k.slice(2)] = Number(v);
  return counts;
}
