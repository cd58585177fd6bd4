/**
 * Firmware releases: an operator submits a manifest signed by an OEM release key, uploads the image to the
 * presigned URL(s) answered, then publishes. Publishing answers at once (202) and starts a background job
 * (release-verification.ts) that streams the stored object through the digests: the release is `verifying`, with
 * the bytes verified so far, then `published`, or `failed` when the object differs from the signed manifest.
 * Hashing up to 16 GiB does not fit an API request (29 s at API Gateway, 10 s for the function). Each release has
 * an object key of its own (releases/<release id>/<sha256>): two releases of the same bytes once shared one key,
 * so an upload to the second overwrote the first's published image and its failed publish deleted it. The job
 * makes the one verified object version permanent (ObjectStore.protect) before it publishes; downloads name that
 * version (AWS). Upload URLs live minutes, not an hour.
 */

import { canonicalJson } from '../../protocol/canonical-json.js';
import { objectSize } from '../../protocol/frames.js';
import {
  checkManifestConsistency,
  type SignedManifest,
  verifyManifestSignatures,
} from '../../protocol/manifest.js';
import type { ReleaseCreated, ReleaseList, ReleaseView } from '../../protocol/operator-responses.js';
import type { TrustedKey } from '../../protocol/signatures.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import type { Clock, JobQueue, ObjectStore, ReleaseRecord, ReleaseRepository } from './ports.js';

export interface ReleaseServiceDeps {
  readonly releases: ReleaseRepository;
  readonly objects: ObjectStore;
  readonly clock: Clock;
  readonly trustedReleaseKeys: readonly TrustedKey[];
  /** Where publish sends the verification job. */
  readonly jobs: JobQueue;
  /** Seconds the upload URLs stay valid. @default 900 */
  readonly uploadTtlSeconds?: number;
  /** Images above this size are uploaded in parts. @default 128 MiB */
  readonly multipartThreshold?: number;
  /** @default 64 MiB */
  readonly partSize?: number;
}

/** Upload URLs live minutes: long enough for one image's upload, short enough not to linger after publishing. */
export const DEFAULT_UPLOAD_TTL_SECONDS = 900;

/** Each release's own object key; never shared by two releases, even of the same bytes. */
export function releaseObjectKey(releaseId: string, sha256: string): string {
  return `releases/${releaseId}/${sha256}`;
}

/** The answer is typed by the protocol's schema, so a field that drifts from the API document breaks the build. */
export function releaseView(r: ReleaseRecord): ReleaseView {
  const m = r.signedManifest.manifest;
  return {
    release_id: r.releaseId,
    version: r.version,
    ecu: r.ecu,
    hardware_ids: m.hardware_ids,
    size: m.size,
    sha256: m.sha256,
    status: r.status,
    /** Progress of the verification job (status verifying), or where it stopped (failed). */
    verification: r.verification
      ? { bytes_verified: r.verification.bytesVerified, size: m.size, started_at: r.verification.startedAt }
      : null,
    failure_reason: r.failureReason ?? null,
    created_at: r.createdAt,
    published_at: r.publishedAt ?? null,
    withdrawn_at: r.withdrawnAt ?? null,
    manifest: r.signedManifest,
  };
}

export class ReleaseService {
  constructor(private readonly deps: ReleaseServiceDeps) {}

  async create(signed: SignedManifest): Promise<ReleaseCreated> {
    const m = signed.manifest;
    checkManifestConsistency(m);
    if (!verifyManifestSignatures(signed, this.deps.trustedReleaseKeys)) {
      throw new BadRequestError('invalid_signature', 'The manifest is not signed by a trusted release key');
    }
    const existing = await this.deps.releases.get(m.release_id);
    if (existing) {
      // Retrying the same create (e.g. after an upload failed) answers fresh upload URLs; anything else conflicts.
      // A failed release (its upload did not match) is reopened the same way, for a fresh upload.
      if (
        !['pending_upload', 'failed'].includes(existing.status) ||
        canonicalJson(existing.signedManifest.manifest) !== canonicalJson(m)
      ) {
        throw new ConflictError('release_exists', `Release ${m.release_id} already exists`);
      }
      if (existing.status === 'failed' && !(await this.deps.releases.reopen(m.release_id))) {
        throw new ConflictError('concurrent_update', 'The release changed concurrently; retry');
      }
    } else {
      const sameTarget = (await this.deps.releases.listByVersion(m.version)).find((r) => r.ecu === m.ecu);
      if (sameTarget) {
        throw new ConflictError(
          'version_exists',
          `Release ${sameTarget.releaseId} is already version ${m.version} of ${m.ecu}`,
        );
      }
      await this.deps.releases.create({
        releaseId: m.release_id,
        version: m.version,
        ecu: m.ecu,
        status: 'pending_upload',
        signedManifest: signed,
        objectKey: releaseObjectKey(m.release_id, m.sha256),
        createdAt: this.deps.clock.now().toISOString(),
      });
    }
    const record = (await this.deps.releases.get(m.release_id))!;
    const upload = await this.uploadTarget(record.objectKey, objectSize(m));
    if (upload.method === 'MULTIPART') await this.deps.releases.setUploadId(m.release_id, upload.upload_id);
    return { ...releaseView((await this.deps.releases.get(m.release_id))!), upload };
  }

  private async uploadTarget(key: string, size: number): Promise<ReleaseCreated['upload']> {
    const ttl = this.deps.uploadTtlSeconds ?? DEFAULT_UPLOAD_TTL_SECONDS;
    const threshold = this.deps.multipartThreshold ?? 128 * 1024 * 1024;
    if (size <= threshold) {
      return {
        method: 'PUT' as const,
        url: await this.deps.objects.presignPut(key, size, ttl),
        expires_at: new Date(this.deps.clock.now().getTime() + ttl * 1000).toISOString(),
      };
    }
    const mp = await this.deps.objects.createMultipartUpload(
      key,
      size,
      this.deps.partSize ?? 64 * 1024 * 1024,
      ttl,
    );
    return {
      method: 'MULTIPART' as const,
      upload_id: mp.uploadId,
      part_size: mp.partSize,
      parts: mp.parts.map((p) => ({ part_number: p.partNumber, url: p.url })),
      expires_at: mp.expiresAt,
    };
  }

  /**
   * Starts (or, while it runs, re-sends) the verification job; answers whether the release is published already
   * (200) or being verified (202). Re-sending is harmless: the job resumes from its checkpoint and two workers on
   * one release cannot both advance it (ReleaseRepository.saveVerification).
   */
  async publish(
    releaseId: string,
    input: { upload_id?: string; parts?: { part_number: number; etag: string }[] },
  ): Promise<{ accepted: boolean; release: ReleaseView }> {
    const release = await this.deps.releases.get(releaseId);
    if (!release) throw new NotFoundError('unknown_release', `No release ${releaseId}`);
    if (release.status === 'published') return { accepted: false, release: releaseView(release) };
    if (release.status === 'withdrawn')
      throw new ConflictError('release_withdrawn', `${releaseId} was withdrawn`);
    if (release.status === 'failed') {
      throw new ConflictError(
        'verification_failed',
        `The uploaded image does not match the manifest: ${release.failureReason ?? 'unknown'}; create the release again to upload anew`,
      );
    }
    if (release.status === 'pending_upload') {
      if (input.upload_id !== undefined) {
        if (!input.parts?.length)
          throw new BadRequestError('invalid_request', 'parts are required with upload_id');
        if (input.upload_id !== release.uploadId) {
          throw new BadRequestError('invalid_upload', 'upload_id is not the upload started for this release');
        }
        await this.deps.objects.completeMultipartUpload(
          release.objectKey,
          input.upload_id,
          input.parts.map((p) => ({ partNumber: p.part_number, etag: p.etag })),
        );
      }
      const head = await this.deps.objects.head(release.objectKey);
      if (!head) throw new ConflictError('not_uploaded', 'The image has not been uploaded yet');
      const now = this.deps.clock.now().toISOString();
      const started = await this.deps.releases.startVerification(releaseId, {
        bytesVerified: 0,
        objectVersionId: head.versionId,
        startedAt: now,
        updatedAt: now,
      });
      if (!started) return this.publish(releaseId, {});
    }
    await this.deps.jobs.send({ type: 'verify_release', release_id: releaseId });
    return { accepted: true, release: releaseView((await this.deps.releases.get(releaseId))!) };
  }

  async get(releaseId: string): Promise<ReleaseView> {
    const release = await this.deps.releases.get(releaseId);
    if (!release) throw new NotFoundError('unknown_release', `No release ${releaseId}`);
    return releaseView(release);
  }

  /** One page of releases, without their manifests (each can hold thousands of chunk digests): GET one for it. */
  async list(limit: number, token?: string): Promise<ReleaseList> {
    const page = await this.deps.releases.list(limit, token);
    return {
      releases: page.items.map((r) => {
        const { manifest: _, ...summary } = releaseView(r);
        return summary;
      }),
      next_token: page.token ?? null,
    };
  }
}
