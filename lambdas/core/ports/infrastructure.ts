/** Ports for the outside services: history, object store, certificates, clock, publishers, queues, freshness. */
import type { Readable } from 'node:stream';
import type { ProofStep, SignedFreshness } from '../../../protocol/freshness.js';
import type { UpdateOffer } from '../../../protocol/offer.js';
import type { HistoryEvent } from './campaigns.js';
import type { FreshnessAlertRecord } from './vehicles.js';

/** A vehicle's status history, newest first: read from its update items (update-history.ts). */
export interface HistoryRepository {
  listForVehicle(vin: string, limit: number): Promise<HistoryEvent[]>;
}

export interface UploadTarget {
  readonly method: 'PUT';
  readonly url: string;
  readonly expiresAt: string;
}
export interface MultipartUploadTarget {
  readonly uploadId: string;
  readonly partSize: number;
  readonly parts: { readonly partNumber: number; readonly url: string }[];
  readonly expiresAt: string;
}

export interface ObjectStore {
  presignGet(key: string, versionId: string | undefined, ttlSeconds: number): Promise<string>;
  presignPut(key: string, size: number, ttlSeconds: number): Promise<string>;
  createMultipartUpload(
    key: string,
    size: number,
    partSize: number,
    ttlSeconds: number,
  ): Promise<MultipartUploadTarget>;
  completeMultipartUpload(
    key: string,
    uploadId: string,
    parts: { partNumber: number; etag: string }[],
  ): Promise<void>;
  head(key: string): Promise<{ size: number; versionId?: string } | undefined>;
  /** The object's bytes from offset start (a ranged GET) to its end, or to endInclusive. */
  read(key: string, versionId?: string, start?: number, endInclusive?: number): Promise<Readable>;
  /** Writes a small object (a campaign's inline VIN list). */
  put(key: string, body: string): Promise<void>;
  /** With a versionId, removes only that version (a versioned bucket keeps the others). */
  delete(key: string, versionId?: string): Promise<void>;
  /**
   * Makes a verified object version permanent: no overwrite, no deletion, no lifecycle expiry (S3 Object Lock legal
   * hold on that version; the local S3 front refuses every later write or delete of the key).
   */
  protect(key: string, versionId: string | undefined): Promise<void>;
}

export interface IssuedCertificate {
  readonly certificatePem: string;
  readonly certificateId: string;
}

export interface CertificateIssuer {
  /** Creates the vehicle's identity (IoT thing + certificate on AWS) from a verified CSR. */
  issue(vin: string, csrPem: string): Promise<IssuedCertificate>;
  /**
   * Revokes a certificate (IoT Core: status REVOKED, so connections with it are refused; locally: the broker's
   * revocation list). Also the undo when registration loses a race.
   */
  revoke(vin: string, certificateId: string): Promise<void>;
}

export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };

/** Publishes offers to vehicles (IoT Data Plane on AWS and on the local cloud). */
export interface OfferPublisher {
  publish(vin: string, offer: UpdateOffer): Promise<void>;
}

/** Background jobs: an SQS queue feeding the jobs-worker function on AWS, a local stand-in on the local cloud. */
export interface JobQueue {
  send(job: import('../jobs.js').Job): Promise<void>;
}

/** Freshness statements (lambdas/core/freshness.ts): the leaves they commit to and where they are kept. */
export interface FreshnessRepository {
  /** A page of (VIN, latest offer counter), 0 for a vehicle never offered anything: a scan of the vehicles. */
  latestOffers(cursor?: string): Promise<{ items: { vin: string; counter: number }[]; cursor?: string }>;
  /** The newest statement and how many buckets its leaves were stored in. */
  latest(): Promise<{ signed: SignedFreshness; bucketCount: number } | undefined>;
  /** One bucket of a statement: its leaves in order and its bucket root's path to the statement root. */
  bucket(
    sequence: number,
    index: number,
  ): Promise<{ leaves: { vin: string; counter: number }[]; path: ProofStep[] } | undefined>;
  /** Stores a statement's buckets, then the statement; false when a statement of that sequence exists already. */
  publish(
    signed: SignedFreshness,
    buckets: readonly { leaves: { vin: string; counter: number }[]; path: ProofStep[] }[],
    expiresAtSeconds: number,
  ): Promise<boolean>;
  /** Records the vehicle's latest freshness alert on its record. */
  recordAlert(vin: string, alert: FreshnessAlertRecord): Promise<void>;
}
