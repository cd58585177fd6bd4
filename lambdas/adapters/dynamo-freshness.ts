/**
 * DynamoDB side of the freshness role: leaves read from the vehicles table, statements and their buckets kept in
 * the freshness table (TABLES in lambdas/core/tables.ts), alerts kept on the vehicle's item.
 */
import {
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import type { ProofStep, SignedFreshness } from '../../protocol/freshness.js';
import type { FreshnessAlertRecord, FreshnessRepository } from '../core/ports.js';
import { decodeCursor, encodeCursor, isConditionFailure } from './dynamo-common.js';

const STATEMENT_KEY = 'statement';
const bucketKey = (sequence: number, index: number) => `bucket#${sequence}#${index}`;
/** Bucket writes in flight at once. */
const PARALLEL_WRITES = 16;

type Leaf = { vin: string; counter: number };

export class DynamoFreshnessRepository implements FreshnessRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly tables: { readonly vehicles: string; readonly freshness: string },
  ) {}

  async latestOffers(cursor?: string): Promise<{ items: Leaf[]; cursor?: string }> {
    // Billed by the size of the items read, not of this projection: see lambdas/core/freshness.ts.
    const out = await this.db.send(
      new ScanCommand({
        TableName: this.tables.vehicles,
        ProjectionExpression: 'vin, offerCounter',
        ExclusiveStartKey: decodeCursor(cursor),
      }),
    );
    const items = (out.Items ?? []).map((i) => ({
      vin: String(i.vin),
      counter: Number(i.offerCounter ?? 0),
    }));
    return { items, cursor: encodeCursor(out.LastEvaluatedKey) };
  }

  async latest(): Promise<{ signed: SignedFreshness; bucketCount: number } | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.tables.freshness, Key: { key: STATEMENT_KEY }, ConsistentRead: true }),
    );
    if (!out.Item) return undefined;
    return { signed: out.Item.signed as SignedFreshness, bucketCount: Number(out.Item.bucketCount) };
  }

  async bucket(sequence: number, index: number): Promise<{ leaves: Leaf[]; path: ProofStep[] } | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.tables.freshness, Key: { key: bucketKey(sequence, index) } }),
    );
    if (!out.Item) return undefined;
    // Stored as two parallel lists: a list of maps would cost an attribute name per leaf.
    const vins = out.Item.vins as string[];
    const counters = out.Item.counters as number[];
    return {
      leaves: vins.map((vin, i) => ({ vin, counter: Number(counters[i]) })),
      path: out.Item.path as ProofStep[],
    };
  }

  async publish(
    signed: SignedFreshness,
    buckets: readonly { leaves: Leaf[]; path: ProofStep[] }[],
    expiresAtSeconds: number,
  ): Promise<boolean> {
    const sequence = signed.statement.sequence;
    // Buckets first: a reader that sees the statement always finds its buckets.
    for (let i = 0; i < buckets.length; i += PARALLEL_WRITES) {
      await Promise.all(
        buckets.slice(i, i + PARALLEL_WRITES).map((b, j) =>
          this.db.send(
            new PutCommand({
              TableName: this.tables.freshness,
              Item: {
                key: bucketKey(sequence, i + j),
                vins: b.leaves.map((l) => l.vin),
                counters: b.leaves.map((l) => l.counter),
                path: b.path,
                expiresAt: expiresAtSeconds,
              },
            }),
          ),
        ),
      );
    }
    try {
      await this.db.send(
        new PutCommand({
          TableName: this.tables.freshness,
          Item: { key: STATEMENT_KEY, signed, sequence, bucketCount: buckets.length },
          // Sequences only grow, whoever publishes.
          ConditionExpression: 'attribute_not_exists(#k) OR #s < :s',
          ExpressionAttributeNames: { '#k': 'key', '#s': 'sequence' },
          ExpressionAttributeValues: { ':s': sequence },
        }),
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  async recordAlert(vin: string, alert: FreshnessAlertRecord): Promise<void> {
    await this.db.send(
      new UpdateCommand({
        TableName: this.tables.vehicles,
        Key: { vin },
        UpdateExpression: 'SET freshnessAlert = :a',
        ConditionExpression: 'attribute_exists(vin)',
        ExpressionAttributeValues: { ':a': alert },
      }),
    );
  }
}
