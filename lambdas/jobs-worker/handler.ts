/**
 * The background jobs worker (lambdas/core/jobs.ts): SQS delivers one job per invocation (batch size 1); each runs
 * until done or until the invocation is nearly out of time, then sends itself again to continue from its
 * checkpoint. A job that throws is reported as a batch item failure: SQS redelivers it after the visibility
 * timeout, and after a few tries moves it to the dead-letter queue, which raises an alarm.
 */
import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { instrumented } from '../adapters/observability.js';
import { jobQueue, logger, metrics, objectStore, repositories } from '../adapters/runtime.js';
import { CampaignCanceller } from '../core/campaign-cancel.js';
import { CampaignPreparer } from '../core/campaign-preparation.js';
import { type Job, jobSchema, yieldAfter } from '../core/jobs.js';
import { systemClock } from '../core/ports.js';
import { ReleaseVerifier } from '../core/release-verification.js';

const queue = jobQueue();
const releases = repositories.releases();
const verifier = new ReleaseVerifier({ releases, objects: objectStore(), clock: systemClock, log: logger });
const canceller = new CampaignCanceller({
  campaigns: repositories.campaigns(),
  updates: repositories.updates(),
  vehicles: repositories.vehicles(),
  clock: systemClock,
});

const preparer = new CampaignPreparer({
  campaigns: repositories.campaigns(),
  releases,
  bundles: repositories.bundles(),
  vehicles: repositories.vehicles(),
  updates: repositories.updates(),
  exclusions: repositories.exclusions(),
  preparation: repositories.preparation(),
  objects: objectStore(),
  jobs: queue,
  clock: systemClock,
});

async function run(job: Job, shouldYield: () => boolean) {
  switch (job.type) {
    case 'verify_release':
      return verifier.run(job.release_id, shouldYield);
    case 'cancel_campaign':
      return canceller.run(job.campaign_id, shouldYield);
    case 'prepare_campaign':
      return preparer.run(job.campaign_id, job.segment, shouldYield);
  }
}

export const handler = instrumented(async (event: SQSEvent, context?: Context): Promise<SQSBatchResponse> => {
  const shouldYield = yieldAfter(() => context?.getRemainingTimeInMillis() ?? Number.POSITIVE_INFINITY);
  const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
  for (const record of event.Records) {
    let job: Job;
    try {
      job = jobSchema.parse(JSON.parse(record.body));
    } catch (err) {
      // A malformed message can never succeed: log and drop it rather than cycle it to the dead-letter queue.
      logger.error('dropped a malformed job message', { messageId: record.messageId, error: String(err) });
      continue;
    }
    try {
      const result = await run(job, shouldYield);
      if (result === 'continue') {
        await queue.send(job);
        metrics.addMetric('JobContinued', 'Count', 1);
      } else metrics.addMetric('JobDone', 'Count', 1);
    } catch (err) {
      logger.error('job failed; the queue will redeliver it', { job, error: String(err) });
      batchItemFailures.push({ itemIdentifier: record.messageId });
    }
  }
  return { batchItemFailures };
});
