/** The operator audit log in DynamoDB: one partition, items appended with a condition, read newest first. */
import { type DynamoDBDocumentClient, PutCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { AuditEntry } from '../../protocol/audit.js';
import type { AuditFilter, AuditLog } from '../core/audit.js';
import type { Page } from '../core/ports.js';
import { decodePageToken, encodePageToken } from './page-token.js';

const STREAM = 'operator';
/** Queries one listing call may make while filters skip entries; it then answers what it found and a token. */
const MAX_QUERIES = 10;

export class DynamoAuditLog implements AuditLog {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async append(entry: AuditEntry): Promise<void> {
    await this.db.send(
      new PutCommand({
        TableName: this.table,
        Item: { stream: STREAM, eventId: entry.event_id, ...entry },
        // Append-only: an entry is never replaced, even by a retried write.
        ConditionExpression: 'attribute_not_exists(eventId)',
      }),
    );
  }

  async list(filter: AuditFilter, limit: number, token?: string): Promise<Page<AuditEntry>> {
    const conditions: string[] = [];
    // Names go through placeholders: several (role, stream) may be DynamoDB reserved words.
    const names: Record<string, string> = { '#stream': 'stream' };
    const values: Record<string, unknown> = { ':s': STREAM };
    for (const [key, value] of Object.entries(filter)) {
      if (value === undefined) continue;
      names[`#${key}`] = key;
      values[`:${key}`] = value;
      conditions.push(`#${key} = :${key}`);
    }
    const items: AuditEntry[] = [];
    let start = decodePageToken(token, ['stream', 'eventId'], { stream: STREAM });
    for (let i = 0; i < MAX_QUERIES && items.length < limit; i++) {
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#stream = :s',
          ...(conditions.length ? { FilterExpression: conditions.join(' AND ') } : {}),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ScanIndexForward: false,
          Limit: limit - items.length,
          ExclusiveStartKey: start,
        }),
      );
      items.push(...(out.Items ?? []).map(toEntry));
      start = out.LastEvaluatedKey as Record<string, string> | undefined;
      if (!start) break;
    }
    return { items, token: encodePageToken(start) };
  }
}

function toEntry(i: Record<string, unknown>): AuditEntry {
  return {
    event_id: String(i.event_id),
    at: String(i.at),
    actor: String(i.actor),
    role: i.role as AuditEntry['role'],
    action: String(i.action),
    target: typeof i.target === 'string' ? i.target : null,
    source_ip: String(i.source_ip),
    outcome: i.outcome as AuditEntry['outcome'],
    status: Number(i.status),
    request_id: String(i.request_id),
  };
}
