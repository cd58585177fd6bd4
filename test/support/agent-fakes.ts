/** Test doubles for the agent's injected dependencies: a fake clock/runtime and an in-memory HTTP transport. */
import type { HttpRequest, HttpResponse, HttpTransport } from '../../vehicle/http-transport.js';
import type { AgentRuntime } from '../../vehicle/runtime.js';

/** Time advances only through sleep(); every sleep is recorded. */
export class FakeRuntime implements AgentRuntime {
  readonly sleeps: number[] = [];

  constructor(
    public time = Date.parse('2026-11-27T00:00:00Z'),
    public randomValue = 0.5,
  ) {}

  now(): number {
    return this.time;
  }

  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    this.sleeps.push(ms);
    this.time += Math.max(0, ms);
    // Yield to the event loop, not just to microtasks: a polling loop on a fake clock must not starve I/O.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  random(): number {
    return this.randomValue;
  }
}

export interface FakeAnswer {
  readonly status: number;
  readonly headers?: Record<string, string>;
  /** Whole body, pieces, or a generator (endless bodies). */
  readonly body?: Buffer | string | Buffer[] | (() => Iterable<Buffer>);
}

/** Answers requests from a handler; records each request and whether its response was aborted. */
export class FakeTransport implements HttpTransport {
  readonly requests: HttpRequest[] = [];
  readonly aborted: boolean[] = [];
  /** Body bytes handed to the client. */
  delivered = 0;

  constructor(
    private readonly handler: (req: HttpRequest, index: number) => FakeAnswer | Promise<FakeAnswer>,
  ) {}

  async send(req: HttpRequest): Promise<HttpResponse> {
    const index = this.requests.push(req) - 1;
    this.aborted.push(false);
    const answer = await this.handler(req, index);
    const b = answer.body;
    const pieces: () => Iterable<Buffer> =
      typeof b === 'function'
        ? b
        : () => (b === undefined ? [] : Array.isArray(b) ? b : [typeof b === 'string' ? Buffer.from(b) : b]);
    const self = this;
    let stop = false;
    return {
      status: answer.status,
      headers: Object.fromEntries(Object.entries(answer.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      body: (async function* () {
        for (const piece of pieces()) {
          if (stop) return;
          self.delivered += piece.length;
          yield piece;
        }
      })(),
      abort: () => {
        stop = true;
        this.aborted[index] = true;
      },
    };
  }

  close(): void {}
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): FakeAnswer {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) };
}

/** Splits a buffer into pieces of `size` bytes (how a socket delivers it). */
export function pieces(data: Buffer, size = 16 * 1024): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

/** An S3-like Range server over an in-memory image. */
export function rangeAnswer(image: Buffer, req: HttpRequest): FakeAnswer {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers?.range ?? '');
  if (!m) return { status: 200, headers: { 'content-length': String(image.length) }, body: pieces(image) };
  const start = Number(m[1]);
  const end = Math.min(m[2] ? Number(m[2]) : image.length - 1, image.length - 1);
  if (start >= image.length) return { status: 416 };
  return {
    status: 206,
    headers: {
      'content-range': `bytes ${start}-${end}/${image.length}`,
      'content-length': String(end - start + 1),
    },
    body: pieces(image.subarray(start, end + 1)),
  };
}
