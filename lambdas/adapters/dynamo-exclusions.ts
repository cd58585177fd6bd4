/** Campaign exclusions in their own table: one item per campaign x VIN, written one by one, listed a page at a time. */
import { type DynamoDBDocumentClient, PutCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { Exclusion, ExclusionRepository, Page } from '../core/ports.js';
import { conditionally } from './dynamo-common.js';
import { decodePageToken, encodePageToken } from './page-token.js';

/**
 * Exclusions written at once. One PutItem each, like the campaign's updates: BatchWriteItem would also let the
 * function delete items, which no function is granted (issue 18 #9); the SDK retries throttled writes.
 */
const CONCURRENCY = 16;

export class DynamoExclusionRepository implements ExclusionRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async putAll(campaignId: string, exclusions: readonly Exclusion[]): Promise<void> {
    let next = 0;
    const put = async () => {
      while (next < exclusions.length) {
        const e = exclusions[next++]!;
        await this.db.send(
          new PutCommand({ TableName: this.table, Item: { campaignId, vin: e.vin, reason: e.reason } }),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, exclusions.length) }, put));
  }

  async putOnce(campaignId: string, e: Exclusion, marker: string): Promise<boolean> {
    return conditionally(
      this.db,
      new PutCommand({
        TableName: this.table,
        Item: { campaignId, vin: e.vin, reason: e.reason, marker },
        ConditionExpression: 'attribute_not_exists(vin) OR marker = :m',
        ExpressionAttributeValues: { ':m': marker },
      }),
    );
  }

  async page(campaignId: string, limit: number, token?: string): Promise<Page<Exclusion>> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        KeyConditionExpression: 'campaignId = :c',
        ExpressionAttributeValues: { ':c': campaignId },
        Limit: limit,
        ExclusiveStartKey: decodePageToken(token, ['campaignId', 'vin'], { campaignId }),
      }),
    );
    return {
      items: (out.Items ?? []).map((i) => ({ vin: String(i.vin), reason: String(i.reason) })),
      token: encodePageToken(out.LastEvaluatedKey),
    };
  }
}
