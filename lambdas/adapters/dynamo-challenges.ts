/**
 * Login challenges in DynamoDB: one item per challenge, spent once by a conditional update (no function may delete
 * items; TTL removes spent and expired ones); per-VIN issue counters.
 */
import { type DynamoDBDocumentClient, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { ChallengeRepository } from '../core/ports.js';
import { conditionally } from './dynamo-repositories.js';

export class DynamoChallengeRepository implements ChallengeRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async countIssued(vin: string, window: number, limit: number, expiresAtSeconds: number): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { id: `r#${vin}#${window}` },
        UpdateExpression: 'ADD issued :one SET expiresAt = :exp',
        ConditionExpression: 'attribute_not_exists(issued) OR issued < :limit',
        ExpressionAttributeValues: { ':one': 1, ':limit': limit, ':exp': expiresAtSeconds },
      }),
    );
  }

  async put(vin: string, nonce: string, expiresAtSeconds: number): Promise<void> {
    // The nonce is 256 random bits: a collision is not a case to handle, but never overwrite one either.
    const written = await conditionally(
      this.db,
      new PutCommand({
        TableName: this.table,
        Item: { id: `c#${nonce}`, vin, expiresAt: expiresAtSeconds },
        ConditionExpression: 'attribute_not_exists(id)',
      }),
    );
    if (!written) throw new Error('challenge nonce collision');
  }

  async consume(vin: string, nonce: string, nowSeconds: number): Promise<boolean> {
    // Expired items linger until TTL deletes them (within days): the condition, not TTL, enforces expiry.
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { id: `c#${nonce}` },
        UpdateExpression: 'SET spentAt = :now',
        ConditionExpression: 'vin = :v AND expiresAt > :now AND attribute_not_exists(spentAt)',
        ExpressionAttributeValues: { ':v': vin, ':now': nowSeconds },
      }),
    );
  }
}
