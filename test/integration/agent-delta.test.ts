/**
 * Compressed releases and chunk reuse on the local cloud, over real sockets: a vehicle on 1.0.0 updates to 1.0.1
 * from zstd frames, then from the frames its installed image lacks. The bytes the S3 emulator served are counted
 * by a proxy in front of it. A tampered frame, a decompression bomb, a corrupted base and a cut connection each end
 * as they must: refused with the old version running, or installed after a fallback or a resume.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { frameStartingAt, parseFrameTable } from '../../protocol/frames.js';
import type { SignedManifest } from '../../protocol/manifest.js';
import { loadZstd } from '../../protocol/zstd.js';
import type { AgentEvent } from '../../vehicle/agent.js';
import {
  type AgentCloud,
  activeSlot,
  assertVehicleRuns,
  initiateOffer,
  publishOffer,
  publishRelease,
  readAgentState,
  registerAgentVehicle,
  s3ObjectFile,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';
import type { FaultProxy } from '../support/agent-net.js';
import {
  otaCli,
  patched,
  proxyToS3 as proxyToS3Of,
  textImage,
  transportVia as transportViaOf,
  updateVehicle,
} from '../support/delta-vehicle.js';
import { signedRelease } from '../support/fleet.js';

const KiB = 1024;
const HOOK_TIMEOUT = { timeout: 120_000 };
let ac: AgentCloud;

const BASE = textImage(640 * KiB, 'v1.0.0');
const NEXT = patched(BASE);

before(async () => {
  ac = await startAgentCloud();
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

const proxyToS3 = () => proxyToS3Of(ac);
const transportVia = (proxy: FaultProxy) => transportViaOf(ac, proxy);
const update = (version: string, opts: Parameters<typeof updateVehicle>[2] = {}) =>
  updateVehicle(ac, version, opts);

const cli = (env: Record<string, string>, args: string[]) => otaCli(ac, env, args);

/** The frame table of a compressed release as stored (what the agent fetches first). */
function storedTable(signed: SignedManifest, object: Buffer) {
  const c = signed.manifest.compression!;
  return parseFrameTable(signed.manifest, object.subarray(c.table_offset, c.table_offset + c.table_size));
}

describe('compressed releases and chunk reuse', { timeout: 600_000 }, () => {
  it('a vehicle on 1.0.0 updates to 1.0.1 through zstd frames, then through chunk reuse', async () => {
    const rel = await publishRelease(ac, { version: '1.0.1', image: NEXT, compressed: true });
    const c = rel.signed.manifest.compression!;
    assert.ok(c.object_size < NEXT.length * 0.5, `the stored object is compressed (${c.object_size} bytes)`);

    // Full compressed: the vehicle's installed image shares nothing with 1.0.1 (the default factory image).
    const full = await proxyToS3();
    const a = await update('1.0.1', { overrides: { downloadTransport: transportVia(full) } });
    assert.equal(a.outcome.status, 'completed', a.outcome.reason);
    assertVehicleRuns(a.dir, '1.0.1', NEXT);
    assert.equal(a.downloaded?.path, 'compressed');
    assert.equal(a.downloaded?.bytes_reused, 0);
    assert.match(a.downloaded?.fallback ?? '', /shares no frame/);
    // TLS adds records and handshakes on top of the object's bytes; the raw image would be far more.
    assert.ok(full.bytesToClient >= c.object_size, `served ${full.bytesToClient}`);
    assert.ok(
      full.bytesToClient < c.object_size + 32 * KiB,
      `served ${full.bytesToClient} for ${c.object_size}`,
    );

    // Chunk reuse: the vehicle runs 1.0.0, and fetches only the frames of 1.0.1 that 1.0.0 lacks.
    const delta = await proxyToS3();
    const b = await update('1.0.1', { factory: BASE, overrides: { downloadTransport: transportVia(delta) } });
    assert.equal(b.outcome.status, 'completed', b.outcome.reason);
    assertVehicleRuns(b.dir, '1.0.1', NEXT);
    assert.equal(b.downloaded?.path, 'chunk-reuse');
    assert.equal(b.downloaded?.fallback, undefined);
    assert.ok((b.downloaded?.bytes_reused ?? 0) > NEXT.length * 0.7, `reused ${b.downloaded?.bytes_reused}`);
    assert.ok(
      delta.bytesToClient < c.object_size * 0.3,
      `served ${delta.bytesToClient} bytes, the compressed object is ${c.object_size}`,
    );
    assert.ok(
      (b.downloaded?.bytes_fetched ?? Infinity) <= delta.bytesToClient,
      'the agent reports the bytes it fetched',
    );
  });

  it('ota firmware sign --compressed-out writes the object that upload publishes and a vehicle installs', async () => {
    const image = textImage(300 * KiB, 'cli');
    writeFileSync(join(ac.root, 'cli.img'), image);
    writeFileSync(join(ac.root, 'release.key.pem'), ac.releaseKey.privatePem);
    const env = {
      OTA_ENDPOINT: ac.cloud.endpoints.api,
      OTA_CA_FILE: ac.cloud.caFile,
      OTA_ADMIN_TOKEN_FILE: ac.cloud.adminTokenFile!,
    };
    const signed = await cli(env, [
      'firmware',
      'sign',
      'cli.img',
      '--release-id',
      'tcu-1.0.5',
      '--ecu',
      'tcu',
      '--hardware-id',
      'TCU-HW-1',
      '--version',
      '1.0.5',
      '--key',
      'release.key.pem',
      '--out',
      'cli.json',
      '--compressed-out',
      'cli.frames',
      '--compression-level',
      '9',
    ]);
    assert.equal(signed.code, 0, signed.stderr);
    assert.match(signed.stdout, /upload {4}cli\.frames \(\d+ bytes, \d+\.\d% of the image\)/);
    const wrong = await cli(env, ['firmware', 'upload', 'cli.img', '--manifest', 'cli.json']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /upload the --compressed-out file/);
    const up = await cli(env, ['firmware', 'upload', 'cli.frames', '--manifest', 'cli.json']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /^published tcu-1\.0\.5/m);
    const r = await update('1.0.5');
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.5', image);
  });

  it('the backend refuses to publish a compressed object whose frames do not decode to the image', async () => {
    const image = textImage(256 * KiB, 'refused');
    const compressed: { object?: Buffer } = {};
    const signed = await signedRelease(image, {
      releaseId: 'tcu-1.0.9',
      version: '1.0.9',
      signer: ac.releaseKey.signer,
      compressed,
    });
    const t = storedTable(signed, compressed.object!);
    const i = frameStartingAt(t, 128 * KiB);
    const object = Buffer.from(compressed.object!);
    const at = t.objectOffset[i]! + Math.floor(t.stored[i]! / 2);
    object[at] = object[at]! ^ 0x55;
    const { created, published } = await ac.operator.publish(signed, object);
    assert.equal(created.status, 201);
    assert.equal(published?.json.status, 'failed', published?.raw.toString());
    assert.match(published?.json.failure_reason ?? '', /chunk 2/);
  });

  it('a corrupted installed image falls back to the compressed download, with the reason', async () => {
    const proxy = await proxyToS3();
    const r = await update('1.0.1', {
      factory: BASE,
      overrides: { downloadTransport: transportVia(proxy) },
      beforeOffer: (dir) => {
        const slot = join(dir, 'ecus', 'tcu', `slot-${activeSlot(dir).slot}.img`);
        const bytes = readFileSync(slot);
        bytes[5000] = (bytes[5000] ?? 0) ^ 0xff;
        writeFileSync(slot, bytes);
      },
    });
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.1', NEXT);
    assert.equal(r.downloaded?.path, 'compressed');
    assert.match(r.downloaded?.fallback ?? '', /differs from the digest recorded/);
  });

  it('a connection cut mid-download resumes after the last verified chunk', async () => {
    const image = textImage(1024 * KiB, 'resume');
    const rel = await publishRelease(ac, { version: '1.0.2', image, compressed: true });
    const proxy = await proxyToS3();
    proxy.cutAfter(Math.floor(rel.signed.manifest.compression!.object_size / 2), 300);
    const r = await update('1.0.2', { overrides: { downloadTransport: transportVia(proxy) } });
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.2', image);
    assert.ok(proxy.connections >= 2, 'reconnected');
    assert.ok(proxy.cuts >= 1, 'the connection was cut');
    // Resumed, not restarted: at most one chunk's frames more than the object (plus TLS).
    const c = rel.signed.manifest.compression!;
    assert.ok(
      proxy.bytesToClient < c.object_size + 96 * KiB,
      `served ${proxy.bytesToClient} for ${c.object_size}`,
    );
  });

  it('windowed frames install in full after a cut, by chunk reuse, and decoded on the main thread too', async () => {
    // The backend decoded every frame with the bytes before it to publish this (release verification).
    const rel = await publishRelease(ac, {
      version: '1.0.30',
      image: NEXT,
      compressed: true,
      window: 32 * KiB,
    });
    const c = rel.signed.manifest.compression!;
    assert.equal(c.window, 32 * KiB);

    // Every frame, the connection cut half way: the resume starts at a chunk, where no window is needed.
    const full = await proxyToS3();
    full.cutAfter(Math.floor(c.object_size / 2), 300);
    const a = await update('1.0.30', { overrides: { downloadTransport: transportVia(full) } });
    assert.equal(a.outcome.status, 'completed', a.outcome.reason);
    assertVehicleRuns(a.dir, '1.0.30', NEXT);
    assert.equal(a.downloaded?.path, 'compressed');
    assert.ok(full.cuts >= 1, 'the connection was cut');
    assert.ok(
      full.bytesToClient < c.object_size + 96 * KiB,
      `served ${full.bytesToClient} for ${c.object_size}`,
    );

    // Chunk reuse: reused bytes of 1.0.0 are the window of the frames fetched after them.
    const reuse = await proxyToS3();
    const b = await update('1.0.30', {
      factory: BASE,
      overrides: { downloadTransport: transportVia(reuse) },
    });
    assert.equal(b.outcome.status, 'completed', b.outcome.reason);
    assertVehicleRuns(b.dir, '1.0.30', NEXT);
    assert.equal(b.downloaded?.path, 'chunk-reuse');
    assert.ok((b.downloaded?.bytes_reused ?? 0) > NEXT.length * 0.7, `reused ${b.downloaded?.bytes_reused}`);
    assert.ok(reuse.bytesToClient < c.object_size * 0.3, `served ${reuse.bytesToClient} of ${c.object_size}`);

    // No decode worker: this thread keeps the window, for fetched and reused frames alike.
    const d = await update('1.0.30', {
      factory: BASE,
      overrides: {
        download: { backoff: { baseMs: 50, maxMs: 500 }, minBytesPerSecond: 0, decodeWorker: false },
      },
    });
    assert.equal(d.outcome.status, 'completed', d.outcome.reason);
    assertVehicleRuns(d.dir, '1.0.30', NEXT);
    assert.equal(d.downloaded?.path, 'chunk-reuse');
  });

  it('bytes fetched are reported for every run: a run that failed and an agent restarted after it', async () => {
    // Half text, half random: an object of ~2.5 MiB, so the first run's bytes dwarf TLS and in-flight slack.
    const image = Buffer.concat([textImage(2048 * KiB, 'runs'), randomBytes(2048 * KiB)]);
    const rel = await publishRelease(ac, { version: '1.0.8', image, compressed: true });
    const c = rel.signed.manifest.compression!;
    const proxy = await proxyToS3();
    const transport = transportVia(proxy);
    ac.track(() => transport.close());
    const vin = '5YJ3E1EA7KF900001';
    const dir = await registerAgentVehicle(ac, vin);
    // The first run gives up at the cut (one attempt, refused reconnection); its next run is far off, so the agent is stopped before it.
    const first = await startAgent(ac, vin, dir, {
      downloadTransport: transport,
      download: { maxAttempts: 1 },
      retryBackoff: { baseMs: 600_000, maxMs: 600_000 },
    });
    let firstRun = 0;
    try {
      await first.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
      // Down long enough that the one attempt's reconnection is refused.
      proxy.cutAfter(Math.floor(c.object_size / 2), 3000);
      await publishOffer(ac, vin, await initiateOffer(first, '1.0.8'));
      await waitUntil(() => readAgentState(dir).current?.attempts.download === 1, 30_000, 'a failed run');
      firstRun = readAgentState(dir).current?.transfer?.fetched ?? 0;
    } finally {
      await first.close();
    }
    // The link comes back 3 s after the cut; the restarted agent starts on it (its own retries are tested elsewhere).
    await sleep(3500);
    const servedBefore = proxy.bytesToClient;
    assert.ok(firstRun > c.object_size / 3, `the failed run's bytes were saved (${firstRun})`);

    const second = await startAgent(ac, vin, dir, { downloadTransport: transport });
    try {
      const outcome = await second.events.outcome('1.0.8', 60_000);
      assert.equal(outcome.status, 'completed', outcome.reason);
      await second.agent.whenIdle();
    } finally {
      await second.close();
    }
    assertVehicleRuns(dir, '1.0.8', image);
    const downloaded = second.events.events.find((e) => e.type === 'downloaded');
    const reported = downloaded?.type === 'downloaded' ? downloaded.bytes_fetched : 0;
    const served = proxy.bytesToClient;
    // Body bytes reported against what the proxy in front of the S3 emulator passed (TLS records, handshakes and
    // headers included; a cut drops what was in flight): equal within that slack, and more than the last run alone.
    const slack = 160 * KiB + Math.ceil(served * 0.01);
    assert.ok(reported <= served, `reported ${reported}, served ${served}`);
    assert.ok(served - reported < slack, `reported ${reported}, served ${served}: both runs counted`);
    assert.ok(served - servedBefore < reported - slack, 'the last run alone would not add up');
  });

  it('the chunk index is kept at install: the next update reuses through it, and an image damaged since falls back', async () => {
    const k1 = textImage(640 * KiB, 'kept');
    const k2 = patched(k1);
    const k3 = patched(k2);
    await publishRelease(ac, { version: '1.0.20', image: k1, compressed: true });
    await publishRelease(ac, { version: '1.0.21', image: k2, compressed: true });
    await publishRelease(ac, { version: '1.0.22', image: k3, compressed: true });
    const vin = '5YJ3E1EA7KF900020';
    const dir = await registerAgentVehicle(ac, vin);
    const proxy = await proxyToS3();
    const v = await startAgent(ac, vin, dir, { downloadTransport: transportVia(proxy) });
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const indexes = () => readdirSync(join(dir, 'indexes', 'tcu')).sort();
    const updateTo = async (version: string) => {
      await publishOffer(ac, vin, await initiateOffer(v, version));
      const outcome = await v.events.outcome(version, 60_000);
      await v.agent.whenIdle();
      const downloaded = v.events.events.filter(
        (e): e is Extract<AgentEvent, { type: 'downloaded' }> => e.type === 'downloaded',
      );
      return { outcome, downloaded: downloaded[downloaded.length - 1] };
    };
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
      // 1.0.20 shares nothing with the factory image: every frame, and its signed chunk index is kept.
      const a = await updateTo('1.0.20');
      assert.equal(a.outcome.status, 'completed', a.outcome.reason);
      assertVehicleRuns(dir, '1.0.20', k1);
      assert.ok(indexes().includes(`${sha(k1)}.idx`), `kept: ${indexes().join(', ')}`);

      // 1.0.21 reuses from the installed 1.0.20 through that index.
      const b = await updateTo('1.0.21');
      assert.equal(b.outcome.status, 'completed', b.outcome.reason);
      assertVehicleRuns(dir, '1.0.21', k2);
      assert.equal(b.downloaded?.path, 'chunk-reuse');
      assert.equal(b.downloaded?.fallback, undefined);
      assert.ok((b.downloaded?.bytes_reused ?? 0) > k2.length * 0.7, `reused ${b.downloaded?.bytes_reused}`);
      assert.deepEqual(indexes(), [`${sha(k1)}.idx`, `${sha(k2)}.idx`].sort(), 'the A/B pair, nothing more');

      // The installed 1.0.21 is damaged after its index was kept. The index still names it (same recorded digest),
      // so nothing reads the image up front: the reused bytes fail their chunk digest like downloaded ones would,
      // and the rest comes from the network, with the reason reported.
      const slot = join(dir, 'ecus', 'tcu', `slot-${activeSlot(dir).slot}.img`);
      const bytes = readFileSync(slot);
      bytes[5000] = (bytes[5000] ?? 0) ^ 0xff;
      writeFileSync(slot, bytes);
      const c = await updateTo('1.0.22');
      assert.equal(c.outcome.status, 'completed', c.outcome.reason);
      assertVehicleRuns(dir, '1.0.22', k3);
      assert.match(
        c.downloaded?.fallback ?? '',
        /the installed image did not verify at chunk 0; downloading the rest/,
      );
      assert.ok(
        (c.downloaded?.bytes_fetched ?? 0) > (b.downloaded?.bytes_fetched ?? 0),
        `fetched ${c.downloaded?.bytes_fetched} after the fallback, ${b.downloaded?.bytes_fetched} reusing`,
      );
    } finally {
      await v.close();
    }
  });

  it('a tampered frame ends in verification_failed with the old version running', async () => {
    const image = textImage(512 * KiB, 'tamper');
    const rel = await publishRelease(ac, { version: '1.0.3', image, compressed: true });
    const file = s3ObjectFile(ac, rel.signed.manifest);
    const stored = readFileSync(file);
    const t = storedTable(rel.signed, rel.object!);
    const i = frameStartingAt(t, 3 * 64 * KiB);
    const at = t.objectOffset[i]! + Math.floor(t.stored[i]! / 2);
    stored[at] = stored[at]! ^ 0x55;
    writeFileSync(file, stored);
    const r = await update('1.0.3');
    assert.equal(r.outcome.status, 'verification_failed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.0', Buffer.from('factory image of tcu 1.0.0\n'));
  });

  it('a decompression bomb in place of a frame is refused within bounded memory', async () => {
    const image = textImage(512 * KiB, 'bomb');
    const rel = await publishRelease(ac, { version: '1.0.4', image, compressed: true });
    const t = storedTable(rel.signed, rel.object!);
    // The largest compressed frame: 128 MiB of zeros compress to 4 KiB, which fits in its place, padded with a
    // skippable frame to the stored size the signed table gives.
    let i = 0;
    for (let k = 0; k < t.count; k++) if (!t.raw[k] && t.stored[k]! > t.stored[i]!) i = k;
    const zstd = await loadZstd();
    const bomb = Buffer.from(zstd.compress(Buffer.alloc(128 * 1024 * KiB), 19));
    const room = t.stored[i]!;
    assert.ok(bomb.length + 8 <= room, `the bomb (${bomb.length} bytes) fits in ${room}`);
    const pad = Buffer.alloc(room - bomb.length);
    pad.writeUInt32LE(0x184d2a50, 0);
    pad.writeUInt32LE(pad.length - 8, 4);
    const file = s3ObjectFile(ac, rel.signed.manifest);
    const stored = readFileSync(file);
    Buffer.concat([bomb, pad]).copy(stored, t.objectOffset[i]!);
    writeFileSync(file, stored);
    const rssBefore = process.memoryUsage().rss;
    const r = await update('1.0.4');
    const grew = process.memoryUsage().rss - rssBefore;
    assert.equal(r.outcome.status, 'verification_failed', r.outcome.reason);
    assertVehicleRuns(r.dir, '1.0.0', Buffer.from('factory image of tcu 1.0.0\n'));
    assert.ok(grew < 64 * 1024 * KiB, `resident memory grew by ${grew} bytes decoding a 128 MiB bomb`);
  });
});
