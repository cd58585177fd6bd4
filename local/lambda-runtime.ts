/**
 * Local Lambda: runs each function's handler module in worker threads, one invocation per worker at a time, with
 * the timeout and memory size the stack gives that function (FUNCTION_SETTINGS). What AWS does, this does too:
 * - a handler still running at its timeout is stopped (the worker is terminated) and the invocation fails with
 *   "Task timed out"; the next invocation gets a fresh instance (a cold start);
 * - a handler that outgrows its memory (V8 heap limit, plus off-heap memory sampled in the worker) is stopped;
 * - warm instances are kept and reused, so only the first invocation of each concurrent instance pays the import;
 * - instances scale out with concurrent invocations up to maxInstances per function, a new one when an invocation
 *   has waited SCALE_OUT_AFTER_MS for a busy one (Lambda starts one at once; a local cold start costs seconds of
 *   CPU, so a brief overlap is better served by the warm instance); beyond the cap invocations wait.
 * The API Gateway limits (integration timeout, payload sizes) are the gateway's job (local/gateway.ts).
 */
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Worker } from 'node:worker_threads';
import {
  type OperationDelta,
  operationTally,
  recordOperation,
} from '../lambdas/adapters/operation-counter.js';
import { FUNCTION_SETTINGS, type FunctionSettings, type LambdaName } from '../lambdas/core/functions.js';
import type { HandlerLoader, ProxyHandler } from './gateway.js';

/** How long an invocation waits for a busy instance before another one is started. */
export const SCALE_OUT_AFTER_MS = 50;

/** Exit code with which a worker reports that it went over its memory size. */
export const OUT_OF_MEMORY_EXIT = 137;

export interface WorkerData {
  readonly tsx: string;
  readonly main: string;
  readonly entry: string;
  readonly exportName: string;
  readonly fn: string;
  readonly memoryMb: number;
}
export interface InvokeMessage {
  readonly id: number;
  readonly requestId: string;
  readonly event: unknown;
  /** Milliseconds since the epoch when the invocation times out (context.getRemainingTimeInMillis). */
  readonly deadline: number;
}
type ErrorInfo = { name: string; message: string };
export type WorkerReply = (
  | { type: 'ready' }
  | { type: 'init_error'; error: ErrorInfo }
  | { type: 'result'; id: number; result: unknown }
  | { type: 'error'; id: number; error: ErrorInfo }
) & {
  /** AWS operations the instance counted since its previous reply (lambdas/adapters/operation-counter.ts). */
  operations?: OperationDelta;
};

export type LambdaFailure = 'timeout' | 'out_of_memory' | 'crashed' | 'init_failed' | 'handler_error';

/** An invocation that failed the way Lambda reports a function error (API Gateway answers 502 for it). */
export class LambdaInvocationError extends Error {
  constructor(
    readonly kind: LambdaFailure,
    message: string,
  ) {
    super(message);
    this.name = 'LambdaInvocationError';
  }
}

export interface LocalLambdasProps {
  /** Overrides of FUNCTION_SETTINGS (tests use short timeouts). @default FUNCTION_SETTINGS */
  readonly settings?: Partial<Record<LambdaName, FunctionSettings>>;
  /** Module URL and export of a function's handler. @default lambdas/<fn>/handler.ts, export `handler` */
  readonly entry?: (fn: LambdaName) => { url: string; exportName?: string };
  /** Concurrent instances per function. @default 4 */
  readonly maxInstances?: number;
  /**
   * Receives the CloudWatch embedded-metric-format records the functions print (Powertools Metrics), as Lambda's
   * log pipeline hands them to CloudWatch; other output goes on to this process's stdout. The local alarms
   * (local/alarms.ts) evaluate them. @default - worker output is not inspected
   */
  readonly onMetrics?: MetricsSink;
}

/** One EMF record a function printed, with the function that printed it. */
export type MetricsSink = (fn: LambdaName, record: Record<string, unknown>) => void;

// Workers need TypeScript too: the eval'd bootstrap registers tsx's loader in the worker before importing the
// (TypeScript) worker module, since loader hooks of the parent thread do not reach worker threads on Node 20.
const BOOT =
  "const { workerData } = require('node:worker_threads');" +
  'import(workerData.tsx).then((m) => { m.register(); return import(workerData.main); });';
const TSX_API = import.meta.resolve('tsx/esm/api');
const WORKER_MAIN = new URL('./lambda-worker.ts', import.meta.url).href;
const defaultEntry = (fn: LambdaName) => ({
  url: new URL(`../lambdas/${fn}/handler.ts`, import.meta.url).href,
});

/**
 * Reads a worker's stdout line by line: EMF records (a JSON object with an `_aws.CloudWatchMetrics` key) go to the
 * sink, everything else to this process's stdout unchanged.
 */
export function splitMetrics(worker: Worker, fn: LambdaName, sink: MetricsSink): void {
  createInterface({ input: worker.stdout, crlfDelay: Number.POSITIVE_INFINITY }).on('line', (line) => {
    if (line.startsWith('{') && line.includes('"CloudWatchMetrics"')) {
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        if (typeof record._aws === 'object' && record._aws !== null) {
          sink(fn, record);
          return;
        }
      } catch {
        // Not JSON after all: printed as it came.
      }
    }
    process.stdout.write(`${line}\n`);
  });
}

class Instance {
  readonly ready: Promise<void>;
  alive = true;
  private pending?: { id: number; resolve: (r: unknown) => void; reject: (e: Error) => void };
  private failure?: Error;
  private seq = 0;
  private readonly worker: Worker;

  constructor(
    fn: LambdaName,
    private readonly settings: FunctionSettings,
    entry: { url: string; exportName?: string },
    onMetrics?: MetricsSink,
  ) {
    const data: WorkerData = {
      tsx: TSX_API,
      main: WORKER_MAIN,
      entry: entry.url,
      exportName: entry.exportName ?? 'handler',
      fn,
      memoryMb: settings.memoryMb,
    };
    // The environment is copied when the worker starts, as a Lambda instance gets its configuration at init.
    this.worker = new Worker(BOOT, {
      eval: true,
      workerData: data,
      resourceLimits: { maxOldGenerationSizeMb: settings.memoryMb },
      stdout: onMetrics !== undefined,
    });
    if (onMetrics) splitMetrics(this.worker, fn, onMetrics);
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.on('message', (m: WorkerReply) => {
        operationTally().merge(m.operations, fn);
        if (m.type === 'ready') resolve();
        else if (m.type === 'init_error') {
          reject(new LambdaInvocationError('init_failed', `${m.error.name}: ${m.error.message}`));
          this.stop();
        } else if (this.pending?.id === m.id) {
          const p = this.pending;
          this.pending = undefined;
          if (m.type === 'result') p.resolve(m.result);
          else p.reject(new LambdaInvocationError('handler_error', `${m.error.name}: ${m.error.message}`));
        }
      });
      this.worker.on('error', (err: Error & { code?: string }) => {
        this.failure =
          err.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? this.outOfMemory()
            : new LambdaInvocationError('crashed', err.message);
      });
      this.worker.on('exit', (code) => {
        this.alive = false;
        const err =
          this.failure ??
          (code === OUT_OF_MEMORY_EXIT
            ? this.outOfMemory()
            : new LambdaInvocationError('crashed', `Runtime exited with code ${code}`));
        reject(err);
        this.pending?.reject(err);
        this.pending = undefined;
      });
    });
    this.ready.catch(() => {});
  }

  private outOfMemory(): LambdaInvocationError {
    return new LambdaInvocationError(
      'out_of_memory',
      `Runtime exited: the function used more than its ${this.settings.memoryMb} MB of memory`,
    );
  }

  run(event: unknown, requestId: string): Promise<unknown> {
    const timeoutMs = this.settings.timeoutSeconds * 1000;
    return new Promise<unknown>((resolve, reject) => {
      const id = ++this.seq;
      const timer = setTimeout(() => {
        this.pending = undefined;
        this.failure = new LambdaInvocationError(
          'timeout',
          `Task timed out after ${this.settings.timeoutSeconds} seconds`,
        );
        reject(this.failure);
        // Stopped, not left running: Lambda freezes and discards an instance whose invocation timed out.
        this.stop();
      }, timeoutMs);
      const settle =
        <T>(f: (v: T) => void) =>
        (v: T) => {
          clearTimeout(timer);
          f(v);
        };
      this.pending = { id, resolve: settle(resolve), reject: settle(reject) };
      const message: InvokeMessage = { id, requestId, event, deadline: Date.now() + timeoutMs };
      try {
        this.worker.postMessage(message);
      } catch (err) {
        this.pending.reject(
          new LambdaInvocationError('handler_error', `Event not serialisable: ${String(err)}`),
        );
      }
    });
  }

  stop(): Promise<number> {
    this.alive = false;
    return this.worker.terminate();
  }
}

class Pool {
  private readonly idle: Instance[] = [];
  private readonly all = new Set<Instance>();
  private readonly waiting: {
    resolve: (i: Instance) => void;
    reject: (e: unknown) => void;
    timer?: NodeJS.Timeout;
  }[] = [];
  coldStarts = 0;

  constructor(
    private readonly fn: LambdaName,
    private readonly settings: FunctionSettings,
    private readonly entry: { url: string; exportName?: string },
    private readonly max: number,
    private readonly onMetrics?: MetricsSink,
  ) {}

  get size(): number {
    return this.all.size;
  }

  acquire(): Promise<Instance> {
    const warm = this.idle.pop();
    if (warm) return Promise.resolve(warm);
    if (this.all.size === 0) return this.spawn();
    return new Promise((resolve, reject) => {
      const waiter: (typeof this.waiting)[number] = { resolve, reject };
      if (this.all.size < this.max) {
        waiter.timer = setTimeout(() => {
          const at = this.waiting.indexOf(waiter);
          if (at === -1) return;
          this.waiting.splice(at, 1);
          if (this.all.size < this.max) this.spawn().then(resolve, reject);
          else this.waiting.push({ resolve, reject });
        }, SCALE_OUT_AFTER_MS);
      }
      this.waiting.push(waiter);
    });
  }

  release(instance: Instance): void {
    const waiter = this.waiting.shift();
    if (waiter?.timer) clearTimeout(waiter.timer);
    if (!instance.alive) {
      this.all.delete(instance);
      if (waiter) this.spawn().then(waiter.resolve, waiter.reject);
      return;
    }
    if (waiter) waiter.resolve(instance);
    else this.idle.push(instance);
  }

  private async spawn(): Promise<Instance> {
    const instance = new Instance(this.fn, this.settings, this.entry, this.onMetrics);
    this.all.add(instance);
    this.coldStarts++;
    try {
      await instance.ready;
      return instance;
    } catch (err) {
      this.release(instance);
      throw err;
    }
  }

  async close(): Promise<void> {
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error('the local Lambda runtime is closed'));
    }
    await Promise.all([...this.all].map((i) => i.stop()));
    this.all.clear();
    this.idle.length = 0;
  }
}

export class LocalLambdas {
  private readonly pools = new Map<LambdaName, Pool>();
  private closed = false;

  constructor(private readonly props: LocalLambdasProps = {}) {}

  settings(fn: LambdaName): FunctionSettings {
    return this.props.settings?.[fn] ?? FUNCTION_SETTINGS[fn];
  }

  /** Invokes fn with event on a warm instance (or a new one); rejects with LambdaInvocationError as Lambda fails. */
  async invoke(fn: LambdaName, event: unknown, requestId: string = randomUUID()): Promise<unknown> {
    if (this.closed) throw new Error('the local Lambda runtime is closed');
    recordOperation(`lambda.invoke.${fn}`);
    const pool = this.pool(fn);
    const instance = await pool.acquire();
    const started = performance.now();
    try {
      return await instance.run(event, requestId);
    } finally {
      // Time in the instance (a cold start's init included), summed per function: the fleet model shows the mean.
      recordOperation(`lambda.fn.${fn}.ms`, Math.round(performance.now() - started));
      pool.release(instance);
    }
  }

  /** The gateway's view of these functions: each route's handler is an invocation of its function here. */
  readonly handlerLoader: HandlerLoader = async (fn) => {
    const proxy: ProxyHandler = async (event, context) => {
      recordOperation('apigateway.request');
      return (await this.invoke(fn, event, context.awsRequestId)) as Awaited<ReturnType<ProxyHandler>>;
    };
    return proxy;
  };

  /** Instances per function and how many cold starts each function had (to observe warm reuse). */
  stats(): Record<string, { instances: number; coldStarts: number }> {
    return Object.fromEntries(
      [...this.pools].map(([fn, p]) => [fn, { instances: p.size, coldStarts: p.coldStarts }]),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pools.values()].map((p) => p.close()));
  }

  private pool(fn: LambdaName): Pool {
    let pool = this.pools.get(fn);
    if (!pool) {
      pool = new Pool(
        fn,
        this.settings(fn),
        (this.props.entry ?? defaultEntry)(fn),
        this.props.maxInstances ?? 4,
        this.props.onMetrics,
      );
      this.pools.set(fn, pool);
    }
    return pool;
  }
}
