/**
 * The offer worker (lambdas/core/offer-pacing.ts): the offers queue delivers pacer steps and offers in batches;
 * each message is handled on its own, and one that throws is reported as a batch item failure, so SQS redelivers
 * only it (and after a few tries moves it to the dead-letter queue, which raises an alarm). Every message is safe
 * to handle twice. The answer also carries the heap in use at the end of the invocation, which the local cloud
 * records to show that memory does not grow with the wave (test/integration/offer-scale.test.ts).
 */
import { IoTDataPlaneClient } from '@aws-sdk/client-iot-data-plane';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { clientConfig } from '../adapters/aws-clients.js';
import { IotOfferPublisher } from '../adapters/iot-offer-publisher.js';
import { instrumented } from '../adapters/observability.js';
import { counted } from '../adapters/operation-counter.js';
import { backendSigner, logger, metrics, offerQueue, repositories } from '../adapters/runtime.js';
import { traceClient } from '../adapters/tracing.js';
import { AssignmentIssuer } from '../core/assignment-issuer.js';
import { assignmentSigning } from '../core/env.js';
import { offerMessageSchema } from '../core/offer-messages.js';
import { OfferWorker } from '../core/offer-pacing.js';
import { type OfferMessage, systemClock } from '../core/ports.js';

const vehicles = repositories.vehicles();
const worker = new OfferWorker({
  campaigns: repositories.campaigns(),
  counters: repositories.counters(),
  releases: repositories.releases(),
  bundles: repositories.bundles(),
  vehicles,
  updates: repositories.updates(),
  clock: systemClock,
  // Once per function instance: its online key, certified by one KMS Sign, signs every offer's assignment this
  // instance sends (protocol/delegation.ts), so KMS leaves the per-vehicle path.
  assignments: new AssignmentIssuer({
    vehicles,
    signer: backendSigner(),
    clock: systemClock,
    signing: assignmentSigning(),
  }),
  publisher: new IotOfferPublisher(
    counted(traceClient(new IoTDataPlaneClient(clientConfig('IOT_DATA_PLANE')))),
  ),
  offers: offerQueue(),
  log: logger,
});

export const handler = instrumented(
  async (event: SQSEvent): Promise<SQSBatchResponse & { heapUsedBytes: number }> => {
    const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
    const parsed: { id: string; message: OfferMessage }[] = [];
    for (const record of event.Records) {
      try {
        parsed.push({ id: record.messageId, message: offerMessageSchema.parse(JSON.parse(record.body)) });
      } catch (err) {
        // A malformed message can never succeed: dropped rather than cycled to the dead-letter queue.
        logger.error('dropped a malformed offer message', {
          messageId: record.messageId,
          error: String(err),
        });
      }
    }
    const results = await worker.handleBatch(parsed.map((p) => p.message));
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') metrics.addMetric(`Offer_${r.value}`, 'Count', 1);
      else {
        logger.error('offer message failed; the queue will redeliver it', {
          message: parsed[i]!.message,
          error: String(r.reason),
        });
        batchItemFailures.push({ itemIdentifier: parsed[i]!.id });
      }
    });
    return { batchItemFailures, heapUsedBytes: process.memoryUsage().heapUsed };
  },
);
