/**
 * Builds the adapters a function needs from its environment, once per cold start. Each getter reads only the
 * variables it needs and fails fast when one is missing, so a misconfigured function fails at init, not midway.
 */

import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { TrustedKey } from '../../protocol/signatures.js';
import { KeyFileSigner, type Signer, trustedKeysFromPems } from '../../protocol/signatures.js';
import { ENV, optionalEnv, requireEnv, settings } from '../core/env.js';
import { FreshnessService } from '../core/freshness.js';
import { systemClock } from '../core/ports.js';
import { clientConfig } from './aws-clients.js';
import { DynamoAuditLog } from './dynamo-audit.js';
import { DynamoCampaignRepository } from './dynamo-campaigns.js';
import { DynamoChallengeRepository } from './dynamo-challenges.js';
import { documentClient } from './dynamo-common.js';
import { DynamoCounterRepository } from './dynamo-counters.js';
import { DynamoExclusionRepository } from './dynamo-exclusions.js';
import { DynamoFreshnessRepository } from './dynamo-freshness.js';
import { DynamoPreparationRepository } from './dynamo-preparation.js';
import { DynamoBundleRepository, DynamoReleaseRepository } from './dynamo-releases.js';
import { DynamoUpdateRepository } from './dynamo-updates.js';
import { DynamoVehicleRepository } from './dynamo-vehicles.js';
import { counted, countingMode } from './operation-counter.js';
import { S3ObjectStore } from './s3-object-store.js';
import { S3Presigner } from './s3-presigner.js';
import { CountingSigner, KmsSigner } from './signers.js';
import { SqsJobQueue, SqsOfferQueue } from './sqs-job-queue.js';
import { traceClient } from './tracing.js';

export const logger = new Logger();
export const metrics = new Metrics();

let dynamo: DynamoDBDocumentClient | undefined;
function db(): DynamoDBDocumentClient {
  dynamo ??= documentClient(counted(traceClient(new DynamoDBClient(clientConfig('DYNAMODB')))));
  return dynamo;
}

export const repositories = {
  releases: () => new DynamoReleaseRepository(db(), requireEnv(ENV.tableReleases)),
  bundles: () => new DynamoBundleRepository(db(), requireEnv(ENV.tableReleases)),
  vehicles: () => new DynamoVehicleRepository(db(), requireEnv(ENV.tableVehicles)),
  updates: () =>
    new DynamoUpdateRepository(db(), requireEnv(ENV.tableUpdates), optionalEnv(ENV.tableCounters)),
  counters: () => new DynamoCounterRepository(db(), requireEnv(ENV.tableCounters)),
  campaigns: () => new DynamoCampaignRepository(db(), requireEnv(ENV.tableCampaigns)),
  preparation: () => new DynamoPreparationRepository(db(), requireEnv(ENV.tableCampaigns)),
  challenges: () => new DynamoChallengeRepository(db(), requireEnv(ENV.tableChallenges)),
  exclusions: () => new DynamoExclusionRepository(db(), requireEnv(ENV.tableExclusions)),
  audit: () => new DynamoAuditLog(db(), requireEnv(ENV.tableAudit)),
  freshness: () =>
    new DynamoFreshnessRepository(db(), {
      vehicles: requireEnv(ENV.tableVehicles),
      freshness: requireEnv(ENV.tableFreshness),
    }),
};

// One SDK client per service and function instance: each construction resolves its whole configuration and
// middleware stack, a few milliseconds of init apiece (npm run bench:cold-start), and two clients of a service in
// one process gain nothing, since they share the same credentials and connection pool settings.
let s3: S3Client | undefined;
export function objectStore(): S3ObjectStore {
  s3 ??= counted(traceClient(new S3Client(clientConfig('S3'))));
  return new S3ObjectStore(s3, requireEnv(ENV.firmwareBucket));
}

/**
 * Download links only (FIRMWARE_BUCKET), signed without the S3 client: for functions that never call S3, so that
 * their bundle leaves @aws-sdk/client-s3 out (see s3-presigner.ts).
 */
export function objectPresigner(): S3Presigner {
  return new S3Presigner(requireEnv(ENV.firmwareBucket));
}

let kms: KMSClient | undefined;
function kmsClient(): KMSClient {
  kms ??= counted(traceClient(new KMSClient(clientConfig('KMS'))));
  return kms;
}

/** The background jobs queue (JOB_QUEUE_URL): SQS on AWS, the local stand-in on the local cloud. */
export function jobQueue(): SqsJobQueue {
  return new SqsJobQueue(requireEnv(ENV.jobQueueUrl), requireEnv('AWS_REGION'));
}

/** The campaign offers queue (OFFER_QUEUE_URL): SQS on AWS, the local stand-in on the local cloud. */
export function offerQueue(): SqsOfferQueue {
  return new SqsOfferQueue(requireEnv(ENV.offerQueueUrl), requireEnv('AWS_REGION'));
}

/** KMS on AWS (SIGNING_KEY_ARN); a key file on the local cloud (LOCAL_SIGNING_KEY_FILE). */
export function backendSigner(): Signer {
  return countedSigner('backend', optionalEnv(ENV.signingKeyArn), ENV.localSigningKeyFile);
}

/**
 * The key that signs vehicle bearer tokens, never assignments: KMS on AWS (TOKEN_SIGNING_KEY_ARN), a key file on
 * the local cloud (LOCAL_TOKEN_SIGNING_KEY_FILE).
 */
export function tokenSigner(): Signer {
  return countedSigner('token', optionalEnv(ENV.tokenSigningKeyArn), ENV.localTokenSigningKeyFile);
}

/** KMS when a key ARN is set, else the local key file; its signatures counted per key when counting is on. */
function countedSigner(label: string, arn: string | undefined, localKeyFileVar: string): Signer {
  const signer = arn ? new KmsSigner(kmsClient(), arn) : KeyFileSigner.fromFile(requireEnv(localKeyFileVar));
  return countingMode() === 'off' ? signer : new CountingSigner(signer, label, !arn);
}

/** The freshness role over the tables, signing with the backend key (the tick publishes, vehicle-api serves). */
export function freshnessService(signer: Signer): FreshnessService {
  return new FreshnessService({
    repo: repositories.freshness(),
    signer,
    clock: systemClock,
    periodSeconds: settings.freshnessPeriodSeconds(),
    maxVehicles: settings.freshnessMaxVehicles(),
  });
}

/** The backend's public key as a trusted key set, fetched once and cached for the life of the function. */
export function backendVerificationKeys(signer: Signer): () => Promise<readonly TrustedKey[]> {
  let keys: Promise<readonly TrustedKey[]> | undefined;
  return () => {
    keys ??= signer.publicKeyPem().then((pem) => trustedKeysFromPems([pem]));
    keys.catch(() => {
      keys = undefined;
    });
    return keys;
  };
}

export function releaseKeys(): readonly TrustedKey[] {
  const raw = optionalEnv(ENV.releasePublicKeys) ?? '[]';
  const pems = JSON.parse(raw) as unknown;
  if (!Array.isArray(pems) || !pems.every((p) => typeof p === 'string')) {
    throw new Error(`${ENV.releasePublicKeys} must be a JSON array of PEM strings`);
  }
  return trustedKeysFromPems(pems);
}

export { settings };
