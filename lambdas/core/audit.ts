/**
 * The operator audit log: who (actor, role) did what (route), to what (target), when, from where, with what
 * outcome. Every operator mutation that reaches the operator-api function is recorded once it has answered, and
 * the local gateway records the refusals it makes itself (a role calling a route it may not). Pure: the store is
 * behind AuditLog.
 */
import type { APIGatewayProxyEvent } from 'aws-lambda';
import type { AuditEntry, AuditOutcome } from '../../protocol/audit.js';
import { principalOf } from '../../protocol/roles.js';
import type { Clock, Page } from './ports.js';

export type { AuditEntry };

export interface AuditFilter {
  readonly actor?: string;
  readonly role?: string;
  readonly outcome?: AuditOutcome;
  readonly target?: string;
}

export interface AuditLog {
  /** Appends one entry; never overwrites one (the store refuses a second write of the same event id). */
  append(entry: AuditEntry): Promise<void>;
  /** Newest first, `limit` matching entries at most. */
  list(filter: AuditFilter, limit: number, token?: string): Promise<Page<AuditEntry>>;
}

export function outcomeOf(status: number): AuditOutcome {
  if (status >= 200 && status < 300) return 'allowed';
  if (status === 401 || status === 403) return 'refused';
  return 'failed';
}

/** The first path parameter names the target; a create names it in its answer (release_id, campaign_id, vin). */
export function targetOf(
  pathParameters: Readonly<Record<string, string | undefined>> | null,
  answer: string | undefined,
): string | null {
  const fromPath = Object.values(pathParameters ?? {}).find((v) => v !== undefined);
  if (fromPath !== undefined) return fromPath;
  if (!answer) return null;
  try {
    const body = JSON.parse(answer) as Record<string, unknown>;
    for (const key of ['campaign_id', 'release_id', 'vin']) {
      if (typeof body[key] === 'string') return body[key] as string;
    }
  } catch {
    // Not JSON: no target to name.
  }
  return null;
}

/** The entry for one request, from the API Gateway event it arrived as and the status it was answered with. */
export function auditEntryFor(
  event: Pick<APIGatewayProxyEvent, 'httpMethod' | 'resource' | 'pathParameters' | 'requestContext'>,
  status: number,
  answer: string | undefined,
  at: Date,
): AuditEntry {
  const identity = event.requestContext.identity;
  const principal = principalOf(identity);
  const iso = at.toISOString();
  return {
    event_id: `${iso}#${event.requestContext.requestId}`,
    at: iso,
    actor: principal?.actor ?? 'unknown',
    role: principal?.role ?? 'unknown',
    action: `${event.httpMethod} ${event.resource}`,
    target: targetOf(event.pathParameters, status < 300 ? answer : undefined),
    source_ip: identity.sourceIp,
    outcome: outcomeOf(status),
    status,
    request_id: event.requestContext.requestId,
  };
}

export class AuditService {
  constructor(
    private readonly log: AuditLog,
    private readonly clock: Clock,
  ) {}

  /** Records a mutation (any method but GET) once it has been answered. */
  async record(
    event: Pick<APIGatewayProxyEvent, 'httpMethod' | 'resource' | 'pathParameters' | 'requestContext'>,
    status: number,
    answer: string | undefined,
  ): Promise<AuditEntry | undefined> {
    if (event.httpMethod === 'GET') return undefined;
    const entry = auditEntryFor(event, status, answer, this.clock.now());
    await this.log.append(entry);
    return entry;
  }

  list(filter: AuditFilter, limit: number, token?: string): Promise<Page<AuditEntry>> {
    return this.log.list(filter, limit, token);
  }
}
