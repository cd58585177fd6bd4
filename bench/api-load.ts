/**
 * `npm run bench:api`: load on the vehicle download route of the local cloud, against a baseline measured in the
 * same run on the same gateway.
 *
 * This process starts the local cloud in-process (temporary data folder, ephemeral ports on 127.0.0.1, gateway
 * throttle and per-vehicle rate limit raised out of the way), publishes a release, registers the vehicles from
 * CSRs and logs each one in (challenge, signed answer, token). Each scenario then runs autocannon in a child
 * process (bench/api-load-client.ts), so the load generator has its own event loop and, on a 2-core machine,
 * roughly its own core; the server side (gateway, handler modules, DynamoDB and S3 emulators) shares this one.
 *
 * Scenarios, each at every concurrency level:
 *   baseline  GET of a path no route matches: TLS, HTTP parsing, throttling and routing in the gateway, no
 *             function, a 404. What the gateway alone costs.
 *   challenge POST /auth/challenge: auth-api with one conditional DynamoDB write (a second reference point).
 *   download  POST /updates/{vin}/download with bearer tokens, round-robin over the vehicles: vehicle-api
 *             verifies the token, takes a rate-limit token (DynamoDB write), reads vehicle, release and update,
 *             bumps the assignment counter (DynamoDB write), signs the assignment (ECDSA P-256, a key file here,
 *             KMS on AWS) and presigns the S3 GET.
 * Ratios are download / baseline at the same concurrency. Any error, timeout or unexpected status fails the run
 * with exit code 1. Traffic goes to 127.0.0.1 only; the run is bounded by the durations given.
 *
 *   npm run bench:api -- [--vehicles 50] [--connections 10,50] [--duration 10] [--warmup 2]
 *                        [--routes baseline,challenge,download] [--json out.json]
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { createRequire } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startLocalCloud } from '../local/cloud.js';
import type { ProxyHandler } from '../local/gateway.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../test/support/fleet.js';
import { jsonRequest } from '../test/support/https.js';
import type { LoadResult, LoadScenario } from './api-load-client.js';

const { values: args } = parseArgs({
  options: {
    vehicles: { type: 'string', default: '50' },
    connections: { type: 'string', default: '10,50' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    routes: { type: 'string', default: 'baseline,challenge,download' },
    json: { type: 'string' },
  },
});
const VEHICLES = positiveInt(args.vehicles, 'vehicles');
const CONNECTIONS = args.connections.split(',').map((c) => positiveInt(c, 'connections'));
const DURATION = positiveInt(args.duration, 'duration');
const WARMUP = Number(args.warmup);
if (VEHICLES > 1000 || DURATION > 120 || CONNECTIONS.some((c) => c > 500) || !(WARMUP >= 0 && WARMUP <= 30)) {
  throw new Error(
    'bounded benchmark: at most 1000 vehicles, 500 connections, 120 s per scenario, 30 s warm-up',
  );
}
const KINDS = { baseline: 'notfound', challenge: 'challenge', download: 'download' } as const;
const ROUTES = args.routes.split(',').map((r) => {
  if (!(r in KINDS)) throw new Error(`--routes: one or more of ${Object.keys(KINDS).join(',')}`);
  return r as keyof typeof KINDS;
});
const VERSION = '3.0.1';
const CLIENT = fileURLToPath(new URL('./api-load-client.ts', import.meta.url));

function positiveInt(raw: string, name: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${raw}`);
  return n;
}

const vin = (i: number) => `BENCH${String(i).padStart(12, '0')}`;

/**
 * Runs one scenario in a child process; answers its result and this process's CPU time from the start of the
 * child to the end of the server's work (warm-up included, so it is divided by warm-up + measured requests).
 */
function runClient(
  scenario: LoadScenario,
  dir: string,
): Promise<{ result: LoadResult; serverCpuMs: number }> {
  const file = join(dir, `scenario-${scenario.name}-${scenario.connections}.json`);
  writeFileSync(file, JSON.stringify(scenario));
  const cpuBefore = process.cpuUsage();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLIENT, file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`load client for ${scenario.name} exited with ${code}`));
      quiesce().then(() => {
        const cpu = process.cpuUsage(cpuBefore);
        try {
          const line = out.trim().split('\n').pop() ?? '';
          resolve({ result: JSON.parse(line) as LoadResult, serverCpuMs: (cpu.user + cpu.system) / 1000 });
        } catch (err) {
          reject(new Error(`load client for ${scenario.name} printed no result: ${out}`, { cause: err }));
        }
      }, reject);
    });
  });
}

const fmt = (n: number, digits = 1) => n.toFixed(digits);

/**
 * Counts the AWS calls the handler modules make, by operation: the SDK (CommonJS) calls node:https's request
 * at call time, so wrapping it here sees every DynamoDB, S3 and IoT call of the handlers in this process.
 */
const awsCalls = new Map<string, number>();
let awsCallsTotal = 0;
let awsInFlight = 0;
const httpsModule = https as unknown as { request: (...args: unknown[]) => unknown };
const originalRequest = httpsModule.request;
httpsModule.request = function (this: unknown, ...args: unknown[]) {
  const options = args[0] as { headers?: Record<string, string>; method?: string; path?: string } | undefined;
  const target = options?.headers?.['x-amz-target'];
  const op = target
    ? target.split('.').pop()!
    : `${options?.method ?? '?'} ${options?.path?.split('?')[0] ?? ''}`;
  awsCalls.set(op, (awsCalls.get(op) ?? 0) + 1);
  awsCallsTotal++;
  awsInFlight++;
  const req = originalRequest.apply(this, args) as { once(event: 'close', listener: () => void): void };
  req.once('close', () => {
    awsInFlight--;
  });
  return req;
};

/**
 * Waits until the server side has finished the requests the load generator left behind when it stopped (no AWS
 * call in flight and none started for 500 ms, at most 60 s), so that one scenario's tail neither runs into the
 * next one's measurement nor hits emulators that are shutting down.
 */
async function quiesce(): Promise<void> {
  const deadline = Date.now() + 60_000;
  let last = -1;
  while (Date.now() < deadline) {
    if (awsInFlight === 0 && awsCallsTotal === last) return;
    last = awsCallsTotal;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('the server did not go quiet within 60 s after the load stopped');
}

/** The AWS calls per request of a route, from `count` sequential requests outside the load. */
async function probe(count: number, send: (i: number) => Promise<number>, expect: number) {
  awsCalls.clear();
  for (let i = 0; i < count; i++) {
    const status = await send(i);
    if (status !== expect) throw new Error(`probe answered ${status}, expected ${expect}`);
  }
  return [...awsCalls].map(([op, n]) => `${op} ${fmt(n / count, 2)}`).join(', ') || 'none';
}

/**
 * Powertools Metrics warns on stderr whenever a handler publishes no metric (auth-api's challenge route does
 * not add one), once per request. Under load that floods the terminal; the lines are counted and dropped here
 * (the write itself is still part of the measured server cost, as it is on Lambda, where it is a log line).
 */
const EMPTY_METRICS_WARNING = 'No application metrics to publish';
let emptyMetricsWarnings = 0;
const stderrWrite = process.stderr.write.bind(process.stderr);
process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
  const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  if (text.includes(EMPTY_METRICS_WARNING)) {
    emptyMetricsWarnings++;
    return true;
  }
  return (stderrWrite as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
}) as typeof process.stderr.write;

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'ota-bench-api-'));
  // The per-vehicle limit (120/min by default) would answer 429 long before the server saturates.
  process.env.VEHICLE_RATE_PER_MINUTE = '1000000000';
  process.env.POWERTOOLS_LOG_LEVEL ??= 'ERROR';
  const releaseKey = newReleaseKey();
  const cloud = await startLocalCloud({
    dataDir: join(dir, 'cloud'),
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    throttle: { ratePerSecond: 1e6, burst: 1e6 },
    campaignTickMs: 0,
    // The handlers run in this process, not in the local Lambda runtime's worker threads: step 3 counts their AWS
    // calls by wrapping node:https in this process. (The runtime's own overhead is in BENCHMARKS.md.)
    loadHandler: async (fn) => (await import(`../lambdas/${fn}/handler.js`)).handler as ProxyHandler,
  });
  let failed = false;
  try {
    const api = cloud.endpoints.api;
    const ca = cloud.caCertPem;
    const operator = new Operator(api, ca, cloud.adminToken);

    const image = randomBytes(256 * 1024);
    const signed = await signedRelease(image, {
      releaseId: `tcu-${VERSION}`,
      version: VERSION,
      signer: releaseKey.signer,
    });
    const { published } = await operator.publish(signed, image);
    if (published?.status !== 200) throw new Error(`publish failed: ${published?.raw.toString()}`);

    const setupStart = performance.now();
    const vehicles: { vin: string; token: string }[] = [];
    for (let i = 0; i < VEHICLES; i++) {
      const v = await TestVehicle.create(vin(i));
      const reg = await operator.call('POST', '/vehicles', v.registration());
      if (reg.status !== 201) throw new Error(`register ${v.vin}: ${reg.status} ${reg.raw.toString()}`);
      const token = await v.token(api, ca);
      // The first download starts the update (extra writes); the measured requests are the repeat downloads a
      // vehicle makes when it resumes or retries.
      const first = await jsonRequest(
        api,
        'POST',
        `/updates/${v.vin}/download`,
        ca,
        { firmware_version: VERSION },
        token,
      );
      if (first.status !== 200 || typeof first.json?.download_url !== 'string') {
        throw new Error(`first download ${v.vin}: ${first.status} ${first.raw.toString()}`);
      }
      vehicles.push({ vin: v.vin, token });
    }
    const setupSeconds = (performance.now() - setupStart) / 1000;

    const node = process.version;
    const cpu = cpus();
    console.log(
      `bench:api  node ${node}, ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown'}), ${VEHICLES} vehicles ` +
        `registered and logged in in ${fmt(setupSeconds)} s; ${DURATION} s per scenario after ${WARMUP} s warm-up; ` +
        'load generator (autocannon) in a child process, server in this process',
    );
    const autocannonVersion = (
      createRequire(import.meta.url)('autocannon/package.json') as { version: string }
    ).version;
    console.log(`autocannon ${autocannonVersion}`);

    const N = vehicles.length;
    const perRoute = {
      baseline: await probe(
        20,
        async () => (await jsonRequest(api, 'GET', '/bench/no-such-route', ca)).status,
        404,
      ),
      challenge: await probe(
        20,
        async (i) =>
          (await jsonRequest(api, 'POST', '/auth/challenge', ca, { vin: vehicles[i % N]!.vin })).status,
        200,
      ),
      download: await probe(
        20,
        async (i) =>
          (
            await jsonRequest(
              api,
              'POST',
              `/updates/${vehicles[i % N]!.vin}/download`,
              ca,
              { firmware_version: VERSION },
              vehicles[i % N]!.token,
            )
          ).status,
        200,
      ),
    };
    console.log('AWS calls per request (DynamoDB operations; S3 presigning makes no call):');
    for (const [route, calls] of Object.entries(perRoute)) console.log(`  ${route.padEnd(9)} ${calls}`);

    const rows: { kind: string; connections: number; result: LoadResult; serverCpuMs: number }[] = [];
    for (const connections of CONNECTIONS) {
      for (const kind of ROUTES.map((r) => KINDS[r])) {
        const scenario: LoadScenario = {
          name: kind === 'notfound' ? 'baseline' : kind,
          url: api,
          caFile: cloud.caFile,
          kind,
          connections,
          durationSeconds: DURATION,
          warmupSeconds: WARMUP,
          expectStatus: kind === 'notfound' ? 404 : 200,
          vehicles,
          firmwareVersion: VERSION,
        };
        const { result, serverCpuMs } = await runClient(scenario, dir);
        rows.push({ kind: scenario.name, connections, result, serverCpuMs });
        const bad = result.unexpected + result.errors + result.timeouts + result.mismatches;
        if (bad > 0) failed = true;
        console.log(
          `  ${scenario.name.padEnd(9)} c=${String(connections).padStart(3)}  ` +
            `${fmt(result.requestsPerSecond).padStart(8)} req/s  mean ${fmt(result.latencyMs.mean, 2).padStart(7)} ms  ` +
            `p50 ${fmt(result.latencyMs.p50, 2).padStart(7)} ms  p99 ${fmt(result.latencyMs.p99, 2).padStart(7)} ms  ` +
            `max ${fmt(result.latencyMs.max, 1).padStart(6)} ms  ` +
            `${result.requests} requests  statuses ${JSON.stringify(result.statusCounts)}  ` +
            `errors ${result.errors} timeouts ${result.timeouts} body mismatches ${result.mismatches}  ` +
            `server CPU ${fmt(serverCpuMs / Math.max(1, result.requests + result.warmupRequests), 2)} ms/req`,
        );
      }
    }

    console.log('\nratios against the baseline (gateway 404, same run, same concurrency):');
    for (const connections of CONNECTIONS) {
      const base = rows.find((r) => r.kind === 'baseline' && r.connections === connections)?.result;
      if (!base) continue;
      for (const kind of ['challenge', 'download']) {
        const r = rows.find((x) => x.kind === kind && x.connections === connections)?.result;
        if (!r) continue;
        console.log(
          `  ${kind.padEnd(9)} c=${String(connections).padStart(3)}  throughput x${fmt(r.requestsPerSecond / base.requestsPerSecond, 3)}  ` +
            `p50 latency x${fmt(r.latencyMs.p50 / base.latencyMs.p50, 1)}  ` +
            `p99 latency x${fmt(r.latencyMs.p99 / base.latencyMs.p99, 1)}`,
        );
      }
    }
    if (args.json) {
      writeFileSync(
        args.json,
        `${JSON.stringify({ node, cores: cpu.length, vehicles: VEHICLES, durationSeconds: DURATION, rows }, null, 2)}\n`,
      );
    }
    if (emptyMetricsWarnings > 0) {
      console.log(
        `\nnote: ${emptyMetricsWarnings} Powertools "${EMPTY_METRICS_WARNING}" warnings from the handlers were ` +
          'dropped from stderr (one per request on routes that add no metric)',
      );
    }
    if (failed) {
      console.error(
        '\nFAILED: some requests errored, timed out or answered an unexpected status (see above)',
      );
    } else {
      console.log('\nok: every measured response had the expected status and body');
    }
  } finally {
    await cloud.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exitCode = failed ? 1 : 0;
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
