import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ENV } from '../lambdas/core/env.js';
import { FRESHNESS_JOB } from '../lambdas/core/freshness.js';
import { FUNCTION_SETTINGS } from '../lambdas/core/functions.js';
import { createDeadLetterAlarm, createDeadLetterQueue, notify } from './dead-letter.js';

/**
 * The campaign engine's period on AWS. EventBridge Scheduler's finest rate is one minute; the function learns the
 * period from CAMPAIGN_TICK_SECONDS, which sizes each tick's offer budget (notify_per_second x period).
 */
export const CAMPAIGN_TICK_PERIOD = Duration.minutes(1);

/**
 * Timeout of the tick function: shorter than the period, so a tick has ended (or been stopped) before the next
 * one is due and a campaign never stalls longer than one period behind a stuck tick.
 */
export const CAMPAIGN_TICK_TIMEOUT = Duration.seconds(FUNCTION_SETTINGS['campaign-tick'].timeoutSeconds);

/**
 * Period of the freshness statement (lambdas/core/freshness.ts): one signature for the fleet per period, each
 * statement valid for 4 periods. Vehicles check every 5 minutes and report silence after an hour by default.
 */
export const FRESHNESS_PERIOD = Duration.minutes(5);

export interface CampaignScheduleProps {
  /**
   * The campaign engine's tick (lambdas/campaign-tick/handler.ts). This construct sets its CAMPAIGN_TICK_SECONDS
   * and asynchronous invocation settings; the function's own permissions are granted by the stack. It needs no
   * reserved concurrency: ticks rarely overlap (timeout < period, events older than a period dropped) and an
   * overlap is safe (conditional writes).
   */
  readonly tickFunction: lambda.Function;
  /**
   * Times EventBridge Scheduler retries an invocation Lambda refused (0-185) before dead-lettering it.
   * @default 2
   */
  readonly retryAttempts?: number;
  /**
   * SNS topic told when an alarm (tick errors, undeliverable ticks) fires and when it clears.
   * @default - the alarms have no actions (visible in the CloudWatch console only)
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * Delete the dead-letter queue, and the messages in it, when it leaves the stack (development stacks only).
   * @default false - retained
   */
  readonly destroyOnRemoval?: boolean;
}

/**
 * Runs the campaign engine's tick every minute: an EventBridge Scheduler schedule (rate(1 minute), no flexible
 * time window) in a schedule group of its own, invoking the tick function with a role that may do exactly two
 * things, lambda:InvokeFunction on that one function (not its versions or aliases) and sqs:SendMessage on the
 * schedule's dead-letter queue; only EventBridge Scheduler may assume it, for schedules of this group in this
 * account.
 *
 * Why EventBridge Scheduler (the aws-scheduler L2 of this aws-cdk-lib) rather than a scheduled EventBridge rule:
 * AWS presents scheduled rules as the legacy way and Scheduler as the service for schedules; Scheduler invokes
 * through an execution role, so the only way to start a tick is a role this template scopes to this one function
 * (a rule's Lambda target instead adds a resource policy to the function); and the retry policy and dead-letter
 * queue belong to the schedule. Both run at a one-minute granularity. Why not Step Functions or an SQS fan-out:
 * one tick sends at most notify_per_second x 60 offers per campaign with 16 in flight, which one invocation
 * handles; see docs/architecture.md ("Campaign fan-out on AWS") for the limits and what changes at a million
 * vehicles.
 *
 * Failures, and what happens to them:
 * - Scheduler cannot invoke (throttled Invoke API, permission, function missing): retried with back-off for up to
 *   a minute (a later tick supersedes an older one), then dead-lettered to the queue. An alarm fires on the first
 *   visible message, since a dead-lettered tick means the schedule is broken, not that the engine had a bad minute.
 * - The tick itself fails or times out: Scheduler invokes Lambda asynchronously, so this is Lambda's concern. The
 *   function is not retried (retryAttempts 0) and an event older than a minute is dropped (maxEventAge 60 s):
 *   every tick does the whole job again from the tables, so the next tick is the retry, and a tick delayed behind
 *   a slow one waits at most one period rather than piling up. An alarm fires when
 *   the function reported errors (including timeouts) in 5 consecutive minutes: campaigns have then been stalled
 *   for 5 ticks, while one failed tick on its own heals itself.
 *
 * The queue is encrypted with SSE-SQS (Scheduler's role then needs no KMS permission) and denies requests without
 * TLS; its messages (Scheduler's dead-letter events: the schedule, the target and the error) hold no vehicle data.
 */
export class CampaignSchedule extends Construct {
  readonly schedule: scheduler.Schedule;
  /**
   * Publishes the freshness statement every FRESHNESS_PERIOD: the same function, role, retry policy and dead-letter
   * queue as the tick, with the input {"job":"freshness"}. Its failures show in the same alarms.
   */
  readonly freshnessSchedule: scheduler.Schedule;
  /** The group holding the schedule; the role trusts schedules of this group only. */
  readonly scheduleGroup: scheduler.ScheduleGroup;
  /** The role EventBridge Scheduler assumes to invoke the tick function. */
  readonly role: iam.Role;
  /** Invocations EventBridge Scheduler could not deliver. */
  readonly deadLetterQueue: sqs.Queue;
  /** Fires when the tick function reported errors in 5 consecutive minutes. */
  readonly errorAlarm: cloudwatch.Alarm;
  /** Fires as soon as one undeliverable tick is waiting in the dead-letter queue. */
  readonly deadLetterAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: CampaignScheduleProps) {
    super(scope, id);
    const fn = props.tickFunction;
    const stack = Stack.of(this);
    const retryAttempts = props.retryAttempts ?? 2;
    if (!Number.isInteger(retryAttempts) || retryAttempts < 0 || retryAttempts > 185) {
      throw new Error(
        `CampaignSchedule: retryAttempts must be a whole number from 0 to 185, got ${retryAttempts}`,
      );
    }
    const timeout = fn.timeout?.toSeconds() ?? 3;
    if (timeout >= CAMPAIGN_TICK_PERIOD.toSeconds()) {
      throw new Error(
        `CampaignSchedule: the tick function's timeout (${timeout} s) must be shorter than the ` +
          `${CAMPAIGN_TICK_PERIOD.toSeconds()} s period`,
      );
    }
    fn.addEnvironment(ENV.campaignTickSeconds, String(CAMPAIGN_TICK_PERIOD.toSeconds()));
    fn.addEnvironment(ENV.freshnessPeriodSeconds, String(FRESHNESS_PERIOD.toSeconds()));

    this.deadLetterQueue = createDeadLetterQueue(
      this,
      props.destroyOnRemoval,
      ' of the campaign tick schedule (EventBridge Scheduler DeadLetterConfig)',
    );

    // Always deleted with the stack: the group holds nothing but this schedule, and a retained group would keep its
    // (deterministic) name taken, so redeploying a stack of the same name would fail.
    this.scheduleGroup = new scheduler.ScheduleGroup(this, 'Group', { removalPolicy: RemovalPolicy.DESTROY });
    // An inline policy, so the permissions exist as soon as the role does and the schedule never fires without.
    this.role = new iam.Role(this, 'Role', {
      description: 'Lets EventBridge Scheduler run the campaign engine tick',
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: {
          StringEquals: {
            'aws:SourceAccount': stack.account,
            'aws:SourceArn': this.scheduleGroup.scheduleGroupArn,
          },
        },
      }),
      inlinePolicies: {
        InvokeTick: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [fn.functionArn] }),
            new iam.PolicyStatement({
              actions: ['sqs:SendMessage'],
              resources: [this.deadLetterQueue.queueArn],
            }),
          ],
        }),
      },
    });

    const role = this.role;
    const deadLetterQueue = this.deadLetterQueue;
    // A target of our own rather than aws-scheduler-targets' LambdaInvoke, which also grants the role
    // lambda:InvokeFunction on <function>:* (every version and alias).
    const target = (input?: scheduler.ScheduleTargetInput): scheduler.IScheduleTarget => ({
      bind: () => ({
        arn: fn.functionArn,
        role,
        retryPolicy: {
          maximumRetryAttempts: retryAttempts,
          maximumEventAgeInSeconds: CAMPAIGN_TICK_PERIOD.toSeconds(),
        },
        deadLetterConfig: { arn: deadLetterQueue.queueArn },
        ...(input ? { input } : {}),
      }),
    });
    this.schedule = new scheduler.Schedule(this, 'Schedule', {
      description:
        'Campaign engine tick: paced offers, timeouts, halts and wave changes of running campaigns',
      schedule: scheduler.ScheduleExpression.rate(CAMPAIGN_TICK_PERIOD),
      timeWindow: scheduler.TimeWindow.off(),
      scheduleGroup: this.scheduleGroup,
      enabled: true,
      target: target(),
    });
    this.freshnessSchedule = new scheduler.Schedule(this, 'FreshnessSchedule', {
      description:
        "Freshness statement: signed time and every vehicle's latest offer, one signature per period",
      schedule: scheduler.ScheduleExpression.rate(FRESHNESS_PERIOD),
      timeWindow: scheduler.TimeWindow.off(),
      scheduleGroup: this.scheduleGroup,
      enabled: true,
      target: target(scheduler.ScheduleTargetInput.fromObject(FRESHNESS_JOB)),
    });
    // The schedules name their group by name, which CloudFormation cannot see as a reference.
    this.schedule.node.addDependency(this.scheduleGroup);
    this.freshnessSchedule.node.addDependency(this.scheduleGroup);

    new lambda.EventInvokeConfig(this, 'AsyncInvoke', {
      function: fn,
      retryAttempts: 0,
      maxEventAge: CAMPAIGN_TICK_PERIOD,
    });

    this.errorAlarm = new cloudwatch.Alarm(this, 'ErrorAlarm', {
      alarmDescription:
        'The campaign engine tick failed (error or timeout) in 5 consecutive minutes: running campaigns are not ' +
        'advancing. See the tick function logs.',
      metric: fn.metricErrors({ period: Duration.minutes(1), statistic: cloudwatch.Stats.SUM }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 5,
      datapointsToAlarm: 5,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.deadLetterAlarm = createDeadLetterAlarm(
      this,
      this.deadLetterQueue,
      `EventBridge Scheduler could not invoke the campaign engine tick: see the dead-letter queue ` +
        `${this.deadLetterQueue.queueName}.`,
    );
    notify(props.alarmTopic, [this.errorAlarm, this.deadLetterAlarm]);
  }
}
