/**
 * Firmware download with resume and per-chunk verification.
 *
 * - The image is fetched in HTTP Range requests of `requestBytes` (chunk-aligned) into a .part file.
 * - Every chunk is hashed as it arrives and compared with the signed manifest's chunk digest; only then does it
 *   count as verified. A corrupt chunk is cut off the file and fetched again (within a budget).
 * - Resume starts after the last verified chunk that was fsynced and checkpointed; anything after it is cut.
 * - Nothing past manifest.size is ever read or written: an oversized or endless response is cut off there.
 * - Slow retrieval: a minimum average speed over a window, an idle-socket timeout and an overall deadline.
 * - 403 (the presigned URL expired) asks the source for a fresh URL and continues where it was.
 * - Free space is checked before anything is written.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { compareDigest, ImageHasher, type ReleaseManifest } from '../lambdas/core/manifest.js';
import { type BackoffPolicy, backoffDelay } from './backoff.js';
import { AgentError, DownloadError, type DownloadFailure } from './errors.js';
import type { HttpResponse, HttpTransport } from './http-transport.js';
import { type AgentLogger, describeError, silentLogger } from './logger.js';
import { SpeedMonitor } from './rate.js';
import { type AgentRuntime, abortReason, systemRuntime, throwIfAborted } from './runtime.js';

export interface DownloaderOptions {
  /** Bytes per Range request (rounded down to whole chunks). @default 32 MiB */
  readonly requestBytes?: number;
  /** Re-fetches of one corrupt chunk before giving up. @default 3 */
  readonly chunkRetries?: number;
  /** Consecutive attempts without any verified progress before giving up. @default 5 */
  readonly maxAttempts?: number;
  /** Consecutive 403 answers (each followed by a fresh URL) before giving up. @default 3 */
  readonly maxUrlRefreshes?: number;
  /** Minimum average speed over minSpeedWindowMs; 0 disables. @default 4096 */
  readonly minBytesPerSecond?: number;
  /** @default 60000 */
  readonly minSpeedWindowMs?: number;
  /** Overall deadline for the whole download, all attempts. @default 6 h */
  readonly deadlineMs?: number;
  /** No byte for this long fails the attempt. @default 30000 */
  readonly idleTimeoutMs?: number;
  /** Bandwidth cap (metered links, tests). @default unlimited */
  readonly maxBytesPerSecond?: number;
  /** Free space to leave on the volume besides the image. @default 16 MiB */
  readonly reserveBytes?: number;
  /**
   * Least time between checkpoints (fsync + persisted resume point). Each one forces the file to disk, which costs
   * throughput; a power cut loses at most this much download time. @default 2000
   */
  readonly checkpointIntervalMs?: number;
  /** Between failed attempts. @default { baseMs: 500, maxMs: 30000 } */
  readonly backoff?: BackoffPolicy;
  /** Writes are gathered up to this size (fewer, larger writes). @default 4 MiB */
  readonly writeBufferBytes?: number;
}

export interface DownloadSource {
  /** A URL for the image; refresh = the previous one was refused (expired): get a new one. */
  url(refresh: boolean, signal: AbortSignal): Promise<string>;
}

export interface DownloadJob {
  readonly manifest: ReleaseManifest;
  /** The .part file. */
  readonly file: string;
  /** Resume point from the last checkpoint (a chunk boundary); 0 for a fresh download. */
  readonly verifiedBytes: number;
  readonly source: DownloadSource;
  readonly signal: AbortSignal;
  /** Each verified chunk. */
  readonly onProgress?: (verifiedBytes: number, bytesPerSecond: number) => void;
  /** After the file is fsynced up to verifiedBytes: persist it as the resume point. */
  readonly onCheckpoint?: (verifiedBytes: number) => Promise<void>;
  /** Each Range request, before it is sent. */
  readonly onRequest?: (range: { offset: number; end: number }) => void;
  /** Awaited after each verified chunk (test hook: simulated power cuts). */
  readonly onChunkVerified?: (info: { index: number; verifiedBytes: number }) => Promise<void> | void;
}

export interface DownloadStats {
  /** Body bytes read from the network, including re-fetched and discarded ones. */
  readonly bytesReceived: number;
  readonly requests: number;
  readonly urlRefreshes: number;
  readonly corruptChunks: number;
  /** Where this run started (the resume point). */
  readonly resumedFrom: number;
  readonly durationMs: number;
}

/** Answers free bytes for a path (injectable: tests simulate a full disk). */
export type FreeSpace = (path: string) => Promise<number>;

export const systemFreeSpace: FreeSpace = async (path) => {
  const s = await statfs(path);
  return Number(s.bavail) * Number(s.bsize);
};

class UrlRefused extends Error {}
class CorruptChunk extends Error {
  constructor(readonly index: number) {
    super(`chunk ${index} does not match the manifest digest`);
  }
}
class Transient extends Error {
  constructor(
    readonly failure: DownloadFailure,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

const MiB = 1024 * 1024;

export class Downloader {
  private readonly runtime: AgentRuntime;
  private readonly logger: AgentLogger;

  constructor(
    private readonly transport: HttpTransport,
    private readonly options: DownloaderOptions = {},
    deps: { runtime?: AgentRuntime; logger?: AgentLogger; freeSpace?: FreeSpace } = {},
  ) {
    this.runtime = deps.runtime ?? systemRuntime;
    this.logger = deps.logger ?? silentLogger;
    this.freeSpace = deps.freeSpace ?? systemFreeSpace;
  }

  private readonly freeSpace: FreeSpace;

  async download(job: DownloadJob): Promise<DownloadStats> {
    const o = this.options;
    const m = job.manifest;
    const started = this.runtime.now();
    const deadline = started + (o.deadlineMs ?? 6 * 3600_000);
    await mkdir(dirname(job.file), { recursive: true, mode: 0o700 });
    const fh = await openPart(job.file);
    const stats = { bytesReceived: 0, requests: 0, urlRefreshes: 0, corruptChunks: 0 };
    let verified = Math.min(job.verifiedBytes - (job.verifiedBytes % m.chunk_size), m.size);
    if (job.verifiedBytes === m.size) verified = m.size;
    let checkpointed = verified;
    let lastCheckpointAt = this.runtime.now();
    /** Makes `upTo` (verified bytes, a chunk boundary) the durable resume point: fsync first, then persist. */
    const checkpoint = async (upTo: number, force: boolean) => {
      if (upTo <= checkpointed) return;
      if (!force && this.runtime.now() - lastCheckpointAt < (o.checkpointIntervalMs ?? 2000)) return;
      await fh.datasync();
      await job.onCheckpoint?.(upTo);
      checkpointed = upTo;
      lastCheckpointAt = this.runtime.now();
    };

    try {
      const onDisk = (await fh.stat()).size;
      if (onDisk < verified) {
        this.logger.warn('part file is shorter than its checkpoint; starting over', {
          on_disk: onDisk,
          checkpoint: verified,
        });
        verified = 0;
        checkpointed = 0;
      }
      await fh.truncate(verified);
      const free = await this.freeSpace(dirname(job.file));
      const needed = m.size - verified + (o.reserveBytes ?? 16 * MiB);
      if (free < needed) {
        throw new DownloadError('no_space', `needs ${needed} bytes free, ${free} available`);
      }
      const resumedFrom = verified;
      const window = Math.max(1, Math.floor((o.requestBytes ?? 32 * MiB) / m.chunk_size)) * m.chunk_size;
      const chunkFailures = new Map<number, number>();
      let failures = 0;
      let refreshes = 0;
      let lastError: Transient | undefined;
      let url = await job.source.url(false, job.signal);

      while (verified < m.size) {
        throwIfAborted(job.signal);
        if (this.runtime.now() >= deadline) {
          throw new DownloadError(
            'deadline',
            `download did not finish within ${o.deadlineMs ?? 6 * 3600_000} ms`,
          );
        }
        const before = verified;
        const end = Math.min(m.size, verified + window) - 1;
        try {
          verified = await this.fetchRange({
            job,
            fh,
            url,
            offset: verified,
            end,
            deadline,
            stats,
            checkpoint,
          });
          if (verified > before) {
            refreshes = 0;
            failures = 0;
          } else {
            failures++;
            lastError = new Transient(
              'network',
              'the server closed the response before a whole chunk arrived',
            );
          }
        } catch (err) {
          if (job.signal.aborted) throw abortReason(job.signal);
          verified = Math.max(verified, (err as { verified?: number }).verified ?? verified);
          if (verified > before) {
            refreshes = 0;
            failures = 0;
          }
          if (err instanceof UrlRefused) {
            if (++refreshes > (o.maxUrlRefreshes ?? 3)) {
              throw new DownloadError(
                'forbidden',
                'the download URL kept being refused (403) after fresh URLs',
              );
            }
            stats.urlRefreshes++;
            this.logger.info('download URL refused (expired?); asking for a fresh one', { offset: verified });
            url = await job.source.url(true, job.signal);
            continue;
          }
          if (err instanceof CorruptChunk) {
            stats.corruptChunks++;
            const n = (chunkFailures.get(err.index) ?? 0) + 1;
            chunkFailures.set(err.index, n);
            this.logger.warn('corrupt chunk; fetching it again', { chunk: err.index, failures: n });
            if (n > (o.chunkRetries ?? 3)) {
              throw new DownloadError('corrupt', `chunk ${err.index} failed verification ${n} times`, {
                context: { chunk: err.index },
              });
            }
            continue;
          }
          if (err instanceof Transient) {
            failures = verified > before ? 0 : failures + 1;
            lastError = err;
            this.logger.warn('download attempt failed', { error: err.message, offset: verified, failures });
          } else {
            throw err;
          }
        }
        if (failures > 0) {
          if (failures >= (o.maxAttempts ?? 5)) {
            throw new DownloadError(
              lastError?.failure ?? 'network',
              `${lastError?.message ?? 'no progress'} (gave up after ${failures} attempts)`,
            );
          }
          const wait = Math.max(
            lastError?.retryAfterMs ?? 0,
            backoffDelay(failures - 1, o.backoff ?? { baseMs: 500, maxMs: 30_000 }, () =>
              this.runtime.random(),
            ),
          );
          await this.runtime.sleep(Math.min(wait, Math.max(0, deadline - this.runtime.now())), job.signal);
        }
      }
      await checkpoint(verified, true);
      return { ...stats, resumedFrom, durationMs: this.runtime.now() - started };
    } catch (err) {
      // Keep what was verified for the next run, unless the process is going down (then nothing more is written).
      if (!job.signal.aborted) await checkpoint(verified, true).catch(() => {});
      throw err;
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** One Range request; answers the new verified offset. Errors carry the verified offset reached. */
  private async fetchRange(a: {
    job: DownloadJob;
    fh: FileHandle;
    url: string;
    offset: number;
    end: number;
    deadline: number;
    stats: { bytesReceived: number; requests: number };
    checkpoint: (upTo: number, force: boolean) => Promise<void>;
  }): Promise<number> {
    const { job, fh, end } = a;
    const m = job.manifest;
    const o = this.options;
    const attempt = new AbortController();
    const signal = AbortSignal.any([job.signal, attempt.signal]);
    const startedAt = this.runtime.now();
    const speed = new SpeedMonitor(o.minBytesPerSecond ?? 4096, o.minSpeedWindowMs ?? 60_000, startedAt);
    const guard = setInterval(() => {
      const now = this.runtime.now();
      if (now > a.deadline) attempt.abort(new DownloadError('deadline', 'download deadline passed'));
      else if (speed.tooSlow(now)) {
        attempt.abort(new Transient('too_slow', `download slower than ${o.minBytesPerSecond ?? 4096} B/s`));
      }
    }, 500);
    let verified = a.offset;
    let res: HttpResponse | undefined;
    try {
      a.job.onRequest?.({ offset: a.offset, end });
      a.stats.requests++;
      try {
        res = await this.transport.send({
          method: 'GET',
          url: a.url,
          headers: { range: `bytes=${a.offset}-${end}` },
          signal,
          idleTimeoutMs: o.idleTimeoutMs ?? 30_000,
        });
      } catch (err) {
        if (attempt.signal.aborted && !job.signal.aborted) throw abortReason(attempt.signal);
        if (job.signal.aborted) throw abortReason(job.signal);
        throw new Transient('network', describeError(err));
      }
      let skip = 0;
      if (res.status === 206) {
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
        if (!range || Number(range[1]) !== a.offset) {
          res.abort();
          throw new DownloadError(
            'bad_response',
            `unusable Content-Range ${String(res.headers['content-range'])}`,
          );
        }
        if (range[3] !== '*' && Number(range[3]) < m.size) {
          res.abort();
          throw new DownloadError('bad_response', `the object has ${range[3]} bytes, the manifest ${m.size}`);
        }
      } else if (res.status === 200) {
        const length = Number(res.headers['content-length'] ?? Number.NaN);
        if (Number.isFinite(length) && length < m.size) {
          res.abort();
          throw new DownloadError('bad_response', `the object has ${length} bytes, the manifest ${m.size}`);
        }
        skip = a.offset; // the server ignored Range: skip what is already verified
      } else {
        res.abort();
        if (res.status === 403) throw new UrlRefused();
        if (res.status === 408 || res.status === 429 || res.status >= 500) {
          const ra = Number(res.headers['retry-after']);
          throw new Transient(
            'network',
            `server answered ${res.status}`,
            Number.isFinite(ra) ? ra * 1000 : undefined,
          );
        }
        throw new DownloadError('bad_response', `server answered ${res.status}`);
      }

      let pos = a.offset;
      let chunkIndex = Math.floor(pos / m.chunk_size);
      let chunkEnd = Math.min(m.size, (chunkIndex + 1) * m.chunk_size);
      let hash = createHash('sha256');
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let pendingAt = pos;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const buffers = pending;
        const at = pendingAt;
        pending = [];
        pendingAt += pendingBytes;
        pendingBytes = 0;
        await fh.writev(buffers, at);
      };
      const writeBuffer = o.writeBufferBytes ?? 4 * MiB;

      try {
        for await (const piece of res.body) {
          a.stats.bytesReceived += piece.length;
          speed.add(piece.length, this.runtime.now());
          let data = piece;
          if (skip > 0) {
            const drop = Math.min(skip, data.length);
            skip -= drop;
            data = data.subarray(drop);
          }
          while (data.length > 0) {
            if (pos > end) {
              // More than asked for (oversized or endless response): never read or store past the range.
              this.logger.warn('server sent more than the requested range; cutting the response', {
                at: pos,
              });
              res.abort();
              break;
            }
            const take = Math.min(data.length, chunkEnd - pos);
            const part = data.subarray(0, take);
            data = data.subarray(take);
            hash.update(part);
            pending.push(part);
            pendingBytes += take;
            pos += take;
            if (pos === chunkEnd) {
              await flush();
              if (hash.digest('hex') !== m.chunks[chunkIndex]) {
                await fh.truncate(verified);
                res.abort();
                throw new CorruptChunk(chunkIndex);
              }
              verified = pos;
              job.onProgress?.(verified, speed.rate(this.runtime.now()));
              await job.onChunkVerified?.({ index: chunkIndex, verifiedBytes: verified });
              await a.checkpoint(verified, false);
              chunkIndex++;
              chunkEnd = Math.min(m.size, (chunkIndex + 1) * m.chunk_size);
              hash = createHash('sha256');
            } else if (pendingBytes >= writeBuffer) {
              await flush();
            }
          }
          if (pos > end) {
            res.abort(); // got every byte asked for; whatever else the server sends is never read
            break;
          }
          if (o.maxBytesPerSecond) {
            const ahead = (speed.received * 1000) / o.maxBytesPerSecond - (this.runtime.now() - startedAt);
            if (ahead > 1) await this.runtime.sleep(ahead, signal);
          }
        }
      } catch (err) {
        if (err instanceof CorruptChunk || err instanceof DownloadError) throw err;
        if (job.signal.aborted) throw abortReason(job.signal);
        if (attempt.signal.aborted) throw abortReason(attempt.signal);
        throw new Transient('network', describeError(err));
      }
      // A partial chunk at the end is dropped: the next request starts again at its beginning.
      return verified;
    } catch (err) {
      res?.abort();
      if (err instanceof AgentError || err instanceof Error) Object.assign(err, { verified });
      throw err;
    } finally {
      clearInterval(guard);
    }
  }
}

async function openPart(file: string): Promise<FileHandle> {
  try {
    return await open(file, 'r+');
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
    return open(file, 'w+', 0o600);
  }
}

/**
 * Checks an image file against its manifest: size and whole-image SHA-256, in one streaming pass over what is on
 * disk (not what went through memory). Answers the differences, empty when it matches. On a mismatch a second
 * pass locates the first chunk that differs, for the report.
 */
export async function verifyImageFile(
  path: string,
  manifest: ReleaseManifest,
  signal?: AbortSignal,
): Promise<string[]> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const data of createReadStream(path, { highWaterMark: MiB, ...(signal ? { signal } : {}) })) {
    hash.update(data as Buffer);
    size += (data as Buffer).length;
  }
  if (size === manifest.size && hash.digest('hex') === manifest.sha256) return [];
  const hasher = new ImageHasher(manifest.chunk_size);
  for await (const data of createReadStream(path, { highWaterMark: MiB, ...(signal ? { signal } : {}) })) {
    hasher.update(data as Buffer);
  }
  return compareDigest(manifest, hasher.digest());
}
