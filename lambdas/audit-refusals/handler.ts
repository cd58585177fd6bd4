/**
 * Records the refusals API Gateway makes itself (IAM refused a SigV4 call to an operator mutation) in the audit
 * table. Invoked by the access log group's subscription filter (lib/vehicle-api.ts); the mapping is in
 * lambdas/core/audit-refusals.ts. A failed append throws so Lambda retries the batch; entries already written are
 * refused by the table's condition and counted as duplicates.
 */
import type { CloudWatchLogsEvent } from 'aws-lambda';
import { isConditionFailure } from '../adapters/dynamo-common.js';
import { instrumented } from '../adapters/observability.js';
import { logger, metrics, repositories } from '../adapters/runtime.js';
import { appendRefusals, decodeSubscription, refusalEntries } from '../core/audit-refusals.js';

const audit = repositories.audit();

export const handler = instrumented(async (event: CloudWatchLogsEvent) => {
  const entries = refusalEntries(decodeSubscription(event.awslogs.data));
  const result = await appendRefusals(audit, entries, isConditionFailure);
  metrics.addMetric('RefusalsAudited', 'Count', result.written);
  logger.info('gateway refusals audited', { ...result });
  return result;
});
