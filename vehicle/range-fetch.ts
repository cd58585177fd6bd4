/**
 * One HTTP Range request of a download, streamed into the .part file: the response is checked against the range
 * asked for and the manifest's size, then every chunk is hashed as it arrives and written; only a chunk whose
 * digest matches the signed manifest counts as verified. Nothing past the range is read. Speed, idle time and the
 * overall deadline are watched while it runs.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { objectSize } from '../protocol/frames.js';
import { ZstdFrameError } from '../protocol/zstd.js';
import type { BufferPool } from './buffer-pool.js';
import type { DownloaderOptions, DownloadJob } from './downloader.js';
import { AgentError, DownloadError, type DownloadFailure } from './errors.js';
import { type FrameLayout, layoutPieces, type TransferStats } from './frame-source.js';
import type { HttpResponse, HttpTransport } from './http-transport.js';
import { type BackgroundFlush, FileWriter, type PrefixHash } from './image-file.js';
import { type AgentLogger, describeError } from './logger.js';
import { SpeedMonitor } from './rate.js';
import { type AgentRuntime, abortReason } from './runtime.js';

/** The URL was refused (403): presigned URLs expire; the caller asks for a fresh one. */
export class UrlRefused extends Error {}
export class CorruptChunk extends Error {
  constructor(
    readonly index: number,
    /** Some of its bytes came from the local base image (chunk reuse), not the network. */
    readonly reused = false,
  ) {
    super(`chunk ${index} does not match the manifest digest`);
  }
}
/** A failure worth another attempt (network, slow, 5xx). */
export class Transient extends Error {
  constructor(
    readonly failure: DownloadFailure,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export interface RangeFetchDeps {
  readonly transport: HttpTransport;
  readonly options: DownloaderOptions;
  readonly runtime: AgentRuntime;
  readonly logger: AgentLogger;
}

export interface RangeRequest {
  readonly job: DownloadJob;
  readonly fh: FileHandle;
  readonly url: string;
  /** First byte asked for: the verified offset (a chunk boundary). */
  readonly offset: number;
  /** Last byte asked for (inclusive). */
  readonly end: number;
  readonly deadline: number;
  readonly stats: TransferStats;
  /** How the stored object maps to the image when it is compressed (and what the base image provides). */
  readonly layout?: FrameLayout;
  readonly checkpoint: (upTo: number, force: boolean, settle?: () => Promise<void>) => Promise<void>;
  readonly whole: PrefixHash;
  readonly flusher: BackgroundFlush;
  readonly buffers: BufferPool;
}

/** One Range request; answers the new verified offset. Errors carry the verified offset reached. */
export async function fetchRange(d: RangeFetchDeps, a: RangeRequest): Promise<number> {
  const { job, fh, end } = a;
  const m = job.manifest;
  const o = d.options;
  const attempt = new AbortController();
  const signal = AbortSignal.any([job.signal, attempt.signal]);
  const startedAt = d.runtime.now();
  const speed = new SpeedMonitor(o.minBytesPerSecond ?? 4096, o.minSpeedWindowMs ?? 60_000, startedAt);
  const guard = setInterval(() => {
    const now = d.runtime.now();
    if (now > a.deadline) attempt.abort(new DownloadError('deadline', 'download deadline passed'));
    else if (speed.tooSlow(now)) {
      attempt.abort(new Transient('too_slow', `download slower than ${o.minBytesPerSecond ?? 4096} B/s`));
    }
  }, 500);
  let verified = a.offset;
  const responses = new Set<HttpResponse>();
  const writer = new FileWriter(fh, a.buffers, a.offset, Math.max(1, o.writesInFlight ?? 2));
  const settle = () => writer.settle();
  /** The body of one Range request of the stored object, less whatever precedes `from` (a server ignoring Range). */
  const network = async function* (from: number, to: number): AsyncGenerator<Buffer> {
    a.job.onRequest?.({ offset: from, end: to });
    a.stats.requests++;
    let res: HttpResponse;
    try {
      res = await d.transport.send({
        method: 'GET',
        url: a.url,
        headers: { range: `bytes=${from}-${to}` },
        signal,
        idleTimeoutMs: o.idleTimeoutMs ?? 30_000,
      });
    } catch (err) {
      if (attempt.signal.aborted && !job.signal.aborted) throw abortReason(attempt.signal);
      if (job.signal.aborted) throw abortReason(job.signal);
      throw new Transient('network', describeError(err));
    }
    responses.add(res);
    try {
      let skip = bytesToSkip(res, from, objectSize(m));
      let left = to - from + 1;
      for await (const piece of res.body) {
        a.stats.bytesReceived += piece.length;
        speed.add(piece.length, d.runtime.now());
        if (o.maxBytesPerSecond) {
          // Before the piece is used, so a response that arrives in one piece is paced too.
          const ahead = (speed.received * 1000) / o.maxBytesPerSecond - (d.runtime.now() - startedAt);
          if (ahead > 1) await d.runtime.sleep(ahead, signal);
        }
        let data = piece;
        if (skip > 0) {
          const drop = Math.min(skip, data.length);
          skip -= drop;
          data = data.subarray(drop);
        }
        if (data.length > left) {
          // More than asked for (oversized or endless response): never read or store past the range.
          d.logger.warn('server sent more than the requested range; cutting the response', { at: to + 1 });
          data = data.subarray(0, left);
        }
        left -= data.length;
        if (data.length > 0) yield data;
        if (left === 0) break; // every byte asked for; whatever else the server sends is never read
      }
    } catch (err) {
      if (err instanceof AgentError || err instanceof UrlRefused || err instanceof Transient) throw err;
      if (job.signal.aborted) throw abortReason(job.signal);
      if (attempt.signal.aborted) throw abortReason(attempt.signal);
      throw new Transient('network', describeError(err));
    } finally {
      res.abort();
      responses.delete(res);
    }
  };
  try {
    const image = a.layout
      ? layoutPieces(a.layout, m, a.offset, end, network, a.stats)
      : network(a.offset, end);
    let pos = a.offset;
    let chunkIndex = Math.floor(pos / m.chunk_size);
    let chunkEnd = Math.min(m.size, (chunkIndex + 1) * m.chunk_size);
    let hash = createHash('sha256');
    try {
      for await (const piece of image) {
        let data = piece;
        while (data.length > 0) {
          if (pos > end) throw new DownloadError('bad_response', 'more image bytes than the range asked for');
          const take = Math.min(data.length, chunkEnd - pos);
          const part = data.subarray(0, take);
          data = data.subarray(take);
          hash.update(part);
          a.whole.update(part);
          for (let copied = 0; copied < take; ) {
            copied += writer.append(part, copied);
            if (writer.full) await writer.flush();
          }
          pos += take;
          if (pos === chunkEnd) {
            if (hash.digest('hex') !== m.chunks[chunkIndex]) {
              writer.discard(); // the failed chunk's bytes are never written
              await settle();
              await fh.truncate(verified);
              throw new CorruptChunk(chunkIndex, a.layout?.reusedIn(chunkIndex * m.chunk_size, pos) ?? false);
            }
            await writer.flush();
            a.whole.commit();
            a.flusher.wrote(pos);
            verified = pos;
            job.onProgress?.(verified, speed.rate(d.runtime.now()));
            await job.onChunkVerified?.({ index: chunkIndex, verifiedBytes: verified });
            await a.checkpoint(verified, false, settle);
            chunkIndex++;
            chunkEnd = Math.min(m.size, (chunkIndex + 1) * m.chunk_size);
            hash = createHash('sha256');
          }
        }
      }
    } catch (err) {
      if (err instanceof ZstdFrameError) {
        // A frame that does not decode (or would decode past its declared size) is a corrupt chunk.
        writer.discard();
        await settle();
        await fh.truncate(verified);
        throw new CorruptChunk(chunkIndex, false);
      }
      if (
        err instanceof CorruptChunk ||
        err instanceof AgentError ||
        err instanceof UrlRefused ||
        err instanceof Transient
      ) {
        throw err;
      }
      if (job.signal.aborted) throw abortReason(job.signal);
      if (attempt.signal.aborted) throw abortReason(attempt.signal);
      throw new Transient('network', describeError(err));
    }
    await settle();
    // A partial chunk at the end is dropped: the next request starts again at its beginning.
    return verified;
  } catch (caught) {
    for (const res of responses) res.abort();
    await writer.close();
    // A failed file write outranks whatever else went wrong: the run stops, and the next one re-checks the
    // prefix on disk before trusting it.
    const err = writer.failure ?? caught;
    if (err instanceof AgentError || err instanceof Error) Object.assign(err, { verified });
    throw err;
  } finally {
    await writer.close(); // never rejects: a failed write is kept in writer.failure
    // Whatever was fed past the last verified chunk is not part of the image.
    a.whole.rollback();
    clearInterval(guard);
    // A request chunk reuse started ahead (frame-source.ts) and never reached ends here, not at its first piece.
    if (!attempt.signal.aborted) attempt.abort(new Transient('network', 'the request ended'));
  }
}

/**
 * Checks the answer to a Range request from `offset` for an image of `size` bytes; answers how many leading body
 * bytes are not wanted (a server that ignores Range sends the object from its start). Throws UrlRefused (403),
 * Transient (408, 429, 5xx: worth another attempt) or DownloadError (anything unusable).
 */
export function bytesToSkip(
  res: Pick<HttpResponse, 'status' | 'headers'>,
  offset: number,
  size: number,
): number {
  if (res.status === 206) {
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
    if (!range || Number(range[1]) !== offset) {
      throw new DownloadError(
        'bad_response',
        `unusable Content-Range ${String(res.headers['content-range'])}`,
      );
    }
    if (range[3] !== '*' && Number(range[3]) < size) {
      throw new DownloadError('bad_response', `the object has ${range[3]} bytes, the manifest ${size}`);
    }
    return 0;
  }
  if (res.status === 200) {
    const length = Number(res.headers['content-length'] ?? Number.NaN);
    if (Number.isFinite(length) && length < size) {
      throw new DownloadError('bad_response', `the object has ${length} bytes, the manifest ${size}`);
    }
    return offset; // the server ignored Range: skip what is already verified
  }
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
