/**
 * The local cloud: the backend on one machine, no AWS account. An S3 emulator and a DynamoDB emulator serve TLS
 * with a certificate from the local CA, the tables come from the same TABLES definition as the CDK stack, and the
 * same Lambda handler modules run behind a local API Gateway. Everything binds 127.0.0.1 and keeps its state in
 * one folder, so a restart finds its data, keys and CA again.
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Agent, createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { rootCertificates } from 'node:tls';
import S3rver from '@20minutes/s3rver';
import {
  type AttributeDefinition,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  type KeySchemaElement,
  ResourceNotFoundException,
  type TableDescription,
} from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import dynalite from 'dynalite';
import { ENV } from '../lambdas/core/env.js';
import type { FunctionSettings, LambdaName } from '../lambdas/core/functions.js';
import { TABLES, type TableDefinition } from '../lambdas/core/tables.js';
import { LocalCa, type TlsMaterial } from './ca.js';
import { readIfExists, readPrivateFile, writePrivateFile, writePublicFile } from './files.js';
import {
  closeServer,
  type GatewayLogger,
  type HandlerLoader,
  LocalGateway,
  listen,
  type ThrottleSettings,
} from './gateway.js';
import { startIotDataShim } from './iot-data-shim.js';
import { LocalLambdas } from './lambda-runtime.js';
import { type MqttBroker, startMqttBroker } from './mqtt-broker.js';
import { type RulesRouter, startRulesRouter, type TopicRuleEvent } from './rules-router.js';

export const LOCAL_REGION = 'us-east-1';
/** s3rver's built-in account; dynalite accepts any credentials (it does not check signatures). */
export const LOCAL_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
export const FIRMWARE_BUCKET = 'ota-firmware';

import { DEFAULT_PORTS } from './ports.js';

export { DEFAULT_PORTS };

export interface LocalCloudPorts {
  readonly api?: number;
  readonly s3?: number;
  readonly dynamodb?: number;
  /** MQTT over mutual TLS (the IoT Core stand-in). */
  readonly mqtt?: number;
  /** IoT Data Plane API (Publish) stand-in. */
  readonly iotData?: number;
}

export interface LocalCloudOptions {
  /** Folder for all state: CA, keys, admin token, S3 objects, DynamoDB data. @default '.ota-local' */
  readonly dataDir?: string;
  /** 0 picks a free port (tests). @default DEFAULT_PORTS */
  readonly ports?: LocalCloudPorts;
  /**
   * PEM (SPKI) public keys of the OEM release keys to trust. @default a development release key pair made once
   * in <dataDir>/keys (release.key.pem, release.pub.pem), so a newcomer can sign and publish right away
   */
  readonly releasePublicKeys?: readonly string[];
  /** Bearer token for operator routes. @default a random token kept in <dataDir>/admin-token */
  readonly adminToken?: string;
  /** @default 300 */
  readonly presignTtlSeconds?: number;
  /**
   * Stand-in handlers run in this process (tests of the gateway itself); they cannot be stopped at their timeout.
   * @default lambdas/<fn>/handler.ts in worker threads with the function's timeout and memory (lambda-runtime.ts)
   */
  readonly loadHandler?: HandlerLoader;
  /** Overrides of the functions' timeout and memory. @default FUNCTION_SETTINGS, as deployed */
  readonly functionSettings?: Partial<Record<LambdaName, FunctionSettings>>;
  /** Concurrent warm instances per function. @default 4 */
  readonly maxInstancesPerFunction?: number;
  /** Gateway throttling per source IP. @default { ratePerSecond: 100, burst: 200 } */
  readonly throttle?: ThrottleSettings;
  /** @default JSON lines on stderr */
  readonly logger?: GatewayLogger;
  /**
   * Period of the campaign engine's tick (EventBridge Scheduler on AWS); 0 turns the loop off.
   * @default 1000
   */
  readonly campaignTickMs?: number;
  /** Target of the local topic rule. @default the handler of lambdas/ingest/handler.ts */
  readonly ingest?: (event: TopicRuleEvent) => Promise<unknown>;
}

export interface LocalBroker extends MqttBroker {
  /**
   * Stops the broker and starts a new one on the same port after downMs, as a broker outage would. Sessions are
   * in memory: persistent sessions and queued messages do not survive (IoT Core keeps them; agents must cope).
   */
  restart(downMs?: number): Promise<void>;
}

export interface LocalCloud {
  readonly endpoints: {
    readonly api: string;
    readonly s3: string;
    readonly dynamodb: string;
    /** mqtts://127.0.0.1:port */
    readonly mqtt: string;
    readonly iotData: string;
  };
  /** The broker, for tests that need to observe or restart it. */
  readonly broker: LocalBroker;
  /** Stand-in for the IoT topic rules: vehicle progress/status -> the ingest handler. */
  readonly rules: RulesRouter;
  /** The functions' instances (worker threads), for tests that observe or invoke them. */
  readonly lambdas: LocalLambdas;
  readonly caCertPem: string;
  /** The CA certificate file to trust (NODE_EXTRA_CA_CERTS, curl --cacert). */
  readonly caFile: string;
  readonly adminToken: string;
  /** Where the admin token is kept; undefined when it was passed in the options. */
  readonly adminTokenFile: string | undefined;
  /** The development release key pair, when no releasePublicKeys were given. */
  readonly releaseKeyFiles: { readonly privateKey: string; readonly publicKey: string } | undefined;
  readonly signingKeyFile: string;
  readonly bucket: string;
  /** Logical table name -> physical name. */
  readonly tables: Readonly<Record<TableDefinition['name'], string>>;
  readonly dataDir: string;
  /** Closes every server and restores the environment variables the cloud set. */
  stop(): Promise<void>;
}

let running = false;

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
  const dataDir = resolve(options.dataDir ?? '.ota-local');
  const ports = { ...DEFAULT_PORTS, ...options.ports };

  const ca = await LocalCa.open(join(dataDir, 'ca'));
  const tls = await ca.serverCertificate();
  const signingKeyFile = ensureEcKey(join(dataDir, 'keys', 'backend-signing.key.pem'));
  const release = options.releasePublicKeys
    ? { pems: options.releasePublicKeys.map(checkPublicKey), files: undefined }
    : devReleaseKey(join(dataDir, 'keys'));
  const admin = adminTokenFrom(options.adminToken, join(dataDir, 'admin-token'));

  // AWS_ENDPOINT_URL (e.g. LocalStack) replaces the embedded S3 and DynamoDB emulators; the rest stays local.
  const external = process.env.AWS_ENDPOINT_URL;
  const credentials = external
    ? {
        accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'test',
        secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'test',
      }
    : LOCAL_CREDENTIALS;
  const s3 = external
    ? { endpoint: external, close: async () => {} }
    : await startS3(tls, ports.s3, join(dataDir, 's3'));
  cleanups.push(s3.close);
  if (external) await ensureBucket(external, ca.certPem, credentials);
  const dynamo = external
    ? { endpoint: external, close: async () => {} }
    : await startDynamo(tls, ca.certPem, ports.dynamodb, join(dataDir, 'dynamodb'));
  cleanups.push(dynamo.close);

  const tables = Object.fromEntries(TABLES.map((t) => [t.name, `fleet-ota-${t.name}`])) as Record<
    TableDefinition['name'],
    string
  >;
  await ensureTables(dynamo.endpoint, ca.certPem, tables, credentials);

  const env: Record<string, string | undefined> = {
    ...Object.fromEntries(TABLES.map((t) => [t.envVar, tables[t.name]])),
    [ENV.firmwareBucket]: FIRMWARE_BUCKET,
    [ENV.presignTtlSeconds]: String(options.presignTtlSeconds ?? 300),
    [ENV.campaignTickSeconds]: String(Math.max(1, Math.round((options.campaignTickMs ?? 1000) / 1000))),
    [ENV.releasePublicKeys]: JSON.stringify(release.pems),
    [ENV.localSigningKeyFile]: signingKeyFile,
    [ENV.localCaDir]: ca.dir,
    [ENV.endpointCaFile]: ca.certFile,
    // AWS-only settings inherited from a shell would send the functions to real AWS services.
    [ENV.signingKeyArn]: undefined,
    [ENV.iotPolicyName]: undefined,
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
    POWERTOOLS_METRICS_DISABLED: process.env.POWERTOOLS_METRICS_DISABLED ?? 'true',
    POWERTOOLS_TRACE_ENABLED: process.env.POWERTOOLS_TRACE_ENABLED ?? 'false',
  };
  // The broker can be restarted on the same port (fault injection); the shim and the rules router talk to whichever
  // broker is current through this handle.
  const brokerProps = { key: tls.keyPem, cert: tls.certPem, ca: ca.certPem };
  let current = await startMqttBroker({ ...brokerProps, port: ports.mqtt });
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
  const iotData = await startIotDataShim({
    port: ports.iotData,
    key: tls.keyPem,
    cert: tls.certPem,
    broker,
    credentials,
    region: LOCAL_REGION,
  });
  cleanups.push(() => iotData.stop());
  env.AWS_ENDPOINT_URL_IOT_DATA_PLANE = iotData.url;

  cleanups.push(setEnv(env));
  // Instances start after the environment is set: each worker copies it at its cold start.
  const lambdas = new LocalLambdas({
    settings: options.functionSettings,
    maxInstances: options.maxInstancesPerFunction,
  });
  cleanups.push(() => lambdas.close());
  const loadHandler = options.loadHandler ?? lambdas.handlerLoader;

  const rules = startRulesRouter({
    source: broker,
    invoke: (event) => (options.ingest ? options.ingest(event) : lambdas.invoke('ingest', event)),
    deadLetterFile: join(dataDir, 'rules-dead-letters.jsonl'),
  });
  cleanups.push(() => rules.stop());

  // The campaign engine's schedule: one tick at a time, the next one a period after the previous finished.
  const tickMs = options.campaignTickMs ?? 1000;
  if (tickMs > 0 && !options.loadHandler) {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    let running: Promise<void> = Promise.resolve();
    const loop = () => {
      timer = setTimeout(() => {
        running = lambdas
          .invoke('campaign-tick', {})
          .then(
            () => undefined,
            (err: unknown) => {
              const extra = { error: err instanceof Error ? err.message : String(err) };
              if (options.logger) options.logger.error('campaign tick failed', extra);
              else
                process.stderr.write(
                  `${JSON.stringify({ level: 'ERROR', message: 'campaign tick failed', ...extra })}\n`,
                );
            },
          )
          .finally(() => {
            if (!stopped) loop();
          });
      }, tickMs);
    };
    loop();
    cleanups.push(async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    });
  }

  const gateway = await LocalGateway.start({
    tls,
    port: ports.api,
    adminToken: admin.token,
    // `ota --aws` against the local cloud: operator requests signed with the local credentials pass, as IAM would.
    sigv4: { credentials, region: LOCAL_REGION },
    loadHandler,
    throttle: options.throttle,
    logger: options.logger,
  });
  cleanups.push(() => gateway.close());

  return {
    endpoints: {
      api: gateway.url,
      s3: s3.endpoint,
      dynamodb: dynamo.endpoint,
      mqtt: broker.url,
      iotData: iotData.url,
    },
    broker,
    rules,
    lambdas,
    caCertPem: ca.certPem,
    caFile: ca.certFile,
    adminToken: admin.token,
    adminTokenFile: admin.file,
    releaseKeyFiles: release.files,
    signingKeyFile,
    bucket: FIRMWARE_BUCKET,
    tables,
    dataDir,
  };
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

interface Started {
  readonly endpoint: string;
  close(): Promise<void>;
}

/**
 * S3 on @20minutes/s3rver over TLS. s3rver lets unsigned requests through as if every bucket were public; a
 * private bucket on AWS refuses them, so this front answers 403 AccessDenied to any request without a signature.
 */
async function startS3(tls: TlsMaterial, port: number, directory: string): Promise<Started> {
  const s3rver = new S3rver({
    silent: true,
    directory,
    vhostBuckets: false,
    configureBuckets: [{ name: FIRMWARE_BUCKET, configs: [] }],
  });
  await s3rver.configureBuckets();
  const app = s3rver.callback();
  const server = createServer({ key: tls.keyPem, cert: tls.certPem, minVersion: 'TLSv1.2' }, (req, res) => {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const signed = 'authorization' in req.headers || query.has('X-Amz-Algorithm') || query.has('Signature');
    if (signed) return app(req, res);
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>';
    res.writeHead(403, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await listen(server, port);
  return {
    endpoint: endpointOf(server),
    close: async () => {
      await closeServer(server);
      s3rver.logger.close();
    },
  };
}

/** DynamoDB on dynalite over TLS, persisted with LevelDB in `path`. */
async function startDynamo(tls: TlsMaterial, caPem: string, port: number, path: string): Promise<Started> {
  const server = dynalite({
    ssl: true,
    key: tls.keyPem,
    cert: tls.certPem,
    // Without it dynalite falls back to the test CA it ships with.
    ca: caPem,
    path,
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  });
  await listen(server, port);
  return {
    endpoint: endpointOf(server),
    close: async () => {
      const timer = setTimeout(() => server.closeAllConnections(), 2000);
      timer.unref();
      server.closeIdleConnections();
      // dynalite's close also closes LevelDB once pending writes are done, which releases its lock.
      await new Promise<void>((done, fail) => server.close((err) => (err ? fail(err) : done())));
      clearTimeout(timer);
    },
  };
}

function endpointOf(server: Server): string {
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Creates the tables from TABLES when absent, and refuses to run on tables whose keys or indexes differ (an
 * older data folder). dynalite has no UpdateTimeToLive, so TTL is not configured locally: history never expires.
 */
/** Creates the firmware bucket on an external endpoint (LocalStack) when it is not there yet. */
async function ensureBucket(
  endpoint: string,
  caPem: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
) {
  const client = new S3Client({
    endpoint,
    region: LOCAL_REGION,
    credentials,
    forcePathStyle: true,
    requestHandler: { httpsAgent: new Agent({ ca: [...rootCertificates, caPem] }) },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: FIRMWARE_BUCKET })).catch(async () => {
      await client.send(new CreateBucketCommand({ Bucket: FIRMWARE_BUCKET }));
    });
  } finally {
    client.destroy();
  }
}

async function ensureTables(
  endpoint: string,
  caPem: string,
  names: Record<TableDefinition['name'], string>,
  credentials: { accessKeyId: string; secretAccessKey: string },
) {
  const client = new DynamoDBClient({
    endpoint,
    region: LOCAL_REGION,
    credentials,
    requestHandler: { httpsAgent: new Agent({ ca: [...rootCertificates, caPem] }) },
  });
  try {
    for (const table of TABLES) {
      const TableName = names[table.name];
      let existing = await describe(client, TableName);
      if (!existing) {
        const keys = (pk: string, sk?: string): KeySchemaElement[] => [
          { AttributeName: pk, KeyType: 'HASH' },
          ...(sk ? [{ AttributeName: sk, KeyType: 'RANGE' as const }] : []),
        ];
        const attributes = new Set([
          table.partitionKey,
          table.sortKey,
          ...table.indexes.flatMap((i) => [i.partitionKey, i.sortKey]),
        ]);
        await client.send(
          new CreateTableCommand({
            TableName,
            BillingMode: 'PAY_PER_REQUEST',
            KeySchema: keys(table.partitionKey, table.sortKey),
            AttributeDefinitions: [...attributes]
              .filter((a): a is string => a !== undefined)
              .map((AttributeName): AttributeDefinition => ({ AttributeName, AttributeType: 'S' })),
            ...(table.indexes.length
              ? {
                  GlobalSecondaryIndexes: table.indexes.map((i) => ({
                    IndexName: i.indexName,
                    KeySchema: keys(i.partitionKey, i.sortKey),
                    Projection: { ProjectionType: 'ALL' },
                  })),
                }
              : {}),
          }),
        );
        existing = await describe(client, TableName);
        for (let i = 0; existing?.TableStatus !== 'ACTIVE' && i < 100; i++) {
          await new Promise((r) => setTimeout(r, 20));
          existing = await describe(client, TableName);
        }
      }
      if (!existing || !matches(table, existing)) {
        throw new Error(
          `Table ${TableName} in the local data folder does not match lambdas/core/tables.ts; delete the data folder's ` +
            'dynamodb directory to recreate it',
        );
      }
    }
  } finally {
    client.destroy();
  }
}

async function describe(client: DynamoDBClient, TableName: string): Promise<TableDescription | undefined> {
  try {
    return (await client.send(new DescribeTableCommand({ TableName }))).Table;
  } catch (err) {
    if (err instanceof ResourceNotFoundException) return undefined;
    throw err;
  }
}

function matches(table: TableDefinition, actual: TableDescription): boolean {
  const key = (schema: KeySchemaElement[] | undefined) =>
    JSON.stringify([
      schema?.find((k) => k.KeyType === 'HASH')?.AttributeName,
      schema?.find((k) => k.KeyType === 'RANGE')?.AttributeName,
    ]);
  if (key(actual.KeySchema) !== JSON.stringify([table.partitionKey, table.sortKey])) return false;
  const indexes = actual.GlobalSecondaryIndexes ?? [];
  if (indexes.length !== table.indexes.length) return false;
  return table.indexes.every((want) => {
    const got = indexes.find((i) => i.IndexName === want.indexName);
    return got !== undefined && key(got.KeySchema) === JSON.stringify([want.partitionKey, want.sortKey]);
  });
}

/** An ECDSA P-256 PKCS#8 key file (0600), made once. */
function ensureEcKey(path: string): string {
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    writePrivateFile(path, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  } else {
    readPrivateFile(path);
  }
  return path;
}

function devReleaseKey(dir: string) {
  const privateKey = ensureEcKey(join(dir, 'release.key.pem'));
  const publicKey = join(dir, 'release.pub.pem');
  const pem = createPublicKey(readPrivateFile(privateKey)).export({ type: 'spki', format: 'pem' }).toString();
  if (readIfExists(publicKey) !== pem) writePublicFile(publicKey, pem);
  return { pems: [pem], files: { privateKey, publicKey } };
}

function checkPublicKey(pem: string): string {
  try {
    createPublicKey(pem);
  } catch (err) {
    throw new Error('releasePublicKeys must be PEM public keys', { cause: err });
  }
  return pem;
}

function adminTokenFrom(
  given: string | undefined,
  file: string,
): { token: string; file: string | undefined } {
  if (given !== undefined) {
    if (given.length < 16) throw new Error('adminToken must be at least 16 characters');
    return { token: given, file: undefined };
  }
  const stored = existsSync(file) ? readPrivateFile(file).trim() : undefined;
  if (stored && stored.length >= 16) return { token: stored, file };
  const token = randomBytes(32).toString('base64url');
  writePrivateFile(file, `${token}\n`);
  return { token, file };
}
