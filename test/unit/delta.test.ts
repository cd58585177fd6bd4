/**
 * Precomputed deltas, pure parts: a delta written against a base rebuilds every chunk of the new image from that
 * base, its table is refused when it does not describe a bounded delta of this manifest, and the manifest refuses
 * deltas that are not laid out after the frame table.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import {
  type DeltaEntry,
  deltaFor,
  encodeDeltaTable,
  loadDictCodec,
  MAX_DELTA_WINDOW,
  parseDeltaTable,
} from '../../protocol/delta.js';
import { writeDelta } from '../../protocol/delta-publisher.js';
import { checkManifestConsistency, digestStream, type ReleaseManifest } from '../../protocol/manifest.js';
import { ZstdFrameError } from '../../protocol/zstd.js';

const KiB = 1024;
const CHUNK = 64 * KiB;
const SMALL = { min: 2 * KiB, avg: 8 * KiB, max: 32 * KiB };

const MANIFEST: ReleaseManifest = {
  schema: 'ota.release-manifest/v1',
  release_id: 'tcu-1.0.1',
  ecu: 'tcu',
  hardware_ids: ['H'],
  version: '1.0.1',
  size: 2 * CHUNK,
  sha256: 'a'.repeat(64),
  chunk_size: CHUNK,
  chunks: ['a'.repeat(64), 'b'.repeat(64)],
  created_at: '2030-01-01T00:00:00.000Z',
};

function text(size: number, seed: string): Buffer {
  let s = '';
  for (let n = 0; s.length < size; n++) {
    s += `line ${n} ${createHash('sha256').update(`${seed}${n}`).digest('hex').slice(0, 10)}\n`;
  }
  return Buffer.from(s).subarray(0, size);
}

async function built(base: Buffer, next: Buffer) {
  const d = await digestStream(Readable.from([next]), CHUNK);
  const parts: Buffer[] = [];
  const {
    frames: _f,
    rawFrames,
    ...entry
  } = await writeDelta(
    () => Readable.from([next]),
    {
      version: '1.0.0',
      size: base.length,
      stream: () => Readable.from([base]),
      read: async (at, n) => base.subarray(at, at + n),
    },
    { chunkSize: CHUNK, codec: await loadDictCodec(), offset: 1000, cdc: SMALL },
    (b) => void parts.push(Buffer.from(b)),
  );
  const m: ReleaseManifest = { ...MANIFEST, size: d.size, sha256: d.sha256, chunks: d.chunks };
  const section = Buffer.concat(parts);
  return { m, entry, rawFrames, section, table: section.subarray(section.length - entry.table_size) };
}

describe('precomputed deltas', { timeout: 60_000 }, () => {
  it('rebuild every chunk from the base, smaller than the changed bytes', async () => {
    const base = text(600 * KiB, 'a');
    // An insertion shifts everything after it; a random run cannot be taken from the base.
    const next = Buffer.concat([base.subarray(0, 200 * KiB), randomBytes(3000), base.subarray(200 * KiB)]);
    const { m, entry, section, table } = await built(base, next);
    assert.equal(entry.base_sha256, createHash('sha256').update(base).digest('hex'));
    assert.ok(entry.size < 3000 + 4 * KiB, `delta ${entry.size} bytes`);
    const t = parseDeltaTable(m, entry, table);
    const codec = await loadDictCodec();
    for (let k = 0; k < m.chunks.length; k++) {
      const frame = section.subarray(t.objectOffset[k]! - 1000, t.objectOffset[k + 1]! - 1000);
      const window = base.subarray(t.windowOffset[k]!, t.windowOffset[k]! + t.windowLength[k]!);
      const size = Math.min(CHUNK, m.size - k * CHUNK);
      const out = t.raw[k] ? frame : codec.decompress(frame, window, size);
      assert.equal(createHash('sha256').update(out).digest('hex'), m.chunks[k], `chunk ${k}`);
    }
    // The wrong base decodes to something else, which the chunk digest refuses.
    const wrong = Buffer.from(base);
    wrong.fill(0x20, 0, 64 * KiB);
    const frame0 = section.subarray(0, t.stored[0]!);
    let bad: Uint8Array | undefined;
    try {
      bad = codec.decompress(frame0, wrong.subarray(0, t.windowLength[0]!), CHUNK);
    } catch (err) {
      assert.ok(err instanceof ZstdFrameError);
    }
    if (bad) assert.notEqual(createHash('sha256').update(bad).digest('hex'), m.chunks[0]);
    // A frame is decoded only to its chunk's size: a larger declared size is refused before decoding.
    assert.throws(() => codec.decompress(frame0, base, CHUNK - 1), ZstdFrameError);
  });

  it('tables that do not describe a bounded delta of this manifest are refused', async () => {
    const base = text(300 * KiB, 'b');
    const next = Buffer.concat([base.subarray(0, 100 * KiB), randomBytes(500), base.subarray(100 * KiB)]);
    const { m, entry, table } = await built(base, next);
    const n = m.chunks.length;
    const refused = (e: DeltaEntry, bytes: Buffer, why: RegExp) =>
      assert.throws(() => parseDeltaTable(m, e, bytes), why);
    const withTable = (bytes: Buffer): DeltaEntry => ({
      ...entry,
      table_sha256: createHash('sha256').update(bytes).digest('hex'),
    });
    const flipped = Buffer.from(table);
    flipped[20] = flipped[20]! ^ 0xff;
    refused(entry, flipped, /SHA-256/);
    const frames = Array.from({ length: n }, (_, k) => ({
      windowOffset: 0,
      windowLength: 1024,
      stored: 100,
      raw: false,
      k,
    }));
    const outside = encodeDeltaTable(
      frames.map((f, k) => (k === 2 ? { ...f, windowOffset: base.length } : f)),
    );
    refused(withTable(outside), outside, /window outside the base/);
    const huge = encodeDeltaTable(
      frames.map((f, k) => (k === 1 ? { ...f, windowLength: MAX_DELTA_WINDOW + 1 } : f)),
    );
    refused(withTable(huge), huge, /window outside the base/);
    const expands = encodeDeltaTable(frames.map((f, k) => (k === 0 ? { ...f, stored: CHUNK } : f)));
    refused(withTable(expands), expands, /stores 65536 bytes for 65536/);
    const unfilled = encodeDeltaTable(frames);
    refused(withTable(unfilled), unfilled, /do not fill the delta/);
    assert.equal(deltaFor({ ...m, compression: undefined }, entry.base_sha256), undefined);
  });

  it('the manifest refuses deltas not laid out after the frame table', () => {
    const m = MANIFEST;
    const delta: DeltaEntry = {
      from_version: '1.0.0',
      base_size: 10,
      base_sha256: 'c'.repeat(64),
      offset: 1100,
      size: 500,
      table_size: 48,
      table_sha256: 'd'.repeat(64),
    };
    const compression = {
      format: 'ota.zstd-frames/v1' as const,
      object_size: 1600,
      table_offset: 1000,
      table_size: 100,
      table_sha256: 'e'.repeat(64),
      deltas: [delta],
    };
    checkManifestConsistency({ ...m, compression });
    assert.throws(
      () =>
        checkManifestConsistency({
          ...m,
          compression: { ...compression, deltas: [{ ...delta, offset: 1101 }] },
        }),
      /not laid out after the frame table/,
    );
    assert.throws(
      () => checkManifestConsistency({ ...m, compression: { ...compression, object_size: 1700 } }),
      /frame table at the end/,
    );
  });
});
