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
    this.grantLeastPrivilege();
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

  /**
   * The one place that decides what each function may do. Index access is granted per index, only to the
   * functions whose code queries it: releases.byVersion (release creation, firmware requests), updates.byCampaign
   * (campaign routes, the tick), campaigns.byStatus (the tick).
   */
  private grantLeastPrivilege(): void {
    const fn = (name: FunctionName) => this.functions.get(name)!;
    const d = this.data;

    // auth-api: challenges (UpdateItem to set and to spend one) and the vehicle read; tokens signed with the token
    // key only, whose public key gives the token's key id. No assignment key: an exploit of this unauthenticated
    // function cannot mint assignments.
    const auth = fn('auth-api');
    d.bindItems(auth, 'vehicles', ['GetItem']);
    // A challenge is issued (PutItem), counted per VIN and minute and spent once (conditional UpdateItem).
    d.bindItems(auth, 'challenges', ['PutItem', 'UpdateItem']);
    this.tokenKey.grantSign(auth);
    this.tokenKey.grantVerify(auth);

    // vehicle-api: offers (releases by version through the index only, signed assignments, presigned downloads) and
    // status reports (updates read by key or per vehicle, written whole with a revision check; vehicles' rate
    // window, active update, assignment counter and ECU version by UpdateItem; campaign counts by UpdateItem).
    const vehicle = fn('vehicle-api');
    // GetItem: a bundle offered to the vehicle and its member releases, by id (POST /updates/{vin}/bundle).
    d.bindItems(vehicle, 'releases', ['GetItem'], { indexes: ['byVersion'] });
    d.bindItems(vehicle, 'vehicles', ['GetItem', 'UpdateItem']);
    d.bindItems(vehicle, 'updates', ['GetItem', 'Query', 'PutItem']);
    // A campaign being cancelled refuses its updates' downloads (GetItem); its counts move in the counter shards,
    // by an UpdateItem inside the update's TransactWriteItems (which needs no action of its own).
    d.bindItems(vehicle, 'campaigns', ['GetItem']);
    d.bindItems(vehicle, 'counters', ['UpdateItem']);
    // Freshness: reads the newest statement and the vehicle's bucket; alerts are written on the vehicle's item.
    d.bindItems(vehicle, 'freshness', ['GetItem']);
    this.storage.grantPresignDownload(vehicle);
    this.tokenKey.grantVerify(vehicle);
    this.signingKey.grantVerify(vehicle);
    this.signingKey.grantSign(vehicle);

    // operator-api: releases (create, publish, withdraw, list with a Scan), campaigns (targets by a Scan of vehicles, one update per target, listed with a Scan, cancelled through the
    // byCampaign index) and the release withdraw's search for open direct updates (a Scan of updates). History is
    // append-only. Nothing is ever deleted.
    const operator = fn('operator-api');
    d.bindItems(operator, 'releases', ['GetItem', 'PutItem', 'UpdateItem', 'Scan'], {
      indexes: ['byVersion'],
    });
    d.bindItems(operator, 'vehicles', ['GetItem', 'UpdateItem', 'Scan']);
    d.bindItems(operator, 'updates', ['GetItem', 'Query', 'PutItem', 'Scan'], { indexes: ['byCampaign'] });
    d.bindItems(operator, 'campaigns', ['GetItem', 'PutItem', 'UpdateItem', 'Scan']);
    // Campaign views sum the counter shards (a Query per wave). A release withdraw takes back direct updates only
    // (no count) and cancels campaigns through their job, so nothing here moves a count.
    d.bindItems(operator, 'counters', ['Query']);
    // Campaign exclusions: listed a page at a time (Query); the preparation job writes them.
    d.bindItems(operator, 'exclusions', ['Query']);
    // The audit log: every mutation appended (PutItem, conditional on a new event id), GET /audit (Query).
    d.bindItems(operator, 'audit', ['PutItem', 'Query']);
    this.storage.grantUpload(operator);
    // Campaign VIN lists: an inline list stored, an upload presigned and checked when complete.
    this.storage.grantTargetLists(operator, 'write');
    // Publish and cancel queue their background job.
    this.jobs.grantSend(operator);
    // No signing-key access: operator routes neither sign nor verify backend signatures. No IoT rights.

    // registry-api: vehicle registration (the vehicle written once, PutItem; read back), its view (the vehicle and
    // its updates by key and per vehicle) and the revoke kill switch (the vehicle flagged by UpdateItem, its open
    // updates withdrawn: updates rewritten with a revision check, campaign counts by UpdateItem, history appended).
    // The only function with IoT identity rights (FleetIdentity.bindRegistration).
    const registry = fn('registry-api');
    d.bindItems(registry, 'vehicles', ['GetItem', 'PutItem', 'UpdateItem']);
    d.bindItems(registry, 'updates', ['GetItem', 'Query', 'PutItem']);
    d.bindItems(registry, 'campaigns', ['GetItem', 'UpdateItem']);
    // A revoke's withdrawn campaign update moves its count shard in the update's transaction.
    d.bindItems(registry, 'counters', ['UpdateItem']);
    // Its mutations (registration, revocation) are audited like operator-api's: appended only, never listed here.
    d.bindItems(registry, 'audit', ['PutItem']);
    // audit-refusals: appends the refusals API Gateway made (conditional on a new event id); reads nothing.
    d.bindItems(this.auditRefusalsFunction, 'audit', ['PutItem']);
    this.fleet.bindRegistration(registry);

    // jobs-worker: verifies release images (reads the object by ranges, saves its checkpoint on the release,
    // protects and publishes it, or fails it and removes the bad upload under its own key) and withdraws cancelled campaigns' updates a page at a time (byCampaign; counts by UpdateItem;
    // history appended; vehicles' campaign locks released by UpdateItem). Queue consumption and self-continuation
    // are granted by BackgroundJobs. No KMS, no IoT.
    const worker = this.jobsWorkerFunction;
    d.bindItems(worker, 'releases', ['GetItem', 'UpdateItem']);
    this.storage.grantVerify(worker);
    // Campaign preparation: checkpoints are items of the campaigns table (PutItem, conditional on the slice);
    // vehicles read by a parallel Scan or by VIN (GetItem) and locked (UpdateItem); target items written
    // conditionally (PutItem) after reading the vehicle's updates (Query); exclusions written conditionally;
    // the VIN list read by ranges. Nothing is deleted.
    d.bindItems(worker, 'campaigns', ['GetItem', 'PutItem', 'UpdateItem']);
    d.bindItems(worker, 'updates', ['GetItem', 'PutItem', 'Query'], { indexes: ['byCampaign'] });
    // Withdrawn updates move their count (cancel, and the preparation's sweep of a cancelled one's targets).
    d.bindItems(worker, 'counters', ['UpdateItem']);
    d.bindItems(worker, 'vehicles', ['GetItem', 'UpdateItem', 'Scan']);
    d.bindItems(worker, 'exclusions', ['PutItem']);
    this.storage.grantTargetLists(worker, 'read');

    // ingest: applies vehicle reports: vehicles read, and updated when an update completes (the ECU's new version,
    // the campaign lock released); updates read and written with a revision check; history append-only; campaign
    // counts by UpdateItem. No S3, no KMS, no IoT.
    const ingest = this.ingestFunction;
    d.bindItems(ingest, 'vehicles', ['GetItem', 'UpdateItem']);
    d.bindItems(ingest, 'updates', ['GetItem', 'Query', 'PutItem']);
    d.bindItems(ingest, 'counters', ['UpdateItem']);

    // campaign-tick: finds running campaigns (byStatus) and decides from each campaign item and its summed counter
    // shards (a Query per wave); overdue updates come from the sparse byDeadline index, a page per tick, and are timed
    // out (PutItem with their count, vehicles unlocked by UpdateItem) or sent to the offers queue again; the pacer
    // is (re)started by a conditional PutItem of its state. No reads of a wave, no signing, no IoT: offers are the
    // offer worker's. The freshness job (same function) signs statements.
    const tick = this.campaignTickFunction;
    d.bindItems(tick, 'campaigns', ['GetItem', 'UpdateItem'], { indexes: ['byStatus'] });
    d.bindItems(tick, 'counters', ['GetItem', 'Query', 'PutItem', 'UpdateItem']);
    // The freshness job (same function) scans the vehicles for its leaves (bounded by FRESHNESS_MAX_VEHICLES).
    d.bindItems(tick, 'vehicles', ['UpdateItem', 'Scan']);
    d.bindItems(tick, 'updates', ['PutItem'], { indexes: ['byDeadline'] });
    // ...and writes statements and their buckets.
    d.bindItems(tick, 'freshness', ['GetItem', 'PutItem']);
    this.signingKey.grantSign(tick);
    // Statements carry the signer's key id, derived from the public key (KmsSigner.publicKeyPem).
    this.signingKey.grantVerify(tick);
    this.offers.grantSend(tick);

    // offer-worker: a pacer step reads one page of the queued targets (byCampaign) and saves the pacer's state
    // (conditional PutItem); an offer takes its target into a wave (the update's PutItem and its count's UpdateItem
    // in one transaction), takes the vehicle's offer counter and active update (one UpdateItem), signs the
    // assignment and publishes it on the vehicle's issue_details topic. Queue consumption and sending are granted by
    // OfferPacing. No S3.
    const offer = this.offerWorkerFunction;
    d.bindItems(offer, 'campaigns', ['GetItem']);
    d.bindItems(offer, 'releases', ['GetItem']);
    d.bindItems(offer, 'vehicles', ['GetItem', 'UpdateItem']);
    d.bindItems(offer, 'updates', ['GetItem', 'PutItem'], { indexes: ['byCampaign'] });
    d.bindItems(offer, 'counters', ['GetItem', 'PutItem', 'UpdateItem']);
    this.signingKey.grantSign(offer);
    this.signingKey.grantVerify(offer);
    this.fleet.grantPublishNotifications(offer);
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
