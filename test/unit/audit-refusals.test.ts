/**
 * Refusals API Gateway makes itself (IAM), read from the access log's subscription payload: decoded from base64
 * gzip, mapped to audit entries, appended once however often a batch is delivered.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { AuditLog } from '../../lambdas/core/audit.js';
import {
  type AccessLogLine,
  appendRefusals,
  decodeSubscription,
  refusalEntries,
  refusalEntryOf,
} from '../../lambdas/core/audit-refusals.js';
import type { AuditEntry } from '../../protocol/audit.js';
import { operatorRoleName } from '../../protocol/roles.js';

/** The sample `awslogs.data` of the AWS documentation (a log group's subscription to Lambda; the Powertools CloudWatchLogsEvent docs). */
const AWS_DOCS_SAMPLE =
  'H4sIAAAAAAAAAHWPwQqCQBCGX0Xm7EFtK+smZBEUgXoLCdMhFtKV3akI8d0bLYmibvPPN3wz00CJxmQnTO41whwWQRIctmEcB6sQbFC3CjW3XW8kxpOpP+OC22d1Wml1qZkQGtoMsScxaczKN3plG8zlaHIta5KqWsozoTYw3/djzwhpLwivWFGHGpAFe7DL68JlBUk+l7KSN7tCOEJ4M3/qOI49vMHj+zCKdlFqLaU2ZHV2a4Ct/an0/ivdX8oYc1UVX860fQDQiMdxRQEAAA==';

const ARN = `arn:aws:sts::123456789012:assumed-role/${operatorRoleName('FleetOta', 'viewer')}/CognitoIdentityCredentials`;
const SUB = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
const EPOCH = Date.parse('2026-12-04T13:00:00.123Z');

/** A line as lib/vehicle-api.ts accessLogFormat writes it for a call IAM refused. */
function line(
  overrides: Partial<Record<keyof AccessLogLine | 'caller' | 'integrationStatus', string>> = {},
): string {
  return JSON.stringify({
    requestId: 'c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
    requestTime: '04/Dec/2026:13:00:00 +0000',
    requestTimeEpoch: String(EPOCH),
    httpMethod: 'POST',
    resourcePath: '/releases/{releaseId}/publish',
    status: '403',
    integrationStatus: '-',
    errorType: 'ACCESS_DENIED',
    sourceIp: '198.51.100.7',
    caller: 'AROAEXAMPLE:CognitoIdentityCredentials',
    userArn: ARN,
    cognitoAuthenticationProvider: `cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc,cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc:CognitoSignIn:${SUB}`,
    ...overrides,
  });
}

/** The payload CloudWatch Logs delivers: the documented shape, gzip, base64. */
function delivery(messages: string[], messageType = 'DATA_MESSAGE'): string {
  const payload = {
    owner: '123456789012',
    logGroup: 'Ota-ApiAccessLogs',
    logStream: 'abc123',
    subscriptionFilters: ['operator-refusals-to-audit'],
    messageType,
    logEvents: messages.map((message, i) => ({
      id: `3195310660696698337880902507980421114328961542429${822 + i}`,
      timestamp: EPOCH + 5,
      message,
    })),
  };
  return gzipSync(JSON.stringify(payload)).toString('base64');
}

class MemoryAuditLog implements AuditLog {
  readonly entries = new Map<string, AuditEntry>();
  failNext = false;
  async append(entry: AuditEntry): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('throttled');
    }
    if (this.entries.has(entry.event_id))
      throw Object.assign(new Error('exists'), { name: 'ConditionalCheckFailedException' });
    this.entries.set(entry.event_id, entry);
  }
  async list(): Promise<never> {
    throw new Error('not used');
  }
}
const isDuplicate = (err: unknown) => err instanceof Error && err.name === 'ConditionalCheckFailedException';

describe('audit of refusals from the access log', { timeout: 60_000 }, () => {
  it('decodes the AWS documentation sample payload, and finds no refusal in its lines', () => {
    const payload = decodeSubscription(AWS_DOCS_SAMPLE);
    assert.equal(payload.messageType, 'DATA_MESSAGE');
    // The sample's documented data string decodes to the Lambda example's group.
    assert.equal(payload.logGroup, 'testLogGroup');
    assert.ok(payload.logEvents.length > 0);
    assert.deepEqual(refusalEntries(payload), []);
  });

  it('maps a refused operator mutation to the audit entry the functions write, outcome refused', () => {
    const [entry] = refusalEntries(decodeSubscription(delivery([line()])));
    assert.deepEqual(entry, {
      event_id: '2026-12-04T13:00:00.123Z#c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
      at: '2026-12-04T13:00:00.123Z',
      actor: `cognito:${SUB}`,
      role: 'viewer',
      action: 'POST /releases/{releaseId}/publish',
      target: null,
      source_ip: '198.51.100.7',
      outcome: 'refused',
      status: 403,
      request_id: 'c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
    });
  });

  it('names an unsigned caller unknown, and a principal outside the four roles by its ARN', () => {
    const unsigned = refusalEntryOf(
      JSON.parse(
        line({ userArn: '-', cognitoAuthenticationProvider: '-', errorType: 'MISSING_AUTHENTICATION_TOKEN' }),
      ),
      EPOCH,
    );
    assert.equal(unsigned?.actor, 'unknown');
    assert.equal(unsigned?.role, 'unknown');
    const user = 'arn:aws:iam::123456789012:user/ci';
    const iam = refusalEntryOf(
      JSON.parse(line({ userArn: user, cognitoAuthenticationProvider: '-' })),
      EPOCH,
    );
    assert.deepEqual([iam?.actor, iam?.role], [user, 'iam']);
  });

  it('keeps only gateway refusals of operator mutations', () => {
    const skipped = [
      line({ httpMethod: 'GET', resourcePath: '/releases' }), // a read: not audited, as the functions do not
      line({ resourcePath: '/updates/{vin}/status' }), // a vehicle route
      line({ errorType: '-' }), // the function answered 403 itself and audited it
      line({ status: '200', errorType: '-' }),
      line({ status: '429', errorType: 'THROTTLED' }),
      line({ requestId: '-' }),
      'not json',
    ];
    assert.deepEqual(refusalEntries(decodeSubscription(delivery(skipped))), []);
    assert.deepEqual(refusalEntries(decodeSubscription(delivery([line()], 'CONTROL_MESSAGE'))), []);
    assert.equal(
      refusalEntries(decodeSubscription(delivery([line({ status: '401', errorType: 'UNAUTHORIZED' })])))
        .length,
      1,
    );
  });

  it('takes the time from the log event when the line has none', () => {
    const entry = refusalEntryOf(JSON.parse(line({ requestTimeEpoch: '-' })), EPOCH + 5);
    assert.equal(entry?.at, new Date(EPOCH + 5).toISOString());
  });

  it('writes a redelivered batch once, and throws on a real store failure so the batch is retried', async () => {
    const log = new MemoryAuditLog();
    const data = delivery([line(), line({ requestId: 'second' })]);
    const first = await appendRefusals(log, refusalEntries(decodeSubscription(data)), isDuplicate);
    assert.deepEqual(first, { written: 2, duplicates: 0 });
    const again = await appendRefusals(log, refusalEntries(decodeSubscription(data)), isDuplicate);
    assert.deepEqual(again, { written: 0, duplicates: 2 });
    assert.equal(log.entries.size, 2);
    log.failNext = true;
    await assert.rejects(
      appendRefusals(
        log,
        refusalEntries(decodeSubscription(delivery([line({ requestId: 'third' })]))),
        isDuplicate,
      ),
      /throttled/,
    );
  });
});
