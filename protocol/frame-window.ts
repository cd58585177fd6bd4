/**
 * Windowed frames (manifest compression.window): each zstd frame of a compressed release is compressed with the
 * `window` image bytes right before it (fewer at a manifest chunk's start) as a raw-content dictionary. A frame alone
 * compresses like a 64 KiB file; with the megabyte before it, like part of one stream: measured on the bench pairs
 * at level 9, every frame 35.6% -> 30.8% of the image (executable) and 26.2% -> 23.9% (package tree), the frames a
 * chunk-reusing vehicle lacks 20.3% -> 18.2% and 22.9% -> 21.2%.
 *
 * The window never crosses a manifest chunk boundary: a chunk's first frame has no dictionary, so decoding can
 * start at any chunk, which is where every resume starts (the agent's verified offset, the backend verifier's
 * checkpoint) and nothing before it is needed. Measured, this costs 31.1% instead of 30.8% (executable, level 9).
 * Within a chunk a vehicle builds the image in order, so the bytes before any frame it decodes are bytes it already
 * has (downloaded or reused from its installed image); they are a dictionary only, and what a frame decodes to is
 * still checked with its manifest chunk.
 *
 * History keeps the last `window` bytes of a sequence in one buffer, so the dictionary of the next frame is a view,
 * and appending costs one copy per byte (the kept window is moved to the front when the buffer fills).
 */
import { loadDictCodec } from './delta.js';
import type { WindowedDecoding } from './frames.js';

/** What decoding windowed frames on this thread needs: the codec with dictionaries and an empty history. */
export async function windowedDecoding(window: number): Promise<WindowedDecoding> {
  return { codec: await loadDictCodec(), history: new History(window) };
}

export class History {
  private buf: Buffer;
  private len = 0;

  constructor(
    readonly window: number,
    capacity = 4 * window,
  ) {
    this.buf = Buffer.allocUnsafe(Math.max(capacity, 2 * window));
  }

  /** The bytes a frame starting now is decoded (or was compressed) with: the last min(window, appended) bytes. */
  dict(): Buffer {
    return this.buf.subarray(this.len - Math.min(this.len, this.window), this.len);
  }

  append(data: Uint8Array): void {
    if (data.length >= this.window) {
      this.buf.set(data.subarray(data.length - this.window), 0);
      this.len = this.window;
      return;
    }
    if (this.len + data.length > this.buf.length) {
      const keep = Math.min(this.len, this.window);
      this.buf.copy(this.buf, 0, this.len - keep, this.len);
      this.len = keep;
    }
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  reset(): void {
    this.len = 0;
  }
}
