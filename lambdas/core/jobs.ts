/**
 * Background jobs: work too long for an API request (verifying a 16 GiB image, withdrawing a million offers) runs
 * in the jobs-worker function, fed by a queue (SQS with a dead-letter queue on AWS, local/job-queue.ts locally).
 * Each job is resumable: the worker does bounded slices, saves a checkpoint after each, and when its invocation
 * is nearly out of time sends the same job again and returns; if it is stopped instead (crash, timeout), the
 * queue redelivers the message and the next worker starts from the checkpoint. Jobs are idempotent by design, so
 * a duplicate message only repeats finished slices as no-ops.
 */
import * as z from '../../protocol/zod.js';

export const jobSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('verify_release'),
    release_id: z.string().check(z.minLength(1), z.maxLength(128)),
  }),
  z.strictObject({
    type: z.literal('cancel_campaign'),
    campaign_id: z.string().check(z.minLength(1), z.maxLength(128)),
  }),
  /**
   * Writes one segment of a campaign's targets (campaign-preparation.ts), then, once every segment is over,
   * finishes the preparation; without a segment, only that finishing step (sent by a cancel).
   */
  z.strictObject({
    type: z.literal('prepare_campaign'),
    campaign_id: z.string().check(z.minLength(1), z.maxLength(128)),
    segment: z.optional(z.int().check(z.minimum(0), z.maximum(63))),
  }),
]);
export type Job = z.infer<typeof jobSchema>;

/** A job's answer: done, or continue in a new invocation from the saved checkpoint. */
export type JobResult = 'done' | 'continue';

/**
 * Milliseconds of an invocation kept in reserve: a slice is not started with less left, so a checkpoint and the
 * continuation message are written before the function's timeout stops it. A quarter of the invocation at most.
 */
export const JOB_RESERVE_MS = 20_000;

/** Whether a job should stop starting slices, given the time left now and at the start of the invocation. */
export function yieldAfter(remainingMs: () => number): () => boolean {
  const reserve = Math.min(JOB_RESERVE_MS, remainingMs() / 4);
  return () => remainingMs() < reserve;
}
