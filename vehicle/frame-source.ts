/**
 * The image bytes of a compressed release, in order, from wherever they are cheapest: frames found in the base
 * image (the ECU's installed image, chunk reuse) are read from it, every other run of adjacent frames is one Range
 * request of the stored object (S3 serves no multi-range answers), decoded frame by frame with the output bounded
 * by the signed frame table. The caller hashes and verifies these bytes per manifest chunk exactly like raw ones:
 * local bytes are trusted no more than downloaded bytes.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { windowedDecoding } from '../protocol/frame-window.js';
import {
  collectFrames,
  decodeFrame,
  type FrameTable,
  frameStartingAt,
  startsChunk,
  type WindowedDecoding,
} from '../protocol/frames.js';
import type { ReleaseManifest } from '../protocol/manifest.js';
import type { ZstdCodec } from '../protocol/zstd.js';
import { type ChunkIndex, chunkIndexOf, chunkOffsets } from './base-index.js';
import type { DecodeWorker } from './decode-worker.js';
import { batches, pipelined } from './decode-worker.js';
import { type DeltaSource, deltaPieces } from './delta-source.js';
import { TransportError } from './http-transport.js';
import { Prefetch } from './prefetch.js';
import { Transient } from './range-fetch.js';

/** A network failure (a cut connection, a failed request): what arrived before it is still verified and kept. */
export const isNetworkFailure = (err: unknown) => err instanceof Transient || err instanceof TransportError;

/** Image bytes per batch of frames sent to the decode worker, and batches decoding ahead of the one being hashed. */
const DECODE_BATCH_BYTES = 1024 * 1024;
const DECODE_AHEAD = 3;
/**
 * Stored bytes of frames the base has that are fetched anyway to join two requests into one. Measured (bench:delta,
 * loopback): 16 KiB cut the requests by 15% (exe) and 35% (tree) and the time by 8-25% for 0.3% and 1.1% more bytes
 * served; 32 KiB saved a little more time for 1.1% and 3.0%. Bytes are what a fleet pays for: the smaller one.
 */
const COALESCE_GAP_BYTES = 16 * 1024;
/** Most base bytes read at once for adjacent reused frames. */
const REUSE_READ_BYTES = 2 * 1024 * 1024;
/** Base reads (of at most REUSE_READ_BYTES) and decoded batches (about DECODE_BATCH_BYTES) made ahead of use. */
const PREFETCH_READS = 2;
const PREFETCH_BATCHES = 4;
/**
 * Stored frames of a windowed release's next Range request collected ahead of their turn (they decode in order, so
 * only the bytes can go ahead): at most this many frames, each at most a content-defined chunk's maximum.
 */
const PREFETCH_FRAMES = 32;

export interface TransferStats {
  bytesReceived: number;
  requests: number;
  /** Image bytes taken from the base image instead of the network. */
  bytesReused: number;
}

/** Frames of the new image that the base image holds, and where. */
export interface BaseImage {
  readonly fh: FileHandle;
  /** SHA-256 of the whole base, computed while indexing it. */
  readonly sha256: string;
  /** Content-defined chunks of the new image it holds. */
  readonly found: number;
  /** The base's chunk index, when it was computed by reading the base (for the agent to keep). */
  readonly index?: ChunkIndex;
  /** Offset in the base image of frame `i`'s bytes, if the base holds them. */
  offsetOf(frame: number): number | undefined;
}

export class FrameLayout {
  constructor(
    readonly table: FrameTable,
    readonly codec: ZstdCodec,
    /** Dropped (undefined) once the base proves unusable: the rest comes from the network. */
    public base?: BaseImage,
    /** A precomputed delta from the installed image: when set, every chunk is rebuilt from it. */
    public delta?: DeltaSource,
  ) {}

  /** zstd decoding on a worker thread (decode-worker.ts), when there is one; else on this thread. */
  decoder?: DecodeWorker;

  /** The delta's base was hashed after a chunk failed and has the digest the delta names (the delta is to blame). */
  deltaBaseVerified = false;

  /** True when some byte in image bytes [from, to) was (or would be) taken or rebuilt from the base. */
  reusedIn(from: number, to: number): boolean {
    if (this.delta) return true;
    if (!this.base) return false;
    for (
      let i = frameStartingAt(this.table, from);
      i < this.table.count && this.table.imageOffset[i]! < to;
      i++
    ) {
      if (this.base.offsetOf(i) !== undefined) return true;
    }
    return false;
  }
}

/** The frame starting at image offset `at`, or the frame count at the end of the image. */
function frameAt(t: FrameTable, at: number, size: number): number {
  return at >= size ? t.count : frameStartingAt(t, at);
}

/** Frames [first, end) read from the base image at `at` (adjacent there too), or fetched in one Range request. */
type Segment =
  | {
      readonly local: true;
      readonly first: number;
      readonly end: number;
      readonly at: number;
      readonly size: number;
    }
  | { readonly local: false; readonly first: number; readonly end: number };

/** How frames [first, last) are obtained, in order: base reads and Range requests. */
function plan(t: FrameTable, base: BaseImage | undefined, first: number, last: number): Segment[] {
  const segments: Segment[] = [];
  let i = first;
  while (i < last) {
    const local = base?.offsetOf(i);
    if (base && local !== undefined) {
      // Frames that follow each other in the base too are one read (a patch release keeps long runs in place).
      let j = i + 1;
      let size = t.size[i]!;
      while (j < last && size < REUSE_READ_BYTES && base.offsetOf(j) === local + size) size += t.size[j++]!;
      segments.push({ local: true, first: i, end: j, at: local, size });
      i = j;
      continue;
    }
    // The longest run of frames the base does not have: one request. A short stretch the base has between two such
    // runs is fetched too (COALESCE_GAP_BYTES): a request costs a connection and a round trip, worth more than a few
    // KiB of compressed frames on loopback and on a cellular link alike.
    let j = i + 1;
    for (;;) {
      while (j < last && base?.offsetOf(j) === undefined) j++;
      let next = j;
      let gap = 0;
      while (next < last && base?.offsetOf(next) !== undefined && gap <= COALESCE_GAP_BYTES)
        gap += t.stored[next++]!;
      if (next >= last || gap > COALESCE_GAP_BYTES || next === j) break;
      j = next;
    }
    segments.push({ local: false, first: i, end: j });
    i = j;
  }
  return segments;
}

/**
 * Image bytes [offset, end] (offset and end + 1 are chunk boundaries, hence frame starts). `network(from, to)`
 * streams object bytes [from, to] of one Range request.
 *
 * With chunk reuse the next segment is under way while this one is handed on: the next base read is issued, and
 * while base frames are read and hashed the next Range request is sent and its first frames decoded (on the
 * worker), at most PREFETCH_* items ahead; one after the other, the network and the decoder idled through every
 * base read and the hashing waited for each request's first decoded batch. Measured (bench:delta, three
 * back-to-back pairs of runs at a load average of ~2.5): chunk reuse 1.22x -> 1.15x raw (exe), 1.13x -> 1.10x (tree),
 * a gain inside the run-to-run spread of this 2-core machine; +10 MiB peak RSS.
 */
export async function* layoutPieces(
  layout: FrameLayout,
  m: ReleaseManifest,
  offset: number,
  end: number,
  network: (from: number, to: number) => AsyncIterable<Uint8Array>,
  stats: TransferStats,
): AsyncGenerator<Buffer> {
  if (layout.delta) {
    yield* deltaPieces(layout.delta, m, offset, end, network, stats, layout.decoder);
    return;
  }
  const t = layout.table;
  const base = layout.base;
  const segments = plan(t, base, frameAt(t, offset, m.size), frameAt(t, end + 1, m.size));
  const decoder = layout.decoder;
  if (t.window > 0) {
    yield* windowedPieces(layout, segments, network, stats);
    return;
  }
  const run = (s: Segment): AsyncIterable<Buffer> =>
    s.local ? baseReads(base!, s, stats) : networkRun(layout, s, network);
  const ahead = new Map<number, Prefetch<Buffer>>();
  const startAhead = (k: number) => {
    const s = segments[k];
    if (s && !ahead.has(k)) ahead.set(k, new Prefetch(run(s), s.local ? PREFETCH_READS : PREFETCH_BATCHES));
  };
  try {
    for (let k = 0; k < segments.length; k++) {
      const s = segments[k]!;
      // Only while base frames are being read does the next request start early: never two responses at once.
      if (s.local || segments[k + 1]?.local) startAhead(k + 1);
      if (s.local) {
        let n = k + 1;
        while (segments[n]?.local) n++;
        startAhead(n);
      }
      const pieces = ahead.get(k) ?? run(s);
      ahead.delete(k);
      for await (const bytes of pieces) {
        yield bytes;
        // Asked for the next piece: the consumer is done with this one (it copied what it keeps).
        if (decoder && !s.local) decoder.recycle(bytes);
      }
    }
  } finally {
    for (const pending of ahead.values()) pending.close();
  }
}

/**
 * The pieces of a windowed release (protocol/frame-window.ts): every frame is decoded after the image bytes before
 * it in its manifest chunk, so the segments are decoded strictly in order and, with the decode worker, the reused
 * base bytes pass through it too (it keeps the window). A run starts at a chunk boundary (the verified offset), where
 * a windowed frame needs nothing before it. Only bytes go ahead: while base frames are read, the next Range request
 * is sent and its stored frames collected (at most PREFETCH_FRAMES), to be decoded when their turn comes.
 */
async function* windowedPieces(
  layout: FrameLayout,
  segments: readonly Segment[],
  network: (from: number, to: number) => AsyncIterable<Uint8Array>,
  stats: TransferStats,
): AsyncGenerator<Buffer> {
  const t = layout.table;
  const decoder = layout.decoder;
  const main = decoder ? undefined : await windowedDecoding(t.window);
  const ahead = new Map<number, Prefetch<[number, Buffer]>>();
  const framesOf = (s: Segment) =>
    collectFrames(
      (k) => t.stored[k]!,
      s.first,
      s.end,
      network(t.objectOffset[s.first]!, t.objectOffset[s.end]! - 1),
    );
  try {
    for (let k = 0; k < segments.length; k++) {
      const s = segments[k]!;
      if (!s.local) {
        const frames = ahead.get(k);
        ahead.delete(k);
        for await (const bytes of networkRun(layout, s, network, main, frames)) {
          yield bytes;
          if (decoder) decoder.recycle(bytes);
        }
        continue;
      }
      // Never two responses at once: the next request starts only while base frames are read.
      let n = k + 1;
      while (segments[n]?.local) n++;
      const next = segments[n];
      if (next && !ahead.has(n)) ahead.set(n, new Prefetch(framesOf(next), PREFETCH_FRAMES));
      yield* windowedBaseReads(layout, s, stats, main);
    }
  } finally {
    for (const pending of ahead.values()) pending.close();
  }
}

/** A windowed release's base frames of one segment, passed through the window (the worker's, or `main`). */
async function* windowedBaseReads(
  layout: FrameLayout,
  s: Segment & { local: true },
  stats: TransferStats,
  main: WindowedDecoding | undefined,
): AsyncGenerator<Buffer> {
  const t = layout.table;
  const decoder = layout.decoder;
  for await (const read of baseReads(layout.base!, s, stats)) {
    // Frame by frame, so the window restarts where a manifest chunk does (a short read: fewer bytes, which fail
    // their chunk like any wrong byte).
    const items: { stored: Buffer; size: number; raw: true }[] = [];
    const resets: boolean[] = [];
    for (let i = s.first, at = 0; i < s.end && at < read.length; at += t.size[i++]!) {
      const piece = read.subarray(at, at + t.size[i]!);
      if (main) {
        if (startsChunk(t, i)) main.history.reset();
        main.history.append(piece);
      } else {
        items.push({ stored: piece, size: piece.length, raw: true });
        resets.push(startsChunk(t, i));
      }
    }
    if (!decoder) {
      yield read;
      continue;
    }
    const bytes = await decoder.decode(items, undefined, { window: t.window, resets });
    yield bytes;
    decoder.recycle(bytes);
  }
}

/** Base frames of one segment, read at once. */
async function* baseReads(base: BaseImage, s: Segment & { local: true }, stats: TransferStats) {
  const buf = Buffer.allocUnsafe(s.size);
  const { bytesRead } = await base.fh.read(buf, 0, s.size, s.at);
  // A base shorter than indexed: whatever was read is hashed and fails its chunk, which drops the base.
  stats.bytesReused += bytesRead;
  yield buf.subarray(0, bytesRead);
}

/**
 * The image bytes of one Range request's frames, decoded on the worker when there is one (which keeps a windowed
 * release's history itself), else on this thread (with `windowed`'s history for a windowed release).
 */
async function* networkRun(
  layout: FrameLayout,
  s: Segment,
  network: (from: number, to: number) => AsyncIterable<Uint8Array>,
  windowed?: WindowedDecoding,
  /** The run's stored frames, when its request was started ahead (windowedPieces). */
  collected?: AsyncIterable<[number, Buffer]>,
): AsyncGenerator<Buffer> {
  const t = layout.table;
  const { first: i, end: j } = s;
  let got = 0;
  const frames =
    collected ??
    collectFrames((k) => t.stored[k]!, i, j, network(t.objectOffset[i]!, t.objectOffset[j]! - 1));
  const decoder = layout.decoder;
  const pieces = decoder
    ? pipelined(
        batches(
          frames,
          ([k]) => t.size[k]!,
          DECODE_BATCH_BYTES,
          ([k]) => startsChunk(t, k),
          isNetworkFailure,
        ),
        async (batch) => ({
          frames: batch.length,
          bytes: await decoder.decode(
            batch.map(([k, f]) => ({ stored: f, size: t.size[k]!, raw: t.raw[k] === 1 })),
            undefined,
            t.window > 0 ? { window: t.window, resets: batch.map(([k]) => startsChunk(t, k)) } : undefined,
          ),
        }),
        DECODE_AHEAD,
        isNetworkFailure,
      )
    : (async function* () {
        for await (const [k, frame] of frames) {
          const out = decodeFrame(t, k, frame, layout.codec, windowed);
          yield {
            frames: 1,
            bytes: Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength),
          };
        }
      })();
  for await (const piece of pieces) {
    got += piece.frames;
    yield piece.bytes;
  }
  if (got < j - i)
    throw new Transient('network', 'the server closed the response before the frames asked for');
}

/** Where the new image's content-defined chunks start in the base (-1: not there) -> a BaseImage over `fh`. */
function baseImage(
  fh: FileHandle,
  t: FrameTable,
  sha256: string,
  offsetOfChunk: (key: string) => number | undefined,
  extra: { index?: ChunkIndex } = {},
): BaseImage {
  const offsets = new Float64Array(t.chunks).fill(-1);
  let found = 0;
  for (let k = 0; k < t.chunks; k++) {
    const at = offsetOfChunk(t.chunkHashes.toString('hex', k * 32, k * 32 + 32));
    if (at === undefined) continue;
    offsets[k] = at;
    found++;
  }
  return {
    fh,
    sha256,
    found,
    ...extra,
    offsetOf: (i) => {
      const at = offsets[t.chunkOf[i]!]!;
      return at >= 0 ? at + t.offsetInChunk[i]! : undefined;
    },
  };
}

/**
 * The base image located through its kept chunk index (base-index.ts): a table lookup, nothing read. Answers why
 * not when the index cannot serve (other chunking parameters, or a file of another size than the index's image);
 * the base's bytes are not checked here: each reused frame is verified with its chunk, like downloaded bytes.
 */
export async function baseFromIndex(
  path: string,
  sha256: string,
  index: ChunkIndex,
  t: FrameTable,
): Promise<BaseImage | string> {
  if (index.cdc.min !== t.cdc.min || index.cdc.avg !== t.cdc.avg || index.cdc.max !== t.cdc.max) {
    return 'the kept index was cut with other chunking parameters';
  }
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (size !== index.imageSize) {
      await fh.close();
      return `the installed image has ${size} bytes, its kept index ${index.imageSize}`;
    }
  } catch (err) {
    await fh.close();
    throw err;
  }
  const offsets = chunkOffsets(index);
  return baseImage(fh, t, sha256, (key) => offsets.get(key));
}

/**
 * Indexes the base image with the release's chunking parameters and answers where it holds frames of the new
 * image: one streaming pass (content-defined cuts, SHA-256 of each piece and of the whole), memory one entry per
 * chunk. What it computed is answered too (`index`), for the agent to keep: the next update from this image needs
 * no pass.
 */
export async function indexBase(path: string, t: FrameTable, signal: AbortSignal): Promise<BaseImage> {
  const whole = createHash('sha256');
  const index = await chunkIndexOf(
    createReadStream(path, { highWaterMark: 1024 * 1024, signal }),
    t.cdc,
    (b) => whole.update(b),
  );
  const offsets = chunkOffsets(index);
  return baseImage(await open(path, 'r'), t, whole.digest('hex'), (key) => offsets.get(key), { index });
}
