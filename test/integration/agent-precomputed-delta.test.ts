/**
 * Precomputed deltas (issue 13) on the local cloud, over real sockets: 1.0.1 is published compressed with a delta
 * from 1.0.0 appended (protocol/delta.ts). A vehicle on 1.0.0 rebuilds 1.0.1 from the delta and its installed
 * image; a vehicle on another base reuses chunks; the bytes the S3 emulator served are counted by a proxy in front
 * of it. A tampered delta frame, a delta bomb, a corrupted base and a cut connection end as they must.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deltaTableSize, parseDeltaTable } from '../../protocol/delta.js';
import type { SignedManifest } from '../../protocol/manifest.js';
import { loadZstd } from '../../protocol/zstd.js';
import {
  type AgentCloud,
  activeSlot,
  assertVehicleRuns,
  publishRelease,
  s3ObjectFile,
  startAgentCloud,
} from '../support/agent-cloud.js';
import {
  otaCli,
  patched,
  proxyToS3,
  textImage,
  transportVia,
  updateVehicle,
} from '../support/delta-vehicle.js';

const KiB = 1024;
const HOOK_TIMEOUT = { timeout: 120_000 };
let ac: AgentCloud;

const BASE = textImage(640 * KiB, 'delta-1.0.0');
const NEXT = patched(BASE);

/** 1 MiB of text, and a next version with 12 KiB of random bytes in each 64 KiB chunk: a delta of ~200 KiB. */
const BIG_BASE = textImage(1024 * KiB, 'delta-big');
const BIG_NEXT = Buffer.concat(
  Array.from({ length: 16 }, (_, i) =>
    Buffer.concat([BIG_BASE.subarray(i * 64 * KiB, i * 64 * KiB + 40 * KiB), randomBytes(12 * KiB)]),
  ),
);

before(async () => {
  ac = await startAgentCloud();
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

/** The delta from `from` as stored, and its parsed table. */
function storedDelta(signed: SignedManifest, object: Buffer, from: string) {
  const m = signed.manifest;
  const entry = m.compression!.deltas!.find((d) => d.from_version === from)!;
  const at = entry.offset + entry.size - entry.table_size;
  return { entry, table: parseDeltaTable(m, entry, object.subarray(at, at + entry.table_size)) };
}

describe('precomputed deltas', { timeout: 600_000 }, () => {
  it('a vehicle on 1.0.0 updates to 1.0.1 through the delta; one on another base through chunk reuse', async () => {
    const rel = await publishRelease(ac, {
      version: '1.0.1',
      image: NEXT,
      compressed: true,
      deltaFrom: [{ version: '1.0.0', image: BASE }],
    });
    const c = rel.signed.manifest.compression!;
    const { entry } = storedDelta(rel.signed, rel.object!, '1.0.0');
    assert.equal(entry.table_size, deltaTableSize(rel.signed.manifest));
    assert.ok(entry.size < NEXT.length * 0.05, `the delta is ${entry.size} bytes for ${NEXT.length}`);

    const viaDelta = await proxyToS3(ac);
    const a = await updateVehicle(ac, '1.0.1', {
      factory: BASE,
      overrides: { downloadTransport: transportVia(ac, viaDelta) },
    });
    assert.equal(a.outcome.status, 'completed', a.outcome.reason);
    assertVehicleRuns(a.dir, '1.0.1', NEXT);
    assert.equal(a.downloaded?.path, 'delta');
    assert.equal(a.downloaded?.fallback, undefined);
    // The frame table and the delta, and nothing else (TLS records and handshakes on top).
    const wanted = c.table_size + entry.size;
    assert.ok(viaDelta.bytesToClient >= wanted, `served ${viaDelta.bytesToClient}`);
    assert.ok(viaDelta.bytesToClient < wanted + 16 * KiB, `served ${viaDelta.bytesToClient} for ${wanted}`);
    assert.ok((a.downloaded?.bytes_fetched ?? Infinity) <= viaDelta.bytesToClient);

    // A base the release has no delta from: 1.0.0 with an edit, so chunks are shared but the digest is not.
    const other = Buffer.from(BASE);
    other.write('a local build of 1.0.0', 500 * KiB);
    const viaReuse = await proxyToS3(ac);
    const b = await updateVehicle(ac, '1.0.1', {
      factory: other,
      overrides: { downloadTransport: transportVia(ac, viaReuse) },
    });
    assert.equal(b.outcome.status, 'completed', b.outcome.reason);
    assertVehicleRuns(b.dir, '1.0.1', NEXT);
    assert.equal(b.downloaded?.path, 'chunk-reuse');
    assert.match(b.downloaded?.fallback ?? '', /no delta from the installed image \(deltas from 1\.0\.0\)/);
    assert.ok(viaReuse.bytesToClient > viaDelta.bytesToClient, 'chunk reuse fetches more than the delta');
    assert.ok(viaReuse.bytesToClient < c.table_offset, 'and less than every frame');
  });

  it('ota firmware sign --delta-from appends a delta that upload publishes and a vehicle on that base takes', async () => {
    const base = textImage(400 * KiB, 'cli-base');
    const next = patched(base);
    writeFileSync(join(ac.root, 'cli-base.img'), base);
    writeFileSync(join(ac.root, 'cli-next.img'), next);
    writeFileSync(join(ac.root, 'release.key.pem'), ac.releaseKey.privatePem);
    const env = {
      OTA_ENDPOINT: ac.cloud.endpoints.api,
      OTA_CA_FILE: ac.cloud.caFile,
      OTA_ADMIN_TOKEN_FILE: ac.cloud.adminTokenFile!,
    };
    const sign = (extra: string[]) =>
      otaCli(ac, env, [
        'firmware',
        'sign',
        'cli-next.img',
        '--release-id',
        'tcu-1.0.6',
        '--ecu',
        'tcu',
        '--hardware-id',
        'TCU-HW-1',
        '--version',
        '1.0.6',
        '--key',
        'release.key.pem',
        '--out',
        'cli-delta.json',
        '--chunk-size',
        '64KiB',
        ...extra,
      ]);
    const refused = await sign(['--delta-from', '1.0.0=cli-base.img']);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /--delta-from needs --compressed-out/);
    const signed = await sign(['--compressed-out', 'cli-delta.frames', '--delta-from', '1.0.0=cli-base.img']);
    assert.equal(signed.code, 0, signed.stderr);
    assert.match(signed.stdout, /delta {5}from 1\.0\.0: \d+ bytes \(\d+\.\d% of the image\)/);
    const up = await otaCli(ac, env, [
      'firmware',
      'upload',
      'cli-delta.frames',
      '--manifest',
      'cli-delta.json',
    ]);
    assert.equal(up.code, 0, up.stderr);
    const proxy = await proxyToS3(ac);
    const r = await updateVehicle(ac, '1.0.6', {
      factory: base,
      overrides: { downloadTransport: transportVia(ac, proxy) },
    });
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.6', next);
    assert.equal(r.downloaded?.path, 'delta');
    assert.ok(proxy.bytesToClient < next.length * 0.1, `served ${proxy.bytesToClient} for ${next.length}`);
  });

  it('a corrupted installed image falls back to the full compressed download, with the reason', async () => {
    const proxy = await proxyToS3(ac);
    const r = await updateVehicle(ac, '1.0.1', {
      factory: BASE,
      overrides: { downloadTransport: transportVia(ac, proxy) },
      beforeOffer: (dir) => {
        const slot = join(dir, 'ecus', 'tcu', `slot-${activeSlot(dir).slot}.img`);
        const bytes = readFileSync(slot);
        bytes[7000] = (bytes[7000] ?? 0) ^ 0xff;
        writeFileSync(slot, bytes);
      },
    });
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.1', NEXT);
    assert.equal(r.downloaded?.path, 'compressed');
    assert.match(r.downloaded?.fallback ?? '', /not the 1\.0\.0 image the delta was built from/);
  });

  it('a connection cut mid-delta resumes after the last verified chunk', async () => {
    const rel = await publishRelease(ac, {
      version: '1.0.2',
      image: BIG_NEXT,
      compressed: true,
      deltaFrom: [{ version: '1.0.0', image: BIG_BASE }],
    });
    const { entry } = storedDelta(rel.signed, rel.object!, '1.0.0');
    const c = rel.signed.manifest.compression!;
    const proxy = await proxyToS3(ac);
    proxy.cutAfter(c.table_size + Math.floor(entry.size / 2), 300);
    const r = await updateVehicle(ac, '1.0.2', {
      factory: BIG_BASE,
      overrides: { downloadTransport: transportVia(ac, proxy) },
    });
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.2', BIG_NEXT);
    assert.equal(r.downloaded?.path, 'delta');
    assert.ok(proxy.cuts >= 1 && proxy.connections >= 2, 'cut, then reconnected');
    // Resumed, not restarted (a restart would cost the delta twice): the tables twice, the delta, and what was in
    // flight in socket buffers when the connection was cut (up to 96 KiB, as for the compressed download).
    const bound = 2 * (c.table_size + entry.table_size) + entry.size + 96 * KiB;
    assert.ok(bound < 2 * entry.size, 'the bound tells a resume from a restart');
    assert.ok(proxy.bytesToClient < bound, `served ${proxy.bytesToClient} for a delta of ${entry.size}`);
  });

  it('a tampered delta frame ends in verification_failed with 1.0.0 still running', async () => {
    const rel = await publishRelease(ac, {
      version: '1.0.3',
      image: BIG_NEXT,
      compressed: true,
      deltaFrom: [{ version: '1.0.0', image: BIG_BASE }],
    });
    const { table } = storedDelta(rel.signed, rel.object!, '1.0.0');
    const file = s3ObjectFile(ac, rel.signed.manifest);
    const stored = readFileSync(file);
    const at = table.objectOffset[5]! + Math.floor(table.stored[5]! / 2);
    stored[at] = stored[at]! ^ 0x55;
    writeFileSync(file, stored);
    const r = await updateVehicle(ac, '1.0.3', { factory: BIG_BASE });
    assert.equal(r.outcome.status, 'verification_failed', r.outcome.reason);
    assert.match(r.outcome.reason ?? '', /chunk 5/);
    assertVehicleRuns(r.dir, '1.0.0', BIG_BASE);
  });

  it('a decompression bomb in place of a delta frame is refused within bounded memory', async () => {
    const rel = await publishRelease(ac, {
      version: '1.0.4',
      image: BIG_NEXT,
      compressed: true,
      deltaFrom: [{ version: '1.0.0', image: BIG_BASE }],
    });
    const { table } = storedDelta(rel.signed, rel.object!, '1.0.0');
    // 128 MiB of zeros compress to 4 KiB, which fits in the place of chunk 3's frame, padded with a skippable
    // frame to the stored size the signed table gives.
    const bomb = Buffer.from((await loadZstd()).compress(Buffer.alloc(128 * 1024 * KiB), 19));
    const room = table.stored[3]!;
    assert.ok(bomb.length + 8 <= room, `the bomb (${bomb.length} bytes) fits in ${room}`);
    const pad = Buffer.alloc(room - bomb.length);
    pad.writeUInt32LE(0x184d2a50, 0);
    pad.writeUInt32LE(pad.length - 8, 4);
    const file = s3ObjectFile(ac, rel.signed.manifest);
    const stored = readFileSync(file);
    Buffer.concat([bomb, pad]).copy(stored, table.objectOffset[3]!);
    writeFileSync(file, stored);
    const rssBefore = process.memoryUsage().rss;
    const r = await updateVehicle(ac, '1.0.4', { factory: BIG_BASE });
    const grew = process.memoryUsage().rss - rssBefore;
    assert.equal(r.outcome.status, 'verification_failed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.0', BIG_BASE);
    assert.ok(grew < 64 * 1024 * KiB, `resident memory grew by ${grew} bytes decoding a 128 MiB bomb`);
  });
});
