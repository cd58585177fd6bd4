/**
 * Environment contract between the CDK stack (or the local cloud) and the functions. Names live here once; the
 * stack's bind helpers and the local cloud set exactly these.
 */
export const ENV = {
  tableReleases: 'TABLE_RELEASES',
  tableVehicles: 'TABLE_VEHICLES',
  tableUpdates: 'TABLE_UPDATES',
  tableHistory: 'TABLE_HISTORY',
  tableCampaigns: 'TABLE_CAMPAIGNS',
  tableChallenges: 'TABLE_CHALLENGES',
  tableFreshness: 'TABLE_FRESHNESS',
  tableExclusions: 'TABLE_EXCLUSIONS',
  tableAudit: 'TABLE_AUDIT',
  firmwareBucket: 'FIRMWARE_BUCKET',
  /** Seconds a presigned download or upload URL stays valid. */
  presignTtlSeconds: 'PRESIGN_TTL_SECONDS',
  /** Seconds a vehicle bearer token stays valid. */
  tokenTtlSeconds: 'TOKEN_TTL_SECONDS',
  /** Login challenges issued per VIN per minute (POST /auth/challenge); more answer 429. */
  challengesPerVinPerMinute: 'CHALLENGES_PER_VIN_PER_MINUTE',
  /** Requests a vehicle may make per minute on the vehicle routes. */
  vehicleRatePerMinute: 'VEHICLE_RATE_PER_MINUTE',
  /** MQTT reports per second one vehicle may sustain through ingest (per function instance). */
  ingestVinRatePerSecond: 'INGEST_VIN_RATE_PER_SECOND',
  /** MQTT reports one vehicle may send at once through ingest (per function instance). */
  ingestVinBurst: 'INGEST_VIN_BURST',
  /** Images larger than this many bytes are uploaded in parts (S3 multipart). */
  multipartThresholdBytes: 'MULTIPART_THRESHOLD_BYTES',
  /** Part size of multipart uploads, in bytes (S3: at least 5 MiB). */
  multipartPartBytes: 'MULTIPART_PART_BYTES',
  /** Seconds between campaign engine ticks (the schedule's period). */
  campaignTickSeconds: 'CAMPAIGN_TICK_SECONDS',
  /** Seconds between freshness statements (the schedule's period); each is valid for 4 periods. */
  freshnessPeriodSeconds: 'FRESHNESS_PERIOD_SECONDS',
  /** Most vehicles one freshness statement may cover; a larger fleet fails the job loudly (the scan is bounded). */
  freshnessMaxVehicles: 'FRESHNESS_MAX_VEHICLES',
  /** Days a status history item is kept. */
  historyRetentionDays: 'HISTORY_RETENTION_DAYS',
  /** JSON array of PEM (SPKI) public keys of the OEM release keys the backend accepts. */
  releasePublicKeys: 'RELEASE_PUBLIC_KEYS',
  /** KMS key (ECC_NIST_P256, SIGN_VERIFY) that signs update assignments, on AWS. */
  signingKeyArn: 'SIGNING_KEY_ARN',
  /** PEM file of the backend signing key, on the local cloud (used when SIGNING_KEY_ARN is unset). */
  localSigningKeyFile: 'LOCAL_SIGNING_KEY_FILE',
  /**
   * How assignments are signed: "delegated" (unset: an online key per function instance, certified by the signing
   * key) or "direct" (the signing key itself, one KMS Sign per assignment; for fleets whose agents predate
   * delegation, see README).
   */
  assignmentSigning: 'ASSIGNMENT_SIGNING',
  /**
   * KMS key (ECC_NIST_P256, SIGN_VERIFY) that signs vehicle bearer tokens, on AWS: a key of its own, so the
   * unauthenticated auth function can never sign an assignment.
   */
  tokenSigningKeyArn: 'TOKEN_SIGNING_KEY_ARN',
  /** PEM file of the token signing key, on the local cloud (used when TOKEN_SIGNING_KEY_ARN is unset). */
  localTokenSigningKeyFile: 'LOCAL_TOKEN_SIGNING_KEY_FILE',
  /**
   * Static IoT thing group of vehicles, on AWS. The vehicle policy is attached to the group at deploy time;
   * registration only adds each new thing to it, so no function may attach a policy to a certificate.
   */
  iotThingGroup: 'IOT_THING_GROUP',
  /** IoT thing type of vehicles, on AWS. */
  iotThingType: 'IOT_THING_TYPE',
  /** Folder of the local CA (ca.key.pem, ca.cert.pem) that signs vehicle CSRs, on the local cloud. */
  localCaDir: 'LOCAL_CA_DIR',
  /** URL of the background jobs queue (SQS on AWS, local/job-queue.ts on the local cloud). */
  jobQueueUrl: 'JOB_QUEUE_URL',
  /** PEM file of a CA to trust for AWS endpoints (the local cloud's CA). */
  endpointCaFile: 'OTA_ENDPOINT_CA_FILE',
  /**
   * Counting of the backend's AWS operations (lambdas/adapters/operation-counter.ts): unset = off (no middleware),
   * `count` = in memory (the local cloud collects it), `emf` = also published as CloudWatch metrics per invocation.
   */
  operationCounting: 'OTA_OPERATION_COUNTING',
} as const;

/**
 * Defaults of the tunable settings, in one place: the functions fall back to them when a variable is unset, and
 * the CDK stack and the local cloud pass them on unless told otherwise.
 */
export const DEFAULTS = {
  presignTtlSeconds: 300,
  /**
   * An hour: one login covers a whole update (offer, download of a large image on a slow link, install, outcome),
   * so a vehicle logs in once per update. Revocation and re-registration are checked on every request, whatever
   * the token's age.
   */
  tokenTtlSeconds: 3600,
  vehicleRatePerMinute: 120,
  /**
   * Per-VIN login challenge cap: bounds the work and storage one VIN can cause, well above what a car needs (two
   * logins an hour) and above what one flooding address reaches once WAF limits /auth/* per address.
   */
  challengesPerVinPerMinute: 600,
  multipartThresholdBytes: 128 * 1024 * 1024,
  multipartPartBytes: 64 * 1024 * 1024,
  campaignTickSeconds: 60,
  historyRetentionDays: 90,
  ingestVinRatePerSecond: 5,
  ingestVinBurst: 200,
  freshnessPeriodSeconds: 300,
  freshnessMaxVehicles: 200_000,
} as const satisfies Partial<Record<keyof typeof ENV, number>>;

export class MissingConfigError extends Error {
  constructor(name: string) {
    super(`Missing required environment variable ${name}`);
    this.name = 'MissingConfigError';
  }
}

export function requireEnv(name: string, env: NodeJS.ProcessEnv = process.env): string {
  const value = env[name];
  if (value === undefined || value === '') throw new MissingConfigError(name);
  return value;
}

export function optionalEnv(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

export function intEnv(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = optionalEnv(name, env);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0)
    throw new Error(`Environment variable ${name} must be a positive integer`);
  return n;
}

/** The tunable settings a function reads, each from its variable or its default. */
export const settings = Object.fromEntries(
  Object.entries(DEFAULTS).map(([name, fallback]) => [
    name,
    (env: NodeJS.ProcessEnv = process.env) => intEnv(ENV[name as keyof typeof DEFAULTS], fallback, env),
  ]),
) as { readonly [K in keyof typeof DEFAULTS]: (env?: NodeJS.ProcessEnv) => number };

/** ENV.assignmentSigning: "delegated" unless set to "direct"; anything else is a configuration error. */
export function assignmentSigning(env: NodeJS.ProcessEnv = process.env): 'delegated' | 'direct' {
  const raw = optionalEnv(ENV.assignmentSigning, env) ?? 'delegated';
  if (raw !== 'delegated' && raw !== 'direct') {
    throw new Error(`Environment variable ${ENV.assignmentSigning} must be "delegated" or "direct"`);
  }
  return raw;
}
