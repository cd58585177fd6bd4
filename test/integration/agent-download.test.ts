/**
 * Downloads under hostile or broken conditions, over real sockets: a server that never stops sending, one that
 * sends only garbage, one that trickles; presigned URLs expiring mid-download; a connection cut followed by a
 * network outage. The agent must stop at the signed size, resume after its last verified chunk, ask for fresh
 * URLs, give up on slow retrieval, and report each outcome honestly.
 */
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LocalCa, type TlsMaterial } from '../../local/ca.js';
import type { AgentEvent } from '../../vehicle/agent.js';
import { DirectHttpsTransport } from '../../vehicle/direct-https.js';
import type { CreateAgentOptions } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  FACTORY_IMAGE,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  startAgent,
  startAgentCloud,
} from '../support/agent-cloud.js';
import { type HostileBehaviour, portOf, startFaultProxy, startHostileServer } from '../support/agent-net.js';

const PRESIGN_TTL = 2;
const KiB = 1024;
const MiB = 1024 * KiB;
let ac: AgentCloud;
let tls: TlsMaterial;
let rel: PublishedRelease;
let vinSerial = 0;
const nextVin = () => `1HGCM82633A3${String(++vinSerial).padStart(5, '0')}`;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud({ presignTtlSeconds: PRESIGN_TTL });
  tls = await (await LocalCa.open(join(ac.cloud.dataDir, 'ca'))).serverCertificate();
  rel = await publishRelease(ac, { version: '2.0.0', size: MiB + 999 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

/**
 * The agent's download transport, with its connections to the S3 emulator sent to `port` instead (TLS still checks
 * 127.0.0.1 against the CA).
 */
function transportVia(port: number): DirectHttpsTransport {
  const s3 = portOf(ac.cloud.endpoints.s3);
  return new DirectHttpsTransport({
    ca: ac.cloud.caCertPem,
    route: (host, p) => ({ host, port: p === s3 ? port : p }),
  });
}

async function runUpdate(overrides: Partial<CreateAgentOptions>, watch?: (dir: string) => () => void) {
  const vin = nextVin();
  const dir = await registerAgentVehicle(ac, vin);
  const v = await startAgent(ac, vin, dir, overrides);
  const stopWatching = watch?.(dir);
  try {
    await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
    await publishOffer(ac, vin, await initiateOffer(v, '2.0.0'));
    const outcome = await v.events.outcome('2.0.0', 40_000);
    await v.agent.whenIdle();
    return { vin, dir, outcome, events: v.events.events };
  } finally {
    stopWatching?.();
    await v.close();
  }
}

const requests = (events: AgentEvent[]) =>
  events.filter((e): e is Extract<AgentEvent, { type: 'request' }> => e.type === 'request');

/** Samples the size of the download folder's files; answers a stop function, the largest size seen goes in max. */
function watchDownloads(max: { bytes: number }) {
  return (dir: string) => {
    const timer = setInterval(() => {
      try {
        for (const f of readdirSync(join(dir, 'downloads'))) {
          max.bytes = Math.max(max.bytes, statSync(join(dir, 'downloads', f)).size);
        }
      } catch {
        // not created yet
      }
    }, 2);
    return () => clearInterval(timer);
  };
}

async function withHostile<T>(
  behaviour: HostileBehaviour,
  fn: (transport: DirectHttpsTransport, server: Awaited<ReturnType<typeof startHostileServer>>) => Promise<T>,
) {
  const server = await startHostileServer(tls, behaviour);
  const transport = transportVia(server.port);
  ac.track(() => server.stop());
  ac.track(() => transport.close());
  try {
    return await fn(transport, server);
  } finally {
    transport.close();
    await server.stop();
  }
}

describe('vehicle agent: downloads under attack and failure', { timeout: 240_000 }, () => {
  it('stops at the signed size when the server never stops sending (endless data), and installs', async () => {
    const largest = { bytes: 0 };
    await withHostile({ kind: 'correct-then-endless', image: rel.image }, async (transport, server) => {
      const r = await runUpdate({ downloadTransport: transport }, watchDownloads(largest));
      assert.equal(r.outcome.status, 'completed', r.outcome.reason);
      assertVehicleRuns(r.dir, '2.0.0', rel.image);
      assert.ok(
        largest.bytes <= rel.image.length,
        `the download file never exceeded the signed size (${largest.bytes})`,
      );
      // The server writes until the agent hangs up; socket buffers hold a few MiB at most, the rest is never sent.
      assert.ok(
        server.bytesSent < rel.image.length + 16 * MiB,
        `server managed to send ${server.bytesSent} bytes`,
      );
      const backend = await backendVehicle(ac, r.vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
      assert.equal(backend.ecus[0]?.version, '2.0.0');
    });
  });

  it('never fills the disk with endless garbage: the first chunk fails, then verification_failed', async () => {
    const largest = { bytes: 0 };
    await withHostile({ kind: 'endless-garbage' }, async (transport, server) => {
      const r = await runUpdate({ downloadTransport: transport }, watchDownloads(largest));
      assert.equal(r.outcome.status, 'verification_failed', JSON.stringify(r.outcome));
      assert.match(r.outcome.reason ?? '', /chunk 0/);
      assert.ok(largest.bytes <= 64 * KiB, `at most one unverified chunk on disk (${largest.bytes})`);
      assert.ok(server.bytesSent < 16 * MiB, `server managed to send ${server.bytesSent} bytes`);
      assertVehicleRuns(r.dir, '1.0.0', FACTORY_IMAGE);
      const backend = await backendVehicle(ac, r.vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'verification_failed');
      assert.equal(backend.ecus[0]?.version, '1.0.0');
    });
  });

  it('gives up on a trickle (slow retrieval) within its deadlines and reports failed', async () => {
    await withHostile({ kind: 'trickle', intervalMs: 50 }, async (transport) => {
      const started = Date.now();
      const r = await runUpdate({
        downloadTransport: transport,
        download: {
          minBytesPerSecond: 32 * KiB,
          minSpeedWindowMs: 1000,
          maxAttempts: 2,
          backoff: { baseMs: 50, maxMs: 100 },
        },
        budgets: { downloadRuns: 1 },
      });
      assert.equal(r.outcome.status, 'failed', JSON.stringify(r.outcome));
      assert.match(r.outcome.reason ?? '', /slower than/);
      assert.ok(Date.now() - started < 20_000, 'gave up in seconds, not hours');
      assertVehicleRuns(r.dir, '1.0.0', FACTORY_IMAGE);
      const backend = await backendVehicle(ac, r.vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'failed');
      assert.match(backendUpdate(backend, '2.0.0')?.reason ?? '', /slower than/);
      assert.equal(backend.ecus[0]?.version, '1.0.0');
    });
  });

  it('asks for a fresh URL when the presigned one expires mid-download, and continues where it was', async () => {
    const r = await runUpdate({
      download: {
        requestBytes: 128 * KiB,
        maxBytesPerSecond: 320 * KiB,
        minBytesPerSecond: 0,
        backoff: { baseMs: 50, maxMs: 200 },
      },
    });
    assert.equal(r.outcome.status, 'completed', r.outcome.reason);
    const refreshes = r.events.filter((e) => e.type === 'url' && e.refresh);
    assert.ok(refreshes.length >= 1, `the URL expired and was refreshed (${refreshes.length} times)`);
    const offsets = requests(r.events).map((e) => e.offset);
    assert.equal(offsets[0], 0);
    assert.deepEqual(
      [...offsets].sort((a, b) => a - b),
      offsets,
      `never went back: ${offsets.join(',')}`,
    );
    assert.equal(offsets.filter((o) => o === 0).length, 1, 'never restarted from zero');
    assertVehicleRuns(r.dir, '2.0.0', rel.image);
    const backend = await backendVehicle(ac, r.vin);
    assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
    assert.equal(backend.ecus[0]?.version, '2.0.0');
  });

  it('resumes after its last verified chunk when the connection is cut and the network is gone a while', async () => {
    const proxy = await startFaultProxy(portOf(ac.cloud.endpoints.s3));
    const transport = transportVia(proxy.port);
    ac.track(() => proxy.stop());
    ac.track(() => transport.close());
    try {
      proxy.cutAfter(300 * KiB, 1000);
      const r = await runUpdate({
        downloadTransport: transport,
        download: {
          maxBytesPerSecond: 2 * MiB,
          minBytesPerSecond: 0,
          backoff: { baseMs: 200, maxMs: 800 },
          maxAttempts: 10,
        },
      });
      assert.equal(r.outcome.status, 'completed', r.outcome.reason);
      const offsets = requests(r.events).map((e) => e.offset);
      assert.equal(offsets[0], 0);
      const resumedAt = offsets.find((o) => o > 0);
      assert.ok(resumedAt !== undefined, `resumed with a Range request: ${offsets.join(',')}`);
      assert.equal(resumedAt % (64 * KiB), 0, 'resumes at a chunk boundary');
      assert.ok(resumedAt <= 300 * KiB, `resumes after the last verified chunk, not later (${resumedAt})`);
      assert.ok(proxy.connections >= 2, 'reconnected');
      assert.ok(
        proxy.bytesToClient < rel.image.length + 400 * KiB,
        `bytes on the wire: ${proxy.bytesToClient}`,
      );
      assertVehicleRuns(r.dir, '2.0.0', rel.image);
      const backend = await backendVehicle(ac, r.vin);
      assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
      assert.equal(backend.ecus[0]?.version, '2.0.0');
    } finally {
      transport.close();
      await proxy.stop();
    }
  });
});
