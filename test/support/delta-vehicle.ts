/**
 * What the download-path tests (agent-delta, agent-precomputed-delta) share: compressible images and a patched
 * next version, a counting proxy in front of the S3 emulator, and one update of a fresh vehicle from a chosen
 * installed image.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { AgentEvent } from '../../vehicle/agent.js';
import { DirectHttpsTransport } from '../../vehicle/direct-https.js';
import type { CreateAgentOptions } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  initiateOffer,
  publishOffer,
  registerAgentVehicle,
  startAgent,
} from './agent-cloud.js';
import { type FaultProxy, portOf, startFaultProxy } from './agent-net.js';

const KiB = 1024;

/** A compressible image: lines of a log-like text with numbers, as firmware tables and strings compress. */
export function textImage(size: number, seed: string): Buffer {
  const lines: string[] = [];
  let n = 0;
  let bytes = 0;
  while (bytes < size) {
    const h = createHash('sha256').update(`${seed}:${n++}`).digest('hex').slice(0, 12);
    const line = `entry ${n} value=${h} flags=${n % 7} name=module_${n % 97}\n`;
    lines.push(line);
    bytes += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

/** The next version: `base` with a few local edits (an insertion, a changed run, an appended tail). */
export function patched(base: Buffer): Buffer {
  const a = base.subarray(0, 100 * KiB);
  const b = base.subarray(100 * KiB, 300 * KiB);
  const c = base.subarray(300 * KiB + 2000);
  return Buffer.concat([
    a,
    Buffer.from('inserted configuration block v1.0.1\n'.repeat(40)),
    b,
    randomBytes(2000),
    c,
  ]);
}

/** A proxy in front of the S3 emulator that counts what it serves (stopped with the cloud). */
export async function proxyToS3(ac: AgentCloud): Promise<FaultProxy> {
  const proxy = await startFaultProxy(portOf(ac.cloud.endpoints.s3));
  ac.track(() => proxy.stop());
  return proxy;
}

/** The agent's download transport, with S3 reached through `proxy`. */
export function transportVia(ac: AgentCloud, proxy: FaultProxy): DirectHttpsTransport {
  const s3 = portOf(ac.cloud.endpoints.s3);
  return new DirectHttpsTransport({
    ca: ac.cloud.caCertPem,
    route: (host, p) => ({ host, port: p === s3 ? proxy.port : p }),
  });
}

let vinSerial = 0;

/** A fresh vehicle (its installed image `factory` when given) offered `version`: its outcome and download event. */
export async function updateVehicle(
  ac: AgentCloud,
  version: string,
  opts: {
    factory?: Buffer;
    overrides?: Partial<CreateAgentOptions>;
    beforeOffer?: (dir: string) => void;
  } = {},
) {
  const vin = `5YJ3E1EA7KF${String(++vinSerial).padStart(6, '0')}`;
  const dir = await registerAgentVehicle(ac, vin);
  const v = await startAgent(ac, vin, dir, {
    ...(opts.factory ? { factoryImage: () => opts.factory! } : {}),
    ...opts.overrides,
  });
  try {
    await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
    opts.beforeOffer?.(dir);
    await publishOffer(ac, vin, await initiateOffer(v, version));
    const outcome = await v.events.outcome(version, 60_000);
    await v.agent.whenIdle();
    const downloaded = v.events.events.find(
      (e): e is Extract<AgentEvent, { type: 'downloaded' }> => e.type === 'downloaded',
    );
    return { vin, dir, outcome, downloaded, events: v.events.events };
  } finally {
    await v.close();
  }
}

const OTA = fileURLToPath(new URL('../../bin/ota.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

/** The ota CLI in a child process, in the cloud's folder. */
export function otaCli(
  ac: AgentCloud,
  env: Record<string, string>,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', TSX, OTA, ...args],
      { cwd: ac.root, env: { PATH: process.env.PATH ?? '', HOME: ac.root, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? ((err.code as number) ?? 1) : 0, stdout, stderr }),
    );
  });
}
