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

export interface OfferPacingProps {
  /** The function that consumes the offers queue (lambdas/offer-worker/handler.ts). */
  readonly worker: IBindableFunction & { readonly function: lambda.IFunction };
  /** Receives of one message before it goes to the dead-letter queue. @default 5 */
  readonly maxReceiveCount?: number;
  /**
   * Most concurrent worker invocations (2-1000). Caps the offers' fan-out (and so the KMS, IoT and DynamoDB load it
   * drives) without reserving concurrency. @default 50
   */
  readonly maxConcurrency?: number;
  /** SNS topic told when an alarm fires and when it clears. @default - no actions */
  readonly alarmTopic?: sns.ITopic;
  /** Delete the queues with the stack (development stacks only). @default false */
  readonly destroyOnRemoval?: boolean;
}

/**
 * The campaign offers queue (lambdas/core/offer-pacing.ts): SQS carries each campaign's pacer chain (one message
 * per step, delayed to the next step) and the offers each step fans out (SendMessageBatch, DelaySeconds spreading
 * them at the campaign's notify_per_second), to the offer worker in batches of 10 with partial batch responses. The
 * fan-out is SQS's and Lambda's, not a loop of ours: a wave of any size costs each invocation one page at most.
 * Every message is idempotent (sequence and revision conditions), so redeliveries are harmless; after
 * maxReceiveCount failures a message moves to the dead-letter queue, whose alarm fires on the first one. A second
 * alarm fires when the oldest message waits over 15 minutes (the worker throttled or failing): offers are late.
 */
export class OfferPacing extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly deadLetterAlarm: cloudwatch.Alarm;
  readonly backlogAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: OfferPacingProps) {
    super(scope, id);
    const maxReceiveCount = props.maxReceiveCount ?? 5;
    const maxConcurrency = props.maxConcurrency ?? 50;
    if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
      throw new Error(`OfferPacing: maxReceiveCount must be 1-1000, got ${maxReceiveCount}`);
    }
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 2 || maxConcurrency > 1000) {
      throw new Error(`OfferPacing: maxConcurrency must be 2-1000, got ${maxConcurrency}`);
    }
    this.deadLetterQueue = createDeadLetterQueue(
      this,
      props.destroyOnRemoval,
      ` of the campaign offers queue (pacer steps and offers that failed ${maxReceiveCount} times)`,
      true,
    );
    const workerTimeout = Duration.seconds(FUNCTION_SETTINGS['offer-worker'].timeoutSeconds);
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // Lambda's guidance for SQS event sources: six times the function timeout.
      visibilityTimeout: Duration.seconds(workerTimeout.toSeconds() * 6),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount },
      removalPolicy: props.destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    });
    props.worker.function.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: 10,
        maxBatchingWindow: Duration.seconds(1),
        reportBatchItemFailures: true,
        maxConcurrency,
      }),
    );
    // A pacer step sends its offers and its next step.
    this.grantSend(props.worker);

    this.deadLetterAlarm = createDeadLetterAlarm(
      this,
      this.deadLetterQueue,
      'A campaign pacer step or offer failed repeatedly and was dead-lettered (its vehicle was not offered)',
    );
    this.backlogAlarm = createBacklogAlarm(
      this,
      this.queue,
      900,
      'A campaign offer has waited more than 15 minutes for the offer worker',
    );
    notify(props.alarmTopic, [this.deadLetterAlarm, this.backlogAlarm]);
  }

  /** Lets a function send pacer steps and offers (sqs:SendMessage on this queue only) and sets OFFER_QUEUE_URL. */
  grantSend(fn: IBindableFunction): void {
    this.queue.grantSendMessages(fn);
    fn.addEnvironment(ENV.offerQueueUrl, this.queue.queueUrl);
  }
}
