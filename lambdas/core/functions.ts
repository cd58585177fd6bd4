/**
 * Every Lambda function of the backend with the timeout and memory it runs with. The one source for both the CDK
 * stack (lib/ota-stack.ts) and the local cloud (local/lambda-runtime.ts), so a handler that outlives its timeout
 * or its memory locally fails the same way it would on AWS instead of running on.
 */
import type { FunctionName } from '../../protocol/routes.js';

export type LambdaName =
  | FunctionName
  | 'ingest'
  | 'campaign-tick'
  | 'jobs-worker'
  | 'offer-worker'
  | 'audit-refusals';

export interface FunctionSettings {
  /** Lambda's timeout. API functions stay well under API Gateway's 29 s integration timeout. */
  readonly timeoutSeconds: number;
  /** Lambda's memory size; CPU scales with it, and signature and hash checks are CPU bound. */
  readonly memoryMb: number;
}

export const FUNCTION_SETTINGS: Readonly<Record<LambdaName, FunctionSettings>> = {
  'auth-api': { timeoutSeconds: 10, memoryMb: 512 },
  'vehicle-api': { timeoutSeconds: 10, memoryMb: 512 },
  'operator-api': { timeoutSeconds: 10, memoryMb: 512 },
  // Vehicle registration and revocation: the only function with IoT identity rights, kept apart from the
  // release and campaign routes so neither the rights nor the IoT client and CSR code ship with them.
  'registry-api': { timeoutSeconds: 10, memoryMb: 512 },
  ingest: { timeoutSeconds: 10, memoryMb: 512 },
  // Shorter than the one-minute schedule period: a tick has ended (or been stopped) before the next one is due.
  'campaign-tick': { timeoutSeconds: 55, memoryMb: 512 },
  // Background jobs (release verification, campaign cancel) save checkpoints and continue past one invocation; a
  // full vCPU (1,769 MB) because hashing is CPU bound, while memory use stays at one chunk and one hash state. Run
  // locally by local/job-queue.ts, which enforces the same timeout.
  'jobs-worker': { timeoutSeconds: 900, memoryMb: 1769 },
  // Offers queue (lambdas/core/offer-pacing.ts): one pacer page (at most 1,000 targets) or a batch of offers per
  // invocation, whatever the wave size; 60 s covers a page's SendMessageBatch fan-out several times over.
  'offer-worker': { timeoutSeconds: 60, memoryMb: 512 },
  // Audits the refusals API Gateway makes itself, from the access log's subscription (a batch of log lines, a
  // few PutItems): small and short. AWS only; the local gateway audits its refusals directly.
  'audit-refusals': { timeoutSeconds: 30, memoryMb: 256 },
};

export const LAMBDA_NAMES = Object.keys(FUNCTION_SETTINGS) as LambdaName[];

/**
 * How vehicle messages reach the ingest function: the topic rule sends each to an SQS queue, whose event source
 * mapping hands the function up to `batchSize` messages per invocation, waiting up to `maxBatchingWindowSeconds` for
 * a batch to fill (lib/fleet-ingest.ts; local/rules-router.ts does the same). One invocation per message made ingest
 * 5.33 of a campaign vehicle's 9.49 invocations; in batches it is 0.59 of 4.74 (BENCHMARKS.md, session 8). A message the function fails is received again after the visibility timeout (six times the
 * function's, Lambda's guidance) and dead-lettered after `maxReceiveCount` receives.
 */
export const INGEST_EVENT_SOURCE = {
  batchSize: 10,
  maxBatchingWindowSeconds: 1,
  maxReceiveCount: 5,
  visibilityTimeoutSeconds: 6 * FUNCTION_SETTINGS.ingest.timeoutSeconds,
} as const;
