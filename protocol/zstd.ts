/**
 * Zstandard for the frames of a compressed release: Node's own zstd where the runtime has it (node:zlib, Node 22.15+
 * and the Lambda runtime's Node 24), else libzstd compiled to WebAssembly (@bokuweb/zstd-wasm, 250 KB, no native
 * build and no download at install: the agent runs on Node 20 on any CPU a TCU has). A pure-JS decoder (fzstd)
 * measured 13-28 MB/s here against 160-340 MB/s for the wasm build, slower than the link it would sit behind.
 *
 * Decompression is bounded by the size the signed frame table declares: the frame header must carry its content
 * size and it must equal that size (no dictionary), and the decoder is given exactly that much room, so a frame that
 * expands further (a decompression bomb) fails instead of allocating; memory is one frame in, one frame out.
 */
import * as zlib from 'node:zlib';

export class ZstdFrameError extends Error {}

export interface ZstdCodec {
  readonly name: string;
  compress(data: Uint8Array, level: number): Uint8Array;
  /** Exactly `size` bytes or ZstdFrameError. */
  decompress(frame: Uint8Array, size: number): Uint8Array;
}

const MAGIC = 0xfd2fb528;

/** The content size a frame header declares; refuses what is not one plain zstd frame with its size. */
export function frameContentSize(frame: Uint8Array): number {
  if (frame.length < 6) throw new ZstdFrameError('truncated zstd frame header');
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw new ZstdFrameError('not a zstd frame');
  const fhd = frame[4]!;
  if (fhd & 0x08) throw new ZstdFrameError('reserved bit set in the zstd frame header');
  if (fhd & 0x03) throw new ZstdFrameError('zstd frames with a dictionary are not accepted');
  const singleSegment = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
  if (fcsBytes === 0) throw new ZstdFrameError('the zstd frame does not declare its content size');
  const at = 5 + (singleSegment ? 0 : 1);
  if (frame.length < at + fcsBytes) throw new ZstdFrameError('truncated zstd frame header');
  switch (fcsBytes) {
    case 1:
      return frame[at]!;
    case 2:
      return view.getUint16(at, true) + 256;
    case 4:
      return view.getUint32(at, true);
    default: {
      const size = view.getBigUint64(at, true);
      if (size > BigInt(Number.MAX_SAFE_INTEGER))
        throw new ZstdFrameError('zstd frame content size too large');
      return Number(size);
    }
  }
}

/** Throws ZstdFrameError unless the frame declares exactly `size` bytes (what bounds a decoder's memory). */
export function checkDeclared(frame: Uint8Array, size: number): void {
  const declared = frameContentSize(frame);
  if (declared !== size) {
    throw new ZstdFrameError(`the zstd frame declares ${declared} bytes, the signed frame table ${size}`);
  }
}

type ZlibZstd = {
  zstdCompressSync(data: Uint8Array, o: { params: Record<number, number> }): Buffer;
  zstdDecompressSync(data: Uint8Array, o: { maxOutputLength: number }): Buffer;
  constants: Record<string, number>;
};

function nodeCodec(z: ZlibZstd): ZstdCodec {
  return {
    name: 'node:zlib zstd',
    compress: (data, level) =>
      z.zstdCompressSync(data, { params: { [z.constants.ZSTD_c_compressionLevel!]: level } }),
    decompress(frame, size) {
      checkDeclared(frame, size);
      let out: Buffer;
      try {
        out = z.zstdDecompressSync(frame, { maxOutputLength: Math.max(1, size) });
      } catch (err) {
        throw new ZstdFrameError(`zstd frame does not decode: ${(err as Error).message}`);
      }
      if (out.length !== size)
        throw new ZstdFrameError(`zstd frame decoded to ${out.length} bytes, expected ${size}`);
      return out;
    },
  };
}

type WasmZstd = {
  init(): Promise<void>;
  compress(data: Uint8Array, level: number): Uint8Array;
  decompress(data: Uint8Array): Uint8Array;
};

function wasmCodec(w: WasmZstd): ZstdCodec {
  return {
    name: 'libzstd wasm',
    compress: (data, level) => w.compress(data, level),
    decompress(frame, size) {
      // The wasm binding sizes its output from the header's content size and ZSTD_decompress refuses to write past
      // it: checking that size first is what bounds the memory.
      checkDeclared(frame, size);
      let out: Uint8Array;
      try {
        out = w.decompress(frame);
      } catch (err) {
        throw new ZstdFrameError(`zstd frame does not decode: ${(err as Error).message}`);
      }
      if (out.length !== size)
        throw new ZstdFrameError(`zstd frame decoded to ${out.length} bytes, expected ${size}`);
      return out;
    },
  };
}

let loading: Promise<ZstdCodec> | undefined;
let wasm: Promise<unknown> | undefined;

/**
 * The libzstd WebAssembly module, instantiated once per process: a second init() instantiates it again under the
 * same bindings, and a context or heap view of the first then decodes garbage (measured: zstd error -14).
 */
export function loadWasmZstd<T>(): Promise<T> {
  wasm ??= (async () => {
    // A CommonJS package that reads zstd.wasm beside itself: a bundle ships that file beside the bundle
    // (bin/agent-bundle.ts) and defines __dirname.
    const mod = (await import('@bokuweb/zstd-wasm')) as unknown as {
      init(): Promise<void>;
      default?: unknown;
    };
    // Node's ESM loader hands a CommonJS module.exports as default; a bundler with __esModule interop does not.
    const w = (typeof mod.init === 'function' ? mod : mod.default) as { init(): Promise<void> };
    await w.init();
    return w;
  })();
  return wasm as Promise<T>;
}

/** The codec for this process, loaded once. `OTA_ZSTD=wasm` forces the wasm build (tests of both paths). */
export function loadZstd(): Promise<ZstdCodec> {
  loading ??= (async () => {
    const z = zlib as unknown as Partial<ZlibZstd>;
    if (process.env.OTA_ZSTD !== 'wasm' && typeof z.zstdDecompressSync === 'function') {
      return nodeCodec(z as ZlibZstd);
    }
    const w = await loadWasmZstd<WasmZstd>();
    return wasmCodec(w);
  })();
  return loading;
}
