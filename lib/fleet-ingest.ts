import { Duration, Stack, Token } from 'aws-cdk-lib';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { topicRuleSql } from '../protocol/topics.js';
import { createDeadLetterAlarm, createDeadLetterQueue, notify } from './dead-letter.js';

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
   * The function that records vehicle messages (lambdas/ingest/handler.ts). The rule invokes it asynchronously;
   * this construct adds the invoke permission for the rule and the function's asynchronous invocation settings.
   */
  readonly ingestFunction: lambda.IFunction;
  /**
   * Name of the topic rule: letters, digits and underscores, unique in the account and region. The rule has a fixed
   * name so the error action role's trust policy can name the rule's ARN (aws:SourceArn) without a circular
   * reference.
   * @default `<stack name>_vehicle_messages`, other characters of the stack name replaced by underscores
   */
  readonly ruleName?: string;
  /**
   * Times Lambda retries an invocation whose function failed (0-2) before dead-lettering the event. The ingest
   * state machine tolerates duplicates and reordering, so retries are safe; they absorb brief DynamoDB errors.
   * @default 2
   */
  readonly retryAttempts?: number;
  /**
   * How long an event may wait in Lambda's asynchronous queue (throttled, or between retries) before it is
   * dead-lettered instead, 1 minute to 6 hours. Shorter than Lambda's 6-hour default so that an outage reaches the
   * alarm within the hour, while the event itself is kept 14 days in the queue for redrive.
   * @default Duration.hours(1)
   */
  readonly maxEventAge?: Duration;
  /**
   * SNS topic told when the dead-letter alarm fires and when it clears.
   * @default - the alarm has no actions (visible in the CloudWatch console only)
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * Delete the dead-letter queue, and the messages in it, when it leaves the stack (development stacks only).
   * @default false - retained
   */
  readonly destroyOnRemoval?: boolean;
}

/**
 * Routes vehicle MQTT messages into the backend: one IoT topic rule on vehicle/updates/+/+ (progress and status
 * only) invoking the ingest function, and a dead-letter queue with an alarm for every message that was not
 * recorded.
 *
 * Two paths lead to the one dead-letter queue, because IoT invokes Lambda asynchronously and only learns whether
 * the invoke request was accepted, never whether the function succeeded:
 * - the rule's error action, when IoT cannot hand the message to Lambda (permission, throttled invoke API, SQL
 *   error). IoT assumes a role that may only sqs:SendMessage on this queue, trusted for this rule's ARN and account
 *   only. The message is IoT's error document (ruleName, topic, clientId, base64OriginalPayload, failures).
 * - the function's asynchronous on-failure destination, when the function threw on every attempt (infrastructure
 *   errors; lambdas/core/ingest.ts answers bad vehicle input without throwing) or the event aged out of Lambda's
 *   queue. The message is Lambda's invocation record (requestContext.condition, requestPayload = the rule event,
 *   responsePayload = the error). Lambda sends it with the function's role, granted only sqs:SendMessage here.
 * Both shapes are self-describing, so one queue and one alarm cover "vehicle messages not recorded".
 *
 * The queue is encrypted with SSE-SQS (SQS-managed keys), not KMS: producers then need no kms:GenerateDataKey, so
 * the IoT role and the function role stay at sqs:SendMessage alone, there is no key policy to get wrong and no KMS
 * request quota shared with signing. The dead letters are vehicle status reports, which the tables hold too under
 * an AWS managed key; a customer managed key would add revocation control only for this copy. The queue denies any
 * request without TLS and keeps messages 14 days, the SQS maximum.
 */
export class FleetIngest extends Construct {
  readonly rule: iot.CfnTopicRule;
  /** Name of the topic rule. */
  readonly ruleName: string;
  readonly deadLetterQueue: sqs.Queue;
  /** The role IoT assumes to run the rule's error action. */
  readonly errorActionRole: iam.Role;
  /** Fires as soon as one message is waiting in the dead-letter queue. */
  readonly deadLetterAlarm: cloudwatch.Alarm;

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
    const ruleArn = stack.formatArn({ service: 'iot', resource: 'rule', resourceName: this.ruleName });

    this.deadLetterQueue = createDeadLetterQueue(
      this,
      props.destroyOnRemoval,
      ': the IoT rule error action and the ingest function on-failure destination send to it',
    );
    const sendDeadLetter = new iam.PolicyStatement({
      actions: ['sqs:SendMessage'],
      resources: [this.deadLetterQueue.queueArn],
    });

    // An inline policy, so the permission exists as soon as the role does and the rule never starts without it.
    this.errorActionRole = new iam.Role(this, 'ErrorActionRole', {
      description: `Lets the IoT rule ${this.ruleName} dead-letter messages it could not deliver`,
      assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: { 'aws:SourceArn': ruleArn },
        },
      }),
      inlinePolicies: { SendDeadLetters: new iam.PolicyDocument({ statements: [sendDeadLetter] }) },
    });

    this.rule = new iot.CfnTopicRule(this, 'Rule', {
      ruleName: this.ruleName,
      topicRulePayload: {
        description: 'Vehicle progress and status messages to the ingest function',
        sql: VEHICLE_MESSAGES_SQL,
        awsIotSqlVersion: VEHICLE_MESSAGES_SQL_VERSION,
        ruleDisabled: false,
        actions: [{ lambda: { functionArn: fn.functionArn } }],
        errorAction: {
          sqs: {
            queueUrl: this.deadLetterQueue.queueUrl,
            roleArn: this.errorActionRole.roleArn,
            useBase64: false,
          },
        },
      },
    });

    new lambda.CfnPermission(this, 'InvokePermission', {
      action: 'lambda:InvokeFunction',
      functionName: fn.functionArn,
      principal: 'iot.amazonaws.com',
      sourceArn: this.rule.attrArn,
      sourceAccount: stack.account,
    });

    new lambda.EventInvokeConfig(this, 'AsyncInvoke', {
      function: fn,
      // lambda.EventInvokeConfig rejects values outside 0-2 retries and 1 minute-6 hours.
      retryAttempts: props.retryAttempts ?? 2,
      maxEventAge: props.maxEventAge ?? Duration.hours(1),
      onFailure: sendOnlyDestination(this.deadLetterQueue, sendDeadLetter),
    });

    this.deadLetterAlarm = createDeadLetterAlarm(
      this,
      this.deadLetterQueue,
      `Vehicle MQTT messages were not recorded: see the dead-letter queue ${this.deadLetterQueue.queueName} ` +
        `(IoT rule ${this.ruleName} error action and ingest function failures).`,
    );
    notify(props.alarmTopic, [this.deadLetterAlarm]);
  }
}

/**
 * An on-failure destination that grants the function's role sqs:SendMessage alone, where lambda-destinations'
 * SqsDestination would also grant sqs:GetQueueAttributes and sqs:GetQueueUrl, which Lambda does not need.
 */
function sendOnlyDestination(queue: sqs.IQueue, statement: iam.PolicyStatement): lambda.IDestination {
  return {
    bind: (_scope, fn) => {
      fn.grantPrincipal.addToPrincipalPolicy(statement.copy());
      return { destination: queue.queueArn };
    },
  };
}
