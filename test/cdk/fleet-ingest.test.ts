import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { FleetIngest } from '../../lib/fleet-ingest.js';
import {
  alertsTopicId,
  functionId,
  functionRoleId,
  ingestQueueId,
  newStack,
  onlyId,
  otaTemplate,
  referencedIds,
  resources,
  roleStatements,
} from './fixtures.js';

const template = otaTemplate();
const all = resources(template);
const ruleId = onlyId(template, 'AWS::IoT::TopicRule');
const rule = all[ruleId]!.Properties! as {
  RuleName: string;
  TopicRulePayload: Record<string, unknown> & {
    Actions: unknown[];
    ErrorAction: { Sqs: { QueueUrl: unknown; RoleArn: unknown; UseBase64: boolean } };
  };
};
const queueId = ingestQueueId(template);
const queueArn = { 'Fn::GetAtt': [queueId, 'Arn'] };
const ingestId = functionId(template, 'ingest');

/** The alarm watching the ingest dead-letter queue (the campaign schedule has alarms of its own). */
function deadLetterAlarm(t: ReturnType<typeof otaTemplate>) {
  const queue = ingestQueueId(t);
  const found = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
    referencedIds(a.Properties.Dimensions).includes(queue),
  );
  assert.equal(found.length, 1, 'one alarm on the ingest dead-letter queue');
  return found[0]!;
}

/** The rule's SQL, written out here independently of lib/fleet-ingest.ts: it is the contract with the handler. */
const SQL =
  "SELECT encode(*, 'base64') AS payload, topic(3) AS vin, topic(4) AS channel, timestamp() AS received_at " +
  "FROM 'vehicle/updates/+/+' WHERE topic(4) = 'progress' OR topic(4) = 'status'";

describe('FleetIngest', { timeout: 300_000 }, () => {
  it('has one topic rule with the exact query the ingest handler expects, enabled, SQL version 2016-03-23', () => {
    assert.equal(rule.TopicRulePayload.Sql, SQL);
    assert.equal(rule.TopicRulePayload.AwsIotSqlVersion, '2016-03-23');
    assert.equal(rule.TopicRulePayload.RuleDisabled, false);
    assert.equal(rule.RuleName, 'Ota_vehicle_messages');
  });

  it('invokes the ingest function and nothing else', () => {
    assert.deepEqual(rule.TopicRulePayload.Actions, [
      { Lambda: { FunctionArn: { 'Fn::GetAtt': [ingestId, 'Arn'] } } },
    ]);
  });

  it('lets only IoT invoke the ingest function, only from this rule in this account', () => {
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission')).filter((p) =>
      referencedIds(p.Properties.FunctionName).includes(ingestId),
    );
    assert.deepEqual(
      permissions.map((p) => p.Properties),
      [
        {
          Action: 'lambda:InvokeFunction',
          FunctionName: { 'Fn::GetAtt': [ingestId, 'Arn'] },
          Principal: 'iot.amazonaws.com',
          SourceArn: { 'Fn::GetAtt': [ruleId, 'Arn'] },
          SourceAccount: { Ref: 'AWS::AccountId' },
        },
      ],
    );
  });

  it('sends what IoT cannot deliver to the dead-letter queue, as IoT error documents', () => {
    const sqs = rule.TopicRulePayload.ErrorAction.Sqs;
    assert.deepEqual(sqs.QueueUrl, { Ref: queueId });
    assert.equal(sqs.UseBase64, false);
    assert.equal(all[referencedIds(sqs.RoleArn)[0]!]!.Type, 'AWS::IAM::Role');
  });

  it('runs the error action with a role that only IoT, for this rule and account, may assume', () => {
    const roleId = referencedIds(rule.TopicRulePayload.ErrorAction.Sqs.RoleArn)[0]!;
    assert.deepEqual(all[roleId]!.Properties!.AssumeRolePolicyDocument, {
      Version: '2012-10-17',
      Statement: [
        {
          Action: 'sts:AssumeRole',
          Effect: 'Allow',
          Principal: { Service: 'iot.amazonaws.com' },
          Condition: {
            StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
            ArnLike: {
              'aws:SourceArn': {
                'Fn::Join': [
                  '',
                  [
                    'arn:',
                    { Ref: 'AWS::Partition' },
                    ':iot:',
                    { Ref: 'AWS::Region' },
                    ':',
                    { Ref: 'AWS::AccountId' },
                    `:rule/${rule.RuleName}`,
                  ],
                ],
              },
            },
          },
        },
      ],
    });
  });

  it('lets the error action role do exactly one thing: sqs:SendMessage on the dead-letter queue', () => {
    const roleId = referencedIds(rule.TopicRulePayload.ErrorAction.Sqs.RoleArn)[0]!;
    assert.equal(all[roleId]!.Properties!.ManagedPolicyArns, undefined);
    assert.deepEqual(roleStatements(template, roleId), [
      { Effect: 'Allow', actions: ['sqs:SendMessage'], resources: [queueArn], Condition: undefined },
    ]);
  });

  it('dead-letters failed asynchronous invocations into the same queue after 2 retries or an hour', () => {
    const configs = Object.values(template.findResources('AWS::Lambda::EventInvokeConfig')).filter((c) =>
      referencedIds(c.Properties.FunctionName).includes(ingestId),
    );
    assert.deepEqual(
      configs.map((c) => c.Properties),
      [
        {
          FunctionName: { Ref: ingestId },
          Qualifier: '$LATEST',
          MaximumRetryAttempts: 2,
          MaximumEventAgeInSeconds: 3600,
          DestinationConfig: { OnFailure: { Destination: queueArn } },
        },
      ],
    );
    // Lambda delivers with the function's role, which may send to the queue and do nothing else with it.
    const onQueue = roleStatements(template, functionRoleId(template, 'ingest')).filter((s) =>
      s.resources.some((r) => referencedIds(r).includes(queueId)),
    );
    assert.deepEqual(onQueue, [
      { Effect: 'Allow', actions: ['sqs:SendMessage'], resources: [queueArn], Condition: undefined },
    ]);
  });

  it('encrypts the dead-letter queue with SQS-managed keys and keeps messages 14 days', () => {
    const queue = all[queueId]!;
    assert.equal(queue.Properties!.SqsManagedSseEnabled, true);
    assert.equal(queue.Properties!.KmsMasterKeyId, undefined);
    assert.equal(queue.Properties!.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(queue.DeletionPolicy, 'Retain');
  });

  it('denies every request to the dead-letter queue that does not use TLS', () => {
    const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy')).filter((p) =>
      referencedIds(p.Properties.Queues).includes(queueId),
    );
    assert.equal(policies.length, 1);
    assert.deepEqual(policies[0]!.Properties.Queues, [{ Ref: queueId }]);
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

  it('alarms as soon as one message is visible in the dead-letter queue', () => {
    const p = deadLetterAlarm(template).Properties;
    assert.equal(p.Namespace, 'AWS/SQS');
    assert.equal(p.MetricName, 'ApproximateNumberOfMessagesVisible');
    assert.deepEqual(p.Dimensions, [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [queueId, 'QueueName'] } }]);
    assert.equal(p.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(p.Threshold, 0);
    assert.equal(p.Statistic, 'Maximum');
    assert.equal(p.Period, 60);
    assert.equal(p.EvaluationPeriods, 1);
    assert.equal(p.TreatMissingData, 'notBreaching');
    // The stack's operator alerts topic (lib/operator-alerts.ts), and no other unless one is configured.
    assert.deepEqual(p.AlarmActions, [{ Ref: alertsTopicId(template) }]);
  });

  it('notifies the configured SNS topic when the alarm fires and when it clears', () => {
    const topic = 'arn:aws:sns:eu-west-1:111111111111:ota-alarms';
    const t = otaTemplate({ alarmTopicArn: topic });
    const alarm = deadLetterAlarm(t);
    const alerts = { Ref: alertsTopicId(t) };
    assert.deepEqual(alarm.Properties.AlarmActions, [topic, alerts]);
    assert.deepEqual(alarm.Properties.OKActions, [topic, alerts]);
  });

  it('deletes the dead-letter queue with a development stack', () => {
    const dev = otaTemplate({ devMode: true });
    assert.equal(resources(dev)[ingestQueueId(dev)]!.DeletionPolicy, 'Delete');
  });

  describe('construct', () => {
    const make = (props: Partial<ConstructorParameters<typeof FleetIngest>[2]> = {}) => {
      const stack = newStack();
      const fn = new lambda.Function(stack, 'Fn', {
        runtime: lambda.Runtime.NODEJS_24_X,
        handler: 'index.handler',
        code: lambda.Code.fromInline('export const handler = () => {}'),
      });
      new FleetIngest(stack, 'Ingest', { ingestFunction: fn, ...props });
      return Template.fromStack(stack);
    };

    it('takes the rule name, retries and event age from its props', () => {
      const t = make({ ruleName: 'fleet_messages', retryAttempts: 0, maxEventAge: Duration.minutes(5) });
      t.hasResourceProperties('AWS::IoT::TopicRule', { RuleName: 'fleet_messages' });
      t.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
        MaximumRetryAttempts: 0,
        MaximumEventAgeInSeconds: 300,
      });
      const role = Object.values(t.findResources('AWS::IAM::Role')).find((r) =>
        JSON.stringify(r.Properties.AssumeRolePolicyDocument).includes('iot.amazonaws.com'),
      )!;
      assert.match(JSON.stringify(role.Properties.AssumeRolePolicyDocument), /:rule\/fleet_messages"/);
    });

    it('derives a valid rule name from the stack name', () => {
      make().hasResourceProperties('AWS::IoT::TopicRule', { RuleName: 'Test_vehicle_messages' });
    });

    it('rejects settings IoT or Lambda would refuse at deploy time', () => {
      assert.throws(() => make({ ruleName: 'vehicle-messages' }), /ruleName/);
      assert.throws(() => make({ retryAttempts: 3 }), /retryAttempts/);
      assert.throws(() => make({ maxEventAge: Duration.seconds(30) }), /maximumEventAge/);
      assert.throws(() => make({ maxEventAge: Duration.hours(7) }), /maximumEventAge/);
    });
  });
});
