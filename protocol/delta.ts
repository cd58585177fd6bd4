/**
 * Precomputed deltas (issue 13): for a base image the publisher names, each manifest chunk of the new image is one
 * zstd frame compressed with a window of the base as its dictionary (raw content, the way `zstd --patch-from` uses
 * the old file, but one bounded window per chunk instead of the whole old image). The window is the base region
 * the chunk most likely came from: content-defined chunks (cdc.ts) the two images share give the shift between
 * them near each chunk, and the window reaches `margin` bytes either side of the shifted chunk.
 *
 * One frame per manifest chunk keeps what a raw download has: a chunk is the unit of verification and of resume
 * (a cut mid-delta resumes at the frame of the first unverified chunk, one Range request of the rest), and the
 * decoder holds one window, one frame in and one chunk out, whatever the image size.
 *
 * A delta is appended to the release's stored object after the frame table, and the signed manifest lists it
 * (manifest.compression.deltas: base size and SHA-256, offset, size, table SHA-256): the table is as trusted as the
 * manifest, and the frames are trusted only once the chunk they rebuild matches the manifest's digest, like any
 * downloaded bytes.
 *
 * Section layout: the frames, then the table (little endian): "OTADLT01", u32 chunk count, u32 0; per manifest chunk
 * u48 window offset in the base, u16 flags (1 = stored raw, no window), u32 window length, u32 stored size.
 */
import { createHash } from 'node:crypto';
import { ProtocolError } from './errors.js';
import type { ReleaseManifest } from './manifest.js';
import { frameContentSize, loadWasmZstd, ZstdFrameError } from './zstd.js';

export const DELTA_TABLE_MAGIC = 'OTADLT01';
const HEADER = 16;
const ENTRY = 16;
/** Largest base window a delta frame may name: what a vehicle holds besides one chunk in and out. */
export const MAX_DELTA_WINDOW = 32 * 1024 * 1024;
/** Base bytes either side of the shifted chunk: 4 MiB measured 5.3% (exe) and 16.0% (tree) in bench:delta. */
export const DEFAULT_DELTA_MARGIN = 4 * 1024 * 1024;

export type DeltaEntry = NonNullable<NonNullable<ReleaseManifest['compression']>['deltas']>[number];

export interface DeltaTable {
  readonly entry: DeltaEntry;
  /** Per manifest chunk. */
  readonly windowOffset: Float64Array;
  readonly windowLength: Uint32Array;
  readonly stored: Uint32Array;
  readonly raw: Uint8Array;
  /** Where each chunk's frame starts in the object; chunks + 1 entries (the last is where the table starts). */
  readonly objectOffset: Float64Array;
}

export function deltaTableSize(m: Pick<ReleaseManifest, 'chunks'>): number {
  return HEADER + ENTRY * m.chunks.length;
}

export function encodeDeltaTable(
  frames: readonly { windowOffset: number; windowLength: number; stored: number; raw: boolean }[],
): Buffer {
  const out = Buffer.alloc(HEADER + ENTRY * frames.length);
  out.write(DELTA_TABLE_MAGIC, 0, 'latin1');
  out.writeUInt32LE(frames.length, 8);
  frames.forEach((f, i) => {
    const at = HEADER + i * ENTRY;
    out.writeUIntLE(f.windowOffset, at, 6);
    out.writeUInt16LE(f.raw ? 1 : 0, at + 6);
    out.writeUInt32LE(f.windowLength, at + 8);
    out.writeUInt32LE(f.stored, at + 12);
  });
  return out;
}

/** The delta the manifest lists for a base image of this digest, if any. */
export function deltaFor(m: ReleaseManifest, baseSha256: string): DeltaEntry | undefined {
  return m.compression?.deltas?.find((d) => d.base_sha256 === baseSha256);
}

/**
 * Parses a delta table fetched for a manifest's delta and checks it: its digest, one entry per manifest chunk,
 * windows inside the base and no larger than MAX_DELTA_WINDOW, a raw frame exactly its chunk, a compressed one
 * smaller than it, the frames and table filling the section. Anything else is a ProtocolError.
 */
export function parseDeltaTable(m: ReleaseManifest, entry: DeltaEntry, bytes: Buffer): DeltaTable {
  const bad = (why: string) => new ProtocolError('invalid_delta', `delta from ${entry.from_version}: ${why}`);
  if (bytes.length !== entry.table_size)
    throw bad(`table has ${bytes.length} bytes, the manifest says ${entry.table_size}`);
  if (createHash('sha256').update(bytes).digest('hex') !== entry.table_sha256) {
    throw bad('table SHA-256 differs from the signed manifest');
  }
  const n = m.chunks.length;
  if (bytes.toString('latin1', 0, 8) !== DELTA_TABLE_MAGIC || bytes.readUInt32LE(8) !== n) {
    throw bad('not a delta table for this manifest');
  }
  if (bytes.length !== HEADER + ENTRY * n) throw bad('wrong length');
  const windowOffset = new Float64Array(n);
  const windowLength = new Uint32Array(n);
  const stored = new Uint32Array(n);
  const raw = new Uint8Array(n);
  const objectOffset = new Float64Array(n + 1);
  let at = entry.offset;
  for (let k = 0; k < n; k++) {
    const e = HEADER + k * ENTRY;
    const chunk = Math.min(m.chunk_size, m.size - k * m.chunk_size);
    const wo = bytes.readUIntLE(e, 6);
    const flags = bytes.readUInt16LE(e + 6);
    const wl = bytes.readUInt32LE(e + 8);
    const st = bytes.readUInt32LE(e + 12);
    if (flags > 1) throw bad(`chunk ${k} has unknown flags ${flags}`);
    if (wl > MAX_DELTA_WINDOW || wo + wl > entry.base_size)
      throw bad(`chunk ${k} names a window outside the base`);
    if (flags === 1 ? st !== chunk || wl !== 0 : st < 1 || st >= chunk) {
      throw bad(`chunk ${k} stores ${st} bytes for ${chunk}`);
    }
    windowOffset[k] = wo;
    windowLength[k] = wl;
    stored[k] = st;
    raw[k] = flags;
    objectOffset[k] = at;
    at += st;
  }
  objectOffset[n] = at;
  if (at + entry.table_size !== entry.offset + entry.size)
    throw bad('frames and table do not fill the delta');
  return { entry, windowOffset, windowLength, stored, raw, objectOffset };
}

/** zstd with a raw-content dictionary: libzstd in WebAssembly (the agent's codec on Node 20, and the publisher's). */
export interface DictCodec {
  compress(data: Uint8Array, dict: Uint8Array, level: number): Uint8Array;
  /** Exactly `size` bytes or ZstdFrameError; the frame must declare `size` (checked before anything is allocated). */
  decompress(frame: Uint8Array, dict: Uint8Array, size: number): Uint8Array;
}

type WasmDict = {
  createCCtx(): number;
  createDCtx(): number;
  compressUsingDict(cctx: number, data: Uint8Array, dict: Uint8Array, level: number): Uint8Array;
  decompressUsingDict(dctx: number, frame: Uint8Array, dict: Uint8Array): Uint8Array;
};

let loading: Promise<DictCodec> | undefined;

export function loadDictCodec(): Promise<DictCodec> {
  loading ??= (async () => {
    const w = await loadWasmZstd<WasmDict>();
    let cctx: number | undefined;
    let dctx: number | undefined;
    return {
      compress(data, dict, level) {
        cctx ??= w.createCCtx();
        return w.compressUsingDict(cctx, data, dict, level);
      },
      decompress(frame, dict, size) {
        // The binding sizes its output from the frame header and ZSTD_decompress_usingDict writes no further: a
        // frame declaring anything but the chunk's size (a bomb) is refused here, before the allocation.
        const declared = frameContentSize(frame);
        if (declared !== size) {
          throw new ZstdFrameError(`the frame declares ${declared} bytes, the table ${size}`);
        }
        dctx ??= w.createDCtx();
        let out: Uint8Array;
        try {
          out = w.decompressUsingDict(dctx, frame, dict);
        } catch (err) {
          throw new ZstdFrameError(
            `zstd frame (with a dictionary) does not decode: ${(err as Error).message}`,
          );
        }
        if (out.length !== size)
          throw new ZstdFrameError(`zstd frame decoded to ${out.length} bytes, expected ${size}`);
        return out;
      },
    };
  })();
  return loading;
}
