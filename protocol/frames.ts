/**
 * Compressed releases: the stored object is a run of independent zstd frames followed by a frame table, and the
 * signed manifest carries the table's offset, size and SHA-256 (manifest.compression), so the table is as trusted
 * as the manifest while the manifest stays small (the manifest is fetched by digest; the table only by a vehicle
 * that downloads).
 *
 * The table is two lists. The chunk index: the image's content-defined chunks (cdc.ts), each with its size and
 * SHA-256, what a vehicle matches against the image it already has. The seek table: one entry per frame, its
 * stored size and whether it is stored raw (zstd did not shrink it). Frames are the content-defined chunks cut
 * again at every manifest chunk boundary, so a manifest chunk is always whole frames: resume points and per-chunk
 * verification stay what they were, and the frame list follows from the chunk sizes and manifest.chunk_size (a
 * piece of a split chunk is found in an old image through its whole chunk).
 *
 * Layout (little endian): "OTAFRM02", u32 cdc min, avg, max, u32 chunk count, u32 frame count; per chunk u32 size
 * and the 32-byte SHA-256 of its bytes; per frame u32 stored size | 0x80000000 when stored raw.
 */
import { createHash } from 'node:crypto';
import { type CdcParams, checkCdcParams, MAX_CDC_CHUNK } from './cdc.js';
import type { DictCodec } from './delta.js';
import { ProtocolError } from './errors.js';
import type { History } from './frame-window.js';
import type { ReleaseManifest } from './manifest.js';
import type { ZstdCodec } from './zstd.js';

export const FRAME_TABLE_MAGIC = 'OTAFRM02';
const HEADER = 28;
const CHUNK_ENTRY = 36;
const FRAME_ENTRY = 4;
const RAW_FLAG = 0x80000000;

export interface FrameTable {
  readonly cdc: CdcParams;
  /** Content-defined chunks. */
  readonly chunks: number;
  readonly chunkSize: Uint32Array;
  /** 32 bytes per content-defined chunk. */
  readonly chunkHashes: Buffer;
  /** Frames. */
  readonly count: number;
  /** Image bytes of each frame. */
  readonly size: Uint32Array;
  /** Bytes each frame takes in the object. */
  readonly stored: Uint32Array;
  readonly raw: Uint8Array;
  /** The content-defined chunk each frame is (a piece of), and where in it the frame starts. */
  readonly chunkOf: Uint32Array;
  readonly offsetInChunk: Uint32Array;
  /** Where each frame starts in the image; count + 1 entries (the last is the image size). */
  readonly imageOffset: Float64Array;
  /** Where each frame starts in the object; count + 1 entries (the last is where the table starts). */
  readonly objectOffset: Float64Array;
  /**
   * Most image bytes before a frame, within its manifest chunk, that it was compressed with as dictionary
   * (frame-window.ts); 0: independent frames.
   */
  readonly window: number;
  /** The manifest's chunk size: a windowed frame at a chunk's start has no dictionary. */
  readonly manifestChunkSize: number;
}

/** Bytes of the stored object: the image itself, or its frames and table. */
export function objectSize(m: ReleaseManifest): number {
  return m.compression?.object_size ?? m.size;
}

export function chunkHash(t: FrameTable, chunk: number): Buffer {
  return t.chunkHashes.subarray(chunk * 32, chunk * 32 + 32);
}

/** The frame that starts at image offset `at`; throws when no frame starts there. */
export function frameStartingAt(t: FrameTable, at: number): number {
  let lo = 0;
  let hi = t.count;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (t.imageOffset[mid]! < at) lo = mid + 1;
    else hi = mid;
  }
  if (t.imageOffset[lo] !== at) throw new RangeError(`no frame starts at image offset ${at}`);
  return lo;
}

/** Sizes of the frames a chunk of `size` bytes at image offset `at` is cut into by manifest chunk boundaries. */
export function splitAtBoundaries(at: number, size: number, chunkSize: number): number[] {
  const pieces: number[] = [];
  let done = 0;
  while (done < size) {
    const take = Math.min(chunkSize - ((at + done) % chunkSize), size - done);
    pieces.push(take);
    done += take;
  }
  return pieces;
}

export function encodeFrameTable(
  cdc: CdcParams,
  chunks: readonly { size: number; sha256: Buffer }[],
  frames: readonly { stored: number; raw: boolean }[],
): Buffer {
  const out = Buffer.alloc(HEADER + CHUNK_ENTRY * chunks.length + FRAME_ENTRY * frames.length);
  out.write(FRAME_TABLE_MAGIC, 0, 'latin1');
  out.writeUInt32LE(cdc.min, 8);
  out.writeUInt32LE(cdc.avg, 12);
  out.writeUInt32LE(cdc.max, 16);
  out.writeUInt32LE(chunks.length, 20);
  out.writeUInt32LE(frames.length, 24);
  chunks.forEach((c, i) => {
    const at = HEADER + i * CHUNK_ENTRY;
    out.writeUInt32LE(c.size, at);
    c.sha256.copy(out, at + 4);
  });
  const base = HEADER + CHUNK_ENTRY * chunks.length;
  for (const [i, f] of frames.entries()) {
    out.writeUInt32LE((f.stored | (f.raw ? RAW_FLAG : 0)) >>> 0, base + i * FRAME_ENTRY);
  }
  return out;
}

/** Most bytes a table may take for a manifest (what a vehicle or the backend may be asked to hold). */
export function maxFrameTableSize(m: Pick<ReleaseManifest, 'size' | 'chunks'>): number {
  const chunks = Math.ceil(m.size / 64);
  return HEADER + CHUNK_ENTRY * chunks + FRAME_ENTRY * (chunks + m.chunks.length);
}

/**
 * Parses a frame table fetched for a manifest and checks it against it: its digest, that the chunks add up to the
 * image and the frames to the object, that none is larger than the chunker's maximum and that no frame claims to
 * expand. Anything else is a ProtocolError (invalid_frame_table).
 */
export function parseFrameTable(m: ReleaseManifest, bytes: Buffer): FrameTable {
  const c = m.compression;
  const bad = (why: string) => new ProtocolError('invalid_frame_table', `frame table: ${why}`);
  if (!c) throw bad('the manifest has no compression');
  if (bytes.length !== c.table_size) throw bad(`${bytes.length} bytes, the manifest says ${c.table_size}`);
  if (createHash('sha256').update(bytes).digest('hex') !== c.table_sha256) {
    throw bad('SHA-256 differs from the signed manifest');
  }
  if (bytes.length < HEADER || bytes.toString('latin1', 0, 8) !== FRAME_TABLE_MAGIC)
    throw bad('not a frame table');
  const cdc = { min: bytes.readUInt32LE(8), avg: bytes.readUInt32LE(12), max: bytes.readUInt32LE(16) };
  try {
    checkCdcParams(cdc);
  } catch (err) {
    throw bad((err as Error).message);
  }
  const chunks = bytes.readUInt32LE(20);
  const count = bytes.readUInt32LE(24);
  if (chunks < 1 || count < chunks || bytes.length !== HEADER + CHUNK_ENTRY * chunks + FRAME_ENTRY * count) {
    throw bad('wrong length');
  }
  const chunkSize = new Uint32Array(chunks);
  const chunkHashes = Buffer.alloc(32 * chunks);
  const size = new Uint32Array(count);
  const stored = new Uint32Array(count);
  const raw = new Uint8Array(count);
  const chunkOf = new Uint32Array(count);
  const offsetInChunk = new Uint32Array(count);
  const imageOffset = new Float64Array(count + 1);
  const objectOffset = new Float64Array(count + 1);
  const frames = HEADER + CHUNK_ENTRY * chunks;
  let image = 0;
  let object = 0;
  let f = 0;
  for (let k = 0; k < chunks; k++) {
    const at = HEADER + k * CHUNK_ENTRY;
    const s = bytes.readUInt32LE(at);
    if (s < 1 || s > Math.min(cdc.max, MAX_CDC_CHUNK)) throw bad(`chunk ${k} has ${s} bytes`);
    chunkSize[k] = s;
    bytes.copy(chunkHashes, k * 32, at + 4, at + 36);
    let within = 0;
    for (const piece of splitAtBoundaries(image, s, m.chunk_size)) {
      if (f >= count) throw bad('fewer frames than the chunks make');
      const word = bytes.readUInt32LE(frames + f * FRAME_ENTRY);
      const isRaw = (word & RAW_FLAG) !== 0;
      const st = (word & ~RAW_FLAG) >>> 0;
      if (isRaw ? st !== piece : st < 1 || st >= piece)
        throw bad(`frame ${f} stores ${st} bytes for ${piece}`);
      size[f] = piece;
      stored[f] = st;
      raw[f] = isRaw ? 1 : 0;
      chunkOf[f] = k;
      offsetInChunk[f] = within;
      imageOffset[f] = image;
      objectOffset[f] = object;
      within += piece;
      image += piece;
      object += st;
      f++;
    }
  }
  if (f !== count) throw bad(`${count} frames listed, the chunks make ${f}`);
  imageOffset[count] = image;
  objectOffset[count] = object;
  if (image !== m.size) throw bad(`chunks hold ${image} bytes, the image ${m.size}`);
  if (object !== c.table_offset)
    throw bad(`frames take ${object} bytes, the manifest says ${c.table_offset}`);
  return {
    cdc,
    chunks,
    chunkSize,
    chunkHashes,
    count,
    size,
    stored,
    raw,
    chunkOf,
    offsetInChunk,
    imageOffset,
    objectOffset,
    window: c.window ?? 0,
    manifestChunkSize: m.chunk_size,
  };
}

/** Whether frame `i` starts a manifest chunk: a windowed frame there was compressed without a dictionary. */
export function startsChunk(t: FrameTable, i: number): boolean {
  return t.imageOffset[i]! % t.manifestChunkSize === 0;
}

/** How windowed frames are decoded on this thread: the codec with dictionaries, and the bytes before the frame. */
export interface WindowedDecoding {
  readonly codec: DictCodec;
  readonly history: History;
}

/**
 * Frame `i`'s image bytes from its stored bytes (bounded by the table: see zstd.ts). A windowed table's frames are
 * decoded with `windowed.history` (the image bytes before frame i in its manifest chunk) as dictionary, and
 * appended to it; the history is emptied at a chunk's first frame.
 */
export function decodeFrame(
  t: FrameTable,
  i: number,
  stored: Uint8Array,
  codec: ZstdCodec,
  windowed?: WindowedDecoding,
): Uint8Array {
  if (t.window > 0 && !windowed) throw new Error('a windowed frame needs the bytes before it');
  if (windowed && startsChunk(t, i)) windowed.history.reset();
  const dict = windowed?.history.dict();
  let out: Uint8Array;
  if (t.raw[i]) out = stored;
  else if (dict && dict.length > 0) out = windowed!.codec.decompress(stored, dict, t.size[i]!);
  else out = codec.decompress(stored, t.size[i]!);
  windowed?.history.append(out);
  return out;
}

/**
 * Whole frames first, first+1, ... from a stream of their stored bytes (`stored(i)` bytes each), each in a fresh
 * buffer (what was yielded is never overwritten), with its index. Stops after frame `last` (exclusive) or when the
 * stream ends; a partial frame at the end is dropped.
 */
export async function* collectFrames(
  stored: (i: number) => number,
  first: number,
  last: number,
  body: AsyncIterable<Uint8Array>,
): AsyncGenerator<[number, Buffer]> {
  let i = first;
  if (i >= last) return;
  let buf = Buffer.allocUnsafe(stored(i));
  let have = 0;
  for await (const piece of body) {
    let at = 0;
    while (at < piece.length) {
      const take = Math.min(piece.length - at, buf.length - have);
      buf.set(piece.subarray(at, at + take), have);
      have += take;
      at += take;
      if (have < buf.length) continue;
      yield [i, buf];
      if (++i >= last) return;
      buf = Buffer.allocUnsafe(stored(i));
      have = 0;
    }
  }
}

/**
 * Image bytes of frames first, first+1, ... from a stream of their stored bytes (a Range response starting at
 * frame `first`): each frame is collected (at most MAX_CDC_CHUNK bytes) and decoded whole. Stops after frame
 * `last` (exclusive) or when the stream ends; a partial frame at the end is dropped.
 */
export async function* decodeFrames(
  t: FrameTable,
  first: number,
  last: number,
  body: AsyncIterable<Uint8Array>,
  codec: ZstdCodec,
  windowed?: WindowedDecoding,
): AsyncGenerator<Buffer> {
  for await (const [i, frame] of collectFrames((k) => t.stored[k]!, first, last, body)) {
    const out = decodeFrame(t, i, frame, codec, windowed);
    yield Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  }
}
