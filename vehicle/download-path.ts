/**
 * Which path a compressed release's download takes (issue 13), decided before the first image byte: the frame table
 * (one Range request, checked against the signed manifest), then a precomputed delta when the manifest lists one from
 * the installed image, else chunk reuse from the installed image, else every frame; each "else" with the reason,
 * reported as the fallback. Also what to do when a chunk built from the installed image fails its digest: blame the
 * base (drop it, fetch the rest) or the download (a corrupt chunk).
 *
 * Chunk reuse locates the new frames in the installed image through the index kept for it (base-index.ts): a table
 * lookup. Without one (an image installed before indexes were kept) the image is read and chunked once, and that
 * index is handed to the agent to keep.
 */
import {
  type DeltaEntry,
  type DeltaTable,
  deltaFor,
  loadDictCodec,
  parseDeltaTable,
} from '../protocol/delta.js';
import { ProtocolError } from '../protocol/errors.js';
import type { FrameTable } from '../protocol/frames.js';
import type { ReleaseManifest } from '../protocol/manifest.js';
import { loadZstd } from '../protocol/zstd.js';
import { backoffDelay } from './backoff.js';
import { type ChunkIndex, chunkIndexOfTable } from './base-index.js';
import { DecodeWorker } from './decode-worker.js';
import { fileDigest, openDeltaBase } from './delta-source.js';
import type { DownloadJob } from './downloader.js';
import { DownloadError } from './errors.js';
import { type BaseImage, baseFromIndex, FrameLayout, indexBase, type TransferStats } from './frame-source.js';
import { fetchFrameTable, fetchObjectBytes } from './object-tables.js';
import { type CorruptChunk, type RangeFetchDeps, Transient, UrlRefused } from './range-fetch.js';
import { abortReason } from './runtime.js';

/** The presigned URL in use, and a way to get a fresh one (counted in the stats). */
export interface ObjectUrl {
  current(): string;
  refresh(): Promise<void>;
}

export interface ChosenPath {
  readonly layout: FrameLayout;
  readonly fallback?: string;
  /** The new image's chunk index (from its signed frame table), for the agent to keep with the image. */
  readonly index: ChunkIndex;
}

/** The layout of a compressed release's download, and why a cheaper path was not taken. */
export async function choosePath(
  d: RangeFetchDeps,
  job: DownloadJob,
  verified: number,
  url: ObjectUrl,
  stats: TransferStats,
): Promise<ChosenPath> {
  const m = job.manifest;
  let fallback = job.noBase;
  const { table } = await withRetries(
    d,
    job,
    () => fetchFrameTable(d.transport, url.current(), m, job.signal, idle(d), stats),
    url.refresh,
  );
  const layout = new FrameLayout(table, await loadZstd());
  const index = chunkIndexOfTable(table);
  /** The choice made: the decode worker starts last (nothing can fail after it; the downloader closes it). */
  const chosen = (): ChosenPath => {
    if (d.options.decodeWorker ?? true) layout.decoder = DecodeWorker.start();
    return { layout, index, ...(fallback !== undefined ? { fallback } : {}) };
  };
  const base = job.base;
  if (!base || verified >= m.size) return chosen();
  const entry = deltaFor(m, base.sha256);
  let baseUnusable = false;
  if (entry) {
    try {
      const fh = await openDeltaBase(base.path, entry);
      try {
        layout.delta = {
          base: fh,
          path: base.path,
          codec: await loadDictCodec(),
          table: await withRetries(
            d,
            job,
            () => deltaTable(d, m, entry, url.current(), job.signal, stats),
            url.refresh,
          ),
        };
      } finally {
        if (!layout.delta) await fh.close();
      }
    } catch (err) {
      if (job.signal.aborted) throw abortReason(job.signal);
      if (err instanceof DownloadError) throw err;
      // The installed image is not the delta's base: neither delta nor chunk reuse can use it.
      baseUnusable = true;
      fallback = (err as Error).message;
      d.logger.warn('precomputed delta unavailable; downloading every frame', { reason: fallback });
    }
  } else if (m.compression?.deltas?.length) {
    fallback = `no delta from the installed image (deltas from ${m.compression.deltas.map((e) => e.from_version).join(', ')})`;
  }
  if (!layout.delta && !baseUnusable) {
    try {
      layout.base = await locateBase(d, job, base, table);
    } catch (err) {
      if (job.signal.aborted) throw abortReason(job.signal);
      fallback = fallback ? `${fallback}; ${(err as Error).message}` : (err as Error).message;
      d.logger.warn('chunk reuse unavailable; downloading every frame', { reason: fallback });
    }
  }
  return chosen();
}

/**
 * A chunk built (partly) from the installed image failed its digest. Answers the fallback reason when the base is
 * to blame, having dropped it from the layout (the rest comes from the network); undefined when the download is
 * (count a corrupt chunk). Chunk reuse always drops the base: the frames are fetched again either way. A delta
 * blames the base only if the base no longer has the digest the delta was built from (hashed once, here, rather
 * than before every delta download): otherwise the delta itself is bad, which must end as a corrupt download.
 */
export async function blameBase(
  layout: FrameLayout,
  job: DownloadJob,
  err: CorruptChunk,
  logger: RangeFetchDeps['logger'],
): Promise<string | undefined> {
  if (!err.reused) return undefined;
  let reason: string | undefined;
  if (layout.base) {
    reason = `the installed image did not verify at chunk ${err.index}; downloading the rest`;
    await layout.base.fh.close().catch(() => {});
    layout.base = undefined;
  } else if (layout.delta && !layout.deltaBaseVerified && job.base) {
    const entry = layout.delta.table.entry;
    let digest: string;
    try {
      digest = await fileDigest(job.base.path, job.signal);
    } catch (e) {
      if (job.signal.aborted) throw abortReason(job.signal);
      digest = `unreadable (${(e as { code?: string }).code ?? 'error'})`;
    }
    if (digest === entry.base_sha256) {
      layout.deltaBaseVerified = true;
      return undefined;
    }
    reason = `the installed image is not the ${entry.from_version} image the delta was built from (chunk ${err.index} did not rebuild); downloading the rest`;
    await layout.delta.base.close().catch(() => {});
    layout.delta = undefined;
  }
  if (reason) logger.warn('the installed image cannot serve; downloading the rest', { reason });
  return reason;
}

/** The installed image located for chunk reuse: through its kept index, else by reading it. */
async function locateBase(
  d: RangeFetchDeps,
  job: DownloadJob,
  base: NonNullable<DownloadJob['base']>,
  table: FrameTable,
): Promise<BaseImage> {
  const started = d.runtime.now();
  let located: BaseImage | undefined;
  let why = 'no index kept';
  if (base.index) {
    const found = await baseFromIndex(base.path, base.sha256, base.index, table).catch((err: unknown) => {
      throw new Error(`the installed image cannot be read (${(err as { code?: string }).code ?? 'error'})`);
    });
    if (typeof found === 'string') why = found;
    else located = found;
  }
  if (!located) {
    try {
      located = await indexBase(base.path, table, job.signal);
    } catch (err) {
      if (job.signal.aborted) throw err;
      throw new Error(`the installed image cannot be read (${(err as { code?: string }).code ?? 'error'})`);
    }
    if (located.sha256 !== base.sha256) {
      await located.fh.close();
      throw new Error('the installed image differs from the digest recorded at its install');
    }
    // Kept whatever this release shares with it: the next update from this image needs no pass.
    if (located.index) await job.onBaseIndexed?.(located.index);
  }
  if (located.found === 0) {
    await located.fh.close();
    throw new Error('the installed image shares no frame with the release');
  }
  d.logger.info('installed image located for chunk reuse', {
    ms: d.runtime.now() - started,
    by: base.index && !located.index ? 'kept index' : `reading it (${why})`,
    frames_found: located.found,
    frames: table.count,
  });
  return located;
}

const idle = (d: RangeFetchDeps) => d.options.idleTimeoutMs ?? 30_000;

/**
 * A table (frame table, delta table): one Range request of the object, retried like the download. Fetched again
 * on a resume rather than kept on disk: tables are a fraction of a percent of the image and nothing to clean up.
 */
export async function withRetries<T>(
  d: RangeFetchDeps,
  job: DownloadJob,
  fetch: () => Promise<T>,
  refresh: () => Promise<void>,
): Promise<T> {
  const o = d.options;
  let failures = 0;
  let refreshes = 0;
  for (;;) {
    try {
      return await fetch();
    } catch (err) {
      if (job.signal.aborted) throw abortReason(job.signal);
      if (err instanceof UrlRefused) {
        if (++refreshes > (o.maxUrlRefreshes ?? 3)) {
          throw new DownloadError('forbidden', 'the download URL kept being refused (403) after fresh URLs');
        }
        await refresh();
        continue;
      }
      if (!(err instanceof Transient)) throw err;
      if (++failures >= (o.maxAttempts ?? 5)) {
        throw new DownloadError(err.failure, `${err.message} (gave up after ${failures} attempts)`);
      }
      await d.runtime.sleep(
        backoffDelay(failures - 1, o.backoff ?? { baseMs: 500, maxMs: 30_000 }, () => d.runtime.random()),
        job.signal,
      );
    }
  }
}

/** The delta's table, checked against the signed manifest; a table that is not is a corrupt download. */
async function deltaTable(
  d: RangeFetchDeps,
  m: ReleaseManifest,
  entry: DeltaEntry,
  url: string,
  signal: AbortSignal,
  stats: TransferStats,
): Promise<DeltaTable> {
  const at = entry.offset + entry.size - entry.table_size;
  const bytes = await fetchObjectBytes(d.transport, url, m, at, entry.table_size, signal, idle(d), stats);
  try {
    return parseDeltaTable(m, entry, bytes);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    throw new DownloadError('corrupt', err.message);
  }
}
