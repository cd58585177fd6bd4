import {
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import type {
  CampaignChanges,
  CampaignRecord,
  CampaignRepository,
  CampaignStatus,
  Page,
} from '../core/ports.js';
import { conditionally, createOnce } from './dynamo-common.js';
import { decodePageToken, encodePageToken } from './page-token.js';

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
