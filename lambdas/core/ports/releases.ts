import type { SignedManifest } from '../../../protocol/manifest.js';
import type { Page } from './updates.js';

/**
 * pending_upload -> verifying (publish asked; a background job hashes the object) -> published, or -> failed (the
 * object differs from the signed manifest). A failed release can be created again to upload anew. withdrawn: taken
 * back by an operator (kill switch); never offered again, and final.
 */
export type ReleaseStatus = 'pending_upload' | 'verifying' | 'published' | 'failed' | 'withdrawn';

/** Where a release's verification job is: saved after every chunk so a stopped worker resumes, not restarts. */
export interface VerificationCheckpoint {
  /** Bytes hashed and found to match so far (a multiple of the chunk size, or the whole size). */
  readonly bytesVerified: number;
  /** The whole-image SHA-256 state after those bytes (sha256-state.ts); absent at 0. */
  readonly hashState?: string;
  /** The object version being verified (pinned at publish; AWS only). */
  readonly objectVersionId?: string;
  readonly startedAt: string;
  readonly updatedAt: string;
}

export interface ReleaseRecord {
  readonly releaseId: string;
  readonly version: string;
  readonly ecu: string;
  readonly status: ReleaseStatus;
  readonly signedManifest: SignedManifest;
  readonly objectKey: string;
  /** S3 object version pinned at publish time (AWS only: the local S3 emulator has no versioning). */
  readonly objectVersionId?: string;
  readonly createdAt: string;
  readonly publishedAt?: string;
  /** The multipart upload the backend started for this release, the only one publish will complete. */
  readonly uploadId?: string;
  readonly withdrawnAt?: string;
  readonly withdrawnReason?: string;
  readonly verification?: VerificationCheckpoint;
  /** Why verification failed (status failed). */
  readonly failureReason?: string;
}

export interface ReleaseRepository {
  get(releaseId: string): Promise<ReleaseRecord | undefined>;
  /** Fails with a ConflictError when the id exists. */
  create(release: ReleaseRecord): Promise<void>;
  /** Moves verifying -> published; false when the release was not verifying. */
  markPublished(
    releaseId: string,
    publishedAt: string,
    objectVersionId: string | undefined,
  ): Promise<boolean>;
  /** Moves any status but withdrawn -> withdrawn; false when it was already withdrawn or does not exist. */
  markWithdrawn(releaseId: string, withdrawnAt: string, reason: string): Promise<boolean>;
  /** Moves pending_upload or failed -> verifying with a fresh checkpoint; false from any other status. */
  startVerification(releaseId: string, checkpoint: VerificationCheckpoint): Promise<boolean>;
  /**
   * Saves a verifying release's checkpoint if the stored one still has expectedBytes verified, so of two workers
   * running the same job only one advances; false otherwise.
   */
  saveVerification(
    releaseId: string,
    expectedBytes: number,
    checkpoint: VerificationCheckpoint,
  ): Promise<boolean>;
  /** Moves verifying -> failed with the reason; false when the release was not verifying. */
  markFailed(releaseId: string, reason: string, at: string): Promise<boolean>;
  /** Failed -> pending_upload (an operator uploads again); false from any other status. */
  reopen(releaseId: string): Promise<boolean>;
  listByVersion(version: string): Promise<ReleaseRecord[]>;
  /** Records the multipart upload started for a pending release. */
  setUploadId(releaseId: string, uploadId: string): Promise<void>;
  list(limit: number, token?: string): Promise<Page<ReleaseRecord>>;
}

/**
 * An OEM-signed bundle (protocol/bundle.ts) the backend keeps for campaigns. Stored in the releases table under
 * its id (bundle and release ids share one namespace), so no function needs a new table or grant to read it.
 */
export interface BundleRecord {
  readonly bundleId: string;
  readonly version: string;
  readonly signedBundle: import('../../../protocol/bundle.js').SignedBundle;
  /** SHA-256 of the canonical bundle: what the per-vehicle assignments bind. */
  readonly digest: string;
  readonly createdAt: string;
}

export interface BundleRepository {
  get(bundleId: string): Promise<BundleRecord | undefined>;
  /** Fails with a ConflictError when the id exists (as a bundle or a release). */
  create(bundle: BundleRecord): Promise<void>;
}
