import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { acknowledge } from './nag.js';

/**
 * The dead-letter queue of a construct ('DeadLetterQueue' in scope): encrypted, TLS only, 14 days. `whose` completes
 * "This queue is itself the dead-letter queue..." in the cdk-nag acknowledgement (who sends to it).
 */
export function createDeadLetterQueue(
  scope: Construct,
  destroyOnRemoval: boolean | undefined,
  whose: string,
  /** It is another queue's RedrivePolicy target, which cdk-nag recognises: nothing to acknowledge. */
  redriveTarget = false,
): sqs.Queue {
  const queue = new sqs.Queue(scope, 'DeadLetterQueue', {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: Duration.days(14),
    removalPolicy: destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
  });
  if (redriveTarget) return queue;
  acknowledge(
    queue,
    'AwsSolutions-SQS3',
    `This queue is itself the dead-letter queue${whose}. cdk-nag only recognises a dead-letter queue through an ` +
      'SQS RedrivePolicy or a Lambda DeadLetterConfig, and a dead-letter queue of a dead-letter queue would only ' +
      'move the problem.',
  );
  return queue;
}

/** 'DeadLetterAlarm' in scope: any message visible in the queue within a minute. */
export function createDeadLetterAlarm(
  scope: Construct,
  queue: sqs.IQueue,
  description: string,
): cloudwatch.Alarm {
  return new cloudwatch.Alarm(scope, 'DeadLetterAlarm', {
    alarmDescription: description,
    metric: queue.metricApproximateNumberOfMessagesVisible({
      period: Duration.minutes(1),
      statistic: cloudwatch.Stats.MAXIMUM,
    }),
    threshold: 0,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    // SQS stops reporting for a queue idle for hours; an empty, idle dead-letter queue is the healthy state.
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
}

/** 'BacklogAlarm' in scope: the queue's oldest message older than `maxAgeSeconds` (5-minute maximum). */
export function createBacklogAlarm(
  scope: Construct,
  queue: sqs.IQueue,
  maxAgeSeconds: number,
  description: string,
): cloudwatch.Alarm {
  return new cloudwatch.Alarm(scope, 'BacklogAlarm', {
    alarmDescription: description,
    metric: queue.metricApproximateAgeOfOldestMessage({
      period: Duration.minutes(5),
      statistic: cloudwatch.Stats.MAXIMUM,
    }),
    threshold: maxAgeSeconds,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
}

/** Sends the alarms' ALARM and OK transitions to the topic, when there is one. */
export function notify(topic: sns.ITopic | undefined, alarms: readonly cloudwatch.Alarm[]): void {
  if (!topic) return;
  const action = new cwActions.SnsAction(topic);
  for (const alarm of alarms) {
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
  }
}
