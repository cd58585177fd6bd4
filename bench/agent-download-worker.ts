/**
 * Child process of bench/agent-download.ts: the agent's downloader and whole-image check, alone in a process so
 * its peak RSS can be read. Reads a job (JSON file), downloads with resume, per-chunk verification and the
 * whole-image digest computed as bytes are written, compares that digest with the manifest (the agent's verify
 * step), then - untimed - reads the file back to prove it, and prints one JSON line with timings, transfer
 * statistics and its own max RSS. BENCH_THREADS=1 prints each thread's CPU time (main thread vs the write pool).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { ReleaseManifest } from '../protocol/manifest.js';
import { decodeChunkIndex } from '../vehicle/base-index.js';
import { DirectHttpsTransport } from '../vehicle/direct-https.js';
import { Downloader, type DownloaderOptions } from '../vehicle/downloader.js';
import { verifyImageFile } from '../vehicle/image-file.js';

export interface WorkerJob {
  readonly url: string;
  readonly manifest: ReleaseManifest;
  readonly caFile: string;
  readonly out: string;
  /** Downloader settings to try instead of the agent's defaults (bench flags). */
  readonly options?: Pick<
    DownloaderOptions,
    | 'requestBytes'
    | 'flushEveryBytes'
    | 'writeBufferBytes'
    | 'writesInFlight'
    | 'syncOnComplete'
    | 'decodeWorker'
  > & { readonly readAheadBytes?: number };
  /**
   * The installed image to reuse chunks from (a compressed release; bench/delta.ts), and the file of the chunk index
   * the agent kept for it (base-index.ts format), if any: without one the agent reads and chunks the image.
   */
  readonly base?: { readonly path: string; readonly sha256: string; readonly index?: string };
  /** Send connections for the S3 port through this local port (the interrupting proxy). */
  readonly via?: { readonly s3Port: number; readonly proxyPort: number };
}

export interface WorkerResult {
  readonly downloadMs: number;
  readonly verifyMs: number;
  readonly bytesReceived: number;
  readonly requests: number;
  /** Image bytes taken from the base instead of the network, and the path the downloader took. */
  readonly bytesReused: number;
  readonly path: string;
  readonly fallback?: string;
  /** Of downloadMs: forcing the finished file to disk (curl does not). */
  readonly finalSyncMs: number;
  readonly problems: string[];
  /** CPU time of this process during download and verify (user, system), ms. */
  readonly cpuMs: { readonly user: number; readonly system: number };
  /** Peak resident set size of this process, KiB. */
  readonly maxRssKiB: number;
}

/**
 * This process's peak resident set: VmHWM of its own address space. (getrusage's maxRSS is not used: on Linux it
 * keeps the high-water mark across exec, so a child spawned by a large parent reports the parent's size.)
 */
function peakRssKiB(): number {
  try {
    const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]);
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS;
}

/** User and system CPU of each of this process's threads that used any (main, libuv pool, V8), from /proc. */
function threadCpu(): string {
  const tick = 10; // ms per clock tick (USER_HZ 100 on Linux)
  const rows: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const user = Number(fields[11]) * tick;
    const system = Number(fields[12]) * tick;
    if (user + system >= 50)
      rows.push(`${tid === String(process.pid) ? 'main' : tid} u${user / 1000} s${system / 1000}`);
  }
  return rows.join(', ');
}

const { values } = parseArgs({
  options: { job: { type: 'string' }, 'startup-only': { type: 'boolean', default: false } },
});
if (values['startup-only']) process.exit(0);
if (!values.job) throw new Error('--job <file> is required');
const job = JSON.parse(readFileSync(values.job, 'utf8')) as WorkerJob;
const ca = readFileSync(job.caFile, 'utf8');
const via = job.via;
// The agent's image transport, as createVehicleAgent sets it up.
const { readAheadBytes, ...downloaderOptions } = job.options ?? {};
const transport = new DirectHttpsTransport({
  ca,
  ...(readAheadBytes ? { readAheadBytes } : {}),
  ...(via
    ? { route: (host: string, p: number) => ({ host, port: p === via.s3Port ? via.proxyPort : p }) }
    : {}),
});
const downloader = new Downloader(transport, {
  maxAttempts: 20,
  backoff: { baseMs: 50, maxMs: 200 },
  ...downloaderOptions,
});

// Where the memory is, sampled: peak of each part of process.memoryUsage(), MiB.
const peaks: Record<string, number> = {};
const sampler = setInterval(() => {
  for (const [k, v] of Object.entries(process.memoryUsage())) peaks[k] = Math.max(peaks[k] ?? 0, v / 2 ** 20);
}, 50);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
// The kept index is read as the agent reads it (download-phase.ts), inside the timed part.
const kept = job.base?.index ? decodeChunkIndex(readFileSync(job.base.index), job.base.sha256) : undefined;
if (typeof kept === 'string') throw new Error(`kept index unusable: ${kept}`);
const stats = await downloader.download({
  manifest: job.manifest,
  file: job.out,
  verifiedBytes: 0,
  source: { url: async () => job.url },
  signal: new AbortController().signal,
  ...(job.base
    ? { base: { path: job.base.path, sha256: job.base.sha256, ...(kept ? { index: kept } : {}) } }
    : {}),
});
const t1 = performance.now();
// The agent's verify step after a download in the same process: the whole-image digest the downloader computed
// over the bytes it wrote, against the signed manifest's.
const verdict = stats.sha256 === job.manifest.sha256;
const t2 = performance.now();
const cpu = process.cpuUsage(cpu0);
if (process.env.BENCH_THREADS) process.stderr.write(`threads CPU s ${threadCpu()}\n`);
// Peak RSS of download and verify, read before the untimed read-back below (which is the bench's, not the agent's).
const maxRssKiB = peakRssKiB();
clearInterval(sampler);
if (process.env.BENCH_MEMORY)
  process.stderr.write(
    `memory peaks MiB ${JSON.stringify(peaks, (_k, v) => (typeof v === 'number' ? Math.round(v) : v))}\n`,
  );
transport.close();
// Not timed, not the agent's path: read the file back, so a fast but wrong download cannot pass the bench.
const problems = verdict ? await verifyImageFile(job.out, job.manifest) : ['streamed digest mismatch'];
const result: WorkerResult = {
  downloadMs: t1 - t0,
  verifyMs: t2 - t1,
  bytesReceived: stats.bytesReceived,
  requests: stats.requests,
  bytesReused: stats.bytesReused,
  path: stats.path,
  ...(stats.fallback !== undefined ? { fallback: stats.fallback } : {}),
  finalSyncMs: stats.finalSyncMs,
  cpuMs: { user: cpu.user / 1000, system: cpu.system / 1000 },
  problems,
  maxRssKiB,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
