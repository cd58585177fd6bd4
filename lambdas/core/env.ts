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
  tableExclusions: 'TABLE_EXCLUSIONS',
  firmwareBucket: 'FIRMWARE_BUCKET',
  /** Seconds a presigned download or upload URL stays valid. */
  presignTtlSeconds: 'PRESIGN_TTL_SECONDS',
  /** Seconds a vehicle bearer token stays valid. */
  tokenTtlSeconds: 'TOKEN_TTL_SECONDS',
  /** Requests a vehicle may make per minute on the vehicle routes. */
  vehicleRatePerMinute: 'VEHICLE_RATE_PER_MINUTE',
  /** Images larger than this many bytes are uploaded in parts (S3 multipart). */
  multipartThresholdBytes: 'MULTIPART_THRESHOLD_BYTES',
  /** Part size of multipart uploads, in bytes (S3: at least 5 MiB). */
  multipartPartBytes: 'MULTIPART_PART_BYTES',
  /** Seconds between campaign engine ticks (the schedule's period). */
  campaignTickSeconds: 'CAMPAIGN_TICK_SECONDS',
  /** Days a status history item is kept. */
  historyRetentionDays: 'HISTORY_RETENTION_DAYS',
  /** JSON array of PEM (SPKI) public keys of the OEM release keys the backend accepts. */
  releasePublicKeys: 'RELEASE_PUBLIC_KEYS',
  /** KMS key (ECC_NIST_P256, SIGN_VERIFY) that signs vehicle tokens and assignments, on AWS. */
  signingKeyArn: 'SIGNING_KEY_ARN',
  /** PEM file of the backend signing key, on the local cloud (used when SIGNING_KEY_ARN is unset). */
  localSigningKeyFile: 'LOCAL_SIGNING_KEY_FILE',
  /** IoT policy attached to every vehicle certificate, on AWS. */
  iotPolicyName: 'IOT_POLICY_NAME',
  /** IoT thing type of vehicles, on AWS. */
  iotThingType: 'IOT_THING_TYPE',
  /** Folder of the local CA (ca.key.pem, ca.cert.pem) that signs vehicle CSRs, on the local cloud. */
  localCaDir: 'LOCAL_CA_DIR',
  /** PEM file of a CA to trust for AWS endpoints (the local cloud's CA). */
  endpointCaFile: 'OTA_ENDPOINT_CA_FILE',
} as const;

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
