/**
 * What every function's entry point needs once, so no handler repeats it: the Lambda context on every log line, a
 * `## handler` trace subsegment with the cold start and service annotated (the facade segment Lambda creates cannot
 * be annotated; tracing.ts), and the invocation's metrics flushed at the end. Metrics are flushed only when the
 * invocation recorded some, so a route that records none (a read, a refused request) logs no "No application
 * metrics to publish" warning. With OTA_OPERATION_COUNTING=emf the invocation's counted AWS operations are
 * published too.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { outcomeMetric } from '../core/alerts.js';
import type { AuditService } from '../core/audit.js';
import { countingMode, operationTally } from './operation-counter.js';
import { logger, metrics } from './runtime.js';
import { traceInvocation } from './tracing.js';

export function instrumented<E, R>(
  fn: (event: E, context?: Context) => Promise<R>,
): (event: E, context?: Context) => Promise<R> {
  const emf = countingMode() === 'emf';
  return async (event, context) => {
    if (context) logger.addContext(context);
    try {
      return await traceInvocation(() => fn(event, context));
    } finally {
      if (emf) {
        // The invocation's counted AWS operations, one metric per counter (OTA_OPERATION_COUNTING=emf).
        for (const [name, n] of Object.entries(operationTally().drain() ?? {}))
          metrics.addMetric(name, 'Count', n);
      }
      if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
    }
  };
}

/**
 * Counts an update outcome the invocation recorded (UpdatesCompleted or UpdatesFailed, lambdas/core/alerts.ts): the
 * failure-rate alarm divides one by their sum. A report that changed nothing (a repeat) counts nothing.
 */
export function recordOutcome(status: string, applied: boolean): void {
  const name = applied ? outcomeMetric(status) : undefined;
  if (name) metrics.addMetric(name, 'Count', 1);
}

/**
 * An operator function's routes with every mutation recorded in the audit log once answered (operator-api and
 * registry-api both use it, so the two cannot record differently). A failed audit write does not turn an answered
 * mutation into an error (the caller would retry what already happened): it is logged and counted
 * (AuditWriteFailed) for an alarm instead.
 */
export function audited(
  route: (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>,
  audit: AuditService,
): (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult> {
  return async (event) => {
    const result = await route(event);
    try {
      await audit.record(event, result.statusCode, result.body);
    } catch (err) {
      logger.error('audit write failed', { error: err instanceof Error ? err.message : String(err) });
      metrics.addMetric('AuditWriteFailed', 'Count', 1);
    }
    return result;
  };
}
