/** Small pure policies: backoff with jitter, progress throttling, minimum speed, install safety, identity files. */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createCa, issueClientCertificate } from '../../protocol/x509.js';
import { backoffDelay } from '../../vehicle/backoff.js';
import { ensureIdentity, loadTrustAnchors, saveCertificate } from '../../vehicle/provisioning.js';
import { ProgressThrottle, SpeedMonitor } from '../../vehicle/rate.js';
import {
  checkSafety,
  FileVehicleState,
  StaticVehicleState,
  waitUntilSafe,
} from '../../vehicle/vehicle-state.js';
import { FakeRuntime } from '../support/agent-fakes.js';
import { newReleaseKey } from '../support/fleet.js';

const root = mkdtempSync(join(tmpdir(), 'agent-pol-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
const VIN = '1HGCM82633A004352';

describe('backoffDelay', { timeout: 60_000 }, () => {
  it('grows exponentially to the cap, with full jitter', () => {
    const p = { baseMs: 100, maxMs: 1000 };
    assert.deepEqual(
      [0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, p, () => 0.999999)),
      [99, 199, 399, 799, 999, 999],
    );
    assert.equal(
      backoffDelay(3, p, () => 0),
      0,
    );
  });
});

describe('ProgressThrottle', { timeout: 60_000 }, () => {
  it('reports every 5 points or every 2 seconds, and 100% once', () => {
    const t = new ProgressThrottle(5, 2000);
    const seen = [0, 1, 4.9, 5, 6, 9.99, 10.5, 11, 11.5, 100, 100].filter((p, i) =>
      t.shouldReport(p, i === 8 ? 5000 : 0),
    );
    assert.deepEqual(seen, [0, 5, 10.5, 11.5, 100]);
  });
});

describe('SpeedMonitor', { timeout: 60_000 }, () => {
  it('flags a trickle once the window has passed, not before', () => {
    const m = new SpeedMonitor(1000, 10_000, 0);
    for (let t = 0; t <= 9000; t += 1000) m.add(10, t);
    assert.equal(m.tooSlow(9000), false, 'window not over yet');
    m.add(10, 10_000);
    assert.equal(m.tooSlow(10_000), true);
    const fast = new SpeedMonitor(1000, 10_000, 0);
    for (let t = 0; t <= 12_000; t += 500) fast.add(800, t);
    assert.equal(fast.tooSlow(12_000), false);
    assert.ok(Math.abs(fast.rate(12_000) - 1600) < 200, `rate ${fast.rate(12_000)}`);
  });
});

describe('install safety', { timeout: 60_000 }, () => {
  it('needs parked and enough battery', () => {
    assert.deepEqual(checkSafety({ parked: true, batteryPercent: 80 }), { safe: true });
    assert.match(
      (checkSafety({ parked: false, batteryPercent: 80 }) as { reason: string }).reason,
      /not parked/,
    );
    assert.match(
      (checkSafety({ parked: true, batteryPercent: 49 }) as { reason: string }).reason,
      /battery at 49%/,
    );
    assert.deepEqual(checkSafety({ parked: true, batteryPercent: 20 }, { minBatteryPercent: 10 }), {
      safe: true,
    });
    assert.equal(
      checkSafety({ parked: true, batteryPercent: Number.NaN }).safe,
      false,
      'an unknown charge is unsafe',
    );
  });

  it('waits until safe, telling each change of reason once; an unreadable state file is unsafe', async () => {
    const car = new StaticVehicleState({ parked: false, batteryPercent: 90 });
    const runtime = new FakeRuntime();
    const reasons: string[] = [];
    let polls = 0;
    const done = waitUntilSafe(
      {
        read: async () => {
          polls++;
          if (polls === 3) car.set({ parked: true, batteryPercent: 10 });
          if (polls === 6) car.set({ batteryPercent: 60 });
          return car.read();
        },
      },
      {},
      { runtime, signal: new AbortController().signal, pollMs: 1000, onDeferred: (r) => reasons.push(r) },
    );
    await done;
    assert.deepEqual(reasons, ['vehicle is not parked', 'battery at 10%, needs 50%']);
    assert.equal(runtime.sleeps.length, 5);
    const file = join(root, 'vehicle.json');
    writeFileSync(file, '{"parked": true, "battery_percent": 75}');
    assert.deepEqual(await new FileVehicleState(file).read(), { parked: true, batteryPercent: 75 });
    writeFileSync(file, 'garbage');
    assert.equal(checkSafety(await new FileVehicleState(file).read()).safe, false);
  });
});

describe('provisioning', { timeout: 60_000 }, () => {
  it('makes the device key (0600) and a CSR for the VIN once, and keeps them', async () => {
    const dir = join(root, 'identity');
    const a = await ensureIdentity(dir, VIN);
    assert.equal(statSync(join(dir, 'device.key.pem')).mode & 0o777, 0o600);
    assert.match(a.csrPem, /BEGIN CERTIFICATE REQUEST/);
    assert.equal(a.certPem, undefined);
    const b = await ensureIdentity(dir, VIN);
    assert.equal(b.keyPem, a.keyPem, 'the same key on the next run');
    await assert.rejects(ensureIdentity(join(root, 'x'), 'NOT-A-VIN'));
  });

  it('stores only a certificate for its own key and VIN', async () => {
    const ca = await createCa('test CA');
    const mine = await ensureIdentity(join(root, 'mine'), VIN);
    const other = await ensureIdentity(join(root, 'other'), VIN);
    const issue = (csrPem: string, cn: string) =>
      issueClientCertificate({ csrPem, caKeyPem: ca.keyPem, caCertPem: ca.certPem, commonName: cn, days: 1 });
    await assert.rejects(saveCertificate(mine, await issue(other.csrPem, VIN)), /not for this device key/);
    await assert.rejects(
      saveCertificate(mine, await issue(mine.csrPem, '5YJSA1E26HF000337')),
      /not for 1HGCM82633A004352/,
    );
    const saved = await saveCertificate(mine, await issue(mine.csrPem, VIN));
    assert.equal(new X509Certificate(saved.certPem!).subject, `CN=${VIN}`);
    assert.equal((await ensureIdentity(join(root, 'mine'), VIN)).certPem, saved.certPem);
  });

  it('loads trust anchors from PEM files (several per file) and refuses files without keys', async () => {
    const k1 = newReleaseKey();
    const k2 = newReleaseKey();
    const both = join(root, 'release.pem');
    writeFileSync(both, k1.publicPem + k2.publicPem);
    const backend = join(root, 'backend.pem');
    writeFileSync(backend, newReleaseKey().publicPem);
    const anchors = await loadTrustAnchors({ releaseKeyFiles: [both], backendKeyFiles: [backend] });
    assert.equal(anchors.releaseKeys.length, 2);
    assert.equal(anchors.backendKeys.length, 1);
    const empty = join(root, 'empty.pem');
    writeFileSync(empty, 'nothing');
    await assert.rejects(
      loadTrustAnchors({ releaseKeyFiles: [empty], backendKeyFiles: [backend] }),
      /no PEM public key/,
    );
    await assert.rejects(
      loadTrustAnchors({ releaseKeyFiles: [], backendKeyFiles: [backend] }),
      /at least one release key/,
    );
  });
});
