/**
 * Firmware releases: an operator submits a manifest signed by an OEM release key, uploads the image to the
 * presigned URL(s) answered, then publishes; publishing streams the stored object through the digests and
 * refuses anything that differs from the signed manifest. Object keys are content-addressed, so a release's
 * object never changes under a given key.
 */

import { canonicalJson } from '../../protocol/canonical-json.js';
import {
  checkManifestConsistency,
  compareDigest,
  digestStream,
  type SignedManifest,
  verifyManifestSignatures,
} from '../../protocol/manifest.js';
import type { TrustedKey } from '../../protocol/signatures.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import type { Clock, ObjectStore, ReleaseRecord, ReleaseRepository } from './ports.js';

export interface ReleaseServiceDeps {
  readonly releases: ReleaseRepository;
  readonly objects: ObjectStore;
  readonly clock: Clock;
  readonly trustedReleaseKeys: readonly TrustedKey[];
  /** Seconds the upload URLs stay valid. @default 3600 */
  readonly uploadTtlSeconds?: number;
  /** Images above this size are uploaded in parts. @default 128 MiB */
  readonly multipartThreshold?: number;
  /** @default 64 MiB */
  readonly partSize?: number;
}

export function releaseView(r: ReleaseRecord) {
  const m = r.signedManifest.manifest;
  return {
    release_id: r.releaseId,
    version: r.version,
    ecu: r.ecu,
    hardware_ids: m.hardware_ids,
    size: m.size,
    sha256: m.sha256,
    status: r.status,
    created_at: r.createdAt,
    published_at: r.publishedAt ?? null,
    manifest: r.signedManifest,
  };
}

export class ReleaseService {
  constructor(private readonly deps: ReleaseServiceDeps) {}

  async create(signed: SignedManifest) {
    const m = signed.manifest;
    checkManifestConsistency(m);
    if (!verifyManifestSignatures(signed, this.deps.trustedReleaseKeys)) {
      throw new BadRequestError('invalid_signature', 'The manifest is not signed by a trusted release key');
    }
    const existing = await this.deps.releases.get(m.release_id);
    if (existing) {
      // Retrying the same create (e.g. after an upload failed) answers fresh upload URLs; anything else conflicts.
      if (
        existing.status !== 'pending_upload' ||
        canonicalJson(existing.signedManifest.manifest) !== canonicalJson(m)
      ) {
        throw new ConflictError('release_exists', `Release ${m.release_id} already exists`);
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
        objectKey: `releases/${m.sha256}`,
        createdAt: this.deps.clock.now().toISOString(),
      });
    }
    const upload = await this.uploadTarget(m.sha256, m.size);
    if (upload.method === 'MULTIPART') await this.deps.releases.setUploadId(m.release_id, upload.upload_id);
    return { ...releaseView((await this.deps.releases.get(m.release_id))!), upload };
  }

  private async uploadTarget(sha256: string, size: number) {
    const ttl = this.deps.uploadTtlSeconds ?? 3600;
    const key = `releases/${sha256}`;
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

  async publish(
    releaseId: string,
    input: { upload_id?: string; parts?: { part_number: number; etag: string }[] },
  ) {
    const release = await this.deps.releases.get(releaseId);
    if (!release) throw new NotFoundError('unknown_release', `No release ${releaseId}`);
    if (release.status === 'published') return releaseView(release);
    const m = release.signedManifest.manifest;
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
    const problems =
      head.size !== m.size
        ? [`size is ${head.size}, manifest says ${m.size}`]
        : compareDigest(
            m,
            await digestStream(await this.deps.objects.read(release.objectKey, head.versionId), m.chunk_size),
          );
    if (problems.length > 0) {
      // The bytes under this content-addressed key are not the release: remove them so they can never be served.
      await this.deps.objects.delete(release.objectKey);
      throw new ConflictError(
        'image_mismatch',
        `The uploaded image does not match the manifest: ${problems.join('; ')}`,
      );
    }
    const publishedAt = this.deps.clock.now().toISOString();
    await this.deps.releases.markPublished(releaseId, publishedAt, head.versionId);
    return releaseView((await this.deps.releases.get(releaseId))!);
  }

  async get(releaseId: string) {
    const release = await this.deps.releases.get(releaseId);
    if (!release) throw new NotFoundError('unknown_release', `No release ${releaseId}`);
    return releaseView(release);
  }

  /** One page of releases, without their manifests (each can hold thousands of chunk digests): GET one for it. */
  async list(limit: number, token?: string) {
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
