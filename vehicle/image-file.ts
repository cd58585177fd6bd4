/**
 * The image file on disk while it downloads and after: the .part file's writes (copied into pooled buffers and
 * written while the next bytes arrive), its background write-back, the running whole-image hash of the verified
 * prefix, the re-check of that prefix on resume, and the final whole-file check against the manifest.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open, statfs } from 'node:fs/promises';
import { compareDigest, ImageHasher, type ReleaseManifest } from '../protocol/manifest.js';
import type { BufferPool } from './buffer-pool.js';
import { throwIfAborted } from './runtime.js';

const MiB = 1024 * 1024;

/** Answers free bytes for a path (injectable: tests simulate a full disk). */
export type FreeSpace = (path: string) => Promise<number>;

export const systemFreeSpace: FreeSpace = async (path) => {
  const s = await statfs(path);
  return Number(s.bavail) * Number(s.bsize);
};

/**
 * SHA-256 of the verified prefix, fed as bytes arrive: it moves on with each verified chunk and falls back to the
 * last one when a chunk fails or a connection drops mid-chunk (Hash.copy keeps the state at that boundary).
 */
export class PrefixHash {
  private committed = createHash('sha256');
  private working = createHash('sha256');

  update(data: Buffer): void {
    this.working.update(data);
  }

  /** The bytes fed since the last commit form a verified chunk. */
  commit(): void {
    this.committed = this.working.copy();
  }

  /** Forget the bytes fed since the last commit. */
  rollback(): void {
    this.working = this.committed.copy();
  }

  digest(): string {
    return this.committed.copy().digest('hex');
  }
}

/**
 * The file writes of one Range request: bytes are copied into a pooled buffer and each full buffer is written while
 * the next bytes arrive and are hashed, so reading the socket and writing the file overlap. At most `maxWrites`
 * writes are in flight (the memory held is maxWrites + 1 buffers). A failed write is kept, not thrown at once.
 */
export class FileWriter {
  private current: Buffer | undefined;
  private used = 0;
  private readonly writes: Promise<void>[] = [];
  failure: unknown;

  constructor(
    private readonly fh: FileHandle,
    private readonly pool: BufferPool,
    private at: number,
    private readonly maxWrites: number,
  ) {}

  /** Copies what fits of data (from `from`) into the current buffer; answers how many bytes were taken. */
  append(data: Buffer, from: number): number {
    this.current ??= this.pool.take();
    const n = data.copy(this.current, this.used, from);
    this.used += n;
    return n;
  }

  get full(): boolean {
    return this.current !== undefined && this.used === this.current.length;
  }

  /** Starts writing the buffered bytes; waits only for room among the writes in flight. */
  async flush(): Promise<void> {
    if (this.used === 0 || !this.current) return;
    const buffer = this.current;
    const length = this.used;
    const at = this.at;
    this.current = undefined;
    this.used = 0;
    this.at += length;
    while (this.writes.length >= this.maxWrites) await this.writes.shift();
    if (this.failure !== undefined) {
      this.pool.give(buffer);
      throw this.failure;
    }
    this.writes.push(
      writeAll(this.fh, buffer, length, at).then(
        () => this.pool.give(buffer),
        (err: unknown) => {
          this.failure ??= err;
          this.pool.give(buffer);
        },
      ),
    );
  }

  /** Forgets the bytes buffered and not yet written. */
  discard(): void {
    this.used = 0;
  }

  /** Waits for every write in flight; throws the first failure. */
  async settle(): Promise<void> {
    await Promise.all(this.writes.splice(0));
    if (this.failure !== undefined) throw this.failure;
  }

  /** Waits for the writes (never throws) and returns the buffer. */
  async close(): Promise<void> {
    await Promise.all(this.writes.splice(0));
    if (this.current) this.pool.give(this.current);
    this.current = undefined;
    this.used = 0;
  }
}

/** Writes all `length` bytes at `position` (a regular file may take fewer in one call, e.g. near a full disk). */
async function writeAll(fh: FileHandle, buffer: Buffer, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(buffer, done, length - done, position + done);
    if (bytesWritten <= 0) throw new Error('the file write made no progress');
    done += bytesWritten;
  }
}

/**
 * Starts writing the file back every `everyBytes`, without waiting for it (at most one sync in flight): the kernel
 * would otherwise hold the whole image in dirty pages and the final fsync would write all of it at once.
 */
export class BackgroundFlush {
  private inFlight: Promise<void> | undefined;
  private lastAt = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly everyBytes: number,
  ) {}

  wrote(position: number): void {
    if (this.everyBytes <= 0 || this.inFlight || position - this.lastAt < this.everyBytes) return;
    this.lastAt = position;
    this.inFlight = this.fh
      .datasync()
      .catch(() => {}) // a failed early flush is retried by the final, awaited one
      .finally(() => {
        this.inFlight = undefined;
      });
  }

  async idle(): Promise<void> {
    await this.inFlight;
  }
}

/**
 * Reads back the first `upTo` bytes of the file chunk by chunk against the manifest, feeding the whole-image hash;
 * answers how many bytes (a chunk boundary) still verify.
 */
export async function verifyPrefix(
  fh: FileHandle,
  m: ReleaseManifest,
  upTo: number,
  whole: PrefixHash,
  signal: AbortSignal,
): Promise<number> {
  if (upTo <= 0) return 0;
  const buffer = Buffer.allocUnsafe(Math.min(m.chunk_size, MiB));
  let at = 0;
  while (at < upTo) {
    throwIfAborted(signal);
    const index = at / m.chunk_size;
    const end = Math.min(upTo, at + m.chunk_size);
    const hash = createHash('sha256');
    let pos = at;
    while (pos < end) {
      const { bytesRead } = await fh.read(buffer, 0, Math.min(buffer.length, end - pos), pos);
      if (bytesRead === 0) break;
      const data = buffer.subarray(0, bytesRead);
      hash.update(data);
      whole.update(data);
      pos += bytesRead;
    }
    if (pos < end || hash.digest('hex') !== m.chunks[index]) {
      whole.rollback();
      return at;
    }
    whole.commit();
    at = end;
  }
  return at;
}

export async function openPart(file: string): Promise<FileHandle> {
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
