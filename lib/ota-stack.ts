import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Annotations, CfnOutput, Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import type { AlertThresholds } from '../lambdas/core/alerts.js';
import { DEFAULTS, ENV } from '../lambdas/core/env.js';
import { FUNCTION_SETTINGS, type LambdaName } from '../lambdas/core/functions.js';
import { FUNCTIONS, type FunctionName } from '../protocol/routes.js';
import { trustedKeysFromPems } from '../protocol/signatures.js';
import { BackgroundJobs, JOBS_WORKER_TIMEOUT } from './background-jobs.js';
import { CampaignSchedule } from './campaign-schedule.js';
import { DataTables } from './data-tables.js';
import { FirmwareStorage } from './firmware-storage.js';
import { FleetIdentity } from './fleet-identity.js';
import { defaultIngestRuleName, FleetIngest } from './fleet-ingest.js';
import { grantLeastPrivilege } from './least-privilege.js';
import { OfferPacing } from './offer-pacing.js';
import { OperatorAlerts } from './operator-alerts.js';
import { OperatorConsole } from './operator-console.js';
import { OperatorIdentity } from './operator-identity.js';
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
   * Existing WAFv2 web ACL (REGIONAL) to associate with the API stage instead of the stack's own (which limits
   * /auth/* per source address); it should carry an equivalent rate rule.
   * @default - the stack's web ACL with the /auth/* rate rule
   */
  readonly webAclArn?: string;
  /**
   * Requests to /auth/* one source address may make in 5 minutes before WAF answers 429 (the stack's web ACL).
   * @default 1000
   */
  readonly authRateLimitPerFiveMinutes?: number;
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
   * Most concurrent ingest invocations (2-1000), set on the ingest queue's event source. It caps how much of the
   * account's Lambda concurrency a burst of vehicle reports can take from the API; messages beyond it wait in the
   * queue instead of failing.
   * @default - none
   */
  readonly ingestMaxConcurrency?: number;
  /**
   * Reserved concurrency of the campaign tick function. Off by default: reserving concurrency takes it from the
   * account's unreserved pool, which must keep at least 10, so on an account whose Lambda concurrency quota is 10
   * (new accounts) any reservation makes the deploy fail and roll back. Two ticks running at once are harmless
   * anyway: every change a tick makes is a conditional write on the item's revision, so the second tick's write fails
   * and it moves on (lambdas/core/campaigns.ts). Set it to 1 on accounts with room to spare to make overlap impossible.
   * @default - none
   */
  readonly campaignTickReservedConcurrency?: number;
  /**
   * ARN of an existing SNS topic to notify as well when a dead-letter, tick-error or job-backlog alarm fires and
   * when it clears. Every alarm notifies the stack's own alerts topic (alerts) anyway.
   * @default - only the stack's alerts topic
   */
  readonly alarmTopicArn?: string;
  /**
   * How assignments are signed. 'delegated': by an online key per function instance that the signing key (KMS)
   * certifies, one KMS Sign per instance per hour; 'direct': by the KMS key itself, one Sign per assignment, for a
   * fleet whose agents predate delegation (they refuse delegated assignments; README "How a vehicle connects").
   * @default 'delegated'
   */
  readonly assignmentSigning?: 'delegated' | 'direct';
  /**
   * Operator alerts (lib/operator-alerts.ts): addresses and HTTPS webhooks subscribed to the stack's alerts topic,
   * and the thresholds of its alarms (failure rate, ingest refusals).
   * @default no subscriptions, DEFAULT_ALERT_THRESHOLDS
   */
  readonly alerts?: {
    readonly emails?: readonly string[];
    readonly webhooks?: readonly string[];
    readonly thresholds?: Partial<AlertThresholds>;
  };
}

/**
 * The vehicle OTA backend on AWS: firmware storage, data tables, the backend signing key, the vehicles' IoT identity,
 * the HTTPS API with one function per FUNCTIONS entry, the MQTT ingest path (topic rule -> ingest queue -> ingest function, with
 * a dead-letter queue) and the campaign engine (EventBridge Scheduler -> tick function every minute), each function
 * granted exactly what it needs.
 */
export class OtaStack extends Stack {
  readonly storage: FirmwareStorage;
  readonly data: DataTables;
  /** Signs update assignments (vehicle-api, campaign tick). */
  readonly signingKey: SigningKey;
  /** Signs vehicle tokens (auth-api); vehicle-api only reads its public key. */
  readonly tokenKey: SigningKey;
  readonly fleet: FleetIdentity;
  readonly functions: ReadonlyMap<FunctionName, OtaFunction>;
  /** Records vehicle progress and status messages from the ingest queue (lambdas/ingest/handler.ts). */
  readonly ingestFunction: OtaFunction;
  readonly ingest: FleetIngest;
  /**
   * Advances running campaigns once per schedule period (lambdas/campaign-tick/handler.ts): paced offers signed
   * and published over MQTT, timeouts, halts, wave changes. No reserved concurrency unless configured
   * (campaignTickReservedConcurrency): its timeout is shorter than the period, so ticks rarely overlap, and an overlap
   * is safe.
   */
  readonly campaignTickFunction: OtaFunction;
  readonly campaignSchedule: CampaignSchedule;
  /**
   * Runs background jobs from a queue (lambdas/jobs-worker/handler.ts): release verification, hashing up to 16 GiB
   * in resumable slices, and campaign cancel, withdrawing offers a page at a time.
   */
  readonly jobsWorkerFunction: OtaFunction;
  readonly jobs: BackgroundJobs;
  /**
   * Takes queued campaign targets into their wave and offers them, and runs each campaign's pacer, from the offers
   * queue (lambdas/offer-worker/handler.ts, lambdas/core/offer-pacing.ts).
   */
  readonly offerWorkerFunction: OtaFunction;
  /** Appends the refusals API Gateway makes itself (IAM) to the audit table, from the access log. */
  readonly auditRefusalsFunction: OtaFunction;
  readonly offers: OfferPacing;
  readonly api: VehicleApi;
  /** The alerts topic, its alarms and the backend dashboard. */
  readonly alerts: OperatorAlerts;
  /** Operators: Cognito users in role groups, one IAM role per operator role (protocol/roles.ts). */
  readonly operators: OperatorIdentity;
  /** The operator console: private S3 bucket behind CloudFront, which also forwards the API. */
  readonly console: OperatorConsole;

  constructor(scope: Construct, id: string, props: OtaStackProps = {}) {
    super(scope, id, props);
    const presignTtl = props.presignTtlSeconds ?? DEFAULTS.presignTtlSeconds;
    const tokenTtl = props.tokenTtlSeconds ?? DEFAULTS.tokenTtlSeconds;
    positiveInteger('presignTtlSeconds', presignTtl, 604800);
    positiveInteger('tokenTtlSeconds', tokenTtl, 86400);
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
    this.tokenKey = new SigningKey(this, 'TokenKey', {
      aliasName: `alias/${this.stackName}/token-signing`,
      purpose: 'vehicle bearer tokens',
      envVar: ENV.tokenSigningKeyArn,
    });
    // One name for the rule and the vehicle policy's Basic Ingest topics.
    const ingestRuleName = defaultIngestRuleName(this);
    this.fleet = new FleetIdentity(this, 'FleetIdentity', { destroyOnRemoval: destroy, ingestRuleName });

    const functions = new Map<FunctionName, OtaFunction>();
    for (const name of FUNCTIONS) {
      const fn = new OtaFunction(this, `${pascal(name)}Function`, {
        entry: join(PROJECT_ROOT, 'lambdas', name, 'handler.ts'),
        depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
        serviceName: name,
        ...sized(name),
        logRetention: props.functionLogRetention,
        logRemovalPolicy,
        reservedConcurrentExecutions: props.reservedConcurrentExecutions,
        environment: {
          [ENV.releasePublicKeys]: JSON.stringify(releaseKeys),
          [ENV.presignTtlSeconds]: String(presignTtl),
          [ENV.tokenTtlSeconds]: String(tokenTtl),
        },
      });
      functions.set(name, fn);
    }
    this.functions = functions;
    this.ingestFunction = new OtaFunction(this, 'IngestFunction', {
      entry: join(PROJECT_ROOT, 'lambdas', 'ingest', 'handler.ts'),
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      serviceName: 'ingest',
      ...sized('ingest'),
      logRetention: props.functionLogRetention,
      logRemovalPolicy,
    });
    this.campaignTickFunction = new OtaFunction(this, 'CampaignTickFunction', {
      entry: join(PROJECT_ROOT, 'lambdas', 'campaign-tick', 'handler.ts'),
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      serviceName: 'campaign-tick',
      ...sized('campaign-tick'),
      logRetention: props.functionLogRetention,
      logRemovalPolicy,
      reservedConcurrentExecutions: props.campaignTickReservedConcurrency,
    });
    this.jobsWorkerFunction = new OtaFunction(this, 'JobsWorkerFunction', {
      entry: join(PROJECT_ROOT, 'lambdas', 'jobs-worker', 'handler.ts'),
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      serviceName: 'jobs-worker',
      logRetention: props.functionLogRetention,
      logRemovalPolicy,
      ...sized('jobs-worker'),
    });
    this.offerWorkerFunction = new OtaFunction(this, 'OfferWorkerFunction', {
      entry: join(PROJECT_ROOT, 'lambdas', 'offer-worker', 'handler.ts'),
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      serviceName: 'offer-worker',
      logRetention: props.functionLogRetention,
      logRemovalPolicy,
      ...sized('offer-worker'),
    });
    // IAM refuses SigV4 calls to operator routes before any function runs: those refusals reach the audit table
    // from the API's access log (VehicleApi.auditRefusals, lambdas/audit-refusals/handler.ts).
    this.auditRefusalsFunction = new OtaFunction(this, 'AuditRefusalsFunction', {
      entry: join(PROJECT_ROOT, 'lambdas', 'audit-refusals', 'handler.ts'),
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      serviceName: 'audit-refusals',
      logRetention: props.functionLogRetention,
      logRemovalPolicy,
      ...sized('audit-refusals'),
    });
    const alarmTopic = props.alarmTopicArn
      ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn)
      : undefined;
    this.jobs = new BackgroundJobs(this, 'BackgroundJobs', {
      worker: this.jobsWorkerFunction,
      workerTimeout: JOBS_WORKER_TIMEOUT,
      alarmTopic,
      destroyOnRemoval: destroy,
    });
    this.offers = new OfferPacing(this, 'OfferPacing', {
      worker: this.offerWorkerFunction,
      alarmTopic,
      destroyOnRemoval: destroy,
    });
    grantLeastPrivilege(this);
    if (props.assignmentSigning === 'direct') {
      // The functions that sign assignments (and hold kms:Sign on the signing key): vehicle-api for a vehicle's own
      // requests, the offer worker for campaign offers (the tick no longer offers).
      this.functions.get('vehicle-api')!.addEnvironment(ENV.assignmentSigning, 'direct');
      this.offerWorkerFunction.addEnvironment(ENV.assignmentSigning, 'direct');
    }

    this.ingest = new FleetIngest(this, 'FleetIngest', {
      ingestFunction: this.ingestFunction.function,
      ruleName: ingestRuleName,
      maxConcurrency: props.ingestMaxConcurrency,
      alarmTopic,
      destroyOnRemoval: destroy,
    });
    this.campaignSchedule = new CampaignSchedule(this, 'CampaignSchedule', {
      tickFunction: this.campaignTickFunction.function,
      alarmTopic,
      destroyOnRemoval: destroy,
    });

    this.api = new VehicleApi(this, 'Api', {
      handlers: Object.fromEntries([...functions].map(([name, fn]) => [name, fn.function])),
      throttlingRateLimit: props.apiThrottlingRateLimit,
      throttlingBurstLimit: props.apiThrottlingBurstLimit,
      webAclArn: props.webAclArn,
      authRateLimitPerFiveMinutes: props.authRateLimitPerFiveMinutes,
      createCloudWatchRole: props.createApiGatewayCloudWatchRole,
      logRemovalPolicy,
    });

    this.api.auditRefusals(this.auditRefusalsFunction.function);

    this.alerts = new OperatorAlerts(this, 'OperatorAlerts', {
      emails: props.alerts?.emails,
      webhooks: props.alerts?.webhooks,
      thresholds: props.alerts?.thresholds,
      destroyOnRemoval: destroy,
      functions: {
        ...Object.fromEntries([...functions].map(([name, fn]) => [name, fn.function])),
        ingest: this.ingestFunction.function,
        'campaign-tick': this.campaignTickFunction.function,
        'jobs-worker': this.jobsWorkerFunction.function,
        'offer-worker': this.offerWorkerFunction.function,
        'audit-refusals': this.auditRefusalsFunction.function,
      },
      api: this.api.api,
      ingestRule: this.ingest.rule,
      deadLetterQueues: {
        ingest: this.ingest.deadLetterQueue,
        'campaign-tick': this.campaignSchedule.deadLetterQueue,
        jobs: this.jobs.deadLetterQueue,
        offers: this.offers.deadLetterQueue,
      },
      deadLetterAlarms: {
        ingest: this.ingest.deadLetterAlarm,
        'campaign-tick': this.campaignSchedule.deadLetterAlarm,
        jobs: this.jobs.deadLetterAlarm,
        offers: this.offers.deadLetterAlarm,
      },
      queues: { jobs: this.jobs.queue, offers: this.offers.queue, ingest: this.ingest.queue },
      existingAlarms: [
        this.campaignSchedule.errorAlarm,
        this.jobs.backlogAlarm,
        this.offers.backlogAlarm,
        this.ingest.backlogAlarm,
      ],
    });

    new CfnOutput(this, 'AlertsTopicArn', {
      value: this.alerts.topic.topicArn,
      description:
        'Operator alerts (halted campaigns, failure rate, dead letters, ingest refusals): subscribe here',
    });
    this.operators = new OperatorIdentity(this, 'OperatorIdentity', {
      api: this.api.api,
      removalPolicy: destroy ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    });

    this.console = new OperatorConsole(this, 'OperatorConsole', {
      api: this.api.api,
      // VehicleApi's default stage (operator-console.test.ts checks they agree).
      apiStageName: 'v1',
      identity: this.operators,
      firmwareBucket: this.storage.bucket,
      accessLogBucket: this.storage.accessLogBucket,
      destroyOnRemoval: destroy,
    });

    new CfnOutput(this, 'ApiUrl', { value: this.api.url, description: 'Base URL of the HTTPS API' });
    new CfnOutput(this, 'ConsoleUrl', {
      value: this.console.url,
      description: 'The operator console (sign in with a user of OperatorUserPoolId)',
    });
    new CfnOutput(this, 'ConsoleBucketName', { value: this.console.bucket.bucketName });
    new CfnOutput(this, 'OperatorUserPoolId', {
      value: this.operators.userPool.userPoolId,
      description:
        'Cognito user pool of the operators: add users with AdminCreateUser and put each in one role group',
    });
    new CfnOutput(this, 'OperatorConsoleClientId', { value: this.operators.consoleClient.userPoolClientId });
    new CfnOutput(this, 'OperatorIdentityPoolId', { value: this.operators.identityPool.ref });
    new CfnOutput(this, 'FirmwareBucketName', { value: this.storage.bucket.bucketName });
    new CfnOutput(this, 'IotPolicyName', { value: this.fleet.policyName });
    new CfnOutput(this, 'IotThingTypeName', { value: this.fleet.thingTypeName });
    new CfnOutput(this, 'IngestRuleName', {
      value: this.ingest.ruleName,
      description:
        'Topic rule vehicles report to through IoT Basic Ingest ($aws/rules/<name>/vehicle/updates/...)',
    });
    new CfnOutput(this, 'MqttEndpoint', {
      value: this.fleet.dataEndpoint,
      description: 'IoT ATS data endpoint: vehicles connect here (MQTT over TLS, port 8883)',
    });
    new CfnOutput(this, 'IngestDeadLetterQueueUrl', {
      value: this.ingest.deadLetterQueue.queueUrl,
      description: 'Vehicle MQTT messages that were not recorded',
    });
    new CfnOutput(this, 'CampaignTickDeadLetterQueueUrl', {
      value: this.campaignSchedule.deadLetterQueue.queueUrl,
      description: 'Campaign engine ticks EventBridge Scheduler could not deliver',
    });
    new CfnOutput(this, 'JobsDeadLetterQueueUrl', {
      value: this.jobs.deadLetterQueue.queueUrl,
      description: 'Background jobs (release verification, campaign cancel) that failed repeatedly',
    });
    new CfnOutput(this, 'OffersDeadLetterQueueUrl', {
      value: this.offers.deadLetterQueue.queueUrl,
      description: 'Campaign pacer steps and offers that failed repeatedly (their vehicles were not offered)',
    });
    new CfnOutput(this, 'SigningKeyArn', { value: this.signingKey.key.keyArn });
    new CfnOutput(this, 'TokenSigningKeyArn', { value: this.tokenKey.key.keyArn });
    // Vehicles verify backend signatures with this key's public half, which stays in KMS; the CLI fetches it
    // (kms:GetPublicKey) and writes the PEM a vehicle is provisioned with.
    new CfnOutput(this, 'BackendPublicKeyCommand', {
      value: `npm run ota -- keys backend --key-id ${this.signingKey.key.keyArn} --region ${this.region} --out backend.pub.pem`,
      description:
        'Writes the backend public key (PEM) vehicles need, fetched from KMS with your AWS credentials',
    });
    new CfnOutput(this, 'OperatorPolicyArn', {
      value: this.api.operatorPolicy.managedPolicyArn,
      description:
        'IAM managed policy to attach to operators: execute-api:Invoke on the operator routes only',
    });
    if (releaseKeys.length === 0) {
      const warning =
        'No release public keys configured (context releasePublicKeysFile): the backend will refuse every release.';
      Annotations.of(this).addWarningV2('fleet-ota:no-release-keys', warning);
      new CfnOutput(this, 'ReleaseKeysWarning', { value: warning });
    }
  }
}

/** Timeout and memory from FUNCTION_SETTINGS, the table the local cloud enforces too. */
function sized(name: LambdaName): { timeout: Duration; memorySize: number } {
  const s = FUNCTION_SETTINGS[name];
  return { timeout: Duration.seconds(s.timeoutSeconds), memorySize: s.memoryMb };
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
