/** Campaign exclusions in their own table: one item per campaign x VIN, written in batches, listed a page at a time. */
import { BatchWriteCommand, type DynamoDBDocumentClient, QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { Exclusion, ExclusionRepository, Page } from '../core/ports.js';
import { decodePageToken, encodePageToken } from './page-token.js';

/** BatchWriteItem's largest batch. */
const BATCH = 25;

export class DynamoExclusionRepository implements ExclusionRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async putAll(campaignId: string, exclusions: readonly Exclusion[]): Promise<void> {
    for (let i = 0; i < exclusions.length; i += BATCH) {
      let requests = exclusions.slice(i, i + BATCH).map((e) => ({
        PutRequest: { Item: { campaignId, vin: e.vin, reason: e.reason } },
      }));
      // Throttled writes come back as UnprocessedItems: send them again, backing off, until none are left.
      for (let attempt = 0; requests.length > 0; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(1000, 25 * 2 ** attempt)));
        if (attempt > 8) throw new Error(`exclusions of ${campaignId} not written: still throttled`);
        const out = await this.db.send(new BatchWriteCommand({ RequestItems: { [this.table]: requests } }));
        requests = (out.UnprocessedItems?.[this.table] ?? []) as typeof requests;
      }
    }
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
