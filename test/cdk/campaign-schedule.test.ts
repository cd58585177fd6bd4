import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { CampaignSchedule } from '../../lib/campaign-schedule.js';
import {
  alertsTopicId,
  functionEnv,
  functionId,
  functionProps,
  newStack,
  otaTemplate,
  referencedIds,
  resources,
  roleStatements,
  scheduleQueueId,
} from './fixtures.js';

const template = otaTemplate();
const all = resources(template);
const schedules = Object.entries(template.findResources('AWS::Scheduler::Schedule'));
type ScheduleProps = {
  ScheduleExpression: string;
  FlexibleTimeWindow: unknown;
  State: string;
  GroupName: unknown;
  Target: {
    Arn: unknown;
    RoleArn: unknown;
    RetryPolicy: unknown;
    DeadLetterConfig: { Arn: unknown };
    Input?: unknown;
  };
};
const scheduleProps = schedules.map(([, s]) => s.Properties as ScheduleProps);
// The tick has no input; the freshness statement's schedule asks for that job.
const schedule = scheduleProps.find((s) => s.Target.Input === undefined)!;
const freshness = scheduleProps.find((s) => s.Target.Input !== undefined)!;
const tickId = functionId(template, 'campaign-tick');
const tickArn = { 'Fn::GetAtt': [tickId, 'Arn'] };
const queueId = scheduleQueueId(template);
const queueArn = { 'Fn::GetAtt': [queueId, 'Arn'] };
const roleId = referencedIds(schedule.Target.RoleArn)[0]!;
const groupId = Object.keys(template.findResources('AWS::Scheduler::ScheduleGroup'))[0]!;

function alarmOn(t: Template, namespace: string, metric: string) {
  const found = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter(
    (a) => a.Properties.Namespace === namespace && a.Properties.MetricName === metric,
  );
  return found;
}

describe('campaign schedule', { timeout: 300_000 }, () => {
  it('is one EventBridge Scheduler schedule, every minute, on time (flexible time window off), enabled', () => {
    assert.equal(schedules.length, 2, 'the tick and the freshness statement');
    assert.equal(schedule.ScheduleExpression, 'rate(1 minute)');
    assert.deepEqual(schedule.FlexibleTimeWindow, { Mode: 'OFF' });
    assert.equal(schedule.State, 'ENABLED');
    // No EventBridge rule runs the tick as well.
    template.resourceCountIs('AWS::Events::Rule', 0);
  });

  it('invokes the campaign tick function and nothing else', () => {
    assert.deepEqual(schedule.Target.Arn, tickArn);
  });

  it('tells the function its period, which the schedule rate matches', () => {
    const seconds = Number(functionEnv(template, 'campaign-tick').CAMPAIGN_TICK_SECONDS);
    const match = /^rate\((\d+) minutes?\)$/.exec(schedule.ScheduleExpression)!;
    assert.equal(seconds, Number(match[1]) * 60);
  });

  it('publishes the freshness statement every 5 minutes through the same function, role and dead-letter queue', () => {
    assert.equal(freshness.ScheduleExpression, 'rate(5 minutes)');
    assert.deepEqual(JSON.parse(freshness.Target.Input as string), { job: 'freshness' });
    assert.deepEqual(freshness.Target.Arn, tickArn);
    assert.deepEqual(freshness.Target.RoleArn, schedule.Target.RoleArn);
    assert.deepEqual(freshness.Target.DeadLetterConfig, { Arn: queueArn });
    assert.deepEqual(freshness.FlexibleTimeWindow, { Mode: 'OFF' });
    assert.equal(freshness.GroupName, schedule.GroupName);
    assert.equal(Number(functionEnv(template, 'campaign-tick').FRESHNESS_PERIOD_SECONDS), 300);
  });

  it('ends a tick before the next is due, without reserving concurrency', () => {
    const props = functionProps(template, 'campaign-tick');
    assert.ok((props.Timeout as number) < 60, `timeout ${props.Timeout} s`);
    assert.equal(props.ReservedConcurrentExecutions, undefined);
  });

  it('retries an undeliverable tick for at most one period, then dead-letters it to its own queue', () => {
    assert.deepEqual(schedule.Target.RetryPolicy, { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 60 });
    assert.deepEqual(schedule.Target.DeadLetterConfig, { Arn: queueArn });
  });

  it('invokes through a role that only EventBridge Scheduler may assume, for its own schedule group and account', () => {
    assert.deepEqual(all[roleId]!.Properties!.AssumeRolePolicyDocument, {
      Version: '2012-10-17',
      Statement: [
        {
          Action: 'sts:AssumeRole',
          Effect: 'Allow',
          Principal: { Service: 'scheduler.amazonaws.com' },
          Condition: {
            StringEquals: {
              'aws:SourceAccount': { Ref: 'AWS::AccountId' },
              'aws:SourceArn': { 'Fn::GetAtt': [groupId, 'Arn'] },
            },
          },
        },
      ],
    });
    // The schedule sits in that group.
    assert.equal(schedule.GroupName, all[groupId]!.Properties!.Name);
    assert.ok(((schedules[0]![1].DependsOn as string[]) ?? []).includes(groupId), 'created after its group');
  });

  it('lets the role invoke exactly the tick function (no versions or aliases) and send to its dead-letter queue', () => {
    assert.equal(all[roleId]!.Properties!.ManagedPolicyArns, undefined);
    assert.deepEqual(roleStatements(template, roleId), [
      { Effect: 'Allow', actions: ['lambda:InvokeFunction'], resources: [tickArn], Condition: undefined },
      { Effect: 'Allow', actions: ['sqs:SendMessage'], resources: [queueArn], Condition: undefined },
    ]);
  });

  it('adds no resource policy to the tick function: only the role can start it', () => {
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission')).filter((p) =>
      referencedIds(p.Properties.FunctionName).includes(tickId),
    );
    assert.deepEqual(permissions, []);
  });

  it('does not retry a failed tick and drops one older than a period (the next tick does the same work)', () => {
    const configs = Object.values(template.findResources('AWS::Lambda::EventInvokeConfig')).filter((c) =>
      referencedIds(c.Properties.FunctionName).includes(tickId),
    );
    assert.deepEqual(
      configs.map((c) => c.Properties),
      [
        {
          FunctionName: { Ref: tickId },
          Qualifier: '$LATEST',
          MaximumRetryAttempts: 0,
          MaximumEventAgeInSeconds: 60,
        },
      ],
    );
  });

  it('encrypts its dead-letter queue with SQS-managed keys, keeps messages 14 days and refuses requests without TLS', () => {
    const queue = all[queueId]!;
    assert.equal(queue.Properties!.SqsManagedSseEnabled, true);
    assert.equal(queue.Properties!.KmsMasterKeyId, undefined);
    assert.equal(queue.Properties!.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(queue.DeletionPolicy, 'Retain');
    const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy')).filter((p) =>
      referencedIds(p.Properties.Queues).includes(queueId),
    );
    assert.equal(policies.length, 1);
    assert.deepEqual(policies[0]!.Properties.PolicyDocument.Statement, [
      {
        Action: 'sqs:*',
        Effect: 'Deny',
        Principal: { AWS: '*' },
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
        Resource: queueArn,
      },
    ]);
  });

  it('alarms when the tick function reports errors in 5 consecutive minutes', () => {
    const alarms = alarmOn(template, 'AWS/Lambda', 'Errors');
    assert.equal(alarms.length, 1);
    const p = alarms[0]!.Properties;
    assert.deepEqual(p.Dimensions, [{ Name: 'FunctionName', Value: { Ref: tickId } }]);
    assert.equal(p.Statistic, 'Sum');
    assert.equal(p.Period, 60);
    assert.equal(p.EvaluationPeriods, 5);
    assert.equal(p.DatapointsToAlarm, 5);
    assert.equal(p.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(p.Threshold, 0);
    assert.equal(p.TreatMissingData, 'notBreaching');
    // The stack's operator alerts topic (lib/operator-alerts.ts), and no other unless one is configured.
    assert.deepEqual(p.AlarmActions, [{ Ref: alertsTopicId(template) }]);
  });

  it('alarms as soon as one undeliverable tick waits in the dead-letter queue', () => {
    const alarms = alarmOn(template, 'AWS/SQS', 'ApproximateNumberOfMessagesVisible').filter((a) =>
      referencedIds(a.Properties.Dimensions).includes(queueId),
    );
    assert.equal(alarms.length, 1);
    const p = alarms[0]!.Properties;
    assert.equal(p.Statistic, 'Maximum');
    assert.equal(p.Period, 60);
    assert.equal(p.EvaluationPeriods, 1);
    assert.equal(p.Threshold, 0);
    assert.equal(p.ComparisonOperator, 'GreaterThanThreshold');
  });

  it('notifies the same SNS topic as the ingest alarm when its alarms fire and clear', () => {
    const topic = 'arn:aws:sns:eu-west-1:111111111111:ota-alarms';
    const t = otaTemplate({ alarmTopicArn: topic });
    const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm'));
    const alerts = { Ref: alertsTopicId(t) };
    const configured = alarms.filter((a) => JSON.stringify(a.Properties.AlarmActions).includes(topic));
    assert.equal(
      configured.length,
      8,
      'ingest dead letters, ingest backlog, tick errors, tick dead letters, job dead letters, job backlog, offer dead letters, offer backlog',
    );
    for (const alarm of configured) {
      assert.deepEqual(alarm.Properties.AlarmActions, [topic, alerts]);
      assert.deepEqual(alarm.Properties.OKActions, [topic, alerts]);
    }
    // The operator alerts' own alarms (halt, failure rate, ingest refusals) notify the stack's topic only.
    for (const alarm of alarms.filter((a) => !configured.includes(a)))
      assert.deepEqual(alarm.Properties.AlarmActions, [alerts]);
  });

  it('deletes its dead-letter queue with a development stack; always deletes its schedule group', () => {
    const dev = otaTemplate({ devMode: true });
    assert.equal(resources(dev)[scheduleQueueId(dev)]!.DeletionPolicy, 'Delete');
    for (const group of Object.values(template.findResources('AWS::Scheduler::ScheduleGroup'))) {
      assert.equal(group.DeletionPolicy, 'Delete');
    }
  });

  describe('construct', () => {
    const make = (timeout: Duration, retryAttempts?: number) => {
      const stack = newStack();
      const fn = new lambda.Function(stack, 'Fn', {
        runtime: lambda.Runtime.NODEJS_24_X,
        handler: 'index.handler',
        code: lambda.Code.fromInline('export const handler = () => {}'),
        timeout,
      });
      new CampaignSchedule(stack, 'Schedule', { tickFunction: fn, retryAttempts });
      return Template.fromStack(stack);
    };

    it('takes the retry attempts from its props', () => {
      make(Duration.seconds(30), 0).hasResourceProperties('AWS::Scheduler::Schedule', {
        Target: { RetryPolicy: { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 } },
      });
    });

    it('refuses a tick function that could outlive its period, and retry counts Scheduler would refuse', () => {
      assert.throws(() => make(Duration.seconds(60)), /shorter than the 60 s period/);
      assert.throws(() => make(Duration.minutes(5)), /timeout/);
      assert.throws(() => make(Duration.seconds(30), 186), /retryAttempts/);
      assert.throws(() => make(Duration.seconds(30), -1), /retryAttempts/);
    });
  });
});
