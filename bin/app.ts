#!/usr/bin/env node
/**
 * CDK app: wiring only. Context:
 *   releasePublicKeysFile  JSON array of PEM strings or a PEM file of the OEM release public keys
 *   devMode                "true" for a development stack whose data is deleted with it
 *   stackName              defaults to FleetOta
 *   alarmTopicArn          an existing SNS topic the dead-letter alarms notify as well (optional)
 *   alertEmails            e-mail addresses subscribed to the stack's alerts topic: a JSON array or comma list
 *   alertWebhooks          HTTPS URLs subscribed to the alerts topic: a JSON array or comma list
 *   alertFailureRatePercent, alertFailureRateMinOutcomes, alertIngestRejectionsPerPeriod, alertPeriodSeconds
 *                          thresholds of the alerts (lambdas/core/alerts.ts DEFAULT_ALERT_THRESHOLDS)
 *   campaignTickReservedConcurrency  reserve concurrency for the campaign tick (optional; none by default, so the
 *                          stack deploys on accounts whose Lambda concurrency quota is 10)
 * cdk-nag AwsSolutions checks run on the whole app; any unacknowledged finding fails synthesis.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { OtaStack } from '../lib/ota-stack.js';
import { readReleasePublicKeys } from '../lib/release-keys.js';

const app = new App();
const keysFile = app.node.tryGetContext('releasePublicKeysFile') as string | undefined;
const devMode = String(app.node.tryGetContext('devMode') ?? 'false') === 'true';

new OtaStack(app, (app.node.tryGetContext('stackName') as string | undefined) ?? 'FleetOta', {
  description: 'Fleet OTA: vehicle over-the-air update backend',
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  releasePublicKeys: keysFile ? readReleasePublicKeys(keysFile) : [],
  devMode,
  alarmTopicArn: app.node.tryGetContext('alarmTopicArn') as string | undefined,
  campaignTickReservedConcurrency: optionalInteger(app.node.tryGetContext('campaignTickReservedConcurrency')),
  alerts: {
    emails: list(app.node.tryGetContext('alertEmails')),
    webhooks: list(app.node.tryGetContext('alertWebhooks')),
    thresholds: defined({
      failureRatePercent: optionalNumber(app.node.tryGetContext('alertFailureRatePercent')),
      failureRateMinOutcomes: optionalInteger(app.node.tryGetContext('alertFailureRateMinOutcomes')),
      ingestRejectionsPerPeriod: optionalInteger(app.node.tryGetContext('alertIngestRejectionsPerPeriod')),
      periodSeconds: optionalInteger(app.node.tryGetContext('alertPeriodSeconds')),
    }),
  },
});

// writeSuppressionsToCloudFormation copies every acknowledgement and its reason into the template's Metadata, so
// reviewers of the synthesized template see them too.
Validations.of(app).addPlugins(
  new AwsSolutionsChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }),
);

/** Context values arrive as strings from the command line (-c k=v) and as numbers from cdk.json. */
function optionalInteger(value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new Error(`expected a whole number, got ${String(value)}`);
  return n;
}

function optionalNumber(value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`expected a number, got ${String(value)}`);
  return n;
}

/** A list from context: an array (cdk.json), a JSON array or a comma-separated string (-c k=v). */
function list(value: unknown): string[] {
  if (value === undefined || value === null || value === '') return [];
  if (Array.isArray(value)) return value.map(String);
  const text = String(value).trim();
  if (text.startsWith('[')) return (JSON.parse(text) as unknown[]).map(String);
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
