/**
 * zstd decoding on a worker thread (vehicle/decode-worker.ts): a batch of frames decodes to the bytes the in-thread
 * codec gives, raw frames pass through, a delta frame decodes with its window read by the worker, recycled memory
 * is decoded into again, and what protocol/zstd.ts refuses is refused here too (a frame declaring another size, a
 * frame that does not decode) as ZstdFrameError, without the worker going down.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadDictCodec } from '../../protocol/delta.js';
import { loadZstd, ZstdFrameError } from '../../protocol/zstd.js';
import { batches, DecodeWorker, pipelined } from '../../vehicle/decode-worker.js';

const KiB = 1024;
const HOOK_TIMEOUT = { timeout: 10_000 };
const dir = mkdtempSync(join(tmpdir(), 'decode-worker-'));
const worker = DecodeWorker.start();

after(async () => {
  await worker?.close();
  rmSync(dir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

function text(size: number, seed: string): Buffer {
  const parts: string[] = [];
  for (let i = 0, n = 0; n < size; i++) {
    const line = `${seed} line ${i} ${createHash('sha256')
      .update(`${seed}${i % 50}`)
      .digest('hex')}\n`;
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

describe('decode worker', { timeout: 60_000 }, () => {
  it('starts here (the WebAssembly module is found and has the exports it uses)', () => {
    assert.ok(worker, 'a worker in this runtime');
  });

  it('decodes a batch to the bytes the in-thread codec gives, raw frames as they are, into recycled memory', async () => {
    const zstd = await loadZstd();
    const images = [text(100 * KiB, 'a'), text(3000, 'b'), text(64 * KiB, 'c')];
    const frames = images.map((img, i) =>
      i === 1
        ? { stored: img, size: img.length, raw: true }
        : { stored: Buffer.from(zstd.compress(img, 3)), size: img.length, raw: false },
    );
    const out = await worker!.decode(frames);
    assert.ok(out.equals(Buffer.concat(images)));
    const size = out.buffer.byteLength;
    worker!.recycle(out);
    const again = await worker!.decode(frames.slice(0, 1));
    assert.equal(out.buffer.byteLength, 0, 'the recycled memory was handed to the worker (detached here)');
    assert.ok(again.equals(images[0]!), 'a result decoded into a recycled buffer');
    assert.equal(again.buffer.byteLength, size, 'into the recycled memory, larger than this result');
  });

  it('decodes a delta frame with the window of the base the worker reads', async () => {
    const base = Buffer.concat([text(50 * KiB, 'x'), text(300 * KiB, 'base')]);
    const next = Buffer.concat([text(200 * KiB, 'base'), Buffer.from('changed'), text(60 * KiB, 'new')]);
    const path = join(dir, 'base.img');
    writeFileSync(path, base);
    const codec = await loadDictCodec();
    const window = { path, offset: 50 * KiB, length: 300 * KiB };
    const frame = Buffer.from(
      codec.compress(next, base.subarray(window.offset, window.offset + window.length), 9),
    );
    assert.ok(frame.length < next.length / 4, `a delta frame (${frame.length} bytes)`);
    const out = await worker!.decode([{ stored: frame, size: next.length, raw: false }], window);
    assert.ok(out.equals(next));
  });

  it('refuses a frame declaring another size, and one that does not decode, and keeps working', async () => {
    const zstd = await loadZstd();
    const img = text(80 * KiB, 'bomb');
    const frame = Buffer.from(zstd.compress(img, 3));
    await assert.rejects(
      worker!.decode([{ stored: frame, size: img.length - 1, raw: false }]),
      ZstdFrameError,
    );
    const broken = Buffer.from(frame);
    broken.fill(0x41, 20, 60);
    await assert.rejects(worker!.decode([{ stored: broken, size: img.length, raw: false }]), ZstdFrameError);
    assert.ok((await worker!.decode([{ stored: frame, size: img.length, raw: false }])).equals(img));
  });

  it('batches split at group starts and pipelined keeps the order', async () => {
    async function* items() {
      for (let i = 0; i < 10; i++) yield i;
    }
    const got: number[][] = [];
    for await (const b of batches(
      items(),
      () => 1,
      3,
      (i) => i === 5,
      () => true,
    ))
      got.push(b);
    assert.deepEqual(got, [
      [0, 1, 2],
      [3, 4],
      [5, 6, 7],
      [8, 9],
    ]);
    const order: number[] = [];
    const slow = (i: number) => new Promise<number>((r) => setTimeout(() => r(i), (10 - i) * 3));
    for await (const v of pipelined(items(), slow, 4, () => true)) order.push(v);
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('a source cut short hands on what arrived before the error when asked to, and only then', async () => {
    class Cut extends Error {}
    async function* cutAfter5() {
      for (let i = 0; i < 5; i++) yield i;
      throw new Cut('connection cut');
    }
    const run = async (keep: boolean) => {
      const seen: number[] = [];
      const batched: number[][] = [];
      await assert.rejects(async () => {
        for await (const b of batches(
          cutAfter5(),
          () => 1,
          3,
          () => false,
          () => keep,
        ))
          batched.push(b);
      }, Cut);
      await assert.rejects(async () => {
        for await (const v of pipelined(
          cutAfter5(),
          async (i) => i,
          4,
          () => keep,
        ))
          seen.push(v);
      }, Cut);
      return { batched, seen };
    };
    assert.deepEqual(await run(true), {
      batched: [
        [0, 1, 2],
        [3, 4],
      ],
      seen: [0, 1, 2, 3, 4],
    });
    // An abort (not a network cut): nothing more is handed on.
    assert.deepEqual(await run(false), { batched: [[0, 1, 2]], seen: [0, 1] });
  });
});
