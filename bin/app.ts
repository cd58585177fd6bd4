#!/usr/bin/env node
/**
 * CDK app: wiring only. Context:
 *   releasePublicKeysFile  JSON array of PEM strings or a PEM file of the OEM release public keys
 *   devMode                "true" for a development stack whose data is deleted with it
 *   stackName              defaults to FleetOta
 *   alarmTopicArn          SNS topic for the ingest dead-letter alarm (optional)
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
