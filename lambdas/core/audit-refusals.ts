/**
 * Refusals API Gateway makes itself. On AWS operator routes are authorised by IAM (SigV4) at API Gateway, so a
 * request IAM refuses never reaches a function and no function can audit it. The API's access log has it: a
 * CloudWatch Logs subscription filter (lib/vehicle-api.ts) sends those lines to the audit-refusals function, and
 * this maps each one to the same AuditEntry the functions write (lambdas/core/audit.ts), outcome `refused`.
 *
 * Pure but for node:zlib (the subscription payload is gzip): no AWS SDK, the store is behind AuditLog.
 */
import { gunzipSync } from 'node:zlib';
import type { AuditEntry } from '../../protocol/audit.js';
import { principalOf } from '../../protocol/roles.js';
import { ROUTES } from '../../protocol/routes.js';
import type { AuditLog } from './audit.js';

/** The decoded `awslogs.data` of a subscription delivery (CloudWatch Logs documentation, "Subscription filters"). */
export interface LogsSubscriptionPayload {
  readonly messageType: 'DATA_MESSAGE' | 'CONTROL_MESSAGE';
  readonly logGroup: string;
  readonly logEvents: readonly {
    readonly id: string;
    readonly timestamp: number;
    readonly message: string;
  }[];
}

/** One access log line (lib/vehicle-api.ts accessLogFormat): the fields the audit entry needs. */
export interface AccessLogLine {
  readonly requestId?: string;
  readonly requestTimeEpoch?: string;
  readonly httpMethod?: string;
  readonly resourcePath?: string;
  readonly status?: string;
  readonly errorType?: string;
  readonly sourceIp?: string;
  readonly userArn?: string;
  readonly cognitoAuthenticationProvider?: string;
}

export function decodeSubscription(data: string): LogsSubscriptionPayload {
  return JSON.parse(gunzipSync(Buffer.from(data, 'base64')).toString('utf8')) as LogsSubscriptionPayload;
}

/** Operator mutations by `METHOD resource`: GETs are not audited, as the functions do not audit them. */
const AUDITED = new Set(
  ROUTES.filter((r) => r.auth === 'operator' && r.method !== 'GET').map((r) => `${r.method} ${r.resource}`),
);

/** API Gateway writes `-` for a context variable without a value. */
const present = (v: string | undefined): string | undefined =>
  v === undefined || v === '' || v === '-' ? undefined : v;

/**
 * The audit entry for one access log line, or undefined when it is not a refusal API Gateway made on an operator
 * mutation. A refusal the function answered itself (no gateway error type) is skipped: the function audited it.
 * The event id is built from the request's own time and id, so a redelivered batch maps to the same ids and the
 * store's append-only condition writes nothing twice.
 */
export function refusalEntryOf(line: AccessLogLine, fallbackTimestamp: number): AuditEntry | undefined {
  const status = Number(line.status);
  if (status !== 401 && status !== 403) return undefined;
  if (present(line.errorType) === undefined) return undefined;
  const action = `${line.httpMethod} ${line.resourcePath}`;
  if (!AUDITED.has(action)) return undefined;
  const requestId = present(line.requestId);
  if (requestId === undefined) return undefined;
  const epoch = Number(present(line.requestTimeEpoch) ?? fallbackTimestamp);
  const iso = new Date(Number.isFinite(epoch) ? epoch : fallbackTimestamp).toISOString();
  const principal = principalOf({
    userArn: present(line.userArn) ?? null,
    cognitoAuthenticationProvider: present(line.cognitoAuthenticationProvider) ?? null,
  });
  return {
    event_id: `${iso}#${requestId}`,
    at: iso,
    actor: principal?.actor ?? 'unknown',
    role: principal?.role ?? 'unknown',
    action,
    // The access log keeps the resource template, never the concrete path (VINs stay out of it): no target.
    target: null,
    source_ip: present(line.sourceIp) ?? 'unknown',
    outcome: 'refused',
    status,
    request_id: requestId,
  };
}

/** Every refusal entry of a payload; lines that are not JSON (never written by our format) are skipped. */
export function refusalEntries(payload: LogsSubscriptionPayload): AuditEntry[] {
  if (payload.messageType !== 'DATA_MESSAGE') return [];
  const entries: AuditEntry[] = [];
  for (const event of payload.logEvents) {
    let line: AccessLogLine;
    try {
      line = JSON.parse(event.message) as AccessLogLine;
    } catch {
      continue;
    }
    if (typeof line !== 'object' || line === null) continue;
    const entry = refusalEntryOf(line, event.timestamp);
    if (entry) entries.push(entry);
  }
  return entries;
}

/**
 * Appends each entry; an entry already written (a redelivered batch) is counted, not an error. `isDuplicate` tells
 * the store's refusal of a second write (ConditionalCheckFailedException on DynamoDB) from a real failure, which
 * is thrown so Lambda retries the batch.
 */
export async function appendRefusals(
  log: AuditLog,
  entries: readonly AuditEntry[],
  isDuplicate: (err: unknown) => boolean,
): Promise<{ written: number; duplicates: number }> {
  let written = 0;
  let duplicates = 0;
  for (const entry of entries) {
    try {
      await log.append(entry);
      written++;
    } catch (err) {
      if (!isDuplicate(err)) throw err;
      duplicates++;
    }
  }
  return { written, duplicates };
}
