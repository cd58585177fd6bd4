import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Annotations, CfnOutput, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { ENV } from '../lambdas/adapters/env.js';
import { FUNCTIONS, type FunctionName } from '../lambdas/core/api-schema.js';
import { trustedKeysFromPems } from '../lambdas/core/signatures.js';
import { DataTables } from './data-tables.js';
import { FirmwareStorage } from './firmware-storage.js';
import { FleetIdentity } from './fleet-identity.js';
import { FleetIngest } from './fleet-ingest.js';
import { OtaFunction } from './ota-function.js';
import { SigningKey } from './signing-key.js';
import { VehicleApi } from './vehicle-api.js';

/** Repository root (this file is lib/ota-stack.ts), where lambdas/<fn>/handler.ts and package-lock.json live. */
const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface OtaStackProps extends StackProps {
  /**
   * PEM (SPKI) public keys of the OEM release keys the backend accepts for release manifests. Each must be an ECDSA
   * P-256 key; anything else fails synthesis rather than the deployed functions.
   * @default [] - the backend refuses every release, and synthesis warns
   */
  readonly releasePublicKeys?: readonly string[];
  /**
   * Development stack: buckets (with their objects), tables, log groups and IoT resources are deleted with the stack
   * and table deletion protection is off. The signing key is retained regardless.
   * @default false
   */
  readonly devMode?: boolean;
  /**
   * Seconds a presigned download or upload URL stays valid (PRESIGN_TTL_SECONDS). At most 7 days (SigV4).
   * @default 300
   */
  readonly presignTtlSeconds?: number;
  /**
   * Seconds a vehicle bearer token stays valid (TOKEN_TTL_SECONDS).
   * @default 900
   */
  readonly tokenTtlSeconds?: number;
  /**
   * Days a status history item is kept before its TTL expires it (HISTORY_RETENTION_DAYS).
   * @default 90
   */
  readonly historyRetentionDays?: number;
  /**
   * API stage rate limit, requests per second.
   * @default 100
   */
  readonly apiThrottlingRateLimit?: number;
  /**
   * API stage burst limit, requests.
   * @default 200
   */
  readonly apiThrottlingBurstLimit?: number;
  /**
   * Retention of the functions' log groups.
   * @default logs.RetentionDays.THREE_MONTHS
   */
  readonly functionLogRetention?: logs.RetentionDays;
  /**
   * Days a replaced or deleted firmware object version is kept.
   * @default 30
   */
  readonly firmwareNoncurrentVersionRetentionDays?: number;
  /**
   * Existing WAFv2 web ACL (REGIONAL) to associate with the API stage.
   * @default - none
   */
  readonly webAclArn?: string;
  /**
   * Create API Gateway's account-level CloudWatch Logs role; turn off when the account already has one.
   * @default true
   */
  readonly createApiGatewayCloudWatchRole?: boolean;
  /**
   * Reserved concurrency of each API function.
   * @default - none
   */
  readonly reservedConcurrentExecutions?: number;
  /**
   * Reserved concurrency of the ingest function. It caps how much of the account's Lambda concurrency a burst of
   * vehicle reports can take from the API; IoT invokes asynchronously, so messages beyond the cap wait in Lambda's
   * queue (up to an hour) instead of failing.
   * @default - none
   */
  readonly ingestReservedConcurrentExecutions?: number;
  /**
   * ARN of an SNS topic to notify when vehicle messages land in the ingest dead-letter queue, and when it is empty
   * again.
   * @default - the alarm has no actions
   */
  readonly alarmTopicArn?: string;
}

/**
 * The vehicle OTA backend on AWS: firmware storage, data tables, the backend signing key, the vehicles' IoT identity,
 * the HTTPS API with one function per FUNCTIONS entry, and the MQTT ingest path (topic rule -> ingest function, with
 * a dead-letter queue), each function granted exactly what it needs.
 */
export class OtaStack extends Stack {
  readonly storage: FirmwareStorage;
  readonly data: DataTables;
  readonly signingKey: SigningKey;
  readonly fleet: FleetIdentity;
  readonly functions: ReadonlyMap<FunctionName, OtaFunction>;
  /** Records vehicle progress and status messages delivered by the topic rule (lambdas/ingest/handler.ts). */
  readonly ingestFunction: OtaFunction;
  readonly ingest: FleetIngest;
  readonly api: VehicleApi;

  constructor(scope: Construct, id: string, props: OtaStackProps = {}) {
    super(scope, id, props);
    const presignTtl = props.presignTtlSeconds ?? 300;
    const tokenTtl = props.tokenTtlSeconds ?? 900;
    const historyDays = props.historyRetentionDays ?? 90;
    positiveInteger('presignTtlSeconds', presignTtl, 604800);
    positiveInteger('tokenTtlSeconds', tokenTtl, 86400);
    positiveInteger('historyRetentionDays', historyDays, 36500);
    const releaseKeys = [...(props.releasePublicKeys ?? [])];
    try {
      trustedKeysFromPems(releaseKeys);
    } catch (err) {
      throw new Error(
        `OtaStack: releasePublicKeys must be PEM (SPKI) ECDSA P-256 public keys: ${(err as Error).message}`,
      );
    }
    const destroy = props.devMode ?? false;
    const logRemovalPolicy = destroy ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    this.storage = new FirmwareStorage(this, 'FirmwareStorage', {
      destroyOnRemoval: destroy,
      noncurrentVersionRetentionDays: props.firmwareNoncurrentVersionRetentionDays,
    });
    this.data = new DataTables(this, 'Data', { destroyOnRemoval: destroy });
    this.signingKey = new SigningKey(this, 'SigningKey');
    this.fleet = new FleetIdentity(this, 'FleetIdentity', { destroyOnRemoval: destroy });

    const functions = new Map<FunctionName, OtaFunction>();
    for (const name of FUNCTIONS) {
      const fn = new OtaFunction(this, `${pascal(name)}Function`, {
        entry: join(PROJECT_ROOT, 'lambdas', name, 'handler.ts'),
        depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
        serviceName: name,
        logRetention: props.functionLogRetention,
        logRemovalPolicy,
        reservedConcurrentExecutions: props.reservedConcurrentExecutions,
        environment: {
          [ENV.releasePublicKeys]: JSON.stringify(releaseKeys),
          [ENV.presignTtlSeconds]: String(presignTtl),
          [ENV.tokenTtlSeconds]: String(tokenTtl),
          [ENV.historyRetentionDays]: String(historyDays),
        },
      });
      functions.set(name, fn);
    }
    this.functions = functions;
    this.ingestFunction = new OtaFunction(this, 'IngestFunction', {
      entry: join(PROJECT_ROOT, 'lambdas', 'ingest', 'handler.ts'),
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      serviceName: 'ingest',
      logRetention: props.functionLogRetention,
      logRemovalPolicy,
      reservedConcurrentExecutions: props.ingestReservedConcurrentExecutions,
      environment: { [ENV.historyRetentionDays]: String(historyDays) },
    });
    this.grantLeastPrivilege();

    this.ingest = new FleetIngest(this, 'FleetIngest', {
      ingestFunction: this.ingestFunction.function,
      alarmTopic: props.alarmTopicArn
        ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn)
        : undefined,
      destroyOnRemoval: destroy,
    });

    this.api = new VehicleApi(this, 'Api', {
      handlers: Object.fromEntries([...functions].map(([name, fn]) => [name, fn.function])),
      throttlingRateLimit: props.apiThrottlingRateLimit,
      throttlingBurstLimit: props.apiThrottlingBurstLimit,
      webAclArn: props.webAclArn,
      createCloudWatchRole: props.createApiGatewayCloudWatchRole,
      logRemovalPolicy,
    });

    new CfnOutput(this, 'ApiUrl', { value: this.api.url, description: 'Base URL of the HTTPS API' });
    new CfnOutput(this, 'FirmwareBucketName', { value: this.storage.bucket.bucketName });
    new CfnOutput(this, 'IotPolicyName', { value: this.fleet.policyName });
    new CfnOutput(this, 'IotThingTypeName', { value: this.fleet.thingTypeName });
    new CfnOutput(this, 'MqttEndpoint', {
      value: this.fleet.dataEndpoint,
      description: 'IoT ATS data endpoint: vehicles connect here (MQTT over TLS, port 8883)',
    });
    new CfnOutput(this, 'IngestDeadLetterQueueUrl', {
      value: this.ingest.deadLetterQueue.queueUrl,
      description: 'Vehicle MQTT messages that were not recorded',
    });
    new CfnOutput(this, 'SigningKeyArn', { value: this.signingKey.key.keyArn });
    if (releaseKeys.length === 0) {
      const warning =
        'No release public keys configured (context releasePublicKeysFile): the backend will refuse every release.';
      Annotations.of(this).addWarningV2('fleet-ota:no-release-keys', warning);
      new CfnOutput(this, 'ReleaseKeysWarning', { value: warning });
    }
  }

  /** The one place that decides what each function may do. */
  private grantLeastPrivilege(): void {
    const fn = (name: FunctionName) => this.functions.get(name)!;

    // auth-api: challenges and tokens.
    const auth = fn('auth-api');
    this.data.bindReadWrite(auth, 'vehicles');
    this.signingKey.grantSign(auth);
    // Tokens carry the signer's key id, derived from the public key (lambdas/core/vehicle-auth.ts).
    this.signingKey.grantVerify(auth);

    // vehicle-api: offers (signed assignments, presigned downloads) and status reports.
    const vehicle = fn('vehicle-api');
    this.data.bindRead(vehicle, 'releases');
    this.data.bindReadWrite(vehicle, 'vehicles');
    this.data.bindReadWrite(vehicle, 'updates');
    this.data.bindReadWrite(vehicle, 'history');
    this.storage.grantPresignDownload(vehicle);
    this.signingKey.grantVerify(vehicle);
    // Every offer carries a per-vehicle assignment signed with the backend key (lambdas/core/assignment.ts).
    this.signingKey.grantSign(vehicle);

    // operator-api: releases and vehicle registration.
    const operator = fn('operator-api');
    this.data.bindReadWrite(operator, 'releases');
    this.data.bindReadWrite(operator, 'vehicles');
    this.data.bindRead(operator, 'updates');
    this.data.bindRead(operator, 'history');
    this.storage.grantUpload(operator);
    this.fleet.bindRegistration(operator);
    // No signing-key access: operator routes neither sign nor verify backend signatures.

    // ingest: applies vehicle reports. Vehicles are read, and written when an update completes (the ECU's new
    // version); history is append-only. No S3, no KMS, no IoT.
    const ingest = this.ingestFunction;
    this.data.bindReadWrite(ingest, 'vehicles');
    this.data.bindReadWrite(ingest, 'updates');
    this.data.bindWrite(ingest, 'history');
  }
}

function positiveInteger(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new Error(`OtaStack: ${name} must be a whole number from 1 to ${max}, got ${value}`);
  }
}

function pascal(name: string): string {
  return name
    .split('-')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
}
