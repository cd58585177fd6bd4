import { Duration, RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { INGEST_EVENT_SOURCE } from '../lambdas/core/functions.js';
import { topicRuleSql } from '../protocol/topics.js';
import { createBacklogAlarm, createDeadLetterAlarm, createDeadLetterQueue, notify } from './dead-letter.js';

/**
 * The topic rule's query, from the topic table. It selects exactly the event lambdas/core/ingest.ts parses
 * ({payload: base64 of the raw message, vin, channel, received_at: epoch ms}); local/rules-router.ts reproduces it
 * for the local cloud. The topic filter matches any vehicle/updates/{VIN}/{channel}; the WHERE keeps the channels
 * vehicles publish on, so the backend's own issue_details offers never loop back into ingestion.
 */
export const VEHICLE_MESSAGES_SQL = topicRuleSql();

/** The rules engine SQL version the query is written for. */
export const VEHICLE_MESSAGES_SQL_VERSION = '2016-03-23';

const RULE_NAME = /^[A-Za-z0-9_]{1,128}$/;

/**
 * The topic rule's name unless given: fixed by the stack's name, so the vehicle policy can name its Basic Ingest
 * topics (`$aws/rules/<rule>/...`) and vehicles can be configured with it before the rule exists.
 */
export function defaultIngestRuleName(stack: Stack): string {
  if (Token.isUnresolved(stack.stackName)) {
    throw new Error('FleetIngest: the stack name is not known at synthesis; pass ruleName');
  }
  return `${stack.stackName.replace(/[^A-Za-z0-9_]/g, '_')}_vehicle_messages`;
}

export interface FleetIngestProps {
  /**
   * The function that records vehicle messages (lambdas/ingest/handler.ts). The rule sends each message to the
   * ingest queue; this construct adds the queue's event source mapping to the function (batches of
   * INGEST_EVENT_SOURCE.batchSize with partial batch responses), which grants it receive and delete on that queue.
   */
  readonly ingestFunction: lambda.IFunction;
  /**
   * Name of the topic rule: letters, digits and underscores, unique in the account and region. The rule has a fixed
   * name so the action role's trust policy can name the rule's ARN (aws:SourceArn) without a circular reference.
   * @default `<stack name>_vehicle_messages`, other characters of the stack name replaced by underscores
   */
  readonly ruleName?: string;
  /**
   * Receives of one message before it moves to the dead-letter queue (1-1000). The ingest state machine tolerates
   * duplicates and reordering, so redeliveries are safe; they absorb brief DynamoDB errors.
   * @default INGEST_EVENT_SOURCE.maxReceiveCount (5)
   */
  readonly maxReceiveCount?: number;
  /**
   * Most concurrent ingest invocations the queue's event source starts (2-1000). It caps how much of the account's
   * Lambda concurrency a burst of vehicle reports can take from the API: messages beyond it wait in the queue (the
   * backlog alarm watches how long), where reserved concurrency would throttle receives into the dead-letter queue.
   * @default - no cap beyond the account's concurrency
   */
  readonly maxConcurrency?: number;
  /**
   * SNS topic told when an alarm fires and when it clears.
   * @default - the alarms have no actions (visible in the CloudWatch console only)
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * Delete the queues, and the messages in them, when they leave the stack (development stacks only).
   * @default false - retained
   */
  readonly destroyOnRemoval?: boolean;
}

/**
 * Routes vehicle MQTT messages into the backend: one IoT topic rule on vehicle/updates/+/+ (progress and status
 * only) whose SQS action sends each message to the ingest queue, the queue's event source mapping to the ingest
 * function, and a dead-letter queue with an alarm for every message that was not recorded.
 *
 * Why a queue between the rule and the function: the rule's Lambda action invoked the function once per message,
 * 5.33 of a campaign vehicle's 9.49 invocations (0.59 of 4.74 in batches, BENCHMARKS.md); a burst waits in the queue,
 * watched by a backlog alarm, instead of in Lambda's asynchronous queue; and a failed message is retried and
 * dead-lettered on its own. The event source hands the function up to 10 messages per invocation
 * (waiting up to 1 s for a batch to fill, which a busy fleet fills in milliseconds), each handled on its own with a
 * partial batch response. The SQS action takes a standard queue only, so messages of one vehicle may arrive out of
 * order, which the ingest state machine tolerates as it did with asynchronous invocations.
 *
 * Two paths lead to the one dead-letter queue:
 * - the rule's error action, when IoT cannot send the message to the ingest queue (permission, throttling). IoT
 *   assumes the rule's role, trusted for this rule's ARN and account only, that may only sqs:SendMessage on these
 *   two queues. The message is IoT's error document (ruleName, topic, clientId, base64OriginalPayload, failures).
 * - the ingest queue's redrive policy, after a message was received maxReceiveCount times without being recorded
 *   (infrastructure errors: lambdas/core/ingest.ts answers bad vehicle input without throwing). The message is the
 *   rule event itself, ready to be redriven to the ingest queue.
 *
 * Both queues are encrypted with SSE-SQS (SQS-managed keys), not KMS: IoT then needs no kms:GenerateDataKey, so its
 * role stays at sqs:SendMessage alone, there is no key policy to get wrong and no KMS request quota shared with
 * signing. The messages are vehicle status reports, which the tables hold too under an AWS managed key. The queues
 * deny any request without TLS; the dead-letter queue keeps messages 14 days, the SQS maximum.
 */
export class FleetIngest extends Construct {
  readonly rule: iot.CfnTopicRule;
  /** Name of the topic rule. */
  readonly ruleName: string;
  /** What the rule sends each vehicle message to, and the ingest function reads in batches. */
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  /** The role IoT assumes to run the rule's action and its error action. */
  readonly ruleRole: iam.Role;
  /** Fires as soon as one message is waiting in the dead-letter queue. */
  readonly deadLetterAlarm: cloudwatch.Alarm;
  /** Fires when a vehicle message has waited in the ingest queue more than 5 minutes (ingest throttled or failing). */
  readonly backlogAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: FleetIngestProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const fn = props.ingestFunction;
    this.ruleName = props.ruleName ?? defaultIngestRuleName(stack);
    if (!RULE_NAME.test(this.ruleName)) {
      throw new Error(
        `FleetIngest: ruleName must be 1-128 letters, digits or underscores, got ${this.ruleName}`,
      );
    }
    const maxReceiveCount = props.maxReceiveCount ?? INGEST_EVENT_SOURCE.maxReceiveCount;
    if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
      throw new Error(`FleetIngest: maxReceiveCount must be 1-1000, got ${maxReceiveCount}`);
    }
    const max = props.maxConcurrency;
    if (max !== undefined && (!Number.isInteger(max) || max < 2 || max > 1000)) {
      throw new Error(`FleetIngest: maxConcurrency must be 2-1000, got ${max}`);
    }
    const ruleArn = stack.formatArn({ service: 'iot', resource: 'rule', resourceName: this.ruleName });

    this.deadLetterQueue = createDeadLetterQueue(
      this,
      props.destroyOnRemoval,
      ': the ingest queue redrives to it and the IoT rule error action sends to it',
      true,
    );
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(INGEST_EVENT_SOURCE.visibilityTimeoutSeconds),
      // A vehicle report days old still moves its update on (monotonic phases); SQS's default 4 days.
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount },
      removalPolicy: props.destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    });

    // An inline policy, so the permission exists as soon as the role does and the rule never starts without it.
    this.ruleRole = new iam.Role(this, 'RuleRole', {
      description: `Lets the IoT rule ${this.ruleName} queue vehicle messages, and dead-letter what it cannot`,
      assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: { 'aws:SourceArn': ruleArn },
        },
      }),
      inlinePolicies: {
        SendVehicleMessages: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              actions: ['sqs:SendMessage'],
              resources: [this.queue.queueArn, this.deadLetterQueue.queueArn],
            }),
          ],
        }),
      },
    });

    this.rule = new iot.CfnTopicRule(this, 'Rule', {
      ruleName: this.ruleName,
      topicRulePayload: {
        description: 'Vehicle progress and status messages to the ingest queue',
        sql: VEHICLE_MESSAGES_SQL,
        awsIotSqlVersion: VEHICLE_MESSAGES_SQL_VERSION,
        ruleDisabled: false,
        actions: [
          { sqs: { queueUrl: this.queue.queueUrl, roleArn: this.ruleRole.roleArn, useBase64: false } },
        ],
        errorAction: {
          sqs: {
            queueUrl: this.deadLetterQueue.queueUrl,
            roleArn: this.ruleRole.roleArn,
            useBase64: false,
          },
        },
      },
    });

    fn.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: INGEST_EVENT_SOURCE.batchSize,
        maxBatchingWindow: Duration.seconds(INGEST_EVENT_SOURCE.maxBatchingWindowSeconds),
        reportBatchItemFailures: true,
        ...(max !== undefined ? { maxConcurrency: max } : {}),
      }),
    );

    this.deadLetterAlarm = createDeadLetterAlarm(
      this,
      this.deadLetterQueue,
      `Vehicle MQTT messages were not recorded: see the dead-letter queue ${this.deadLetterQueue.queueName} ` +
        `(IoT rule ${this.ruleName} error action, and messages the ingest function failed ${maxReceiveCount} times).`,
    );
    this.backlogAlarm = createBacklogAlarm(
      this,
      this.queue,
      300,
      'A vehicle message has waited more than 5 minutes for the ingest function (throttled or failing)',
    );
    notify(props.alarmTopic, [this.deadLetterAlarm, this.backlogAlarm]);
  }
}
