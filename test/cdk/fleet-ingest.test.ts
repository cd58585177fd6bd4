import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { FleetIngest } from '../../lib/fleet-ingest.js';
import {
  alertsTopicId,
  functionId,
  functionRoleId,
  ingestMessagesQueueId,
  ingestQueueId,
  newStack,
  onlyId,
  otaTemplate,
  referencedIds,
  resources,
  roleStatements,
  SQS_CONSUME_ACTIONS,
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
/** The dead-letter queue, the ingest queue, and the role the rule runs with. */
const queueId = ingestQueueId(template);
const queueArn = { 'Fn::GetAtt': [queueId, 'Arn'] };
const messagesId = ingestMessagesQueueId(template);
const messagesArn = { 'Fn::GetAtt': [messagesId, 'Arn'] };
const ruleRoleId = referencedIds(
  (rule.TopicRulePayload.Actions[0] as { Sqs: { RoleArn: unknown } }).Sqs.RoleArn,
)[0]!;
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

  it('sends every message to the ingest queue and nothing else, as the rule event itself', () => {
    assert.deepEqual(rule.TopicRulePayload.Actions, [
      {
        Sqs: {
          QueueUrl: { Ref: messagesId },
          RoleArn: { 'Fn::GetAtt': [ruleRoleId, 'Arn'] },
          UseBase64: false,
        },
      },
    ]);
  });

  it('feeds the ingest function from that queue in batches of 10 within 1 s, with partial batch responses', () => {
    const mappings = Object.values(template.findResources('AWS::Lambda::EventSourceMapping')).filter((m) =>
      referencedIds(m.Properties.FunctionName).includes(ingestId),
    );
    assert.deepEqual(
      mappings.map((m) => m.Properties),
      [
        {
          FunctionName: { Ref: ingestId },
          EventSourceArn: messagesArn,
          BatchSize: 10,
          MaximumBatchingWindowInSeconds: 1,
          FunctionResponseTypes: ['ReportBatchItemFailures'],
        },
      ],
    );
  });

  it('leaves nothing else a way to invoke the ingest function (no IoT permission, no asynchronous invocations)', () => {
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission')).filter((p) =>
      referencedIds(p.Properties.FunctionName).includes(ingestId),
    );
    assert.deepEqual(permissions, []);
    const configs = Object.values(template.findResources('AWS::Lambda::EventInvokeConfig')).filter((c) =>
      referencedIds(c.Properties.FunctionName).includes(ingestId),
    );
    assert.deepEqual(configs, []);
  });

  it('receives a message at most 5 times before the dead-letter queue, each time hidden 6x the function timeout', () => {
    const q = all[messagesId]!;
    assert.deepEqual(q.Properties!.RedrivePolicy, { deadLetterTargetArn: queueArn, maxReceiveCount: 5 });
    assert.equal(q.Properties!.VisibilityTimeout, 60);
    assert.equal(q.Properties!.SqsManagedSseEnabled, true);
    assert.equal(q.Properties!.KmsMasterKeyId, undefined);
    assert.equal(q.DeletionPolicy, 'Retain');
  });

  it('lets the ingest function receive and delete on the ingest queue, and nothing on the dead-letter queue', () => {
    const statements = roleStatements(template, functionRoleId(template, 'ingest'));
    const onQueues = statements
      .filter((s) =>
        s.resources.some((r) => referencedIds(r).some((id) => id === messagesId || id === queueId)),
      )
      .map((s) => ({ ...s, actions: [...s.actions].sort() }));
    assert.deepEqual(onQueues, [
      {
        Effect: 'Allow',
        actions: SQS_CONSUME_ACTIONS,
        resources: [messagesArn],
        Condition: undefined,
      },
    ]);
  });

  it('alarms when a vehicle message has waited in the ingest queue more than 5 minutes', () => {
    const found = Object.values(template.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
      referencedIds(a.Properties.Dimensions).includes(messagesId),
    );
    assert.equal(found.length, 1);
    const p = found[0]!.Properties;
    assert.equal(p.MetricName, 'ApproximateAgeOfOldestMessage');
    assert.equal(p.Threshold, 300);
    assert.deepEqual(p.AlarmActions, [{ Ref: alertsTopicId(template) }]);
  });

  it('sends what IoT cannot deliver to the dead-letter queue, as IoT error documents', () => {
    const sqs = rule.TopicRulePayload.ErrorAction.Sqs;
    assert.deepEqual(sqs.QueueUrl, { Ref: queueId });
    assert.equal(sqs.UseBase64, false);
    assert.equal(all[referencedIds(sqs.RoleArn)[0]!]!.Type, 'AWS::IAM::Role');
  });

  it('runs the rule with a role that only IoT, for this rule and account, may assume', () => {
    assert.deepEqual(all[ruleRoleId]!.Properties!.AssumeRolePolicyDocument, {
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

  it('lets the rule role do exactly one thing: sqs:SendMessage on the ingest and dead-letter queues', () => {
    assert.deepEqual(referencedIds(rule.TopicRulePayload.ErrorAction.Sqs.RoleArn), [ruleRoleId]);
    assert.equal(all[ruleRoleId]!.Properties!.ManagedPolicyArns, undefined);
    assert.deepEqual(roleStatements(template, ruleRoleId), [
      {
        Effect: 'Allow',
        actions: ['sqs:SendMessage'],
        resources: [messagesArn, queueArn],
        Condition: undefined,
      },
    ]);
  });

  it('encrypts the dead-letter queue with SQS-managed keys and keeps messages 14 days', () => {
    const queue = all[queueId]!;
    assert.equal(queue.Properties!.SqsManagedSseEnabled, true);
    assert.equal(queue.Properties!.KmsMasterKeyId, undefined);
    assert.equal(queue.Properties!.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(queue.DeletionPolicy, 'Retain');
  });

  it('denies every request to either queue that does not use TLS', () => {
    for (const id of [queueId, messagesId]) {
      const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy')).filter((p) =>
        referencedIds(p.Properties.Queues).includes(id),
      );
      assert.equal(policies.length, 1);
      assert.deepEqual(policies[0]!.Properties.Queues, [{ Ref: id }]);
      assert.deepEqual(policies[0]!.Properties.PolicyDocument.Statement, [
        {
          Action: 'sqs:*',
          Effect: 'Deny',
          Principal: { AWS: '*' },
          Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          Resource: { 'Fn::GetAtt': [id, 'Arn'] },
        },
      ]);
    }
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

  it('deletes both queues with a development stack', () => {
    const dev = otaTemplate({ devMode: true });
    assert.equal(resources(dev)[ingestQueueId(dev)]!.DeletionPolicy, 'Delete');
    assert.equal(resources(dev)[ingestMessagesQueueId(dev)]!.DeletionPolicy, 'Delete');
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

    it('takes the rule name, receives and concurrency cap from its props', () => {
      const t = make({ ruleName: 'fleet_messages', maxReceiveCount: 3, maxConcurrency: 20 });
      t.hasResourceProperties('AWS::IoT::TopicRule', { RuleName: 'fleet_messages' });
      t.hasResourceProperties('AWS::SQS::Queue', { RedrivePolicy: { maxReceiveCount: 3 } });
      t.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        ScalingConfig: { MaximumConcurrency: 20 },
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
      assert.throws(() => make({ maxReceiveCount: 0 }), /maxReceiveCount/);
      assert.throws(() => make({ maxConcurrency: 1 }), /maxConcurrency/);
      assert.throws(() => make({ maxConcurrency: 1001 }), /maxConcurrency/);
    });
  });
});
