/** Shared DynamoDB write helpers: conditional writes, create-once and cursor encoding for the repositories. */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, PutCommand, type UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { ConflictError } from '../core/errors.js';

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
export async function createOnce(
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
export function isTransactionConditionFailure(err: unknown): boolean {
  const reasons = (err as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
  return (
    err instanceof Error &&
    err.name === 'TransactionCanceledException' &&
    reasons.some((r) => r.Code === 'ConditionalCheckFailed')
  );
}

/** Another transaction held one of the items (a busy counter shard): worth retrying after a short wait. */
export function isTransactionConflict(err: unknown): boolean {
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
