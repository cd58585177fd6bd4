/** The campaign offers queue (lib/offer-pacing.ts): queue, dead-letter queue, alarms, event source and the worker. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FUNCTION_SETTINGS } from '../../lambdas/core/functions.js';
import { envTarget, functionId, functionProps, otaTemplate, resources } from './fixtures.js';

const template = otaTemplate();
const all = resources(template);
const workerId = functionId(template, 'offer-worker');
const queueId = envTarget(template, 'offer-worker', 'OFFER_QUEUE_URL');
const queue = all[queueId]!;
const dlqId = (queue.Properties!.RedrivePolicy as { deadLetterTargetArn: { 'Fn::GetAtt': [string] } })
  .deadLetterTargetArn['Fn::GetAtt'][0];
const dlq = all[dlqId]!;
const mappings = Object.values(template.findResources('AWS::Lambda::EventSourceMapping')).filter(
  (m) => JSON.stringify(m.Properties.EventSourceArn) === JSON.stringify({ 'Fn::GetAtt': [queueId, 'Arn'] }),
);

function alarmsOn(id: string) {
  return Object.values(template.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
    JSON.stringify(a.Properties.Dimensions ?? []).includes(id),
  );
}

describe('campaign offers queue', { timeout: 120_000 }, () => {
  it('is an encrypted, TLS-only queue that redrives to its own dead-letter queue after 5 receives', () => {
    assert.equal(queue.Type, 'AWS::SQS::Queue');
    assert.equal(queue.Properties!.SqsManagedSseEnabled, true);
    assert.equal((queue.Properties!.RedrivePolicy as { maxReceiveCount: number }).maxReceiveCount, 5);
    assert.equal(dlq.Type, 'AWS::SQS::Queue');
    assert.equal(dlq.Properties!.SqsManagedSseEnabled, true);
    assert.notEqual(queueId, envTarget(template, 'jobs-worker', 'JOB_QUEUE_URL'), 'not the jobs queue');
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

  it('runs the offer worker with its FUNCTION_SETTINGS and hides a message six times its timeout', () => {
    const props = functionProps(template, 'offer-worker');
    assert.equal(props.Timeout, FUNCTION_SETTINGS['offer-worker'].timeoutSeconds);
    assert.equal(props.MemorySize, FUNCTION_SETTINGS['offer-worker'].memoryMb);
    assert.equal(queue.Properties!.VisibilityTimeout, 6 * FUNCTION_SETTINGS['offer-worker'].timeoutSeconds);
    assert.equal(props.ReservedConcurrentExecutions, undefined);
  });

  it('feeds the worker batches of 10 with partial batch responses and capped concurrency', () => {
    assert.equal(mappings.length, 1);
    const mapping = mappings[0]!;
    assert.deepEqual(mapping.Properties.FunctionName, { Ref: workerId });
    assert.equal(mapping.Properties.BatchSize, 10);
    assert.deepEqual(mapping.Properties.FunctionResponseTypes, ['ReportBatchItemFailures']);
    assert.deepEqual(mapping.Properties.ScalingConfig, { MaximumConcurrency: 50 });
  });

  it('alarms on the first dead-lettered message and on an offer waiting over 15 minutes', () => {
    const dead = alarmsOn(dlqId);
    assert.equal(dead.length, 1);
    assert.equal(dead[0]!.Properties.MetricName, 'ApproximateNumberOfMessagesVisible');
    assert.equal(dead[0]!.Properties.Threshold, 0);
    const backlog = alarmsOn(queueId);
    assert.equal(backlog.length, 1);
    assert.equal(backlog[0]!.Properties.MetricName, 'ApproximateAgeOfOldestMessage');
    assert.equal(backlog[0]!.Properties.Threshold, 900);
  });

  it('outputs the dead-letter queue URL', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    assert.deepEqual(outputs.OffersDeadLetterQueueUrl?.Value, { Ref: dlqId });
  });
});
