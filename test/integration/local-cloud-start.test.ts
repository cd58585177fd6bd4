/**
 * Starting the local cloud: by default it takes free ports and a temporary folder (so tests run beside
 * `npm start`), and a start that cannot bind a port fails within seconds, says which part and which port, and
 * leaves nothing open. The attempts run in a child process, so "nothing open" is observed as the child ending
 * by itself without process.exit.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PORTS } from '../../local/ports.js';

const PROBE = fileURLToPath(new URL('../support/cloud-start-probe.ts', import.meta.url));
const NAMES = {
  s3: 'S3 emulator',
  dynamodb: 'DynamoDB emulator',
  mqtt: 'MQTT broker',
  iotData: 'IoT Data Plane shim',
  api: 'API gateway',
} as const;
/** Generous for a loaded 2-core machine; a start that hangs on a taken port would never answer at all. */
const FAIL_WITHIN_MS = 10_000;
/** From the probe's last line to its exit: only open handles would hold it longer. */
const EXIT_WITHIN_MS = 5_000;

interface Probe {
  readonly lines: Record<string, unknown>[];
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly msAfterLastLine: number;
  readonly stderr: string;
}

function runProbe(dataDir: string, killAfterMs: number): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', PROBE, dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Record<string, unknown>[] = [];
    let stdout = '';
    let stderr = '';
    let lastLineAt = performance.now();
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      let nl = stdout.indexOf('\n');
      while (nl >= 0) {
        const line = JSON.parse(stdout.slice(0, nl)) as Record<string, unknown>;
        lines.push(line);
        // Its work is done: from here only an open handle keeps it alive, so do not wait long for it.
        if (line.done) setTimeout(() => child.kill('SIGKILL'), EXIT_WITHIN_MS).unref();
        stdout = stdout.slice(nl + 1);
        lastLineAt = performance.now();
        nl = stdout.indexOf('\n');
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ lines, code, signal, msAfterLastLine: performance.now() - lastLineAt, stderr });
    });
  });
}

describe('starting the local cloud', { timeout: 120_000 }, () => {
  it('fails fast, naming the part and the port, when a port is taken, and leaves nothing open', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'ota-start-'));
    try {
      const probe = await runProbe(dataDir, 90_000);
      assert.equal(
        probe.signal,
        null,
        `the probe had to be killed: something kept it alive\n${probe.stderr}`,
      );
      assert.equal(probe.code, 0, probe.stderr);
      assert.ok(
        probe.msAfterLastLine < EXIT_WITHIN_MS,
        `the probe took ${Math.round(probe.msAfterLastLine)} ms to exit after its work: a handle was left open`,
      );

      const attempts = probe.lines.filter((l) => 'service' in l);
      assert.deepEqual(
        attempts.map((a) => a.service),
        Object.keys(NAMES),
      );
      for (const a of attempts) {
        const name = NAMES[a.service as keyof typeof NAMES];
        assert.equal(a.started, false, `${name} started on a taken port`);
        assert.match(
          String(a.message),
          new RegExp(`the ${name} could not start on port ${a.port}: .*already in use`),
        );
        assert.ok(Number(a.ms) < FAIL_WITHIN_MS, `${name}: the failed start took ${a.ms} ms`);
      }

      // After five failed starts the same folder starts again (LevelDB lock released), on free ports by default.
      const final = probe.lines.at(-1) as {
        done?: boolean;
        endpoints: Record<string, string>;
        temporary: string;
      };
      assert.equal(final.done, true);
      // Five listening parts; the operator console is served by the API's gateway, on the same origin.
      const ports = [...new Set(Object.values(final.endpoints).map((e) => Number(new URL(e).port)))];
      assert.equal(ports.length, 5);
      assert.equal(new URL(final.endpoints.console!).origin, new URL(final.endpoints.api!).origin);
      for (const port of ports) {
        assert.ok(port > 0 && !Object.values(DEFAULT_PORTS).includes(port as never), `port ${port}`);
      }
      // Without a data folder the cloud used a temporary one and removed it when it stopped.
      assert.match(final.temporary, /ota-local-/);
      assert.equal(existsSync(final.temporary), false, 'the temporary data folder was removed');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
