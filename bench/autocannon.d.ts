/** The parts of autocannon the API benchmark uses; the package ships no type declarations. */
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';
  import type { ConnectionOptions } from 'node:tls';

  interface RequestData {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }

  interface Request extends RequestData {
    setupRequest?: (req: RequestData, context: Record<string, unknown>) => RequestData | null;
  }

  interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    total: number;
    p50: number;
    p90: number;
    p97_5: number;
    p99: number;
    p99_9: number;
  }

  interface Result {
    duration: number;
    start: Date;
    finish: Date;
    connections: number;
    errors: number;
    timeouts: number;
    mismatches: number;
    non2xx: number;
    resets: number;
    '1xx': number;
    '2xx': number;
    '3xx': number;
    '4xx': number;
    '5xx': number;
    statusCodeStats: Record<string, { count: number }>;
    requests: Histogram & { sent: number };
    latency: Histogram;
    throughput: Histogram;
    /** The warm-up run's result, when there was one. */
    warmup?: Result;
  }

  interface Options {
    url: string;
    connections?: number;
    duration?: number;
    pipelining?: number;
    timeout?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    requests?: Request[];
    servername?: string;
    tlsOptions?: ConnectionOptions;
    verifyBody?: (body: string) => boolean;
    warmup?: { connections: number; duration: number };
  }

  /** Emits 'response' (client, statusCode, resBytes, responseTimeMs) for every response of the measured run. */
  interface Instance extends EventEmitter, PromiseLike<Result> {
    stop(): void;
  }

  /** Without a callback it answers a thenable instance; only this form runs the warm-up. */
  function autocannon(opts: Options): Instance;
  export default autocannon;
  export type { Options, Result };
}
