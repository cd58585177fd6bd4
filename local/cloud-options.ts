/**
 * What the local cloud takes (ports, options) and what it hands back (endpoints, stand-ins, files), apart from
 * local/cloud.ts, which starts it.
 */
import type { OperationDelta, OperationsSnapshot } from '../lambdas/adapters/operation-counter.js';
import type { AlertThresholds } from '../lambdas/core/alerts.js';
import type { FunctionSettings, LambdaName } from '../lambdas/core/functions.js';
import type { TableDefinition } from '../lambdas/core/tables.js';
import type { LocalAlarms } from './alarms.js';
import type { GatewayLogger, HandlerLoader, ThrottleSettings } from './gateway.js';
import type { LocalJobQueue, LocalJobQueueProps } from './job-queue.js';
import type { LocalLambdas } from './lambda-runtime.js';
import type { MqttBroker } from './mqtt-broker.js';
import type { LocalOperatorAccount } from './operator-accounts.js';
import type { RulesRouter } from './rules-router.js';
import type { LocalCredentials } from './sigv4.js';

export interface LocalCloudPorts {
  readonly api?: number;
  readonly s3?: number;
  readonly dynamodb?: number;
  /** MQTT over mutual TLS (the IoT Core stand-in). */
  readonly mqtt?: number;
  /** IoT Data Plane API (Publish) stand-in. */
  readonly iotData?: number;
  /** Background jobs queue (SQS SendMessage) stand-in. @default 0 (any free port) */
  readonly jobs?: number;
  /** Campaign offers queue (SQS) stand-in. @default 0 (any free port) */
  readonly offers?: number;
}

export interface LocalCloudOptions {
  /**
   * Folder for all state: CA, keys, admin token, S3 objects, DynamoDB data.
   * @default a new temporary folder, removed by stop() (`npm start` passes .ota-local)
   */
  readonly dataDir?: string;
  /** 0 picks a free port. @default all 0; only `npm start` asks for DEFAULT_PORTS */
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
  /** Login challenges issued per VIN per minute. @default DEFAULTS.challengesPerVinPerMinute (600) */
  readonly challengesPerVinPerMinute?: number;
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
  /** The jobs-worker function's timeout and its queue's redelivery settings (local/job-queue.ts). */
  readonly jobs?: Pick<LocalJobQueueProps, 'timeoutMs' | 'visibilityTimeoutMs' | 'maxReceiveCount'>;
  /**
   * Period of the freshness statement (EventBridge Scheduler on AWS); 0 turns the loop off (publishFreshness()
   * still publishes one on demand).
   * @default 60000
   */
  readonly freshnessPeriodMs?: number;
  /**
   * The built operator console to serve at /console/ (bin/console-bundle.ts writes it).
   * @default dist/console of this repository
   */
  readonly consoleDir?: string;
  /** MQTT connections the broker accepts at once (IoT Core has no such small cap). @default 1000 */
  readonly mqttMaxConnections?: number;
  /**
   * Vehicle messages the ingest queue stand-in holds before it dead-letters more (SQS holds any number on AWS).
   * @default 10000
   */
  readonly rulesMaxQueued?: number;
  /**
   * How long a partial batch of vehicle messages waits for more before the ingest function gets it. With 0 a batch
   * is what waits when an invocation is free (Lambda with no batching window): batches fill only under load, and a
   * test that follows one message at a time does not wait. `npm start` and the fleet simulator pass the deployed
   * window, INGEST_EVENT_SOURCE.maxBatchingWindowSeconds.
   * @default 0
   */
  readonly ingestBatchWindowMs?: number;
  /**
   * Vehicle messages per ingest invocation (1: one invocation per message, the rule's former Lambda action, for a
   * baseline to compare with). @default INGEST_EVENT_SOURCE.batchSize, as deployed
   */
  readonly ingestBatchSize?: number;
  /** Thresholds of the local operator alarms (local/alarms.ts). @default DEFAULT_ALERT_THRESHOLDS */
  readonly alertThresholds?: Partial<AlertThresholds>;
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
    /** The operator console (same origin as the API). */
    readonly console: string;
    readonly iotData: string;
  };
  /** The broker, for tests that need to observe or restart it. */
  readonly broker: LocalBroker;
  /** Body bytes the S3 emulator served to GETs of paths containing `keyPart` (0 with an external S3). */
  s3ServedBytes(keyPart?: string): number;
  /** Stand-in for the IoT topic rules: vehicle progress/status -> the ingest handler. */
  readonly rules: RulesRouter;
  /** The topic rule's name, for Basic Ingest topics (`$aws/rules/<name>/vehicle/updates/{VIN}/...`). */
  readonly ingestRuleName: string;
  /** Stand-in for the background jobs queue feeding the jobs-worker function. */
  readonly jobs: LocalJobQueue;
  /** Stand-in for the campaign offers queue feeding the offer-worker function (pacer steps and offers). */
  readonly offers: LocalJobQueue;
  /** The functions' instances (worker threads), for tests that observe or invoke them. */
  readonly lambdas: LocalLambdas;
  readonly caCertPem: string;
  /** The CA certificate file to trust (NODE_EXTRA_CA_CERTS, curl --cacert). */
  readonly caFile: string;
  readonly adminToken: string;
  /**
   * The local operator accounts, one per role (viewer, operator, release-manager, admin), with the SigV4
   * credentials the CLI (`ota --as <role>`) and the console sign with; kept in operatorsFile (0600).
   */
  readonly operators: readonly LocalOperatorAccount[];
  readonly operatorsFile: string;
  /** Where the admin token is kept; undefined when it was passed in the options. */
  readonly adminTokenFile: string | undefined;
  /** The development release key pair, when no releasePublicKeys were given. */
  readonly releaseKeyFiles: { readonly privateKey: string; readonly publicKey: string } | undefined;
  readonly signingKeyFile: string;
  /**
   * The access key of the S3 emulator, the DynamoDB emulator and the IoT Data shim: random per data folder, made on
   * first start and kept in <dataDir>/emulator-credentials.json (0600). Requests signed with anything else are
   * refused. (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY instead with an external AWS_ENDPOINT_URL.)
   */
  readonly credentials: LocalCredentials;
  readonly bucket: string;
  /** Logical table name -> physical name. */
  readonly tables: Readonly<Record<TableDefinition['name'], string>>;
  readonly dataDir: string;
  /** The operator alarms: alert records in <dataDir>/alerts.jsonl, listed by GET /local/alerts (`ota alerts`). */
  readonly alarms: LocalAlarms;
  /** Publishes the next freshness statement now, as its schedule does (answers what the job answered). */
  publishFreshness(): Promise<unknown>;
  /**
   * The AWS operations the backend made since start or resetOperations(), counted where they are made (the
   * functions' SDK clients and signers in every instance, the broker, the queue; operation-counter.ts). Complete
   * for every invocation that has answered; an instance stopped at its timeout loses its last invocation's counts.
   */
  operations(): OperationsSnapshot;
  /** The same counts, flat ("dynamodb.write.<table>": n), for diffOperations() between two points of a run. */
  operationCounts(): OperationDelta;
  resetOperations(): void;
  /** Closes every server and restores the environment variables the cloud set. */
  stop(): Promise<void>;
}
