/**
 * Operator alerts on AWS: one SNS topic the stack owns (subscriptions by e-mail or HTTPS webhook from CDK context),
 * the alarms that notify it and a CloudWatch dashboard of the backend. The alarms watch what the functions emit
 * (lambdas/core/alerts.ts ALERT_METRICS, CloudWatch embedded metric format with the Powertools `service`
 * dimension) and the dead-letter queues' depth; the local cloud evaluates the same conditions (local/alarms.ts).
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as iot from 'aws-cdk-lib/aws-iot';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  ALERT_METRICS,
  type AlertThresholds,
  alertThresholdProblem,
  DEFAULT_ALERT_THRESHOLDS,
} from '../lambdas/core/alerts.js';
import { notify } from './dead-letter.js';

export interface OperatorAlertsProps {
  /** E-mail addresses subscribed to the topic (each confirms by the link SNS sends). @default none */
  readonly emails?: readonly string[];
  /** HTTPS webhook URLs subscribed to the topic (each must confirm the subscription). @default none */
  readonly webhooks?: readonly string[];
  /** @default DEFAULT_ALERT_THRESHOLDS */
  readonly thresholds?: Partial<AlertThresholds>;
  /** Powertools metrics namespace of the functions. @default 'FleetOta' */
  readonly namespace?: string;
  /** Functions shown on the dashboard (errors, throttles), by service name. */
  readonly functions: Readonly<Record<string, lambda.IFunction>>;
  readonly api: apigw.RestApi;
  /** The ingest topic rule (its IoT Failure metric). */
  readonly ingestRule: iot.CfnTopicRule;
  /** Dead-letter queues by what they hold (their depth on the dashboard). */
  readonly deadLetterQueues: Readonly<Record<string, sqs.IQueue>>;
  /**
   * The alarm on each dead-letter queue (any visible message), made by the construct that owns the queue
   * (lib/dead-letter.ts); they notify the topic.
   */
  readonly deadLetterAlarms: Readonly<Record<string, cloudwatch.Alarm>>;
  /** Working queues whose depth the dashboard shows (the background jobs). */
  readonly queues?: Readonly<Record<string, sqs.IQueue>>;
  /** The topic's key is deleted with the stack (development stacks). @default false: retained */
  readonly destroyOnRemoval?: boolean;
  /** Alarms other constructs made (dead-letter, tick errors) that should notify the topic too. */
  readonly existingAlarms?: readonly cloudwatch.Alarm[];
}

export class OperatorAlerts extends Construct {
  /** Every alert is published here. */
  readonly topic: sns.Topic;
  readonly campaignHaltedAlarm: cloudwatch.Alarm;
  readonly failureRateAlarm: cloudwatch.Alarm;
  readonly ingestRejectionsAlarm: cloudwatch.Alarm;
  /** Encrypts the topic; CloudWatch alarms may use it to publish. */
  readonly topicKey: kms.Key;
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: OperatorAlertsProps) {
    super(scope, id);
    const t = { ...DEFAULT_ALERT_THRESHOLDS, ...props.thresholds };
    const problem = alertThresholdProblem(t);
    if (problem) throw new Error(`OperatorAlerts: ${problem}`);
    for (const url of props.webhooks ?? [])
      if (!/^https:\/\/[^\s/]+/.test(url))
        throw new Error(`OperatorAlerts: webhook ${url} must be an https:// URL`);
    for (const address of props.emails ?? [])
      if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(address))
        throw new Error(`OperatorAlerts: ${address} is not an e-mail address`);

    // Encrypted at rest and TLS only (cdk-nag SNS2, SNS3). A customer managed key, not alias/aws/sns: CloudWatch
    // alarm actions cannot publish to a topic under the AWS managed key, whose policy cannot be changed.
    this.topicKey = new kms.Key(this, 'TopicKey', {
      description: 'Encrypts the operator alerts topic',
      enableKeyRotation: true,
      removalPolicy: props.destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    });
    this.topicKey.addToResourcePolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
    );
    this.topic = new sns.Topic(this, 'Topic', {
      displayName: `${Stack.of(this).stackName} operator alerts`,
      enforceSSL: true,
      masterKey: this.topicKey,
    });
    for (const address of props.emails ?? [])
      this.topic.addSubscription(new subscriptions.EmailSubscription(address));
    for (const url of props.webhooks ?? [])
      this.topic.addSubscription(new subscriptions.UrlSubscription(url));

    const ns = props.namespace ?? 'FleetOta';
    const period = Duration.seconds(t.periodSeconds);
    const metric = (name: string, service: string) =>
      new cloudwatch.Metric({
        namespace: ns,
        metricName: name,
        dimensionsMap: { service },
        statistic: cloudwatch.Stats.SUM,
        period,
      });

    this.campaignHaltedAlarm = new cloudwatch.Alarm(this, 'CampaignHaltedAlarm', {
      alarmDescription:
        'A campaign halted: its failures crossed its policy threshold. See `ota campaigns status <id>` (halt_reason).',
      metric: metric(ALERT_METRICS.campaignsHalted, 'campaign-tick').with({ period: Duration.minutes(1) }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // Outcomes are recorded by the HTTPS route and by ingest (MQTT): the rate is over both.
    const failed = new cloudwatch.MathExpression({
      expression: 'FILL(fa, 0) + FILL(fb, 0)',
      usingMetrics: {
        fa: metric(ALERT_METRICS.updatesFailed, 'vehicle-api'),
        fb: metric(ALERT_METRICS.updatesFailed, 'ingest'),
      },
      period,
    });
    const outcomes = new cloudwatch.MathExpression({
      expression: 'FILL(fa, 0) + FILL(fb, 0) + FILL(ca, 0) + FILL(cb, 0)',
      usingMetrics: {
        fa: metric(ALERT_METRICS.updatesFailed, 'vehicle-api'),
        fb: metric(ALERT_METRICS.updatesFailed, 'ingest'),
        ca: metric(ALERT_METRICS.updatesCompleted, 'vehicle-api'),
        cb: metric(ALERT_METRICS.updatesCompleted, 'ingest'),
      },
      period,
    });
    this.failureRateAlarm = new cloudwatch.Alarm(this, 'FailureRateAlarm', {
      alarmDescription:
        `At least ${t.failureRatePercent}% of the update outcomes of ${t.periodSeconds} s failed ` +
        `(judged on ${t.failureRateMinOutcomes} outcomes or more).`,
      // Below the minimum number of outcomes the share is reported as 0: one failure of two is no trend.
      metric: new cloudwatch.MathExpression({
        expression: `IF(total >= ${t.failureRateMinOutcomes}, 100 * bad / total, 0)`,
        usingMetrics: { bad: failed, total: outcomes },
        period,
        label: 'failure rate %',
      }),
      threshold: t.failureRatePercent,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    this.ingestRejectionsAlarm = new cloudwatch.Alarm(this, 'IngestRejectionsAlarm', {
      alarmDescription:
        `More than ${t.ingestRejectionsPerPeriod} vehicle messages refused by ingest in ${t.periodSeconds} s ` +
        '(malformed, unknown VIN, over rate): a misbehaving agent version or a flood.',
      metric: metric(ALERT_METRICS.ingestRejected, 'ingest'),
      threshold: t.ingestRejectionsPerPeriod,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    notify(this.topic, [
      this.campaignHaltedAlarm,
      this.failureRateAlarm,
      this.ingestRejectionsAlarm,
      ...Object.values(props.deadLetterAlarms),
      ...(props.existingAlarms ?? []),
    ]);

    this.dashboard = this.buildDashboard(props, metric, failed, outcomes);
  }

  private buildDashboard(
    props: OperatorAlertsProps,
    metric: (name: string, service: string) => cloudwatch.Metric,
    failed: cloudwatch.IMetric,
    outcomes: cloudwatch.IMetric,
  ): cloudwatch.Dashboard {
    const fns = Object.entries(props.functions);
    const fiveMin = { period: Duration.minutes(5) };
    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${Stack.of(this).stackName}-backend`,
      defaultInterval: Duration.hours(3),
    });
    const api = props.api;
    const iotMetric = (name: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/IoT',
        metricName: name,
        dimensionsMap: { RuleName: props.ingestRule.ref },
        statistic: cloudwatch.Stats.SUM,
        ...fiveMin,
      });
    dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({
        title: 'Operator alarms',
        width: 24,
        height: 3,
        alarms: [
          this.campaignHaltedAlarm,
          this.failureRateAlarm,
          this.ingestRejectionsAlarm,
          ...Object.values(props.deadLetterAlarms),
        ],
      }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'API errors',
        width: 8,
        left: [api.metricClientError(fiveMin), api.metricServerError(fiveMin)],
      }),
      new cloudwatch.GraphWidget({
        title: 'API latency (ms)',
        width: 8,
        left: [
          api.metricLatency({ ...fiveMin, statistic: 'p50' }),
          api.metricLatency({ ...fiveMin, statistic: 'p99' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'IoT ingest rule',
        width: 8,
        left: [iotMetric('TopicMatch'), iotMetric('Success'), iotMetric('Failure')],
      }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Lambda errors',
        width: 12,
        left: fns.map(([name, fn]) => fn.metricErrors({ ...fiveMin, label: name })),
      }),
      new cloudwatch.GraphWidget({
        title: 'Lambda throttles',
        width: 12,
        left: fns.map(([name, fn]) => fn.metricThrottles({ ...fiveMin, label: name })),
      }),
    );
    // Working queues and dead-letter queues share names (jobs, offers, ingest): labelled apart, not merged by key.
    const queues: [string, sqs.IQueue][] = [
      ...Object.entries(props.queues ?? {}),
      ...Object.entries(props.deadLetterQueues).map(([name, q]): [string, sqs.IQueue] => [
        `${name} dead letters`,
        q,
      ]),
    ];
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Queue depths',
        width: 8,
        left: queues.map(([name, q]) =>
          q.metricApproximateNumberOfMessagesVisible({ ...fiveMin, statistic: 'Maximum', label: name }),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: 'Campaign progress',
        width: 8,
        left: [
          metric('OffersSent', 'campaign-tick').with({ label: 'offers sent' }),
          metric('VehiclesTimedOut', 'campaign-tick').with({ label: 'vehicles timed out' }),
          metric(ALERT_METRICS.campaignsHalted, 'campaign-tick').with({ label: 'campaigns halted' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'Update outcomes',
        width: 8,
        left: [
          (outcomes as cloudwatch.MathExpression).with({ label: 'outcomes' }),
          (failed as cloudwatch.MathExpression).with({ label: 'failed' }),
        ],
        right: [metric(ALERT_METRICS.ingestRejected, 'ingest').with({ label: 'ingest refusals' })],
      }),
    );
    return dashboard;
  }
}
