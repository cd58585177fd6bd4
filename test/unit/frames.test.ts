/**
 * Compressed releases, pure parts: the content-defined chunker (cuts that survive edits), the frame table (what a
 * vehicle and the backend accept), the publisher's object read back frame by frame, and the zstd bounds.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { type CdcParams, Chunker } from '../../protocol/cdc.js';
import {
  decodeFrames,
  encodeFrameTable,
  frameStartingAt,
  parseFrameTable,
  splitAtBoundaries,
} from '../../protocol/frames.js';
import { checkManifestConsistency, type ReleaseManifest } from '../../protocol/manifest.js';
import { frameContentSize, loadZstd, ZstdFrameError } from '../../protocol/zstd.js';
import { framedRelease } from '../support/framed.js';

const KiB = 1024;
const SMALL: CdcParams = { min: 2 * KiB, avg: 8 * KiB, max: 32 * KiB };

/** Cut points of `data` fed to a chunker in pieces of `piece` bytes. */
function cuts(data: Buffer, params: CdcParams, piece: number): number[] {
  const c = new Chunker(params);
  const lengths: number[] = [];
  for (let at = 0; at < data.length; at += piece) lengths.push(...c.push(data.subarray(at, at + piece)));
  const last = c.end();
  if (last !== undefined) lengths.push(last);
  return lengths;
}

function hashesOf(data: Buffer, lengths: number[]): Set<string> {
  const out = new Set<string>();
  let at = 0;
  for (const n of lengths) {
    out.add(
      createHash('sha256')
        .update(data.subarray(at, at + n))
        .digest('hex'),
    );
    at += n;
  }
  return out;
}

const framed = (image: Buffer, chunkSize: number) => framedRelease(image, { chunkSize, cdc: SMALL });

/** Text that compresses about 2:1, like string tables and configuration. */
function text(size: number, seed: string): Buffer {
  let out = '';
  for (let n = 0; out.length < size; n++) {
    out += `line ${n} ${createHash('sha256').update(`${seed}${n}`).digest('hex').slice(0, 10)} ok\n`;
  }
  return Buffer.from(out).subarray(0, size);
}

describe('content-defined chunking', { timeout: 60_000 }, () => {
  it('cuts the same bytes the same way however they are fed, within the size bounds', () => {
    const data = randomBytes(512 * KiB);
    const whole = cuts(data, SMALL, data.length);
    assert.deepEqual(cuts(data, SMALL, 1000), whole);
    assert.deepEqual(cuts(data, SMALL, 7), whole);
    assert.equal(
      whole.reduce((a, b) => a + b, 0),
      data.length,
    );
    for (const n of whole.slice(0, -1)) assert.ok(n >= SMALL.min && n <= SMALL.max, `chunk of ${n}`);
    const mean = data.length / whole.length;
    assert.ok(mean > SMALL.avg / 2 && mean < SMALL.avg * 2, `mean chunk ${mean}`);
  });

  it('an insertion changes the chunks near it only', () => {
    const old = randomBytes(512 * KiB);
    const edited = Buffer.concat([old.subarray(0, 200 * KiB), randomBytes(100), old.subarray(200 * KiB)]);
    const before = hashesOf(old, cuts(old, SMALL, 64 * KiB));
    const afterCuts = cuts(edited, SMALL, 64 * KiB);
    const after = hashesOf(edited, afterCuts);
    const shared = [...after].filter((h) => before.has(h)).length;
    assert.ok(
      shared >= after.size - 3,
      `${shared} of ${after.size} chunks shared after a 100-byte insertion`,
    );
  });

  it('refuses unusable parameters', () => {
    assert.throws(() => new Chunker({ min: 2 * KiB, avg: 3000, max: 32 * KiB }), RangeError);
    assert.throws(() => new Chunker({ min: 2 * KiB, avg: 8 * KiB, max: 4 * 1024 * KiB }), RangeError);
  });
});

describe('frame table and framed object', { timeout: 60_000 }, () => {
  it('decodes back to the image from any manifest chunk boundary, frames never crossing one', async () => {
    const image = Buffer.concat([text(300 * KiB, 'a'), randomBytes(100 * KiB), text(77 * KiB, 'b')]);
    const { object, manifest, result, table } = await framed(image, 64 * KiB);
    checkManifestConsistency(manifest);
    assert.ok(result.rawFrames > 0, 'random bytes are stored raw');
    assert.ok(
      result.compression.object_size < image.length * 0.85,
      `object ${result.compression.object_size}`,
    );
    const t = parseFrameTable(manifest, table);
    assert.equal(t.count, result.frames);
    assert.equal(t.chunks, result.chunks);
    const codec = await loadZstd();
    for (const from of [0, 64 * KiB, 320 * KiB]) {
      const first = frameStartingAt(t, from);
      const body = Readable.from([object.subarray(t.objectOffset[first]!, t.objectOffset[t.count]!)]);
      const out: Buffer[] = [];
      for await (const piece of decodeFrames(t, first, t.count, body, codec)) out.push(piece);
      assert.ok(Buffer.concat(out).equals(image.subarray(from)), `decoded from ${from}`);
    }
    for (let i = 0; i < t.count; i++) {
      const start = t.imageOffset[i]!;
      assert.equal(Math.floor(start / (64 * KiB)), Math.floor((start + t.size[i]! - 1) / (64 * KiB)));
    }
  });

  it('refuses a table that does not match the signed manifest or describes an impossible object', async () => {
    const image = text(200 * KiB, 'c');
    const { manifest, table } = await framed(image, 64 * KiB);
    const flipped = Buffer.from(table);
    flipped[40] = (flipped[40] ?? 0) ^ 1;
    assert.throws(() => parseFrameTable(manifest, flipped), /SHA-256 differs/);
    assert.throws(() => parseFrameTable(manifest, table.subarray(1)), /bytes, the manifest says/);

    // A validly signed table can still be refused: re-sign a forged one by rewriting the manifest's digest.
    const t = parseFrameTable(manifest, table);
    const chunks = Array.from({ length: t.chunks }, (_, k) => ({
      size: t.chunkSize[k]!,
      sha256: t.chunkHashes.subarray(k * 32, k * 32 + 32),
    }));
    const frames = Array.from({ length: t.count }, (_, i) => ({ stored: t.stored[i]!, raw: t.raw[i] === 1 }));
    const resigned = (bytes: Buffer): ReleaseManifest => ({
      ...manifest,
      compression: {
        ...manifest.compression!,
        table_size: bytes.length,
        table_sha256: createHash('sha256').update(bytes).digest('hex'),
      },
    });
    const expanding = encodeFrameTable(SMALL, chunks, [
      { stored: t.size[0]! + 1, raw: false },
      ...frames.slice(1),
    ]);
    assert.throws(() => parseFrameTable(resigned(expanding), expanding), /frame 0 stores/);
    const short = encodeFrameTable(SMALL, chunks.slice(1), frames.slice(1));
    assert.throws(() => parseFrameTable(resigned(short), short), /bytes/);
    assert.deepEqual(splitAtBoundaries(60 * KiB, 10 * KiB, 64 * KiB), [4 * KiB, 6 * KiB]);
  });
});

describe('zstd bounds', { timeout: 60_000 }, () => {
  it('decodes a frame only to the size the table declares', async () => {
    const codec = await loadZstd();
    const data = text(50 * KiB, 'd');
    const frame = codec.compress(data, 3);
    assert.equal(frameContentSize(frame), data.length);
    assert.ok(Buffer.from(codec.decompress(frame, data.length)).equals(data));
    assert.throws(() => codec.decompress(frame, data.length - 1), ZstdFrameError);
    assert.throws(() => codec.decompress(randomBytes(100), 100), ZstdFrameError);
  });

  it('refuses a decompression bomb, also one whose header lies about its size, in bounded memory', async () => {
    const codec = await loadZstd();
    const bomb = Buffer.from(codec.compress(Buffer.alloc(512 * 1024 * KiB), 19));
    const before = process.memoryUsage().rss;
    assert.throws(() => codec.decompress(bomb, 64 * KiB), /declares 536870912 bytes/);
    // The same frame with a content size that claims 64 KiB: the decoder is given 64 KiB and stops there.
    const forged = Buffer.from(bomb);
    const fhd = forged[4]!;
    assert.equal(fhd >> 6, 2, 'a 4-byte content size field');
    const at = 5 + ((fhd >> 5) & 1 ? 0 : 1);
    forged.writeUInt32LE(64 * KiB, at);
    assert.equal(frameContentSize(forged), 64 * KiB);
    assert.throws(() => codec.decompress(forged, 64 * KiB), ZstdFrameError);
    const grew = process.memoryUsage().rss - before;
    assert.ok(grew < 64 * 1024 * KiB, `resident memory grew by ${grew} bytes`);
  });
});
