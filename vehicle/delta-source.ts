/**
 * The image bytes of a release rebuilt from a precomputed delta (protocol/delta.ts) and the installed image it was
 * made from: one Range request of the delta's frames from the first chunk still to verify, each frame decoded with
 * its base window as dictionary. The caller verifies every chunk against the manifest exactly as for downloaded
 * bytes, so the delta's frames are trusted no more than the network. Memory: one window (at most
 * MAX_DELTA_WINDOW, 12 MiB as published), one frame in and one chunk out.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import type { DeltaEntry, DeltaTable, DictCodec } from '../protocol/delta.js';
import { collectFrames } from '../protocol/frames.js';
import type { ReleaseManifest } from '../protocol/manifest.js';
import type { DecodeWorker } from './decode-worker.js';
import { pipelined } from './decode-worker.js';
import { isNetworkFailure, type TransferStats } from './frame-source.js';
import { Transient } from './range-fetch.js';

export interface DeltaSource {
  readonly table: DeltaTable;
  readonly codec: DictCodec;
  /** The installed image the delta was built from (its size checked when opened), and its path. */
  readonly base: FileHandle;
  readonly path: string;
}

/**
 * The installed image opened as the delta's base. Only its size is checked here: hashing the whole base before the
 * first frame cost as much CPU as decoding the delta (bench:delta). A base whose bytes changed since its install
 * rebuilds chunks that fail their digest; the downloader then hashes the base once (baseDigest) to tell a damaged
 * base (fall back to the frames, with the reason) from a damaged delta (a corrupt download). Throws with the reason.
 */
export async function openDeltaBase(path: string, entry: DeltaEntry): Promise<FileHandle> {
  let fh: FileHandle;
  let size: number;
  try {
    fh = await open(path, 'r');
    size = (await fh.stat()).size;
  } catch (err) {
    throw new Error(`the installed image cannot be read (${(err as { code?: string }).code ?? 'error'})`);
  }
  if (size !== entry.base_size) {
    await fh.close();
    throw new Error(`the installed image is not the ${entry.from_version} image the delta was built from`);
  }
  return fh;
}

/** SHA-256 of a file, hex: one streaming pass. */
export async function fileDigest(path: string, signal: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for await (const d of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) h.update(d as Buffer);
  return h.digest('hex');
}

/**
 * Image bytes of manifest chunks [offset / chunk_size, ...] up to image byte `end` (inclusive; offset and end + 1
 * are chunk boundaries). `network(from, to)` streams object bytes [from, to] of one Range request.
 */
export async function* deltaPieces(
  d: DeltaSource,
  m: ReleaseManifest,
  offset: number,
  end: number,
  network: (from: number, to: number) => AsyncIterable<Uint8Array>,
  stats: TransferStats,
  decoder?: DecodeWorker,
): AsyncGenerator<Buffer> {
  const t = d.table;
  const first = offset / m.chunk_size;
  const last = Math.ceil((end + 1) / m.chunk_size);
  if (first >= last) return;
  const body = network(t.objectOffset[first]!, t.objectOffset[last]! - 1);
  let done = first;
  // On this thread: one window buffer for the whole request (the codec copies the dictionary it is given).
  let windowBuffer: Buffer | undefined;
  /** Chunk k's window of the base. */
  const readWindow = async (k: number): Promise<Buffer> => {
    const length = t.windowLength[k]!;
    if (!windowBuffer || windowBuffer.length < length) windowBuffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await d.base.read(windowBuffer, 0, length, t.windowOffset[k]!);
    // A base cut short since it was opened: the chunk decodes to something else and fails its digest.
    return windowBuffer.subarray(0, bytesRead);
  };
  const rebuild = async ([k, frame]: [number, Buffer]): Promise<[number, Buffer]> => {
    const size = Math.min(m.chunk_size, m.size - k * m.chunk_size);
    if (t.raw[k]) return [k, frame];
    stats.bytesReused += size - frame.length;
    if (decoder) {
      // The worker reads the window itself, straight into the decoder's memory.
      const window = { path: d.path, offset: t.windowOffset[k]!, length: t.windowLength[k]! };
      return [k, await decoder.decode([{ stored: frame, size, raw: false }], window)];
    }
    const out = d.codec.decompress(frame, await readWindow(k), size);
    return [k, Buffer.from(out.buffer, out.byteOffset, out.byteLength)];
  };
  const frames = collectFrames((i) => t.stored[i]!, first, last, body);
  // Two chunks ahead at most with a worker: each holds a window (up to MAX_DELTA_WINDOW) and a chunk.
  const chunks = decoder
    ? pipelined(frames, rebuild, 2, isNetworkFailure)
    : (async function* () {
        for await (const f of frames) yield await rebuild(f);
      })();
  for await (const [k, chunk] of chunks) {
    yield chunk;
    if (decoder && !t.raw[k]) decoder.recycle(chunk); // the consumer copied what it keeps
    done = k + 1;
  }
  if (done === last) return;
  throw new Transient('network', 'the server closed the response before the delta frames asked for');
}
