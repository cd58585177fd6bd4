/**
 * The release verification job: hashes a stored image against its signed manifest in bounded memory (one chunk
 * digest and one whole-image state at a time) and bounded time per invocation. After every chunk it saves how far
 * it got and the whole-image hash state, so a worker that runs out of time or is stopped resumes from there; at
 * the end it publishes the release or marks it failed. Up to the 16 GiB the API accepts: the resumable SHA-256
 * runs at 23-32 MB/s on a loaded machine, about 9-12 minutes of one vCPU for 16 GiB, and whatever does not fit
 * one invocation continues in the next.
 */
import { createHash } from 'node:crypto';
import { ProtocolError } from '../../protocol/errors.js';
import { windowedDecoding } from '../../protocol/frame-window.js';
import {
  decodeFrames,
  type FrameTable,
  frameStartingAt,
  objectSize,
  parseFrameTable,
} from '../../protocol/frames.js';
import type { ReleaseManifest } from '../../protocol/manifest.js';
import { loadZstd, ZstdFrameError } from '../../protocol/zstd.js';
import type { JobResult } from './jobs.js';
import type {
  Clock,
  ObjectStore,
  ReleaseRecord,
  ReleaseRepository,
  VerificationCheckpoint,
} from './ports.js';
import { ResumableSha256 } from './sha256-state.js';

export interface ReleaseVerifierDeps {
  readonly releases: ReleaseRepository;
  readonly objects: ObjectStore;
  readonly clock: Clock;
  readonly log?: { warn(message: string, extra: Record<string, unknown>): void };
  /**
   * Saves a checkpoint at a chunk boundary once this long has passed since the last, or checkpointBytes more have
   * been verified, whichever comes first, and always before yielding: a stopped worker loses little, progress shows
   * from the first few MiB, and small chunks do not cost a write each. @default 1000
   */
  readonly checkpointMs?: number;
  /** @default 8 MiB */
  readonly checkpointBytes?: number;
}

export class ReleaseVerifier {
  constructor(private readonly deps: ReleaseVerifierDeps) {}

  /**
   * Continues the verification of a release from its checkpoint until it is published or failed ('done'), or the
   * invocation is about to run out of time ('continue': the caller sends the job again).
   * @param shouldYield true once the invocation has too little time left for another slice
   */
  async run(releaseId: string, shouldYield: () => boolean): Promise<JobResult> {
    const release = await this.deps.releases.get(releaseId);
    if (release?.status !== 'verifying' || !release.verification) return 'done';
    const m = release.signedManifest.manifest;
    let checkpoint = release.verification;
    const whole = checkpoint.hashState ? ResumableSha256.import(checkpoint.hashState) : new ResumableSha256();
    let offset = checkpoint.bytesVerified;
    if (whole.length !== offset) return this.fail(release, 'the saved verification state is inconsistent');

    const head = await this.deps.objects.head(release.objectKey);
    if (!head) return this.fail(release, 'the image is no longer stored');
    if (head.size !== objectSize(m)) {
      return this.fail(release, `size is ${head.size}, manifest says ${objectSize(m)}`);
    }
    if (checkpoint.objectVersionId && head.versionId && head.versionId !== checkpoint.objectVersionId) {
      // Another upload replaced the object under its content-addressed key meanwhile: hash the version publish saw.
      this.deps.log?.warn('release object replaced during verification; verifying the pinned version', {
        releaseId,
      });
    }

    const every = this.deps.checkpointMs ?? 1000;
    const everyBytes = this.deps.checkpointBytes ?? 8 * 1024 * 1024;
    let savedOffset = offset;
    let savedAt = this.deps.clock.now().getTime();
    let chunkIndex = offset / m.chunk_size;
    let chunk = createHash('sha256');
    let inChunk = 0;
    if (offset < m.size) {
      let table: FrameTable | undefined;
      if (m.compression) {
        try {
          table = await this.readTable(release.objectKey, checkpoint.objectVersionId, m);
        } catch (err) {
          if (err instanceof ProtocolError) return this.fail(release, err.message);
          throw err;
        }
      }
      // A compressed object is read from the frame where the checkpoint (a chunk boundary, so a frame start) is.
      const first = table ? frameStartingAt(table, offset) : 0;
      const stream = await this.deps.objects.read(
        release.objectKey,
        checkpoint.objectVersionId,
        table ? table.objectOffset[first]! : offset,
      );
      const image = table
        ? decodeFrames(
            table,
            first,
            table.count,
            stream as AsyncIterable<Uint8Array>,
            await loadZstd(),
            // Windowed frames: decoding starts at a chunk boundary, where a frame needs no bytes before it.
            table.window > 0 ? await windowedDecoding(table.window) : undefined,
          )
        : (stream as AsyncIterable<Uint8Array>);
      try {
        for await (const data of image) {
          let at = 0;
          while (at < data.length) {
            const take = Math.min(m.chunk_size - inChunk, data.length - at);
            const piece = data.subarray(at, at + take);
            chunk.update(piece);
            whole.update(piece);
            inChunk += take;
            at += take;
            if (inChunk < m.chunk_size && offset + inChunk < m.size) continue;
            if (chunk.digest('hex') !== m.chunks[chunkIndex]) {
              return this.fail(release, `chunk ${chunkIndex} differs from the manifest`);
            }
            offset += inChunk;
            chunkIndex++;
            chunk = createHash('sha256');
            inChunk = 0;
            if (offset >= m.size) break;
            const outOfTime = shouldYield();
            if (
              this.deps.clock.now().getTime() - savedAt >= every ||
              offset - savedOffset >= everyBytes ||
              outOfTime
            ) {
              const saved = await this.save(release, checkpoint, offset, whole);
              if (!saved) return 'done'; // another worker owns this job now
              checkpoint = saved;
              savedAt = this.deps.clock.now().getTime();
              savedOffset = offset;
              if (outOfTime) return 'continue';
            }
          }
          if (offset >= m.size) break;
        }
      } catch (err) {
        if (!(err instanceof ZstdFrameError)) throw err;
        return this.fail(release, `chunk ${chunkIndex}: ${err.message}`);
      } finally {
        (stream as { destroy?: () => void }).destroy?.();
      }
    }
    if (offset !== m.size)
      return this.fail(release, `the stored image ended at ${offset} of ${m.size} bytes`);
    if (whole.digest().toString('hex') !== m.sha256) {
      return this.fail(release, 'SHA-256 of the image does not match the manifest');
    }
    // The verified version becomes permanent before anyone is told it exists: a leftover upload URL, a lifecycle
    // rule or a later failed publish can no longer replace or delete it.
    const versionId = checkpoint.objectVersionId ?? head.versionId;
    await this.deps.objects.protect(release.objectKey, versionId);
    const at = this.deps.clock.now().toISOString();
    await this.deps.releases.markPublished(releaseId, at, versionId);
    return 'done';
  }

  /** The frame table at the end of a compressed object, checked against the signed manifest. */
  private async readTable(
    key: string,
    versionId: string | undefined,
    m: ReleaseManifest,
  ): Promise<FrameTable> {
    const c = m.compression!;
    const stream = await this.deps.objects.read(key, versionId, c.table_offset);
    const parts: Buffer[] = [];
    let have = 0;
    try {
      for await (const data of stream as AsyncIterable<Uint8Array>) {
        parts.push(Buffer.from(data));
        have += data.length;
        if (have >= c.table_size) break;
      }
    } finally {
      (stream as { destroy?: () => void }).destroy?.();
    }
    return parseFrameTable(m, Buffer.concat(parts).subarray(0, c.table_size));
  }

  private async save(
    release: ReleaseRecord,
    previous: VerificationCheckpoint,
    offset: number,
    whole: ResumableSha256,
  ): Promise<VerificationCheckpoint | undefined> {
    const next: VerificationCheckpoint = {
      ...previous,
      bytesVerified: offset,
      hashState: whole.export(),
      updatedAt: this.deps.clock.now().toISOString(),
    };
    return (await this.deps.releases.saveVerification(release.releaseId, previous.bytesVerified, next))
      ? next
      : undefined;
  }

  /**
   * Marks the release failed and removes the bytes under its key so they are never served. The key is this
   * release's own (releases/<release id>/<sha256>), so no other release's image is touched.
   */
  private async fail(release: ReleaseRecord, reason: string): Promise<JobResult> {
    // The bytes go first, the status after: once a release reads failed its upload is gone (a worker stopped in
    // between finds the object missing on its rerun, and fails the release for that). A plain delete: a delete
    // marker where the bucket keeps versions (deleting a version is denied to every principal), the object locally.
    await this.deps.objects.delete(release.objectKey);
    await this.deps.releases.markFailed(release.releaseId, reason, this.deps.clock.now().toISOString());
    return 'done';
  }
}
