/**
 * The local cloud: the backend on one machine, no AWS account. An S3 emulator and a DynamoDB emulator serve TLS
 * with a certificate from the local CA, the tables come from the same TABLES definition as the CDK stack, and the
 * same Lambda handler modules run behind a local API Gateway. Everything binds 127.0.0.1 and keeps its state in
 * one folder, so a restart finds its data, keys and CA again.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoAuditLog } from '../lambdas/adapters/dynamo-audit.js';
import { documentClient } from '../lambdas/adapters/dynamo-common.js';
import { operationTally } from '../lambdas/adapters/operation-counter.js';
import { RevocationList, ThingGroupMembers } from '../lambdas/adapters/revocation-list.js';
import type { AlertRecord } from '../lambdas/core/alerts.js';
import { DEFAULTS, ENV } from '../lambdas/core/env.js';
import { FRESHNESS_JOB } from '../lambdas/core/freshness.js';
import { FUNCTION_SETTINGS } from '../lambdas/core/functions.js';
import { TABLES, type TableDefinition } from '../lambdas/core/tables.js';
import { trustingAgent } from '../protocol/tls-trust.js';
import { LocalAlarms } from './alarms.js';
import { LocalCa } from './ca.js';
import type { LocalBroker, LocalCloud, LocalCloudOptions } from './cloud-options.js';
import { adminTokenFrom, checkPublicKey, devReleaseKey, ensureEcKey } from './dev-secrets.js';
import { ensurePrivateTree } from './files.js';
import { LocalGateway } from './gateway.js';
import { startIotDataShim } from './iot-data-shim.js';
import { startLocalJobQueue } from './job-queue.js';
import { LocalLambdas } from './lambda-runtime.js';
import { type MqttBroker, startMqttBroker } from './mqtt-broker.js';
import { loadOperatorAccounts } from './operator-accounts.js';
import { ensureBucket, ensureTables } from './provision.js';
import { startRulesRouter } from './rules-router.js';
import { startLocalSchedule } from './schedule.js';
import {
  emulatorCredentials,
  FIRMWARE_BUCKET,
  LOCAL_REGION,
  startDynamo,
  startS3,
} from './storage-emulators.js';

export { FIRMWARE_BUCKET, LOCAL_REGION };

/** Where bin/console-bundle.ts writes the console. */
const CONSOLE_DIST = fileURLToPath(new URL('../dist/console', import.meta.url));

import { DEFAULT_PORTS, LOCAL_INGEST_RULE } from './ports.js';

export type { LocalBroker, LocalCloud, LocalCloudOptions, LocalCloudPorts } from './cloud-options.js';
export { DEFAULT_PORTS, LOCAL_INGEST_RULE };

/** What a caller gets without asking: free ports, so a test never collides with `npm start` or another test. */
const EPHEMERAL_PORTS = { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 } as const;

let running = false;

const DEFAULT_FRESHNESS_PERIOD_MS = 60_000;

/** Starts the local cloud. One per process: the handlers read their configuration from process.env. */
export async function startLocalCloud(options: LocalCloudOptions = {}): Promise<LocalCloud> {
  if (running) throw new Error('A local cloud is already running in this process; stop it first');
  running = true;
  const cleanups: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      await cleanup().catch(() => {});
    }
    running = false;
  };
  try {
    const cloud = await start(options, cleanups);
    return { ...cloud, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function start(
  options: LocalCloudOptions,
  cleanups: (() => Promise<void>)[],
): Promise<Omit<LocalCloud, 'stop'>> {
  const dataDir = options.dataDir === undefined ? temporaryDir(cleanups) : resolve(options.dataDir);
  // Counts start with the cloud: an earlier cloud of this process counted into the same (per-thread) tally.
  operationTally().reset();
  const ports = { ...EPHEMERAL_PORTS, ...options.ports };
  // The folder holds the registry, keys, CA, nonces and firmware: owner only, also when it already existed.
  ensurePrivateTree(dataDir);
  cleanups.push(async () => ensurePrivateTree(dataDir));

  const ca = await LocalCa.open(join(dataDir, 'ca'));
  const tls = await ca.serverCertificate();
  const signingKeyFile = ensureEcKey(join(dataDir, 'keys', 'backend-signing.key.pem'));
  const tokenKeyFile = ensureEcKey(join(dataDir, 'keys', 'token-signing.key.pem'));
  const release = options.releasePublicKeys
    ? { pems: options.releasePublicKeys.map(checkPublicKey), files: undefined }
    : devReleaseKey(join(dataDir, 'keys'));
  const admin = adminTokenFrom(options.adminToken, join(dataDir, 'admin-token'));
  const operatorsFile = join(dataDir, 'operators.json');
  const operators = loadOperatorAccounts(operatorsFile);

  // AWS_ENDPOINT_URL (e.g. LocalStack) replaces the embedded S3 and DynamoDB emulators; the rest stays local.
  const external = process.env.AWS_ENDPOINT_URL;
  const credentials = external
    ? {
        accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'test',
        secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'test',
      }
    : emulatorCredentials(join(dataDir, 'emulator-credentials.json'));
  const s3 = external
    ? { endpoint: external, close: async () => {}, servedBytes: () => 0 }
    : await service('S3 emulator', ports.s3, () =>
        startS3(tls, ports.s3, join(dataDir, 's3'), credentials, join(dataDir, 's3-legal-holds.json')),
      );
  cleanups.push(s3.close);
  if (external) await ensureBucket(external, ca.certPem, credentials);
  const dynamo = external
    ? { endpoint: external, close: async () => {} }
    : await service('DynamoDB emulator', ports.dynamodb, () =>
        startDynamo(tls, ca.certPem, ports.dynamodb, join(dataDir, 'dynamodb'), credentials),
      );
  cleanups.push(dynamo.close);

  const tables = Object.fromEntries(TABLES.map((t) => [t.name, `fleet-ota-${t.name}`])) as Record<
    TableDefinition['name'],
    string
  >;
  await ensureTables(dynamo.endpoint, ca.certPem, tables, credentials);

  const env: Record<string, string | undefined> = {
    ...Object.fromEntries(TABLES.map((t) => [t.envVar, tables[t.name]])),
    [ENV.firmwareBucket]: FIRMWARE_BUCKET,
    [ENV.presignTtlSeconds]: String(options.presignTtlSeconds ?? DEFAULTS.presignTtlSeconds),
    [ENV.challengesPerVinPerMinute]: String(
      options.challengesPerVinPerMinute ?? DEFAULTS.challengesPerVinPerMinute,
    ),
    [ENV.campaignTickSeconds]: String(Math.max(1, Math.round((options.campaignTickMs ?? 1000) / 1000))),
    [ENV.freshnessPeriodSeconds]: String(
      Math.max(1, Math.round((options.freshnessPeriodMs || DEFAULT_FRESHNESS_PERIOD_MS) / 1000)),
    ),
    [ENV.releasePublicKeys]: JSON.stringify(release.pems),
    [ENV.localSigningKeyFile]: signingKeyFile,
    [ENV.localTokenSigningKeyFile]: tokenKeyFile,
    [ENV.localCaDir]: ca.dir,
    [ENV.endpointCaFile]: ca.certFile,
    // AWS-only settings inherited from a shell would send the functions to real AWS services.
    [ENV.signingKeyArn]: undefined,
    [ENV.tokenSigningKeyArn]: undefined,
    [ENV.iotThingGroup]: undefined,
    [ENV.iotThingType]: undefined,
    AWS_ENDPOINT_URL_S3: s3.endpoint,
    AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
    AWS_REGION: LOCAL_REGION,
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_SESSION_TOKEN: undefined,
    POWERTOOLS_SERVICE_NAME: process.env.POWERTOOLS_SERVICE_NAME ?? 'fleet-ota-local',
    POWERTOOLS_LOG_LEVEL: process.env.POWERTOOLS_LOG_LEVEL ?? 'WARN',
    POWERTOOLS_METRICS_NAMESPACE: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'FleetOtaLocal',
    // Metrics on: the functions' EMF records feed the local alarms (lambda-runtime.ts keeps them off the console).
    POWERTOOLS_METRICS_DISABLED: process.env.POWERTOOLS_METRICS_DISABLED ?? 'false',
    POWERTOOLS_TRACE_ENABLED: process.env.POWERTOOLS_TRACE_ENABLED ?? 'false',
    [ENV.operationCounting]: 'count',
  };
  // The broker can be restarted on the same port (fault injection); the shim and the rules router talk to whichever
  // broker is current through this handle.
  const revocations = new RevocationList(ca.dir);
  // The vehicle policy reaches a thing only through the vehicles group registration adds it to, as on AWS.
  const vehicleGroup = new ThingGroupMembers(ca.dir);
  const brokerProps = {
    key: tls.keyPem,
    cert: tls.certPem,
    ca: ca.certPem,
    isRevoked: (certificateId: string) => revocations.has(certificateId),
    hasVehiclePolicy: (thingName: string) => vehicleGroup.has(thingName),
    ...(options.mqttMaxConnections ? { maxConnections: options.mqttMaxConnections } : {}),
    basicIngestRule: LOCAL_INGEST_RULE,
  };
  let current = await service('MQTT broker', ports.mqtt, () =>
    startMqttBroker({ ...brokerProps, port: ports.mqtt }),
  );
  const brokerPort = current.port;
  const listeners = new Set<Parameters<MqttBroker['onVehicleMessage']>[0]>();
  const attach = (b: MqttBroker) =>
    b.onVehicleMessage((m) => {
      for (const l of listeners) l(m);
    });
  attach(current);
  const broker: LocalBroker = {
    get port() {
      return current.port;
    },
    get url() {
      return current.url;
    },
    get aedes() {
      return current.aedes;
    },
    publish: (topic, payload, qos) => current.publish(topic, payload, qos),
    onVehicleMessage(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop: () => current.stop(),
    async restart(downMs = 0) {
      await current.stop();
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      current = await startMqttBroker({ ...brokerProps, port: brokerPort });
      attach(current);
    },
  };
  cleanups.push(() => broker.stop());
  const iotData = await service('IoT Data Plane shim', ports.iotData, () =>
    startIotDataShim({
      port: ports.iotData,
      key: tls.keyPem,
      cert: tls.certPem,
      broker,
      credentials,
      region: LOCAL_REGION,
    }),
  );
  cleanups.push(() => iotData.stop());
  env.AWS_ENDPOINT_URL_IOT_DATA_PLANE = iotData.url;
  // Alerts go to the local cloud's log (the gateway's logger, JSON lines on stderr by default) and to a file.
  const logger = options.logger;
  const alarms = new LocalAlarms({
    file: join(dataDir, 'alerts.jsonl'),
    thresholds: options.alertThresholds,
    ...(logger ? { log: (r: AlertRecord) => logger.warn('operator alert', { ...r }) } : {}),
  });
  const jobs = await startLocalJobQueue({
    ...options.jobs,
    port: ports.jobs ?? 0,
    key: tls.keyPem,
    cert: tls.certPem,
    credentials,
    region: LOCAL_REGION,
    deadLetterFile: join(dataDir, 'jobs-dead-letters.jsonl'),
    onMetrics: (fn, record) => alarms.metrics(fn, record),
  });
  cleanups.push(() => jobs.stop());
  env[ENV.jobQueueUrl] = jobs.queueUrl;
  // The offers queue feeds the offer-worker through the local Lambda runtime (its timeout and memory enforced
  // there), ten messages a batch as the event source mapping on AWS (lib/offer-pacing.ts). Two invocations at once
  // (AWS: up to 50): each instance is a worker thread whose cold start costs seconds on a loaded machine.
  let lambdasRef: LocalLambdas | undefined;
  const offers = await startLocalJobQueue({
    port: ports.offers ?? 0,
    name: 'fleet-ota-offers',
    deliver: (event) => lambdasRef!.invoke('offer-worker', event),
    batchSize: 10,
    maxConcurrency: 2,
    timeoutMs: FUNCTION_SETTINGS['offer-worker'].timeoutSeconds * 1000,
    key: tls.keyPem,
    cert: tls.certPem,
    credentials,
    region: LOCAL_REGION,
    deadLetterFile: join(dataDir, 'offers-dead-letters.jsonl'),
  });
  cleanups.push(() => offers.stop());
  env[ENV.offerQueueUrl] = offers.queueUrl;

  cleanups.push(setEnv(env));
  // Instances start after the environment is set: each worker copies it at its cold start.
  const lambdas = new LocalLambdas({
    settings: options.functionSettings,
    maxInstances: options.maxInstancesPerFunction,
    onMetrics: (fn, record) => alarms.metrics(fn, record),
  });
  lambdasRef = lambdas;
  cleanups.push(() => lambdas.close());
  // One offer-worker instance starts with the cloud (an empty batch), as the queue's event source is always polling:
  // a campaign's first offer should not wait for a worker thread's cold start (seconds on a loaded machine).
  void lambdas.invoke('offer-worker', { Records: [] }).catch(() => {});
  const loadHandler = options.loadHandler ?? lambdas.handlerLoader;

  const rules = startRulesRouter({
    source: broker,
    ruleName: LOCAL_INGEST_RULE,
    invoke: (event) => lambdas.invoke('ingest', event),
    deadLetterFile: join(dataDir, 'rules-dead-letters.jsonl'),
    ...(options.rulesMaxQueued ? { maxQueued: options.rulesMaxQueued } : {}),
    batchWindowMs: options.ingestBatchWindowMs ?? 0,
    ...(options.ingestBatchSize !== undefined ? { batchSize: options.ingestBatchSize } : {}),
    ...(logger ? { log: logger } : {}),
  });
  cleanups.push(() => rules.stop());
  // The dead-letter queues' depth sampled each second, as CloudWatch samples ApproximateNumberOfMessagesVisible.
  const sampleDeadLetters = setInterval(() => {
    alarms.deadLetters('jobs', jobs.stats.deadLettered);
    alarms.deadLetters('offers', offers.stats.deadLettered);
    // All the ingest path dead-lettered (the router keeps only the latest 1,000 in memory).
    alarms.deadLetters('ingest', rules.stats().failed);
  }, 1000);
  sampleDeadLetters.unref();
  cleanups.push(async () => clearInterval(sampleDeadLetters));

  // The campaign engine's schedule, and the freshness statement's (both EventBridge Scheduler on AWS, both served
  // by the campaign-tick function): one run at a time, the next one a period after the previous finished.
  const tickMs = options.campaignTickMs ?? 1000;
  if (tickMs > 0 && !options.loadHandler) {
    const schedule = startLocalSchedule(
      'campaign tick',
      tickMs,
      () => lambdas.invoke('campaign-tick', {}),
      options.logger,
    );
    cleanups.push(() => schedule.stop());
  }
  const freshnessMs = options.freshnessPeriodMs ?? DEFAULT_FRESHNESS_PERIOD_MS;
  const publishFreshness = () => lambdas.invoke('campaign-tick', FRESHNESS_JOB);
  if (freshnessMs > 0 && !options.loadHandler) {
    const schedule = startLocalSchedule('freshness statement', freshnessMs, publishFreshness, options.logger);
    cleanups.push(() => schedule.stop());
  }

  // The gateway records its own refusals (a role calling a route it may not) in the same audit table.
  const auditDb = new DynamoDBClient({
    endpoint: dynamo.endpoint,
    region: LOCAL_REGION,
    credentials,
    requestHandler: { httpsAgent: trustingAgent(ca.certPem) },
  });
  cleanups.push(async () => auditDb.destroy());
  const auditLog = new DynamoAuditLog(documentClient(auditDb), tables.audit);
  const gateway = await service('API gateway', ports.api, () =>
    LocalGateway.start({
      tls,
      port: ports.api,
      adminToken: admin.token,
      // `ota --aws` against the local cloud: operator requests signed with the local credentials pass, as IAM would.
      sigv4: { credentials, region: LOCAL_REGION },
      operators,
      audit: (entry) => auditLog.append(entry),
      console: {
        dir: options.consoleDir ?? CONSOLE_DIST,
        config: { mode: 'local', region: LOCAL_REGION, apiPath: '' },
        uploadOrigins: [s3.endpoint],
      },
      loadHandler,
      throttle: options.throttle,
      logger: options.logger,
      localRoutes: { '/local/alerts': () => ({ alerts: alarms.list() }) },
    }),
  );
  cleanups.push(() => gateway.close());
  // The emulators have created their stores under the process umask meanwhile: tighten those files too. Files
  // made later while running sit in 0700 folders, and are tightened again at stop.
  ensurePrivateTree(dataDir);

  return {
    endpoints: {
      api: gateway.url,
      console: `${gateway.url}/console/`,
      s3: s3.endpoint,
      dynamodb: dynamo.endpoint,
      mqtt: broker.url,
      iotData: iotData.url,
    },
    broker,
    rules,
    jobs,
    offers,
    lambdas,
    s3ServedBytes: (keyPart) => s3.servedBytes(keyPart),
    caCertPem: ca.certPem,
    caFile: ca.certFile,
    adminToken: admin.token,
    adminTokenFile: admin.file,
    operators,
    operatorsFile,
    releaseKeyFiles: release.files,
    signingKeyFile,
    credentials,
    bucket: FIRMWARE_BUCKET,
    tables,
    dataDir,
    alarms,
    publishFreshness,
    operations: () => operationTally().snapshot(),
    ingestRuleName: LOCAL_INGEST_RULE,
    operationCounts: () => operationTally().flat(),
    resetOperations: () => operationTally().reset(),
  };
}

/** Starts one server, naming it in the error so a taken port says which part of the cloud could not start. */
async function service<T>(name: string, port: number, begin: () => Promise<T>): Promise<T> {
  try {
    return await begin();
  } catch (err) {
    const where = port === 0 ? 'on a free port' : `on port ${port}`;
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`Local cloud: the ${name} could not start ${where}: ${why}`, { cause: err });
  }
}

/** A fresh state folder, removed when the cloud stops (registered first, so it goes after every server). */
function temporaryDir(cleanups: (() => Promise<void>)[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'ota-local-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Sets the variables (undefined unsets) and answers a function that puts the previous values back. */
function setEnv(env: Record<string, string | undefined>): () => Promise<void> {
  const previous = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(env);
  return async () => apply(previous);
}
