/**
 * The chunk index of an image the ECU has (issue 13: "index kept from the last install"): where each
 * content-defined chunk of the installed image starts and its SHA-256, so chunk reuse answers "which frames of the
 * new release do I already hold" from a table lookup instead of chunking and hashing the whole installed image at
 * every update (the second of CPU that made chunk reuse slower than a raw download).
 *
 * Where it comes from: the signed frame table of the release that image was downloaded from (it describes exactly
 * the bytes that verified against the manifest, chunk by chunk and whole), or, for an image installed before
 * indexes were kept (a factory image), the index the first chunk-reuse download computed by reading it.
 *
 * Kept per ECU and named by the image's SHA-256, the digest the installer records for its active slot: an index
 * is only ever used for the image it was made for. It is a hint, not a proof: a slot changed since (flash wear, a
 * tampered file) makes reused bytes fail their chunk digest, which drops the reuse and fetches the rest from the
 * network (verification is the same for local and downloaded bytes), so a stale index costs a fallback, never a
 * wrong install. The file carries the SHA-256 of its own entries so disk damage to the index itself is caught at load.
 *
 * File: one JSON line (schema, image digest and size, chunking parameters, entries' SHA-256), then per chunk u32
 * size (little endian) and the 32-byte SHA-256 of its bytes: the chunk entries of the frame table, byte for byte.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type CdcParams, Chunker, checkCdcParams, MAX_CDC_CHUNK } from '../protocol/cdc.js';
import type { FrameTable } from '../protocol/frames.js';
import { ensureDir, writeFileAtomic } from './atomic-file.js';

const SCHEMA = 'ota.chunk-index/v1';
export const CHUNK_ENTRY = 36;
/** Largest header line read (it is ~250 bytes). */
const MAX_HEADER = 4096;

export interface ChunkIndex {
  readonly cdc: CdcParams;
  /** Bytes of the image the index describes (the chunk sizes add up to it). */
  readonly imageSize: number;
  /** CHUNK_ENTRY bytes per chunk: u32 size, SHA-256. */
  readonly entries: Buffer;
}

/** The chunk index of the image a frame table describes (the release's signed table). */
export function chunkIndexOfTable(t: FrameTable): ChunkIndex {
  const entries = Buffer.allocUnsafe(CHUNK_ENTRY * t.chunks);
  let size = 0;
  for (let k = 0; k < t.chunks; k++) {
    entries.writeUInt32LE(t.chunkSize[k]!, k * CHUNK_ENTRY);
    t.chunkHashes.copy(entries, k * CHUNK_ENTRY + 4, k * 32, k * 32 + 32);
    size += t.chunkSize[k]!;
  }
  return { cdc: t.cdc, imageSize: size, entries };
}

/** Collects a chunk index as an image is chunked (the first chunk-reuse download from an unindexed image). */
export class ChunkIndexBuilder {
  private readonly parts: Buffer[] = [];
  private size = 0;

  constructor(private readonly cdc: CdcParams) {}

  add(length: number, sha256: Buffer): void {
    const e = Buffer.allocUnsafe(CHUNK_ENTRY);
    e.writeUInt32LE(length, 0);
    sha256.copy(e, 4);
    this.parts.push(e);
    this.size += length;
  }

  finish(): ChunkIndex {
    return { cdc: this.cdc, imageSize: this.size, entries: Buffer.concat(this.parts) };
  }
}

/**
 * The chunk index of an image read as a stream, cut as the publisher cuts it (cdc.ts) with one SHA-256 per chunk;
 * `each` also sees every piece (the whole-image digest, for one). Memory: one entry per chunk.
 */
export async function chunkIndexOf(
  image: AsyncIterable<Uint8Array>,
  cdc: CdcParams,
  each?: (piece: Buffer) => void,
): Promise<ChunkIndex> {
  const built = new ChunkIndexBuilder(cdc);
  const chunker = new Chunker(cdc);
  let hash = createHash('sha256');
  let length = 0;
  const cut = () => {
    built.add(length, hash.digest());
    hash = createHash('sha256');
    length = 0;
  };
  for await (const data of image) {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    each?.(buf);
    let from = 0;
    for (const n of chunker.push(buf)) {
      const upTo = from + n - length;
      hash.update(buf.subarray(from, upTo));
      length = n;
      cut();
      from = upTo;
    }
    hash.update(buf.subarray(from));
    length += buf.length - from;
  }
  if (chunker.end() !== undefined) cut();
  return built.finish();
}

/** Where each chunk of an index starts in its image, by the chunk's hex SHA-256 (the first when repeated). */
export function chunkOffsets(index: ChunkIndex): Map<string, number> {
  const at = new Map<string, number>();
  let offset = 0;
  for (let e = 0; e < index.entries.length; e += CHUNK_ENTRY) {
    const key = index.entries.toString('hex', e + 4, e + CHUNK_ENTRY);
    if (!at.has(key)) at.set(key, offset);
    offset += index.entries.readUInt32LE(e);
  }
  return at;
}

export function encodeChunkIndex(index: ChunkIndex, imageSha256: string): Buffer {
  const header = {
    schema: SCHEMA,
    image_sha256: imageSha256,
    image_size: index.imageSize,
    cdc: index.cdc,
    entries_sha256: createHash('sha256').update(index.entries).digest('hex'),
  };
  return Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), index.entries]);
}

/** The index in `bytes` if it is a whole, undamaged index of the image with this digest; else why not. */
export function decodeChunkIndex(bytes: Buffer, imageSha256: string): ChunkIndex | string {
  const nl = bytes.subarray(0, MAX_HEADER).indexOf(10);
  if (nl < 0) return 'no header';
  let h: {
    schema?: unknown;
    image_sha256?: unknown;
    image_size?: unknown;
    cdc?: CdcParams;
    entries_sha256?: unknown;
  };
  try {
    h = JSON.parse(bytes.toString('utf8', 0, nl));
  } catch {
    return 'unreadable header';
  }
  if (h.schema !== SCHEMA || h.image_sha256 !== imageSha256) return 'not an index of this image';
  const entries = bytes.subarray(nl + 1);
  if (createHash('sha256').update(entries).digest('hex') !== h.entries_sha256) return 'damaged';
  const cdc = { min: Number(h.cdc?.min), avg: Number(h.cdc?.avg), max: Number(h.cdc?.max) };
  try {
    checkCdcParams(cdc);
  } catch {
    return 'unusable chunking parameters';
  }
  if (entries.length % CHUNK_ENTRY !== 0) return 'wrong length';
  let size = 0;
  for (let e = 0; e < entries.length; e += CHUNK_ENTRY) {
    const s = entries.readUInt32LE(e);
    if (s < 1 || s > Math.min(cdc.max, MAX_CDC_CHUNK)) return 'a chunk of impossible size';
    size += s;
  }
  if (size !== h.image_size) return 'chunks do not add up to the image';
  return { cdc, imageSize: size, entries };
}

const SAFE_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Indexes on disk: <dir>/<ecu>/<image sha256>.idx. Each ECU keeps at most the indexes of the images named at the
 * last keep (the active slot's and the one just downloaded: the A/B pair), so the folder never grows.
 */
export class BaseIndexStore {
  constructor(private readonly dir: string) {}

  private file(ecu: string, sha256: string): string | undefined {
    return SAFE_NAME.test(ecu) && SHA256_HEX.test(sha256) ? join(this.dir, ecu, `${sha256}.idx`) : undefined;
  }

  /** The kept index of this image of the ECU: the index, or why there is none usable. */
  async load(ecu: string, sha256: string): Promise<ChunkIndex | string> {
    const file = this.file(ecu, sha256);
    if (!file) return 'no index for this ECU name';
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (err) {
      return (err as { code?: string }).code === 'ENOENT' ? 'no index kept' : 'index unreadable';
    }
    return decodeChunkIndex(bytes, sha256);
  }

  /** Keeps the index of image `sha256` of the ECU; removes the ECU's other indexes but those of `alsoKeep`. */
  async keep(
    ecu: string,
    sha256: string,
    index: ChunkIndex,
    alsoKeep: readonly string[] = [],
  ): Promise<void> {
    const file = this.file(ecu, sha256);
    if (!file) return;
    const folder = join(this.dir, ecu);
    await ensureDir(folder);
    await writeFileAtomic(file, encodeChunkIndex(index, sha256));
    const wanted = new Set([`${sha256}.idx`, ...alsoKeep.map((s) => `${s}.idx`)]);
    for (const name of await readdir(folder)) {
      if (!wanted.has(name)) await rm(join(folder, name), { force: true });
    }
  }
}
