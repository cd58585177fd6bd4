/**
 * The parts of `npm run bench:delta` (bench/delta.ts) that do not decide what is measured: the release manifest of
 * an image, the precomputed delta appended to an object, an HTTPS file server counting what it serves, an agent
 * download in a child process, and the median of a path's rounds.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { loadDictCodec } from '../protocol/delta.js';
import { writeDelta } from '../protocol/delta-publisher.js';
import { DEFAULT_CHUNK_SIZE, digestStream, type ReleaseManifest } from '../protocol/manifest.js';
import type { WorkerJob, WorkerResult } from './agent-download-worker.js';

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const d of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(d as Buffer);
  return h.digest('hex');
}

export async function manifestFor(image: string, release: string): Promise<ReleaseManifest> {
  const d = await digestStream(createReadStream(image, { highWaterMark: 1 << 20 }), DEFAULT_CHUNK_SIZE);
  return {
    schema: 'ota.release-manifest/v1',
    release_id: release,
    ecu: 'bench',
    hardware_ids: ['BENCH-1'],
    version: '1.0.1',
    size: d.size,
    sha256: d.sha256,
    chunk_size: DEFAULT_CHUNK_SIZE,
    chunks: d.chunks,
    created_at: new Date().toISOString(),
  };
}

/** HTTPS on 127.0.0.1 serving files by name with single Range requests, counting the body bytes it sends. */
export async function fileServer(tls: { keyPem: string; certPem: string }, files: Record<string, string>) {
  const served = { bytes: 0 };
  const server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const path = files[(req.url ?? '/').slice(1)];
    if (!path) {
      res.writeHead(404).end();
      return;
    }
    const size = statSync(path).size;
    const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
    const start = m ? Number(m[1]) : 0;
    const end = m?.[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
    res.writeHead(m ? 206 : 200, {
      'content-length': String(end - start + 1),
      ...(m ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
    });
    const stream = createReadStream(path, { start, end, highWaterMark: 1 << 20 });
    stream.on('data', (d) => {
      served.bytes += (d as Buffer).length;
    });
    stream.pipe(res);
    res.on('close', () => stream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    served,
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => server.close(),
  };
}

/** One agent download in a child process (its own peak RSS and CPU); `profDir`: a V8 CPU profile of it there. */
export function runWorker(
  worker: string,
  workDir: string,
  profDir: string | undefined,
  job: WorkerJob,
): Promise<WorkerResult & { wallMs: number }> {
  const jobFile = join(workDir, 'job.json');
  writeFileSync(jobFile, JSON.stringify(job));
  const t0 = performance.now();
  // --cpu-prof DIR: a V8 CPU profile of every agent run, named after the pair and path (where the time goes).
  const prof = profDir
    ? ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${job.out.split('/').pop()}.cpuprofile`]
    : [];
  const child = spawn(process.execPath, [...prof, worker, '--job', jobFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve, reject) => {
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`worker exited ${code}`));
      else
        resolve({
          ...(JSON.parse(out.trim().split('\n').pop()!) as WorkerResult),
          wallMs: performance.now() - t0,
        });
    });
  });
}

/** The precomputed delta of `newImage` from `oldImage`, written to `fh` from object offset `offset`. */
export async function appendDelta(
  fh: Awaited<ReturnType<typeof open>>,
  oldImage: string,
  newImage: string,
  offset: number,
  level: number,
) {
  const oldFile = await open(oldImage, 'r');
  try {
    const {
      frames: _f,
      rawFrames: _r,
      ...entry
    } = await writeDelta(
      () => createReadStream(newImage, { highWaterMark: 1 << 20 }),
      {
        version: '1.0.0',
        size: statSync(oldImage).size,
        stream: () => createReadStream(oldImage, { highWaterMark: 1 << 20 }),
        read: async (at, length) => {
          const buf = Buffer.alloc(length);
          await oldFile.read(buf, 0, length, at);
          return buf;
        },
      },
      {
        chunkSize: DEFAULT_CHUNK_SIZE,
        codec: await loadDictCodec(),
        offset,
        level,
      },
      async (d) => {
        await fh.write(d);
      },
    );
    return entry;
  } finally {
    await oldFile.close();
  }
}

export const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Runs a command that writes `out`, and answers that file's size (the file removed) and the command's wall time. */
export function toolOutputSize(
  tool: string,
  argv: readonly string[],
  out: string,
): { bytes: number; ms: number } {
  const t0 = performance.now();
  const r = spawnSync(tool, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${tool} ${argv.join(' ')}: ${r.stderr.toString()}`);
  const bytes = statSync(out).size;
  rmSync(out, { force: true });
  return { bytes, ms };
}
