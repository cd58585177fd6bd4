/**
 * zstd decoding on a worker thread, so it runs beside the main thread's hashing instead of after it. Profiled
 * (bench:delta, `node --cpu-prof`): a compressed download's main thread spent ~250 ms hashing (chunk digests and the
 * whole-image digest) and ~370 ms in libzstd for a 127 MB image, one after the other; a raw download only the
 * hashing. With decoding here the two overlap on a second core, and the checks stay on the main thread, unchanged.
 *
 * The worker runs libzstd's WebAssembly (the module the agent ships beside its bundle, compiled once on the main
 * thread and handed over) through the few exports it needs, with the same bounds as protocol/zstd.ts: the caller
 * checks that the frame declares exactly the size the signed table gives, and the decoder is given exactly that much
 * room. Source is inline (eval): a bundled agent is one file, with no module for a worker to load.
 *
 * Anything unexpected (no WebAssembly file, exports not as expected, the worker dies) makes start() answer
 * undefined or pending decodes fail: the download then decodes on the main thread as before (frame-source.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { checkDeclared, ZstdFrameError } from '../protocol/zstd.js';

/**
 * The worker: libzstd 1.5 as built by @bokuweb/zstd-wasm 0.0.27 (exact version pinned): its imports are the
 * emscripten runtime's (a proc_exit, b keepalive, c abort, d setitimer, e resize_heap) and its exports minified
 * (f memory, g constructors, h ZSTD_isError, n ZSTD_createDCtx, q ZSTD_decompress_usingDict, r ZSTD_decompress,
 * s malloc, t free); start() checks these are there before use.
 */
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let x;
const env = {
  a: (code) => { throw new Error('libzstd exited ' + code); },
  b: () => {},
  c: () => { throw new Error('libzstd aborted'); },
  d: () => 0,
  e: (requested) => {
    const need = (requested >>> 0) - x.f.buffer.byteLength;
    if (need <= 0) return 1;
    try { x.f.grow(Math.ceil(need / 65536)); return 1; } catch { return 0; }
  },
};
x = new WebAssembly.Instance(workerData.module, { a: env }).exports;
x.g();
const dctx = x.n();
const areas = {};
function room(name, n) {
  let a = areas[name];
  if (!a || a.size < n) {
    if (a) x.t(a.ptr);
    const ptr = x.s(Math.max(1, n));
    if (!ptr) throw new Error('libzstd is out of memory');
    a = areas[name] = { ptr, size: n };
  }
  return a.ptr;
}
const { openSync, readSync, closeSync } = require('node:fs');
/** Decodes one frame at src (length n) into out, exactly size bytes; dict: [pointer, length] or none. */
function decodeInto(out, size, src, n, dict) {
  const r = dict ? x.q(dctx, out, size, src, n, dict[0], dict[1]) : x.r(out, size, src, n);
  if (x.h(r)) throw new Error('zstd error ' + (r >>> 0));
  if ((r >>> 0) !== size) throw new Error('decoded ' + (r >>> 0) + ' bytes, expected ' + size);
}
/**
 * The image bytes before the next frame, for windowed frames: one area of libzstd's memory, each frame decoded right
 * after the bytes before it (its dictionary is a pointer, nothing is copied), the last window moved to the front
 * when the area is full. inChunk: how many of the bytes before the next one are in its manifest chunk.
 */
let hist;
function histRoom(n, w) {
  if (!hist) {
    const cap = Math.max(4 * w, w + n);
    const ptr = x.s(cap);
    if (!ptr) throw new Error('libzstd is out of memory');
    hist = { ptr, cap, len: 0, inChunk: 0 };
  }
  if (hist.len + n <= hist.cap) return;
  const keep = Math.min(hist.len, w);
  if (keep + n <= hist.cap) {
    new Uint8Array(x.f.buffer).copyWithin(hist.ptr, hist.ptr + hist.len - keep, hist.ptr + hist.len);
  } else {
    const cap = keep + n + w;
    const ptr = x.s(cap);
    if (!ptr) throw new Error('libzstd is out of memory');
    new Uint8Array(x.f.buffer).copyWithin(ptr, hist.ptr + hist.len - keep, hist.ptr + hist.len);
    x.t(hist.ptr);
    hist = { ptr, cap, len: 0, inChunk: hist.inChunk };
  }
  hist.len = keep;
}
parentPort.on('message', (m) => {
  try {
    const total = m.sizes.reduce((a, b) => a + b, 0);
    const src = room('src', m.frames.byteLength);
    if (m.history) {
      // Windowed frames: each decoded right after the image bytes before it in its chunk (none at a chunk's start).
      const w = m.history.window;
      histRoom(total, w);
      new Uint8Array(x.f.buffer).set(new Uint8Array(m.frames), src);
      const start = hist.len;
      let inAt = 0;
      for (let i = 0; i < m.sizes.length; i++) {
        const at = hist.ptr + hist.len;
        if (m.history.resets[i]) hist.inChunk = 0;
        if (m.raw[i]) new Uint8Array(x.f.buffer).copyWithin(at, src + inAt, src + inAt + m.lengths[i]);
        else {
          const d = Math.min(hist.inChunk, w);
          decodeInto(at, m.sizes[i], src + inAt, m.lengths[i], d > 0 ? [at - d, d] : undefined);
        }
        inAt += m.lengths[i];
        hist.len += m.sizes[i];
        hist.inChunk += m.sizes[i];
      }
      const result = m.spare && m.spare.byteLength >= total ? new Uint8Array(m.spare, 0, total) : new Uint8Array(total);
      result.set(new Uint8Array(x.f.buffer, hist.ptr + start, total));
      parentPort.postMessage({ id: m.id, out: result.buffer, length: total }, [result.buffer]);
      return;
    }
    const out = room('out', total);
    let dict;
    if (m.window) {
      // The delta's window of the base, read straight into libzstd's memory (nothing crosses threads).
      const d = room('dict', m.window.length);
      const fd = openSync(m.window.path, 'r');
      try {
        let got = 0;
        while (got < m.window.length) {
          const n = readSync(fd, new Uint8Array(x.f.buffer, d + got, m.window.length - got), 0, m.window.length - got, m.window.offset + got);
          if (n === 0) break;
          got += n;
        }
        dict = [d, got];
      } finally {
        closeSync(fd);
      }
    }
    new Uint8Array(x.f.buffer).set(new Uint8Array(m.frames), src);
    let inAt = 0;
    let outAt = 0;
    for (let i = 0; i < m.sizes.length; i++) {
      if (m.raw[i]) new Uint8Array(x.f.buffer).copyWithin(out + outAt, src + inAt, src + inAt + m.lengths[i]);
      else decodeInto(out + outAt, m.sizes[i], src + inAt, m.lengths[i], dict);
      inAt += m.lengths[i];
      outAt += m.sizes[i];
    }
    // Into the spare buffer the main thread handed back when it fits (no garbage per batch), else a new one.
    const result = m.spare && m.spare.byteLength >= total ? new Uint8Array(m.spare, 0, total) : new Uint8Array(total);
    result.set(new Uint8Array(x.f.buffer, out, total));
    parentPort.postMessage({ id: m.id, out: result.buffer, length: total }, [result.buffer]);
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String((e && e.message) || e) });
  }
});
`;

const EXPORTS = ['f', 'g', 'h', 'n', 'q', 'r', 's', 't'];

/** The WebAssembly API, typed as far as used here (the project's lib settings carry no DOM types). */
type WasmModule = object;
const wasm = (
  globalThis as unknown as {
    WebAssembly: {
      Module: { new (bytes: Uint8Array): WasmModule; exports(m: WasmModule): { name: string }[] };
    };
  }
).WebAssembly;

let compiled: WasmModule | null | undefined;

/** libzstd's WebAssembly, beside the bundle (a shipped agent) or in its package (sources under tsx). */
function wasmModule(): WasmModule | null {
  if (compiled !== undefined) return compiled;
  compiled = null;
  const candidates = [join(dirname(fileURLToPath(import.meta.url)), 'zstd.wasm')];
  try {
    candidates.push(join(dirname(createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm')), 'zstd.wasm'));
  } catch {
    // not installed as a package: the bundle's copy only
  }
  for (const file of candidates) {
    if (!existsSync(file)) continue;
    try {
      const m = new wasm.Module(readFileSync(file));
      const names = new Set(wasm.Module.exports(m).map((e) => e.name));
      if (EXPORTS.every((n) => names.has(n))) compiled = m;
    } catch {
      // not the module expected
    }
    break;
  }
  return compiled ?? null;
}

/**
 * A batch of windowed frames (protocol/frame-window.ts): the worker decodes each after the image bytes before it in
 * its manifest chunk, which it keeps from batch to batch; raw items (reused bytes of the installed image) join them.
 * `resets[i]`: item i starts a manifest chunk (nothing before it is a dictionary).
 */
export interface WindowedBatch {
  readonly window: number;
  readonly resets: readonly boolean[];
}

export class DecodeWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;
  /** Result buffers the consumer is done with, handed back to the worker to decode into (see recycle). */
  private readonly spares: ArrayBuffer[] = [];

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: { id: number; out?: ArrayBuffer; length?: number; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.out) p.resolve(Buffer.from(m.out, 0, m.length));
      else p.reject(new ZstdFrameError(`zstd frame does not decode: ${m.error}`));
    });
    const fail = (err: Error) => {
      this.failure ??= err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', () => fail(new Error('the decode worker stopped')));
  }

  /** A worker ready to decode, or undefined when this runtime cannot have one (decode on the main thread). */
  static start(): DecodeWorker | undefined {
    const module = wasmModule();
    if (!module) return undefined;
    try {
      return new DecodeWorker(new Worker(SOURCE, { eval: true, workerData: { module } }));
    } catch {
      return undefined;
    }
  }

  /**
   * Frames (each stored raw or one zstd frame declaring exactly its size) -> their image bytes, one after the other,
   * or ZstdFrameError. One message per batch: a message per 64 KiB frame cost more than the decoding it moved.
   * `window`: the frames are delta frames, decoded with that part of the base file as raw-content dictionary (read
   * by the worker straight into libzstd's memory).
   */
  decode(
    frames: readonly { readonly stored: Uint8Array; readonly size: number; readonly raw: boolean }[],
    window?: { readonly path: string; readonly offset: number; readonly length: number },
    history?: WindowedBatch,
  ): Promise<Buffer> {
    try {
      for (const f of frames) if (!f.raw) checkDeclared(f.stored, f.size);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const bytes = new Uint8Array(frames.reduce((n, f) => n + f.stored.length, 0));
    let at = 0;
    for (const f of frames) {
      bytes.set(f.stored, at);
      at += f.stored.length;
    }
    const spare = this.spares.pop();
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(
        {
          id,
          frames: bytes.buffer,
          lengths: frames.map((f) => f.stored.length),
          sizes: frames.map((f) => f.size),
          raw: frames.map((f) => f.raw),
          window,
          history,
          spare,
        },
        spare ? [bytes.buffer, spare] : [bytes.buffer],
      );
    });
  }

  /**
   * A decoded result the consumer is done with (it copies what it keeps): its memory is decoded into again instead
   * of becoming garbage, which the collector reclaimed too late (+70 MiB resident on a 127 MB image).
   */
  recycle(result: Buffer): void {
    if (this.spares.length < 4 && result.byteOffset === 0) this.spares.push(result.buffer as ArrayBuffer);
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/**
 * Frames collected into batches of about `bytes` image bytes, in order, a new batch at each item `startsGroup` says
 * starts one (a manifest chunk: a frame that fails to decode is then reported in its own chunk); the last batch
 * holds what is left when the source ends.
 */
export async function* batches<T>(
  source: AsyncIterable<T>,
  sizeOf: (item: T) => number,
  bytes: number,
  startsGroup: (item: T) => boolean,
  keepOn: (err: unknown) => boolean,
): AsyncGenerator<T[]> {
  let batch: T[] = [];
  let size = 0;
  try {
    for await (const item of source) {
      if (batch.length > 0 && startsGroup(item)) {
        yield batch;
        batch = [];
        size = 0;
      }
      batch.push(item);
      size += sizeOf(item);
      if (size >= bytes) {
        yield batch;
        batch = [];
        size = 0;
      }
    }
  } catch (err) {
    // A cut connection: what arrived whole is still handed on (and verified), so a resume does not fetch it again.
    if (batch.length > 0 && keepOn(err)) yield batch;
    throw err;
  }
  if (batch.length > 0) yield batch;
}

/**
 * Results of `start(item)` for each item of `source`, in order, with up to `depth` started ahead of the one the
 * consumer waits for: the worker decodes the next frames while the consumer hashes this one. Memory: `depth` items.
 * When the source fails with an error `keepOn` accepts (a cut connection), the items started are handed on first.
 */
export async function* pipelined<T, R>(
  source: AsyncIterable<T>,
  start: (item: T) => Promise<R>,
  depth: number,
  keepOn: (err: unknown) => boolean,
): AsyncGenerator<R> {
  const queue: Promise<R>[] = [];
  try {
    try {
      for await (const item of source) {
        const p = start(item);
        p.catch(() => {}); // awaited below; a result never waited for (the consumer stopped) is not unhandled
        queue.push(p);
        if (queue.length >= depth) yield await queue.shift()!;
      }
    } catch (err) {
      // A cut connection: the items started before it are still handed on (verified, kept for the resume).
      if (keepOn(err)) while (queue.length > 0) yield await queue.shift()!;
      throw err;
    }
    while (queue.length > 0) yield await queue.shift()!;
  } finally {
    queue.length = 0;
  }
}
