/**
 * Child process of bench/agent-download.ts: the agent's downloader and whole-image check, alone in a process so
 * its peak RSS can be read. Reads a job (JSON file), downloads with resume and per-chunk verification, checks the
 * whole image on disk, and prints one JSON line with timings, transfer statistics and its own max RSS.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { ReleaseManifest } from '../lambdas/core/manifest.js';
import { RedirectingAgent } from '../test/support/agent-net.js';
import { Downloader, verifyImageFile } from '../vehicle/downloader.js';
import { NodeHttpsTransport } from '../vehicle/http-transport.js';

export interface WorkerJob {
  readonly url: string;
  readonly manifest: ReleaseManifest;
  readonly caFile: string;
  readonly out: string;
  /** Send connections for the S3 port through this local port (the interrupting proxy). */
  readonly via?: { readonly s3Port: number; readonly proxyPort: number };
}

export interface WorkerResult {
  readonly downloadMs: number;
  readonly verifyMs: number;
  readonly bytesReceived: number;
  readonly requests: number;
  readonly problems: string[];
  /** Peak resident set size of this process, KiB. */
  readonly maxRssKiB: number;
}

const { values } = parseArgs({ options: { job: { type: 'string' } } });
if (!values.job) throw new Error('--job <file> is required');
const job = JSON.parse(readFileSync(values.job, 'utf8')) as WorkerJob;
const ca = readFileSync(job.caFile, 'utf8');
const via = job.via;
const transport = via
  ? new NodeHttpsTransport({
      ca,
      agent: new RedirectingAgent({ ca, keepAlive: true }, (_h, p) =>
        p === via.s3Port ? via.proxyPort : undefined,
      ),
    })
  : new NodeHttpsTransport({ ca });
const downloader = new Downloader(transport, { maxAttempts: 20, backoff: { baseMs: 50, maxMs: 200 } });

const t0 = performance.now();
const stats = await downloader.download({
  manifest: job.manifest,
  file: job.out,
  verifiedBytes: 0,
  source: { url: async () => job.url },
  signal: new AbortController().signal,
});
const t1 = performance.now();
const problems = await verifyImageFile(job.out, job.manifest);
const t2 = performance.now();
transport.close();
const result: WorkerResult = {
  downloadMs: t1 - t0,
  verifyMs: t2 - t1,
  bytesReceived: stats.bytesReceived,
  requests: stats.requests,
  problems,
  maxRssKiB: process.resourceUsage().maxRSS,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
