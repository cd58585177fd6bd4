/**
 * A response body as pooled memory (for direct-https.ts): the socket decrypts into, or copies into, blocks taken
 * from a BufferPool, and the consumer iterates over them; a block goes back to the pool when the consumer asks for
 * the next part. Bounded read-ahead pauses the socket rather than buffering without limit.
 */
import type { BufferPool } from './buffer-pool.js';
import type { BodySink } from './http1-response.js';

/** Bytes per body block. */
export const BLOCK_BYTES = 256 * 1024;

/**
 * The body as an async iterable over pooled blocks: bytes are copied in as they are decrypted; the part handed to the
 * consumer goes back to the pool when it asks for the next one, and every block when the iteration ends. More than
 * the read-ahead in use pauses the socket (the kernel's window then slows the sender); it resumes once half is free.
 */
export class BodyBlocks implements AsyncIterable<Buffer>, BodySink {
  /** Filled blocks, with how much of each is filled. */
  private readonly ready: { block: Buffer; length: number }[] = [];
  private filling: Buffer | undefined;
  private fill = 0;
  private lent: Buffer | undefined;
  /** The socket was given the filling block's free end for its next read (space()). */
  private reserved = false;
  private held = 0;
  private paused = false;
  private ended = false;
  private released = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly maxBlocks: number;

  constructor(
    private readonly pool: BufferPool,
    readAheadBytes: number,
    private readonly resume: () => void,
  ) {
    this.maxBlocks = Math.max(2, Math.ceil(readAheadBytes / BLOCK_BYTES));
  }

  /** Still taking bytes (the consumer has not finished or given up). */
  get open(): boolean {
    return !this.released && !this.ended;
  }

  /** Where the next bytes go: the free end of the filling block (the socket decrypts into it; see commit). */
  space(): Buffer {
    if (!this.filling) {
      this.filling = this.pool.take();
      this.held++;
      this.fill = 0;
    }
    this.reserved = true;
    return this.filling.subarray(this.fill);
  }

  /** `n` bytes were written at space(). */
  commit(n: number): void {
    this.reserved = false;
    if (this.released || n === 0) return;
    this.fill += n;
    if (this.fill === BLOCK_BYTES) this.seal();
    else if (this.wake) this.seal(); // a consumer waiting for data gets what there is now
    this.notify();
  }

  /** Copies bytes in (the head's read, chunked bodies): the path of a direct read, one block's room at a time. */
  push(data: Uint8Array): void {
    for (let at = 0; at < data.length && !this.released; ) {
      const room = this.space();
      const n = Math.min(room.length, data.length - at);
      room.set(data.subarray(at, at + n));
      this.commit(n);
      at += n;
    }
  }

  /** Whether the socket should keep reading (false pauses it until the consumer frees blocks). */
  wantsMore(): boolean {
    this.paused = this.held >= this.maxBlocks;
    return !this.paused;
  }

  end(): void {
    this.reserved = false; // called once the socket reads no more
    if (this.fill > 0) this.seal();
    this.ended = true;
    this.notify();
  }

  /** The response broke off: what arrived is still handed out, then err is thrown (the socket reads no more). */
  fail(err: Error): void {
    this.reserved = false;
    this.failure ??= err;
    this.notify();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async (): Promise<IteratorResult<Buffer>> => {
        this.giveBack();
        for (;;) {
          const part = this.ready.shift();
          if (part) {
            this.lent = part.block;
            this.maybeResume();
            return { value: part.block.subarray(0, part.length), done: false };
          }
          // The filling block is handed out only while the socket is not about to write into it; otherwise the next
          // read seals it (commit, since a consumer is waiting).
          if (this.fill > 0 && !this.reserved) {
            this.seal();
            continue;
          }
          if (this.failure) {
            this.release();
            throw this.failure;
          }
          if (this.ended) {
            this.release();
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => {
            this.wake = resolve;
          });
        }
      },
      return: async (): Promise<IteratorResult<Buffer>> => {
        this.giveBack();
        this.ended = true;
        this.release();
        return { value: undefined, done: true };
      },
    };
  }

  /** The filling block, as far as filled, becomes the next part. */
  private seal(): void {
    this.ready.push({ block: this.filling!, length: this.fill });
    this.filling = undefined;
    this.fill = 0;
  }

  private giveBack(): void {
    if (!this.lent) return;
    this.pool.give(this.lent);
    this.lent = undefined;
    this.held--;
    this.maybeResume();
  }

  /** The iteration is over: every block goes back to the pool (nothing is handed out any more). */
  private release(): void {
    if (this.released) return;
    this.released = true;
    for (const r of this.ready.splice(0)) this.pool.give(r.block);
    // A block the socket may still write into is left to the garbage collector, never reused.
    if (this.filling && !this.reserved) this.pool.give(this.filling);
    this.filling = undefined;
    this.fill = 0;
    this.held = 0;
  }

  private maybeResume(): void {
    if (this.paused && !this.ended && this.held <= this.maxBlocks / 2) {
      this.paused = false;
      this.resume();
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
