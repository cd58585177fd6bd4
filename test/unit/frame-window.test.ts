/**
 * Windowed frames (protocol/frame-window.ts): each frame compressed with the image bytes before it in its manifest
 * chunk as dictionary. The object is smaller than with independent frames on content that repeats across frames;
 * it decodes back to the image on this thread and on the decode worker (with reused bytes joining the worker's
 * batches), from any manifest chunk (where every resume starts); a frame given the wrong bytes before it does not
 * decode to the image; the manifest bounds the window.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import type { CdcParams } from '../../protocol/cdc.js';
import { loadDictCodec } from '../../protocol/delta.js';
import { History } from '../../protocol/frame-window.js';
import {
  decodeFrame,
  decodeFrames,
  frameStartingAt,
  parseFrameTable,
  startsChunk,
} from '../../protocol/frames.js';
import { checkManifestConsistency } from '../../protocol/manifest.js';
import { releaseManifestSchema } from '../../protocol/schemas.js';
import { loadZstd } from '../../protocol/zstd.js';
import { DecodeWorker } from '../../vehicle/decode-worker.js';
import { framedRelease } from '../support/framed.js';

const KiB = 1024;
const HOOK_TIMEOUT = { timeout: 10_000 };
const SMALL: CdcParams = { min: 2 * KiB, avg: 8 * KiB, max: 32 * KiB };
const CHUNK = 64 * KiB;
const worker = DecodeWorker.start();

after(async () => {
  await worker?.close();
}, HOOK_TIMEOUT);

/** Records of random bytes, repeated in a pseudo-random order: a frame alone barely compresses, a window does. */
function repetitive(size: number): Buffer {
  const records = Array.from({ length: 48 }, () => randomBytes(700));
  const parts: Buffer[] = [];
  for (let n = 0, total = 0; total < size; n++) {
    const r = records[createHash('sha256').update(`${n}`).digest()[0]! % records.length]!;
    parts.push(r);
    total += r.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

async function publish(image: Buffer, window?: number) {
  const { object, manifest } = await framedRelease(image, {
    chunkSize: CHUNK,
    cdc: SMALL,
    ...(window ? { window } : {}),
  });
  checkManifestConsistency(manifest);
  const table = parseFrameTable(manifest, object.subarray(manifest.compression!.table_offset));
  return { object, manifest, table };
}

const IMAGE = repetitive(5 * CHUNK + 12_345);

describe('windowed frames', { timeout: 60_000 }, () => {
  it('are smaller than independent frames on repeating content, and the manifest carries the window', async () => {
    const plain = await publish(IMAGE);
    const windowed = await publish(IMAGE, 32 * KiB);
    assert.equal(windowed.manifest.compression?.window, 32 * KiB);
    assert.equal(plain.manifest.compression?.window, undefined);
    assert.equal(windowed.table.window, 32 * KiB);
    const p = plain.manifest.compression!.table_offset;
    const w = windowed.manifest.compression!.table_offset;
    assert.ok(w < p * 0.6, `windowed frames ${w} bytes, independent ${p}`);
    // Bounded by the schema: a vehicle never holds more than MAX_FRAME_WINDOW for it.
    const huge = {
      ...windowed.manifest,
      compression: { ...windowed.manifest.compression!, window: 64 * 1024 ** 2 },
    };
    assert.equal(releaseManifestSchema.safeParse(huge).success, false);
  });

  it('decode back to the image on this thread, from the start and from any manifest chunk', async () => {
    const { object, table } = await publish(IMAGE, 32 * KiB);
    const codec = await loadZstd();
    const dict = await loadDictCodec();
    for (const chunk of [0, 1, 3, 5]) {
      const first = frameStartingAt(table, chunk * CHUNK);
      assert.equal(startsChunk(table, first), true);
      const body = Readable.from([
        object.subarray(table.objectOffset[first]!, table.objectOffset[table.count]!),
      ]);
      const out: Buffer[] = [];
      for await (const b of decodeFrames(table, first, table.count, body, codec, {
        codec: dict,
        history: new History(table.window),
      })) {
        out.push(b);
      }
      assert.ok(Buffer.concat(out).equals(IMAGE.subarray(chunk * CHUNK)), `from chunk ${chunk}`);
    }
    // Without its window a windowed release is not decoded at all.
    const body = Readable.from([object.subarray(0, table.objectOffset[table.count]!)]);
    await assert.rejects(async () => {
      for await (const _ of decodeFrames(table, 0, table.count, body, codec)) {
        // nothing
      }
    }, /needs the bytes before it/);
  });

  it('a frame given other bytes before it than the image has does not decode to the image', async () => {
    const { object, table } = await publish(IMAGE, 32 * KiB);
    const dict = await loadDictCodec();
    const codec = await loadZstd();
    // A frame in the middle of a chunk that is compressed (not stored raw), decoded after the wrong history.
    let i = 1;
    while (startsChunk(table, i) || table.raw[i]) i++;
    const wrong = new History(table.window);
    wrong.append(randomBytes(table.imageOffset[i]! % CHUNK));
    const stored = object.subarray(table.objectOffset[i]!, table.objectOffset[i + 1]!);
    const expected = IMAGE.subarray(table.imageOffset[i]!, table.imageOffset[i + 1]!);
    let decoded: Uint8Array | undefined;
    try {
      decoded = decodeFrame(table, i, stored, codec, { codec: dict, history: wrong });
    } catch {
      decoded = undefined; // refused outright: as good as wrong bytes (its chunk digest would fail)
    }
    assert.ok(!decoded || !Buffer.from(decoded).equals(expected), 'decoded to the image without its window');
  });

  it('decode back to the image on the worker, in batches of any size and with reused bytes among them', async () => {
    assert.ok(worker, 'the decode worker starts here');
    const { object, table } = await publish(IMAGE, 32 * KiB);
    const out: Buffer[] = [];
    // Frames 3k+1 are handed over as reused bytes (raw items), as chunk reuse does with the installed image's.
    let batch: { stored: Uint8Array; size: number; raw: boolean }[] = [];
    let resets: boolean[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      out.push(Buffer.from(await worker.decode(batch, undefined, { window: table.window, resets })));
      batch = [];
      resets = [];
    };
    for (let i = 0; i < table.count; i++) {
      const reused = i % 3 === 1;
      batch.push(
        reused
          ? {
              stored: IMAGE.subarray(table.imageOffset[i]!, table.imageOffset[i + 1]!),
              size: table.size[i]!,
              raw: true,
            }
          : {
              stored: object.subarray(table.objectOffset[i]!, table.objectOffset[i + 1]!),
              size: table.size[i]!,
              raw: table.raw[i] === 1,
            },
      );
      resets.push(startsChunk(table, i));
      if (batch.length === 1 + (i % 5)) await flush();
    }
    await flush();
    assert.ok(Buffer.concat(out).equals(IMAGE));
  });
});
