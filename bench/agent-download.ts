/**
 * `npm run bench`: the vehicle agent's download against curl, on the same presigned URL of the local cloud.
 *
 * This process starts the local cloud in-process (temporary folder, ephemeral ports on 127.0.0.1), generates a
 * random image of --size MiB by streaming it to a file (never held in memory) while computing its signed
 * manifest (4 MiB chunks), uploads it (multipart above 128 MiB) and publishes it, registers a vehicle from a CSR
 * and asks POST /updates/{vin}/download for one presigned URL. Then, on that URL:
 *
 *   baseline  `curl --cacert <local CA> -o file URL`, then `sha256sum file` (compared with the manifest)
 *   agent     the agent's Downloader as it ships (bundled by esbuild with bin/agent-bundle.ts, run by plain node, in
 *             a child process that reports its own CPU time and peak RSS): Range requests, per-chunk and
 *             whole-image SHA-256 computed as the bytes are written, background write-back, a final fsync; then the
 *             agent's verify step (that digest against the manifest). Untimed, the worker then reads the file back
 *             so a fast but wrong download cannot pass. Start-up is printed separately.
 *   resume    the same, through a TCP proxy that cuts the connection --interruptions times, evenly spaced:
 *             bytes received (HTTP bodies) and bytes on the wire (TLS) divided by the image size
 *
 * Baseline and agent alternate --repeat times; medians are compared, memory is the highest run. Timings are wall
 * clock on this machine; the S3 emulator serves from this process and shares its CPUs. Each output file is deleted
 * after its check. Nothing leaves 127.0.0.1. Profiling: BENCH_WRAP=<command> runs the worker under a wrapper
 * (perf, strace) that is given node's arguments; BENCH_MEMORY=1 prints the worker's sampled memory peaks,
 * BENCH_THREADS=1 its CPU time per thread.
 *
 *   npm run bench -- [--size 1024] [--interruptions 10] [--repeat 3] [--json out.json] [--keep]
 *                    [--request-mib N] [--flush-mib N] [--write-buffer-mib N] [--writes N] [--read-ahead-mib N]
 *                    [--no-sync]
 */
import { spawn } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { AGENT_BUNDLE_OPTIONS, copyZstdWasm } from '../bin/agent-bundle.js';
import { startLocalCloud } from '../local/cloud.js';
import { DEFAULT_CHUNK_SIZE, ImageHasher, type ReleaseManifest, signManifest } from '../protocol/manifest.js';
import { startFaultProxy } from '../test/support/agent-net.js';
import { newReleaseKey, Operator } from '../test/support/fleet.js';
import { https } from '../test/support/https.js';
import { registerVehicle, VehicleApiClient } from '../vehicle/api-client.js';
import { NodeHttpsTransport } from '../vehicle/http-transport.js';
import { challengeSigner, ensureIdentity } from '../vehicle/provisioning.js';
import type { WorkerJob, WorkerResult } from './agent-download-worker.js';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '1024' },
    interruptions: { type: 'string', default: '10' },
    json: { type: 'string' },
    keep: { type: 'boolean', default: false },
    repeat: { type: 'string', default: '3' },
    // Downloader settings to compare with the agent's defaults (MiB; --flush-mib 0 leaves write-back to the kernel).
    'request-mib': { type: 'string' },
    'flush-mib': { type: 'string' },
    'write-buffer-mib': { type: 'string' },
    writes: { type: 'string' },
    'read-ahead-mib': { type: 'string' },
    'no-sync': { type: 'boolean', default: false },
  },
});
const mib = (v: string | undefined) => (v === undefined ? undefined : Number(v) * 1024 * 1024);
const TUNING = Object.fromEntries(
  Object.entries({
    requestBytes: mib(args['request-mib']),
    flushEveryBytes: mib(args['flush-mib']),
    writeBufferBytes: mib(args['write-buffer-mib']),
    writesInFlight: args.writes === undefined ? undefined : Number(args.writes),
    readAheadBytes: mib(args['read-ahead-mib']),
    syncOnComplete: args['no-sync'] ? false : undefined,
  }).filter(([, v]) => v !== undefined),
) as WorkerJob['options'];
const REPEAT = Number(args.repeat);
if (!Number.isInteger(REPEAT) || REPEAT < 1 || REPEAT > 20) throw new Error('--repeat: 1..20');
const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const SIZE_MIB = Number(args.size);
const INTERRUPTIONS = Number(args.interruptions);
if (!Number.isInteger(SIZE_MIB) || SIZE_MIB < 1 || SIZE_MIB > 8192) throw new Error('--size: 1..8192 MiB');
if (!Number.isInteger(INTERRUPTIONS) || INTERRUPTIONS < 0 || INTERRUPTIONS > 100)
  throw new Error('--interruptions: 0..100');
const SIZE = SIZE_MIB * 1024 * 1024;
const WORKER_SOURCE = fileURLToPath(new URL('./agent-download-worker.ts', import.meta.url));
const VIN = 'BENCH0AGENT000001';
const MiB = 1024 * 1024;

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const rate = (bytes: number, ms: number) => `${(((bytes / MiB) * 1000) / ms).toFixed(0)} MiB/s`;
const log = (line: string) => process.stdout.write(`${line}\n`);

/** Streams `size` pseudo-random bytes (AES-CTR keystream) to a file while hashing; never holds the image. */
async function generateImage(file: string, size: number) {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(MiB);
  const hasher = new ImageHasher(DEFAULT_CHUNK_SIZE);
  const out = createWriteStream(file);
  for (let written = 0; written < size; written += MiB) {
    const block = cipher.update(zeros.subarray(0, Math.min(MiB, size - written)));
    hasher.update(block);
    if (!out.write(block)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return hasher.digest();
}

async function upload(ca: string, file: string, created: { upload: Record<string, unknown> }) {
  const u = created.upload as {
    method: 'PUT' | 'MULTIPART';
    url?: string;
    upload_id?: string;
    part_size?: number;
    parts?: { part_number: number; url: string }[];
  };
  const put = async (url: string, start: number, end: number) => {
    const chunks: Buffer[] = [];
    for await (const c of createReadStream(file, { start, end: end - 1 })) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks); // one part (<= 64 MiB) at a time
    const res = await https(url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
      body,
      ca,
    });
    if (res.status !== 200) throw new Error(`upload failed: ${res.status} ${res.raw.toString()}`);
    return String(res.headers.etag ?? '');
  };
  if (u.method === 'PUT' && u.url) {
    await put(u.url, 0, SIZE);
    return {};
  }
  const partSize = u.part_size ?? 64 * MiB;
  const parts: { part_number: number; etag: string }[] = [];
  for (const p of u.parts ?? []) {
    const start = (p.part_number - 1) * partSize;
    parts.push({
      part_number: p.part_number,
      etag: await put(p.url, start, Math.min(SIZE, start + partSize)),
    });
  }
  return { upload_id: u.upload_id, parts };
}

/**
 * Runs a command to completion, asynchronously: the S3 emulator serving it lives in this process's event loop. It
 * runs under bash so bash's `times` can report the command's CPU time (bash costs ~2 ms of the wall time).
 */
async function timed(
  command: string,
  argv: string[],
): Promise<{ ms: number; stdout: string; cpu: { user: number; system: number } }> {
  const t0 = performance.now();
  const child = spawn('bash', ['-c', '"$@"; status=$?; times >&2; exit $status', 'timed', command, ...argv], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`${command} failed (${code}): ${stderr}`);
  // times prints the shell's own user/system time, then its children's: "0m1.234s 0m0.567s".
  const children = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(stderr.trim());
  const seconds = (m: string, s: string) => (Number(m) * 60 + Number(s)) * 1000;
  const cpu = children
    ? { user: seconds(children[1]!, children[2]!), system: seconds(children[3]!, children[4]!) }
    : { user: Number.NaN, system: Number.NaN };
  return { ms, stdout, cpu };
}

/**
 * The worker as the agent ships: one esbuild bundle run by plain node (as npm run build:agent makes the agent), so
 * neither time nor memory includes a TypeScript loader.
 */
async function bundleWorker(dir: string): Promise<string> {
  const outfile = join(dir, 'agent-download-worker.mjs');
  await build({ ...AGENT_BUNDLE_OPTIONS, entryPoints: [WORKER_SOURCE], outfile });
  copyZstdWasm(dir);
  return outfile;
}

async function runWorker(
  worker: string,
  job: WorkerJob,
  dir: string,
): Promise<WorkerResult & { wallMs: number }> {
  const jobFile = join(dir, `job-${Date.now()}.json`);
  writeFileSync(jobFile, JSON.stringify(job));
  const t0 = performance.now();
  const child = spawn(process.env.BENCH_WRAP ?? process.execPath, [worker, '--job', jobFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  const wallMs = performance.now() - t0;
  if (code !== 0) throw new Error(`worker exited with ${code}`);
  return { ...(JSON.parse(out.trim().split('\n').at(-1)!) as WorkerResult), wallMs };
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'ota-bench-agent-'));
  const releaseKey = newReleaseKey();
  const cloud = await startLocalCloud({
    dataDir: join(dir, 'cloud'),
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    presignTtlSeconds: 3600,
    logger: { warn() {}, error() {} },
  });
  try {
    const ca = cloud.caCertPem;
    const operator = new Operator(cloud.endpoints.api, ca, cloud.adminToken);
    log(
      `agent download benchmark: ${SIZE_MIB} MiB image, ${INTERRUPTIONS} interruptions, node ${process.version}`,
    );

    const imageFile = join(dir, 'image.bin');
    let t = performance.now();
    const digest = await generateImage(imageFile, SIZE);
    log(`generated image             ${fmt(performance.now() - t)}`);
    const manifest: ReleaseManifest = {
      schema: 'ota.release-manifest/v1',
      release_id: 'bench-9.0.0',
      ecu: 'tcu',
      hardware_ids: ['TCU-HW-1'],
      version: '9.0.0',
      size: digest.size,
      sha256: digest.sha256,
      chunk_size: DEFAULT_CHUNK_SIZE,
      chunks: digest.chunks,
      created_at: new Date().toISOString(),
    };
    const signed = await signManifest(manifest, [releaseKey.signer]);
    t = performance.now();
    const created = await operator.call('POST', '/releases', signed);
    if (created.status !== 201) throw new Error(`create release: ${created.raw.toString()}`);
    const completion = await upload(ca, imageFile, created.json);
    const published = await operator.call('POST', '/releases/bench-9.0.0/publish', completion);
    if (published.status !== 200) throw new Error(`publish: ${published.raw.toString()}`);
    log(`uploaded and published      ${fmt(performance.now() - t)}`);

    const transport = new NodeHttpsTransport({ ca });
    const identity = await ensureIdentity(join(dir, 'vehicle'), VIN);
    await registerVehicle(transport, cloud.endpoints.api, cloud.adminToken, {
      vin: VIN,
      model: 'Bench',
      ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }],
      csr: identity.csrPem,
    });
    const api = new VehicleApiClient({
      baseUrl: cloud.endpoints.api,
      vin: VIN,
      signChallenge: challengeSigner(identity),
      transport,
    });
    const answer = await api.download('9.0.0');
    transport.close();
    const url = answer.download_url;

    const worker = await bundleWorker(dir);
    // Baseline and agent alternate, REPEAT times each, on the same URL; medians are compared (single runs on this
    // shared 2-core machine vary by +-15%).
    const curlOut = join(dir, 'curl.bin');
    const agentOut = join(dir, 'agent.part');
    const curls: number[] = [];
    const sums: number[] = [];
    const agents: (WorkerResult & { wallMs: number })[] = [];
    for (let i = 0; i < REPEAT; i++) {
      // Baseline: curl to a file, then sha256sum of the file.
      // The S3 emulator serves from this process: its CPU time shows what the client competes with for the cores.
      let served = process.cpuUsage();
      const c = await timed('curl', ['--cacert', cloud.caFile, '-sS', '--fail', '-o', curlOut, url]);
      const serverForCurl = process.cpuUsage(served);
      const sum = await timed('sha256sum', [curlOut]);
      if (sum.stdout.split(' ')[0] !== manifest.sha256)
        throw new Error('curl download does not match the manifest');
      rmSync(curlOut);
      curls.push(c.ms);
      sums.push(sum.ms);
      // The agent on the same URL, in its own process.
      served = process.cpuUsage();
      const a = await runWorker(
        worker,
        { url, manifest, caFile: cloud.caFile, out: agentOut, options: TUNING },
        dir,
      );
      const serverForAgent = process.cpuUsage(served);
      if (a.problems.length) throw new Error(`agent image mismatch: ${a.problems.join('; ')}`);
      rmSync(agentOut);
      agents.push(a);
      log(
        `run ${i + 1}/${REPEAT}: curl ${fmt(c.ms)} (CPU user ${fmt(c.cpu.user)} system ${fmt(c.cpu.system)}) + ` +
          `sha256sum ${fmt(sum.ms)} = ${fmt(c.ms + sum.ms)}; ` +
          `agent ${fmt(a.downloadMs + a.verifyMs)} (final fsync ${fmt(a.finalSyncMs)}, CPU user ` +
          `${fmt(a.cpuMs.user)} system ${fmt(a.cpuMs.system)}), peak RSS ${(a.maxRssKiB / 1024).toFixed(0)} MiB; ` +
          `server CPU ${fmt(cpuMs(serverForCurl))} for curl, ${fmt(cpuMs(serverForAgent))} for the agent`,
      );
    }
    const curl = { ms: median(curls) };
    const sum = { ms: median(sums) };
    const baselineMs = median(curls.map((c, i) => c + sums[i]!));
    const agentMs = median(agents.map((a) => a.downloadMs + a.verifyMs));
    const agentDownloadMs = median(agents.map((a) => a.downloadMs));
    const agentVerifyMs = median(agents.map((a) => a.verifyMs));
    // Memory is reported for the run that used the most.
    const agent = agents.reduce((worst, a) => (a.maxRssKiB > worst.maxRssKiB ? a : worst));
    const emptyStart = await runWorkerStartup(worker);

    // The agent through a proxy that cuts the connection `INTERRUPTIONS` times, evenly spaced.
    const s3Port = Number(new URL(cloud.endpoints.s3).port);
    const proxy = await startFaultProxy(s3Port);
    if (INTERRUPTIONS > 0) proxy.cutEvery(Math.floor(SIZE / (INTERRUPTIONS + 1)), INTERRUPTIONS);
    const resumedOut = join(dir, 'resumed.part');
    const resumed = await runWorker(
      worker,
      {
        url,
        manifest,
        caFile: cloud.caFile,
        out: resumedOut,
        via: { s3Port, proxyPort: proxy.port },
        options: TUNING,
      },
      dir,
    );
    await proxy.stop();
    if (resumed.problems.length) throw new Error(`resumed image mismatch: ${resumed.problems.join('; ')}`);
    rmSync(resumedOut);

    log('');
    log(`medians of ${REPEAT} alternating runs`);
    log(`baseline  curl -o           ${fmt(curl.ms)}  (${rate(SIZE, curl.ms)})`);
    log(`          sha256sum         ${fmt(sum.ms)}  (${rate(SIZE, sum.ms)})`);
    log(`          total             ${fmt(baselineMs)}`);
    log(
      `agent     download          ${fmt(agentDownloadMs)}  (${rate(SIZE, agentDownloadMs)}, ${agent.requests} range requests; chunk and whole-image SHA-256 as the bytes are written)`,
    );
    log(`          digest check      ${fmt(agentVerifyMs)}`);
    log(`          total             ${fmt(agentMs)}   process start-up ${fmt(emptyStart)} not included`);
    log(
      `ratio     agent / curl+sha256sum = ${(agentMs / baselineMs).toFixed(2)}  (with start-up ${((agentMs + emptyStart) / baselineMs).toFixed(2)})`,
    );
    log(
      `memory    agent peak RSS ${(agent.maxRssKiB / 1024).toFixed(0)} MiB (highest of ${REPEAT} runs) for a ${SIZE_MIB} MiB image (${(resumed.maxRssKiB / 1024).toFixed(0)} MiB in the interrupted run)`,
    );
    log(
      `resume    ${proxy.cuts} interruptions: body bytes / size = ${(resumed.bytesReceived / SIZE).toFixed(4)}, ` +
        `wire bytes (TLS) / size = ${(proxy.bytesToClient / SIZE).toFixed(4)}, ${resumed.requests} requests, ${fmt(resumed.downloadMs)}`,
    );
    if (args.json) {
      writeFileSync(
        args.json,
        JSON.stringify(
          {
            sizeBytes: SIZE,
            curlMs: curl.ms,
            sha256sumMs: sum.ms,
            agent: { ...agent, totalMs: agentMs, startupMs: emptyStart },
            ratio: agentMs / baselineMs,
            resumed: {
              ...resumed,
              interruptions: proxy.cuts,
              wireBytes: proxy.bytesToClient,
              bodyRatio: resumed.bytesReceived / SIZE,
              wireRatio: proxy.bytesToClient / SIZE,
            },
          },
          null,
          2,
        ),
      );
    }
  } finally {
    await cloud.stop();
    if (!args.keep) rmSync(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
  }
}

/** Start-up cost of the bundled worker alone (Node and the agent modules it loads), for reference. */
async function runWorkerStartup(worker: string): Promise<number> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [worker, '--startup-only'], { stdio: 'ignore' });
  await once(child, 'exit');
  return performance.now() - t0;
}

await main();
