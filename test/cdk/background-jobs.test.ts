import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { BackgroundJobs } from '../../lib/background-jobs.js';
import { envTarget, functionId, functionProps, newStack, otaTemplate, resources } from './fixtures.js';

const template = otaTemplate();
const all = resources(template);
const workerId = functionId(template, 'jobs-worker');
const queueId = envTarget(template, 'jobs-worker', 'JOB_QUEUE_URL');
const queue = all[queueId]!;
const dlqId = (queue.Properties!.RedrivePolicy as { deadLetterTargetArn: { 'Fn::GetAtt': [string] } })
  .deadLetterTargetArn['Fn::GetAtt'][0];
const dlq = all[dlqId]!;
const mapping = Object.values(template.findResources('AWS::Lambda::EventSourceMapping')).find(
  (m) => JSON.stringify(m.Properties.EventSourceArn) === JSON.stringify({ 'Fn::GetAtt': [queueId, 'Arn'] }),
)!;

function alarmsOn(id: string) {
  return Object.values(template.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
    JSON.stringify(a.Properties.Dimensions ?? []).includes(id),
  );
}

describe('background jobs', { timeout: 120_000 }, () => {
  it('is an encrypted, TLS-only queue that redrives to its dead-letter queue after 5 receives', () => {
    assert.equal(queue.Type, 'AWS::SQS::Queue');
    assert.equal(queue.Properties!.SqsManagedSseEnabled, true);
    assert.deepEqual((queue.Properties!.RedrivePolicy as { maxReceiveCount: number }).maxReceiveCount, 5);
    assert.equal(dlq.Type, 'AWS::SQS::Queue');
    assert.equal(dlq.Properties!.SqsManagedSseEnabled, true);
    assert.equal(dlq.Properties!.MessageRetentionPeriod, 14 * 86400);
    for (const id of [queueId, dlqId]) {
      const policy = Object.values(template.findResources('AWS::SQS::QueuePolicy')).find((p) =>
        JSON.stringify(p.Properties.Queues).includes(id),
      );
      assert.ok(
        JSON.stringify(policy?.Properties.PolicyDocument).includes('aws:SecureTransport'),
        `${id} TLS only`,
      );
    }
    assert.equal(queue.DeletionPolicy, 'Retain');
  });

  it('hides a message for longer than the worker may run, so a running job is never delivered twice', () => {
    const timeout = functionProps(template, 'jobs-worker').Timeout as number;
    assert.equal(timeout, 900);
    assert.ok((queue.Properties!.VisibilityTimeout as number) > timeout);
  });

  it('feeds the worker one job per invocation with partial batch responses and capped, unreserved concurrency', () => {
    assert.deepEqual(mapping.Properties.FunctionName, { Ref: workerId });
    assert.equal(mapping.Properties.BatchSize, 1);
    assert.deepEqual(mapping.Properties.FunctionResponseTypes, ['ReportBatchItemFailures']);
    assert.deepEqual(mapping.Properties.ScalingConfig, { MaximumConcurrency: 20 });
    assert.equal(functionProps(template, 'jobs-worker').ReservedConcurrentExecutions, undefined);
  });

  it('alarms on the first dead-lettered job and on a job waiting over an hour', () => {
    const dead = alarmsOn(dlqId);
    assert.equal(dead.length, 1);
    assert.equal(dead[0]!.Properties.MetricName, 'ApproximateNumberOfMessagesVisible');
    assert.equal(dead[0]!.Properties.Threshold, 0);
    const backlog = alarmsOn(queueId);
    assert.equal(backlog.length, 1);
    assert.equal(backlog[0]!.Properties.MetricName, 'ApproximateAgeOfOldestMessage');
    assert.equal(backlog[0]!.Properties.Threshold, 3600);
    assert.equal(backlog[0]!.Properties.TreatMissingData, 'notBreaching');
  });

  it('outputs the dead-letter queue URL', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    assert.deepEqual(outputs.JobsDeadLetterQueueUrl?.Value, { Ref: dlqId });
  });

  it('deletes its queues with a development stack', () => {
    const dev = resources(otaTemplate({ devMode: true }));
    const queues = Object.values(dev).filter((r) => r.Type === 'AWS::SQS::Queue');
    assert.ok(queues.every((q) => q.DeletionPolicy === 'Delete'));
  });

  it('refuses settings SQS or Lambda would refuse', () => {
    const make = (props: { maxReceiveCount?: number; maxConcurrency?: number }) => {
      const stack = newStack();
      const fn = new lambda.Function(stack, 'Fn', {
        runtime: lambda.Runtime.NODEJS_24_X,
        handler: 'index.handler',
        code: lambda.Code.fromInline('exports.handler = async () => ({})'),
      });
      new BackgroundJobs(stack, 'Jobs', { worker: Object.assign(fn, { function: fn }), ...props });
      return Template.fromStack(stack);
    };
    assert.throws(() => make({ maxReceiveCount: 0 }), /maxReceiveCount/);
    assert.throws(() => make({ maxConcurrency: 1 }), /maxConcurrency/);
    make({ maxReceiveCount: 3, maxConcurrency: 2 }).hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      ScalingConfig: { MaximumConcurrency: 2 },
    });
  });
});
