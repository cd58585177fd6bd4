import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ENV } from '../lambdas/core/env.js';
import { FUNCTION_SETTINGS } from '../lambdas/core/functions.js';
import type { IBindableFunction } from './bindable.js';
import { createBacklogAlarm, createDeadLetterAlarm, createDeadLetterQueue, notify } from './dead-letter.js';

/** The jobs worker's timeout: the Lambda maximum, so a slice of a 16 GiB verification never needs more. */
export const JOBS_WORKER_TIMEOUT = Duration.seconds(FUNCTION_SETTINGS['jobs-worker'].timeoutSeconds);

export interface BackgroundJobsProps {
  /** The function that runs jobs (lambdas/jobs-worker/handler.ts). */
  readonly worker: IBindableFunction & { readonly function: lambda.IFunction };
  /** The worker's timeout; the queue's visibility timeout is a minute longer. @default JOBS_WORKER_TIMEOUT */
  readonly workerTimeout?: Duration;
  /**
   * Receives of one job before it goes to the dead-letter queue. A job continues by sending a new message, so this
   * counts failed or stopped invocations of one step only.
   * @default 5
   */
  readonly maxReceiveCount?: number;
  /**
   * Most concurrent worker invocations (at least 2). Nothing is reserved, so the stack deploys on accounts with a
   * small concurrency quota; this only caps what jobs can take from the shared pool. 20: one campaign's
   * preparation runs its 16 segments at once (campaign-preparation.ts SCAN_SEGMENTS), with room for other jobs.
   * @default 20
   */
  readonly maxConcurrency?: number;
  /** SNS topic told when an alarm fires and when it clears. @default - no actions */
  readonly alarmTopic?: sns.ITopic;
  /** Delete the queues with the stack (development stacks only). @default false */
  readonly destroyOnRemoval?: boolean;
}

/**
 * Background jobs (lambdas/core/jobs.ts): release verification and campaign cancel, too long for an API request.
 * An SQS queue (SSE-SQS, TLS only) feeds the jobs worker one message per invocation, with partial batch responses.
 * The visibility timeout exceeds the worker's timeout, so a message is only seen again once the invocation that
 * took it has ended; a job stopped mid-way (timeout, crash) is then redelivered and resumes from its checkpoint. After
 * maxReceiveCount failed receives it moves to a dead-letter queue, whose alarm fires on the first message; a second
 * alarm fires when a job has waited over an hour (worker throttled or failing before it reports).
 */
export class BackgroundJobs extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly deadLetterAlarm: cloudwatch.Alarm;
  readonly backlogAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: BackgroundJobsProps) {
    super(scope, id);
    const maxReceiveCount = props.maxReceiveCount ?? 5;
    const maxConcurrency = props.maxConcurrency ?? 20;
    if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
      throw new Error(`BackgroundJobs: maxReceiveCount must be 1-1000, got ${maxReceiveCount}`);
    }
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 2 || maxConcurrency > 1000) {
      throw new Error(`BackgroundJobs: maxConcurrency must be 2-1000, got ${maxConcurrency}`);
    }
    this.deadLetterQueue = createDeadLetterQueue(
      this,
      props.destroyOnRemoval,
      ` of the background jobs queue (jobs that failed ${maxReceiveCount} times)`,
      true,
    );
    const workerTimeout = props.workerTimeout ?? JOBS_WORKER_TIMEOUT;
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: workerTimeout.plus(Duration.minutes(1)),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount },
      removalPolicy: props.destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    });
    props.worker.function.addEventSource(
      new SqsEventSource(this.queue, { batchSize: 1, reportBatchItemFailures: true, maxConcurrency }),
    );
    // A job that is not finished when its invocation ends sends itself again.
    this.grantSend(props.worker);

    this.deadLetterAlarm = createDeadLetterAlarm(
      this,
      this.deadLetterQueue,
      'A background job (release verification or campaign cancel) failed repeatedly and was dead-lettered',
    );
    this.backlogAlarm = createBacklogAlarm(
      this,
      this.queue,
      3600,
      'A background job has waited more than an hour for the jobs worker',
    );
    notify(props.alarmTopic, [this.deadLetterAlarm, this.backlogAlarm]);
  }

  /** Lets a function queue jobs (sqs:SendMessage on this queue only) and sets JOB_QUEUE_URL. */
  grantSend(fn: IBindableFunction): void {
    this.queue.grantSendMessages(fn);
    fn.addEnvironment(ENV.jobQueueUrl, this.queue.queueUrl);
  }
}
