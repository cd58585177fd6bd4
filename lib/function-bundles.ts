/**
 * The backend's Lambda functions built and loaded outside CDK exactly as the stack would have them: which functions
 * there are, their entry points and environment come from a synthesised OtaStack, the esbuild options from
 * OTA_BUNDLING (lib/ota-function.ts), and each bundle is imported in a fresh `node` process with that environment.
 * Shared by the bundle test (test/cdk/bundles.test.ts) and the cold-start benchmark (bench/cold-start.ts), so
 * neither keeps a copy of the options that could drift from the stack's.
 */
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App, type CfnElement } from 'aws-cdk-lib';
import { type BundlingOptions, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import type { BuildOptions } from 'esbuild';
import { OTA_BUNDLING, OtaFunction } from './ota-function.js';
import { OtaStack } from './ota-stack.js';

export interface StackFunction {
  /** The function's service name (POWERTOOLS_SERVICE_NAME). */
  readonly name: string;
  readonly entry: string;
  /** The environment the template gives the function, references to other resources replaced by dummy values. */
  readonly environment: Readonly<Record<string, string>>;
}

/** The project root (where CDK runs esbuild): this file is in lib/. */
const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const DUMMY_REGION = 'us-east-1';
const DUMMY_ACCOUNT = '111122223333';

/** Every OtaFunction of an OtaStack synthesised with default props (bundling skipped: only the template is read). */
export function stackFunctions(): StackFunction[] {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] }, builtinCloudFormationValidation: false });
  const stack = new OtaStack(app, 'Bundles');
  const template = app.synth().getStackByName(stack.stackName).template as {
    Resources: Record<
      string,
      { Type?: string; Properties?: { Environment?: { Variables?: Record<string, unknown> } } }
    >;
  };
  return stack.node
    .findAll()
    .filter((c): c is OtaFunction => c instanceof OtaFunction)
    .map((fn) => {
      const id = stack.getLogicalId(fn.function.node.defaultChild as CfnElement);
      const vars = template.Resources[id]?.Properties?.Environment?.Variables ?? {};
      return {
        name: fn.serviceName,
        entry: fn.entry,
        environment: Object.fromEntries(
          Object.entries(vars).map(([k, v]) => [k, dummyValue(v, template.Resources)]),
        ),
      };
    });
}

/**
 * A plausible stand-in for a CloudFormation value: a name for a Ref (a queue URL for a queue's, as CloudFormation
 * answers), an ARN for an Arn attribute.
 */
function dummyValue(v: unknown, resources: Record<string, { Type?: string }>): string {
  if (typeof v === 'string') return v;
  const o = v as Record<string, unknown>;
  if (typeof o?.Ref === 'string') {
    const pseudo: Record<string, string> = {
      'AWS::Region': DUMMY_REGION,
      'AWS::AccountId': DUMMY_ACCOUNT,
      'AWS::Partition': 'aws',
      'AWS::URLSuffix': 'amazonaws.com',
    };
    if (resources[o.Ref]?.Type === 'AWS::SQS::Queue') {
      return `https://sqs.${DUMMY_REGION}.amazonaws.com/${DUMMY_ACCOUNT}/dummy-${o.Ref.toLowerCase()}`;
    }
    return pseudo[o.Ref] ?? `dummy-${o.Ref.toLowerCase()}`;
  }
  const att = o?.['Fn::GetAtt'] as [string, string] | undefined;
  if (att) {
    return att[1] === 'Arn'
      ? `arn:aws:dummy:${DUMMY_REGION}:${DUMMY_ACCOUNT}:resource/${att[0]}`
      : `dummy-${att[0]}-${att[1]}`.toLowerCase();
  }
  const join = o?.['Fn::Join'] as [string, unknown[]] | undefined;
  if (join) return join[1].map((part) => dummyValue(part, resources)).join(join[0]);
  throw new Error(`no dummy for the CloudFormation value ${JSON.stringify(v)}`);
}

/** The OTA_BUNDLING options this translation knows; a new one must be translated before anything builds. */
const TRANSLATED = new Set<keyof BundlingOptions>([
  'format',
  'target',
  'mainFields',
  'minify',
  'sourceMap',
  'sourcesContent',
  'bundleAwsSDK',
  'banner',
  'externalModules',
  'esbuildArgs',
]);

/** `--alias:from=to` esbuild arguments as esbuild's `alias` option (CDK writes `--alias` keys that way). */
function aliases(args: BundlingOptions['esbuildArgs']): Record<string, string> | undefined {
  if (!args) return undefined;
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(args)) {
    const pairs = Array.isArray(value) ? value : [value];
    if (key !== '--alias') throw new Error(`esbuild argument ${key} not translated`);
    for (const pair of pairs) {
      const [from, to] = String(pair).split('=');
      if (!from || !to) throw new Error(`--alias needs from=to, got ${String(pair)}`);
      // CDK runs esbuild in the project root; this translation resolves the path the same way.
      out[from] = to.startsWith('./') ? resolve(PROJECT_ROOT, to) : to;
    }
  }
  return out;
}

/**
 * The esbuild options of the command NodejsFunction runs for OTA_BUNDLING (--bundle --platform=node, then one flag
 * per bundling option; the AWS SDK external unless bundled, as NodejsFunction does for Node 18+ runtimes).
 */
export function esbuildOptions(entry: string, outfile: string): BuildOptions {
  const b: BundlingOptions = OTA_BUNDLING;
  const unknown = Object.keys(b).filter((k) => !TRANSLATED.has(k as keyof BundlingOptions));
  if (unknown.length)
    throw new Error(`OTA_BUNDLING options not translated for esbuild: ${unknown.join(', ')}`);
  return {
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    outfile,
    format: b.format === OutputFormat.ESM ? 'esm' : 'cjs',
    target: b.target,
    minify: b.minify,
    sourcemap: b.sourceMap,
    sourcesContent: b.sourcesContent,
    mainFields: b.mainFields ? [...b.mainFields] : undefined,
    banner: b.banner ? { js: b.banner } : undefined,
    external: [...(b.externalModules ?? []), ...(b.bundleAwsSDK ? [] : ['@aws-sdk/*'])],
    alias: aliases(b.esbuildArgs),
    logLevel: 'warning',
  };
}

/** Variables Lambda itself sets in a function's process (not the stack's), with dummy credentials. */
export function lambdaRuntimeEnv(fn: string, taskRoot: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    TZ: ':UTC',
    LANG: 'en_US.UTF-8',
    AWS_REGION: DUMMY_REGION,
    AWS_DEFAULT_REGION: DUMMY_REGION,
    AWS_ACCESS_KEY_ID: 'AKIDBUNDLEDUMMY',
    AWS_SECRET_ACCESS_KEY: 'bundle-dummy-secret',
    AWS_SESSION_TOKEN: 'bundle-dummy-session',
    AWS_LAMBDA_FUNCTION_NAME: `fleet-ota-${fn}`,
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x',
    LAMBDA_TASK_ROOT: taskRoot,
    // Loopback, so that even a send the init guard missed could not leave the machine.
    AWS_XRAY_DAEMON_ADDRESS: '127.0.0.1:2000',
    AWS_XRAY_CONTEXT_MISSING: 'LOG_ERROR',
  };
}

/**
 * The child that loads a bundle: guards the network (every connection, lookup, datagram and fetch is recorded and
 * refused), imports the module, fails with exit 2 unless it exports a `handler` function, waits 200 ms for calls
 * started asynchronously, and prints one JSON line. Plain JavaScript so that no loader (tsx) runs in it.
 */
export const INIT_RUNNER = `
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
const refused = () => Object.assign(new Error('network refused during init'), { code: 'ECONNREFUSED' });
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
const cpu = process.cpuUsage();
if (typeof mod.handler !== 'function') {
  console.error('no handler export in ' + process.argv[2]);
  process.exit(2);
}
const rss = process.memoryUsage().rss;
await new Promise((r) => setTimeout(r, 200));
console.log(JSON.stringify({ ready, importMs: ready - t0, cpuMs: (cpu.user + cpu.system) / 1000, runnerStartMs: started, rss, attempts }));
process.exit(0);
`;

export interface InitSample {
  /** ms from process start until the module's `handler` export was a function. */
  readonly ready: number;
  /** ms in the dynamic import() alone. */
  readonly importMs: number;
  /**
   * CPU ms (user + system) the process used until ready: unlike `ready`, barely moved by other processes competing
   * for the cores, so it still compares modules on a busy machine.
   */
  readonly cpuMs: number;
  readonly runnerStartMs: number;
  readonly rss: number;
  /** Network calls made at init (refused). */
  readonly attempts: string[];
}

/**
 * Imports `module` in a fresh node process running INIT_RUNNER (saved at `runner`); throws on any failure. `node` is
 * the executable to run it on (this process's node unless given).
 */
export function loadBundle(
  runner: string,
  module: string,
  env: NodeJS.ProcessEnv,
  node: string = process.execPath,
): InitSample {
  const out = spawnSync(node, [runner, module], { env, encoding: 'utf8', timeout: 30_000 });
  if (out.status !== 0) {
    // Node echoes the failing source line, which in a minified bundle is the whole file: keep each line short.
    const output = `${out.stderr}${out.stdout}`
      .split('\n')
      .map((l) => (l.length > 300 ? `${l.slice(0, 300)}...` : l))
      .join('\n');
    throw new Error(`init of ${module} failed (exit ${out.status ?? out.signal}):\n${output}`);
  }
  const line = out.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as InitSample;
}
