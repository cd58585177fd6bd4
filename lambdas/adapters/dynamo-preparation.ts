/**
 * Campaign preparation checkpoints (campaign-preparation.ts), one item per campaign segment in the campaigns
 * table under the key `<campaignId>#prep#<segment>` ('#' never appears in a campaign id). Each segment writes
 * only its own item, once per slice, so progress is counted without a campaign-wide hot item; the items carry no
 * status, so neither the byStatus index nor the campaign listing sees them.
 */
import { type DynamoDBDocumentClient, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import type { PreparationRepository, SegmentState } from '../core/ports.js';
import { conditionally } from './dynamo-common.js';

const keyOf = (campaignId: string, segment: number) => `${campaignId}#prep#${segment}`;

export class DynamoPreparationRepository implements PreparationRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async segments(campaignId: string, segments: readonly number[]): Promise<(SegmentState | undefined)[]> {
    return Promise.all(
      segments.map(async (segment) => {
        const out = await this.db.send(
          new GetCommand({
            TableName: this.table,
            Key: { campaignId: keyOf(campaignId, segment) },
            ConsistentRead: true,
          }),
        );
        if (!out.Item) return undefined;
        const { campaignId: _k, ...state } = out.Item;
        return state as SegmentState;
      }),
    );
  }

  async save(campaignId: string, state: SegmentState, expectedSlices: number): Promise<boolean> {
    return conditionally(
      this.db,
      new PutCommand({
        TableName: this.table,
        Item: { ...state, campaignId: keyOf(campaignId, state.segment) },
        ...(expectedSlices === 0
          ? {
              // Not started, or started and stopped before its first slice was committed.
              ConditionExpression: 'attribute_not_exists(campaignId) OR (slices = :zero AND #st = :running)',
              ExpressionAttributeNames: { '#st': 'state' },
              ExpressionAttributeValues: { ':zero': 0, ':running': 'running' },
            }
          : {
              ConditionExpression: 'slices = :n AND #st = :running',
              ExpressionAttributeNames: { '#st': 'state' },
              ExpressionAttributeValues: { ':n': expectedSlices, ':running': 'running' },
            }),
      }),
    );
  }
}
