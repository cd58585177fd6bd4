/**
 * Records vehicle progress and status messages: the topic rule sends each to the ingest queue, whose event source
 * mapping delivers them here in batches (lib/fleet-ingest.ts, INGEST_EVENT_SOURCE). Each message is handled on its
 * own, different vehicles' at once: what a vehicle can get wrong is refused without throwing (lambdas/core/ingest.ts),
 * and a message whose handling threw (an infrastructure error) is named in batchItemFailures, so SQS redelivers only it and, after
 * INGEST_EVENT_SOURCE.maxReceiveCount receives, moves it to the dead-letter queue.
 *
 * A rule event delivered directly (the rule's former asynchronous Lambda action: events still in Lambda's queue while
 * a stack is updated) is recorded too, and throws on an infrastructure error as before.
 */
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { instrumented, recordOutcome } from '../adapters/observability.js';
import { logger, metrics, repositories } from '../adapters/runtime.js';
import { settings } from '../core/env.js';
import {
  groupByVehicle,
  type IngestOutcome,
  ingestVehicleMessage,
  queuedEvent,
  rejectionLogFields,
} from '../core/ingest.js';
import { systemClock } from '../core/ports.js';
import { VinRateLimiter } from '../core/rate-limit.js';
import { UpdateStatusService } from '../core/vehicle-updates.js';

const vehicles = repositories.vehicles();
const updates = new UpdateStatusService({
  vehicles,
  updates: repositories.updates(),
  clock: systemClock,
});

// One per function instance (see lambdas/core/rate-limit.ts for what that bounds and what it does not).
const limiter = new VinRateLimiter({
  ratePerSecond: settings.ingestVinRatePerSecond(),
  burst: settings.ingestVinBurst(),
});

async function record(event: unknown): Promise<IngestOutcome> {
  const outcome = await ingestVehicleMessage(event, { vehicles, updates, limiter });
  metrics.addMetric(`Message_${outcome.result}`, 'Count', 1);
  if (outcome.result !== 'rejected') recordOutcome(outcome.status, outcome.result === 'applied');
  if (outcome.result === 'rejected') logger.warn('vehicle message rejected', rejectionLogFields(outcome));
  else logger.debug('vehicle message recorded', { ...outcome });
  return outcome;
}

function isQueueBatch(event: unknown): event is SQSEvent {
  return Array.isArray((event as { Records?: unknown } | null)?.Records);
}

export const handler = instrumented(
  async (event: SQSEvent | unknown): Promise<SQSBatchResponse | IngestOutcome> => {
    if (!isQueueBatch(event)) return record(event);
    const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
    // Each body parsed once: the parsed event both groups the message and is recorded.
    const parsed = event.Records.map((message) => ({ message, event: queuedEvent(message.body) }));
    await Promise.all(
      groupByVehicle(parsed, (p) => p.event).map(async (group) => {
        for (const { message, event } of group) {
          try {
            await record(event);
          } catch (err) {
            logger.error('vehicle message not recorded; SQS will deliver it again', {
              messageId: message.messageId,
              error: err instanceof Error ? err.message : String(err),
            });
            batchItemFailures.push({ itemIdentifier: message.messageId });
          }
        }
      }),
    );
    return { batchItemFailures };
  },
);
