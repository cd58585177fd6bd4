import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ALERT_METRICS, DEFAULT_ALERT_THRESHOLDS } from '../../lambdas/core/alerts.js';
import { OtaStack } from '../../lib/ota-stack.js';
import { FUNCTIONS } from '../../protocol/routes.js';
import { newApp, otaTemplate } from './fixtures.js';

const subscribed = {
  alerts: {
    emails: ['ops@example.com'],
    webhooks: ['https://hooks.example.com/ota'],
    thresholds: { failureRatePercent: 35, failureRateMinOutcomes: 8, ingestRejectionsPerPeriod: 250 },
  },
};
const template = otaTemplate(subscribed);
const topics = template.findResources('AWS::SNS::Topic');
const topicId = Object.keys(topics)[0]!;
const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')).map(
  (a) => a.Properties as Record<string, unknown>,
);
const notifiesTopic = (a: Record<string, unknown>) =>
  JSON.stringify(a.AlarmActions ?? []).includes(`"Ref":"${topicId}"`) &&
  JSON.stringify(a.OKActions ?? []).includes(`"Ref":"${topicId}"`);
const byMetric = (name: string) => alarms.filter((a) => a.MetricName === name);

describe('operator alerts (SNS topic, alarms, dashboard)', { timeout: 300_000 }, () => {
  it('creates one alerts topic, encrypted with a rotated customer key and TLS only, subscribed from props', () => {
    assert.equal(Object.keys(topics).length, 1);
    const topic = topics[topicId]!.Properties as Record<string, unknown>;
    const keyId = (topic.KmsMasterKeyId as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    const key = template.findResources('AWS::KMS::Key')[keyId]!.Properties as Record<string, unknown>;
    assert.equal(key.EnableKeyRotation, true);
    // CloudWatch may encrypt the messages its alarm actions publish, and only for this account.
    assert.match(JSON.stringify(key.KeyPolicy), /"Service":"cloudwatch\.amazonaws\.com"/);
    assert.match(JSON.stringify(key.KeyPolicy), /aws:SourceAccount/);
    const policy = Object.values(template.findResources('AWS::SNS::TopicPolicy'))[0]!;
    assert.match(JSON.stringify(policy.Properties), /"aws:SecureTransport":"false"/);
    const subs = Object.values(template.findResources('AWS::SNS::Subscription')).map((s) => s.Properties);
    assert.deepEqual(subs.map((s) => [s.Protocol, s.Endpoint]).sort(), [
      ['email', 'ops@example.com'],
      ['https', 'https://hooks.example.com/ota'],
    ]);
  });

  it('alarms on a halted campaign, on the campaign-tick metric the tick emits', () => {
    const [halted] = byMetric(ALERT_METRICS.campaignsHalted);
    assert.ok(halted, 'a CampaignsHalted alarm');
    assert.equal(halted.Namespace, 'FleetOta');
    assert.deepEqual(halted.Dimensions, [{ Name: 'service', Value: 'campaign-tick' }]);
    assert.equal(halted.Threshold, 0);
    assert.equal(halted.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(halted.TreatMissingData, 'notBreaching');
    assert.ok(notifiesTopic(halted));
  });

  it('alarms on the failure share of the outcomes from both report paths, at the configured level', () => {
    const rate = alarms.find((a) => JSON.stringify(a.Metrics ?? '').includes('100 * bad / total'));
    assert.ok(rate, 'a failure-rate alarm');
    assert.equal(rate.Threshold, 35);
    assert.equal(rate.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    const metrics = JSON.stringify(rate.Metrics);
    assert.match(metrics, /IF\(total >= 8, 100 \* bad \/ total, 0\)/);
    for (const service of ['vehicle-api', 'ingest'])
      for (const name of [ALERT_METRICS.updatesFailed, ALERT_METRICS.updatesCompleted])
        assert.ok(
          metrics.includes(`"MetricName":"${name}"`) && metrics.includes(`"Value":"${service}"`),
          `${name} from ${service}`,
        );
    assert.ok(notifiesTopic(rate));
  });

  it('alarms on ingest refusals above the configured number per period', () => {
    const [rejected] = byMetric(ALERT_METRICS.ingestRejected);
    assert.ok(rejected);
    assert.deepEqual(rejected.Dimensions, [{ Name: 'service', Value: 'ingest' }]);
    assert.equal(rejected.Threshold, 250);
    assert.equal(rejected.Period, DEFAULT_ALERT_THRESHOLDS.periodSeconds);
    assert.equal(rejected.ComparisonOperator, 'GreaterThanThreshold');
    assert.ok(notifiesTopic(rejected));
  });

  it('every dead-letter queue alarm (ingest, campaign tick, jobs, offers) notifies the topic', () => {
    const queues = Object.keys(template.findResources('AWS::SQS::Queue'));
    const dlqAlarms = byMetric('ApproximateNumberOfMessagesVisible').filter((a) =>
      JSON.stringify(a.Dimensions).match(/DeadLetterQueue/),
    );
    assert.equal(dlqAlarms.length, 4, JSON.stringify(dlqAlarms.map((a) => a.Dimensions)));
    for (const a of dlqAlarms) {
      assert.equal(a.Threshold, 0);
      assert.ok(notifiesTopic(a), JSON.stringify(a.Dimensions));
    }
    assert.ok(queues.length >= 4);
    // Every alarm of the stack reaches an operator.
    for (const a of alarms) assert.ok(notifiesTopic(a), `${a.MetricName} notifies the alerts topic`);
  });

  it('a dashboard shows API errors and latency, Lambda errors and throttles, IoT rule failures, queues, campaigns', () => {
    const dashboards = Object.values(template.findResources('AWS::CloudWatch::Dashboard'));
    assert.equal(dashboards.length, 1);
    const body =
      JSON.stringify(template.toJSON()).length > 0 ? JSON.stringify(dashboards[0]!.Properties) : '';
    for (const needed of [
      '5XXError',
      '4XXError',
      'Latency',
      'Errors',
      'Throttles',
      'AWS/IoT',
      'Failure',
      'ApproximateNumberOfMessagesVisible',
      'OffersSent',
      ALERT_METRICS.campaignsHalted,
      ALERT_METRICS.updatesFailed,
    ])
      assert.ok(body.includes(needed), `the dashboard shows ${needed}`);
    // Each working queue and each dead-letter queue has a depth series of its own (the two share names).
    for (const label of [
      'jobs',
      'offers',
      'ingest',
      'jobs dead letters',
      'offers dead letters',
      'ingest dead letters',
    ])
      assert.ok(body.includes(`\\"label\\":\\"${label}\\"`), `the dashboard shows the depth of ${label}`);
    // One Errors and one Throttles series per function (API functions, ingest, tick, jobs worker, offer worker,
    // audit-refusals).
    assert.equal(
      (body.match(/Throttles/g) ?? []).length,
      FUNCTIONS.length + 5,
      'throttles of every function',
    );
  });

  it('retains the topic key, except with a development stack', () => {
    const keyOf = (t: typeof template) =>
      Object.values(t.findResources('AWS::KMS::Key')).find((k) => k.Properties.KeyUsage !== 'SIGN_VERIFY')!;
    assert.equal(keyOf(template).DeletionPolicy, 'Retain');
    assert.equal(keyOf(otaTemplate({ devMode: true })).DeletionPolicy, 'Delete');
  });

  it('refuses a bad threshold, a webhook that is not https and a malformed address at synthesis', () => {
    const build = (alerts: object) => () => new OtaStack(newApp(), 'Bad', { alerts });
    assert.throws(build({ thresholds: { failureRatePercent: 0 } }), /failureRatePercent/);
    assert.throws(build({ thresholds: { periodSeconds: 90 } }), /multiple of 60/);
    assert.throws(build({ webhooks: ['http://hooks.example.com'] }), /https/);
    assert.throws(build({ emails: ['not an address'] }), /e-mail/);
  });
});
