/**
 * `npm run bench:cold-start`: bundle size and module init time of every Lambda function, against an empty ESM
 * module measured the same way in the same run.
 *
 * Each lambdas/<fn>/handler.ts is bundled with esbuild using the options lib/ota-function.ts gives NodejsFunction
 * (the command CDK runs: --bundle --platform=node --format=esm --target=node24 --minify --sourcemap
 * --sources-content=false --main-fields=module,main, the createRequire banner, nothing external because the AWS SDK
 * is bundled). Then each bundle is imported in a fresh `node` child process with the environment the stack gives
 * the function, dummy values for names and ARNs, and Lambda-like variables, and the child reports:
 *   ready   ms from process start (performance.timeOrigin) until the module's `handler` export is a function;
 *   import  ms spent in the dynamic import() alone;
 *   rss     resident memory once ready.
 * Two variants: `--enable-source-maps`, which the stack sets in NODE_OPTIONS (as deployed), and without it.
 * The baseline is an empty ESM module exporting a no-op handler, imported by the same runner. Each figure is the
 * median of --runs runs, interleaved across modules so drift hits all alike. Ratio = function / empty module.
 *
 * No network call may happen at init: before the import the runner replaces every way out of the process it
 * can reach (net/tls connect, DNS lookups, UDP sends, fetch) with a recorder that refuses the connection, and it
 * waits 200 ms after the import for calls started asynchronously. Anything recorded is reported as a finding and
 * fails the run. Nothing leaves the machine: refused calls never open a socket.
 *
 *   npm run bench:cold-start -- [--runs 7] [--json out.json]
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { build, version as esbuildVersion } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const FUNCTIONS = ['auth-api', 'vehicle-api', 'operator-api', 'ingest', 'campaign-tick'] as const;
/** Same string as CREATE_REQUIRE_BANNER in lib/ota-function.ts (not exported there). */
const CREATE_REQUIRE_BANNER =
  "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);";
/** NODE_TARGET in lib/ota-function.ts; read from the file so the two cannot drift apart silently. */
const NODE_TARGET = /export const NODE_TARGET = '(node\d+)'/.exec(
  readFileSync(join(ROOT, 'lib', 'ota-function.ts'), 'utf8'),
)?.[1];

const { values: args } = parseArgs({
  options: { runs: { type: 'string', default: '7' }, json: { type: 'string' } },
});
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 51)
  throw new Error('--runs must be an integer from 1 to 51');

/**
 * The child: guards the network, imports the module, prints one JSON line. Plain JavaScript so that no loader
 * (tsx) runs in the measured process.
 */
const RUNNER = `
const started = performance.now();
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';
import tls from 'node:tls';
import dns from 'node:dns';
import dgram from 'node:dgram';
import { pathToFileURL } from 'node:url';

const attempts = [];
const record = (what, detail) => {
  let where;
  try { where = JSON.stringify(detail); } catch { where = String(detail); }
  attempts.push(what + ' ' + where);
};
const refused = () => Object.assign(new Error('bench: network refused during init'), { code: 'ECONNREFUSED' });
net.Socket.prototype.connect = function (...a) {
  const o = Array.isArray(a[0]) ? a[0][0] : a[0];
  record('net.connect', o && typeof o === 'object' ? { host: o.host, port: o.port, path: o.path } : a.slice(0, 2));
  process.nextTick(() => this.destroy(refused()));
  return this;
};
const origTlsConnect = tls.connect;
tls.connect = function (...a) {
  record('tls.connect', a[0] && typeof a[0] === 'object' ? { host: a[0].host, port: a[0].port } : a.slice(0, 2));
  return origTlsConnect.apply(this, a);
};
const lookup = (what) => (host, ...rest) => {
  record(what, host);
  const cb = rest.find((x) => typeof x === 'function');
  if (cb) process.nextTick(() => cb(refused()));
  else return Promise.reject(refused());
};
dns.lookup = lookup('dns.lookup');
dns.resolve = lookup('dns.resolve');
dns.promises.lookup = lookup('dns.promises.lookup');
dgram.Socket.prototype.send = function (...a) {
  record('dgram.send', a.slice(1).filter((x) => typeof x !== 'function' && typeof x !== 'object'));
  const cb = a.find((x) => typeof x === 'function');
  if (cb) process.nextTick(() => cb(refused()));
};
globalThis.fetch = async (input) => {
  record('fetch', String(input));
  throw refused();
};
syncBuiltinESMExports();

const t0 = performance.now();
const mod = await import(pathToFileURL(process.argv[2]).href);
const ready = performance.now();
if (typeof mod.handler !== 'function') {
  console.error('no handler export in ' + process.argv[2]);
  process.exit(2);
}
const rss = process.memoryUsage().rss;
await new Promise((r) => setTimeout(r, 200));
console.log(JSON.stringify({ ready, importMs: ready - t0, runnerStartMs: started, rss, attempts }));
process.exit(0);
`;

interface Sample {
  ready: number;
  importMs: number;
  runnerStartMs: number;
  rss: number;
  attempts: string[];
}

/** The environment the stack gives the functions (lib/ota-stack.ts and the bind helpers), with dummy values. */
function lambdaEnv(fn: string, dir: string, sourceMaps: boolean): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    ...(sourceMaps ? { NODE_OPTIONS: '--enable-source-maps' } : {}),
    TZ: ':UTC',
    LANG: 'en_US.UTF-8',
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'AKIDBENCHDUMMY',
    AWS_SECRET_ACCESS_KEY: 'bench-dummy-secret',
    AWS_SESSION_TOKEN: 'bench-dummy-session',
    AWS_LAMBDA_FUNCTION_NAME: `fleet-ota-${fn}`,
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x',
    LAMBDA_TASK_ROOT: dir,
    // Loopback, so that even a send the guard missed could not leave the machine.
    AWS_XRAY_DAEMON_ADDRESS: '127.0.0.1:2000',
    AWS_XRAY_CONTEXT_MISSING: 'LOG_ERROR',
    POWERTOOLS_SERVICE_NAME: fn,
    POWERTOOLS_METRICS_NAMESPACE: 'FleetOta',
    TABLE_RELEASES: 'fleet-ota-releases',
    TABLE_VEHICLES: 'fleet-ota-vehicles',
    TABLE_UPDATES: 'fleet-ota-updates',
    TABLE_HISTORY: 'fleet-ota-history',
    TABLE_CAMPAIGNS: 'fleet-ota-campaigns',
    FIRMWARE_BUCKET: 'fleet-ota-firmware',
    SIGNING_KEY_ARN: 'arn:aws:kms:us-east-1:111122223333:key/x',
    RELEASE_PUBLIC_KEYS: '[]',
    PRESIGN_TTL_SECONDS: '300',
    TOKEN_TTL_SECONDS: '900',
    HISTORY_RETENTION_DAYS: '90',
    CAMPAIGN_TICK_SECONDS: '60',
    IOT_POLICY_NAME: 'fleet-ota-vehicle-policy',
    IOT_THING_TYPE: 'fleet-ota-vehicle',
    AWS_ENDPOINT_URL_IOT_DATA_PLANE: 'https://127.0.0.1:9',
    JOB_QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/111122223333/fleet-ota-jobs',
  };
}

function measure(runner: string, module: string, env: NodeJS.ProcessEnv): Sample {
  const out = spawnSync(process.execPath, [runner, module], { env, encoding: 'utf8', timeout: 30_000 });
  if (out.status !== 0) {
    throw new Error(`init of ${module} failed (exit ${out.status}):\n${out.stderr}${out.stdout}`);
  }
  const line = out.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as Sample;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

async function main() {
  if (!NODE_TARGET) throw new Error('NODE_TARGET not found in lib/ota-function.ts');
  const dir = mkdtempSync(join(tmpdir(), 'ota-bench-cold-'));
  try {
    const runner = join(dir, 'runner.mjs');
    writeFileSync(runner, RUNNER);
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
    for (const fn of FUNCTIONS) {
      const outfile = join(dir, fn, 'index.mjs');
      const started = performance.now();
      const result = await build({
        entryPoints: [join(ROOT, 'lambdas', fn, 'handler.ts')],
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: NODE_TARGET,
        outfile,
        minify: true,
        sourcemap: true,
        sourcesContent: false,
        mainFields: ['module', 'main'],
        banner: { js: CREATE_REQUIRE_BANNER },
        logLevel: 'warning',
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
        name: fn,
        file: outfile,
        bytes: js.length,
        gzip: gzipSync(js, { level: 9 }).length,
        mapBytes: statSync(`${outfile}.map`).size,
        top: [...contributors].sort((a, b) => b[1] - a[1]).slice(0, 6),
      });
      process.stderr.write(`bundled ${fn} in ${buildMs.toFixed(0)} ms\n`);
    }

    const variants = [
      { name: 'NODE_OPTIONS=--enable-source-maps (as deployed)', sourceMaps: true },
      { name: 'without source maps', sourceMaps: false },
    ];
    const samples = new Map<string, Sample[]>();
    const findings: string[] = [];
    // One untimed run of each first, so file-system caches are warm for every module alike.
    for (const m of modules) measure(runner, m.file, lambdaEnv(m.name, dirname(m.file), false));
    for (let run = 0; run < RUNS; run++) {
      for (const v of variants) {
        for (const m of modules) {
          const s = measure(runner, m.file, lambdaEnv(m.name, dirname(m.file), v.sourceMaps));
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
      `bench:cold-start  node ${process.version}, ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown'}), ` +
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
    for (const v of variants) {
      console.log(`\ninit time, ${v.name}:`);
      const base = samples.get(`${v.name}|${modules[0]!.name}`)!;
      const baseReady = median(base.map((s) => s.ready));
      const baseImport = median(base.map((s) => s.importMs));
      for (const m of modules) {
        const s = samples.get(`${v.name}|${m.name}`)!;
        const ready = median(s.map((x) => x.ready));
        const imp = median(s.map((x) => x.importMs));
        const rss = median(s.map((x) => x.rss));
        const spread = `${Math.min(...s.map((x) => x.ready)).toFixed(1)}-${Math.max(...s.map((x) => x.ready)).toFixed(1)}`;
        console.log(
          `  ${m.name.padEnd(14)} ready ${ready.toFixed(1).padStart(7)} ms (runs ${spread.padStart(13)})  x${(ready / baseReady).toFixed(2).padStart(5)}` +
            `   import ${imp.toFixed(1).padStart(7)} ms  x${(imp / baseImport).toFixed(1).padStart(6)}   rss ${(rss / 1048576).toFixed(1).padStart(6)} MiB`,
        );
        rows.push({
          variant: v.name,
          module: m.name,
          readyMs: ready,
          importMs: imp,
          rssBytes: rss,
          runs: s.length,
        });
      }
    }
    console.log(
      '\nready = ms from process start to the handler export being a function; import = the import() alone; ' +
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
