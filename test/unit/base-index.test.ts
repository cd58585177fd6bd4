/**
 * The chunk index an agent keeps for its installed image (vehicle/base-index.ts): the index taken from a release's
 * signed frame table is byte for byte the one computed by reading the image, it survives a round trip to disk and
 * is refused when damaged or for another image, the store keeps at most the A/B pair per ECU, and a base located
 * through it gives the same frame offsets as one located by reading the image.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import type { CdcParams } from '../../protocol/cdc.js';
import { writeFramedObject } from '../../protocol/frame-publisher.js';
import { parseFrameTable } from '../../protocol/frames.js';
import { digestStream, type ReleaseManifest } from '../../protocol/manifest.js';
import { loadZstd } from '../../protocol/zstd.js';
import {
  BaseIndexStore,
  chunkIndexOf,
  chunkIndexOfTable,
  decodeChunkIndex,
  encodeChunkIndex,
} from '../../vehicle/base-index.js';
import { baseFromIndex, indexBase } from '../../vehicle/frame-source.js';

const KiB = 1024;
const SMALL: CdcParams = { min: 2 * KiB, avg: 8 * KiB, max: 32 * KiB };
const HOOK_TIMEOUT = { timeout: 10_000 };
const dir = mkdtempSync(join(tmpdir(), 'base-index-'));

after(() => rmSync(dir, { recursive: true, force: true }), HOOK_TIMEOUT);

/** Text-like bytes (compressible, with repeats), so frames compress and chunks are found again after an edit. */
function image(size: number, seed: string): Buffer {
  const words = Array.from({ length: 300 }, (_, i) =>
    createHash('sha256').update(`${seed}${i}`).digest('hex'),
  );
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < size; i++) {
    const w = words[(i * 7919) % words.length]!;
    parts.push(w);
    n += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

/** A compressed release of `img`: its manifest and signed frame table. */
async function release(img: Buffer) {
  const d = await digestStream(Readable.from([img]), 64 * KiB);
  const framed = await writeFramedObject(
    Readable.from([img]),
    { chunkSize: 64 * KiB, codec: await loadZstd(), level: 3, cdc: SMALL },
    () => {},
  );
  const m = {
    size: d.size,
    sha256: d.sha256,
    chunk_size: 64 * KiB,
    chunks: d.chunks,
    compression: framed.compression,
  } as unknown as ReleaseManifest;
  return { m, table: parseFrameTable(m, framed.table) };
}

describe('kept chunk index', { timeout: 60_000 }, () => {
  it('the index of a release table is the index computed by reading its image', async () => {
    const img = image(700 * KiB, 'a');
    const { table } = await release(img);
    const fromTable = chunkIndexOfTable(table);
    const read = await chunkIndexOf(Readable.from([img.subarray(0, 1000), img.subarray(1000)]), SMALL);
    assert.equal(fromTable.imageSize, img.length);
    assert.deepEqual(read.cdc, fromTable.cdc);
    assert.ok(read.entries.equals(fromTable.entries), 'same chunks, same digests');
  });

  it('round-trips through its file and refuses a damaged one or another image', async () => {
    const img = image(300 * KiB, 'b');
    const sha = createHash('sha256').update(img).digest('hex');
    const idx = chunkIndexOfTable((await release(img)).table);
    const bytes = encodeChunkIndex(idx, sha);
    const back = decodeChunkIndex(bytes, sha);
    assert.ok(typeof back !== 'string' && back.entries.equals(idx.entries));
    assert.equal(decodeChunkIndex(bytes, 'f'.repeat(64)), 'not an index of this image');
    const damaged = Buffer.from(bytes);
    damaged[damaged.length - 3]! ^= 1;
    assert.equal(decodeChunkIndex(damaged, sha), 'damaged');
    assert.equal(decodeChunkIndex(bytes.subarray(0, 20), sha), 'no header');
  });

  it('the store keeps the named images of an ECU and removes the others', async () => {
    const store = new BaseIndexStore(join(dir, 'store'));
    const idx = await chunkIndexOf(Readable.from([image(50 * KiB, 'c')]), SMALL);
    const [a, b, c] = ['a', 'b', 'c'].map((x) => x.repeat(64));
    await store.keep('tcu', a!, idx);
    await store.keep('tcu', b!, idx, [a!]);
    assert.deepEqual(readdirSync(join(dir, 'store', 'tcu')).sort(), [`${a}.idx`, `${b}.idx`]);
    await store.keep('tcu', c!, idx, [b!]);
    assert.deepEqual(readdirSync(join(dir, 'store', 'tcu')).sort(), [`${b}.idx`, `${c}.idx`]);
    assert.equal(await store.load('tcu', a!), 'no index kept');
    const loaded = await store.load('tcu', c!);
    assert.ok(typeof loaded !== 'string' && loaded.entries.equals(idx.entries));
    assert.equal(await store.load('../etc', c!), 'no index for this ECU name');
  });

  it('a base located through its kept index answers the offsets reading it gives, without reading it', async () => {
    const old = image(900 * KiB, 'd');
    // The new image: the old one with an insertion and a changed region, so frames move.
    const next = Buffer.concat([
      old.subarray(0, 200 * KiB),
      randomBytes(5000),
      old.subarray(200 * KiB, 600 * KiB),
      image(40 * KiB, 'e'),
      old.subarray(640 * KiB),
    ]);
    const oldPath = join(dir, 'old.img');
    writeFileSync(oldPath, old);
    const sha = createHash('sha256').update(old).digest('hex');
    const { table } = await release(next);
    const kept = chunkIndexOfTable((await release(old)).table);
    const viaIndex = await baseFromIndex(oldPath, sha, kept, table);
    assert.ok(typeof viaIndex !== 'string');
    const viaRead = await indexBase(oldPath, table, new AbortController().signal);
    try {
      assert.equal(viaRead.sha256, sha);
      assert.ok(viaRead.index?.entries.equals(kept.entries), 'reading the image computes the kept index');
      assert.ok(viaIndex.found > 0 && viaIndex.found === viaRead.found, `found ${viaIndex.found}`);
      for (let i = 0; i < table.count; i++)
        assert.equal(viaIndex.offsetOf(i), viaRead.offsetOf(i), `frame ${i}`);
      // The bytes at those offsets are the new image's frames.
      for (let i = 0; i < table.count; i++) {
        const at = viaIndex.offsetOf(i);
        if (at === undefined) continue;
        const from = table.imageOffset[i]!;
        assert.ok(
          readFileSync(oldPath)
            .subarray(at, at + table.size[i]!)
            .equals(next.subarray(from, from + table.size[i]!)),
        );
      }
    } finally {
      await viaIndex.fh.close();
      await viaRead.fh.close();
    }
    // A file of another size than the index's image is not located through it.
    writeFileSync(oldPath, old.subarray(1));
    assert.match(
      String(await baseFromIndex(oldPath, sha, kept, table)),
      /has 921599 bytes, its kept index 921600/,
    );
    // Other chunking parameters than the release's: the index cannot serve.
    const other = { ...kept, cdc: { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB } };
    assert.match(String(await baseFromIndex(oldPath, sha, other, table)), /other chunking parameters/);
  });
});
