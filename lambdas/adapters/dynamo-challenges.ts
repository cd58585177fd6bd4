/**
 * Login challenges in DynamoDB: one item per VIN and minute holds that minute's issue count and each challenge
 * issued in it (an attribute per challenge), so issuing is one write and spending (removing the attribute, by a
 * conditional update: no function may delete items) another; TTL removes the window items.
 */
import { type DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { ChallengeRepository } from '../core/ports.js';
import { conditionally } from './dynamo-common.js';

export class DynamoChallengeRepository implements ChallengeRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async issue(
    vin: string,
    window: number,
    limit: number,
    nonce: string,
    expiresAtSeconds: number,
  ): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { id: windowKey(vin, window) },
        // The window's count and this challenge (its expiry under its own attribute) in one write; later challenges
        // of the window expire later, so the item's TTL follows the newest.
        UpdateExpression: 'ADD issued :one SET expiresAt = :exp, #c = :exp',
        ConditionExpression: 'attribute_not_exists(issued) OR issued < :limit',
        ExpressionAttributeNames: { '#c': challengeAttribute(nonce) },
        ExpressionAttributeValues: { ':one': 1, ':limit': limit, ':exp': expiresAtSeconds },
      }),
    );
  }

  async consume(vin: string, window: number, nonce: string, nowSeconds: number): Promise<boolean> {
    // Spent by removing it: a second answer finds nothing. Expired challenges linger until TTL removes their
    // window's item: the condition, not TTL, enforces expiry.
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { id: windowKey(vin, window) },
        UpdateExpression: 'REMOVE #c',
        ConditionExpression: 'attribute_exists(#c) AND #c > :now',
        ExpressionAttributeNames: { '#c': challengeAttribute(nonce) },
        ExpressionAttributeValues: { ':now': nowSeconds },
      }),
    );
  }
}

const windowKey = (vin: string, window: number) => `r#${vin}#${window}`;
const challengeAttribute = (nonce: string) => `c_${nonce}`;
