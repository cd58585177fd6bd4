/**
 * The agent's HTTP transport, injectable: the API client and the downloader take it from outside, so tests can
 * route connections through a fault-injecting proxy and a deployment can pin CAs. The default speaks HTTPS only,
 * trusts exactly the CA it is given (or the system store when none is), and never disables verification.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request } from 'node:https';
import type { Readable } from 'node:stream';
import { AgentError } from './errors.js';

export interface HttpRequest {
  readonly method: 'GET' | 'POST';
  readonly url: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
  readonly signal?: AbortSignal;
  /** Socket inactivity limit, ms: no byte for this long (headers or body) fails the request. */
  readonly idleTimeoutMs?: number;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /**
   * The body as it arrives; iterate it or call abort(). A part may live in memory the transport reuses once the next
   * part is asked for: copy what is kept.
   */
  readonly body: AsyncIterable<Buffer>;
  /** Stops the response and releases its connection (it is not reused). */
  abort(): void;
}

export interface HttpTransport {
  send(req: HttpRequest): Promise<HttpResponse>;
  /** Closes pooled connections. */
  close(): void;
}

/** A transport-level failure: no HTTP answer (refused, reset, TLS, timeout). */
export class TransportError extends AgentError {}

export interface NodeHttpsTransportOptions {
  /** PEM of the CA(s) to trust instead of the system store (the local cloud's CA). */
  readonly ca?: string | readonly string[];
  /** A ready agent (e.g. one that routes through a test proxy); its own TLS options apply. */
  readonly agent?: Agent;
  /** @default 8 */
  readonly maxSockets?: number;
  /**
   * Body bytes read from the socket ahead of the consumer. An HTTPS response buffers only 16 KiB (its
   * highWaterMark cannot be raised), so a consumer that pauses to write a file lets TCP stall the sender; reading
   * ahead keeps the connection streaming meanwhile. @default 2 MiB
   */
  readonly readAheadBytes?: number;
}

export class NodeHttpsTransport implements HttpTransport {
  private readonly agent: Agent;
  private readonly ca: string[] | undefined;
  private readonly readAheadBytes: number;

  constructor(options: NodeHttpsTransportOptions = {}) {
    this.readAheadBytes = options.readAheadBytes ?? 2 * 1024 * 1024;
    this.ca =
      options.ca === undefined ? undefined : typeof options.ca === 'string' ? [options.ca] : [...options.ca];
    this.agent =
      options.agent ??
      new Agent({
        keepAlive: true,
        maxSockets: options.maxSockets ?? 8,
        ...(this.ca ? { ca: this.ca } : {}),
      });
  }

  send(req: HttpRequest): Promise<HttpResponse> {
    const url = new URL(req.url);
    if (url.protocol !== 'https:')
      return Promise.reject(new TransportError('insecure_url', 'only https URLs are used'));
    return new Promise<HttpResponse>((resolve, reject) => {
      const headers: Record<string, string> = { ...req.headers };
      if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
      const r = request(
        url,
        {
          method: req.method,
          headers,
          agent: this.agent,
          ...(this.ca ? { ca: this.ca } : {}),
          ...(req.signal ? { signal: req.signal } : {}),
        },
        (res) => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: readAhead(res, this.readAheadBytes),
            abort: () => {
              if (!res.complete) r.destroy();
              res.destroy();
            },
          });
        },
      );
      if (req.idleTimeoutMs !== undefined) {
        r.setTimeout(req.idleTimeoutMs, () =>
          r.destroy(new TransportError('timeout', `no data for ${req.idleTimeoutMs} ms`)),
        );
      }
      r.on('error', (err) => {
        const e = err as Error & { code?: string };
        reject(
          e instanceof TransportError || e.name === 'AbortError'
            ? e
            : new TransportError(e.code ?? 'network', e.message, { cause: e }),
        );
      });
      r.end(req.body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Reads a whole (small) body, refusing more than maxBytes. */
export async function readBody(res: HttpResponse, maxBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  try {
    for await (const part of res.body) {
      total += part.length;
      if (total > maxBytes) {
        res.abort();
        throw new TransportError('response_too_large', `response body exceeds ${maxBytes} bytes`);
      }
      parts.push(Buffer.from(part)); // the transport may reuse the part's memory
    }
  } catch (err) {
    if (err instanceof TransportError) throw err;
    throw new TransportError('network', (err as Error).message, { cause: err });
  }
  return Buffer.concat(parts);
}

/**
 * The stream's data as an async iterable that keeps reading while the consumer is busy, up to maxBytes queued:
 * the stream flows, is paused above maxBytes and resumed once the consumer has taken half of it back.
 */
export function readAhead(stream: Readable, maxBytes: number): AsyncIterable<Buffer> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<Buffer> {
      const queue: Buffer[] = [];
      let queued = 0;
      let ended = false;
      let failure: unknown;
      let wake: (() => void) | undefined;
      const notify = () => {
        const w = wake;
        wake = undefined;
        w?.();
      };
      const onData = (chunk: Buffer) => {
        queue.push(chunk);
        queued += chunk.length;
        if (queued >= maxBytes) stream.pause();
        notify();
      };
      const onEnd = () => {
        ended = true;
        notify();
      };
      const onError = (err: unknown) => {
        failure ??= err;
        notify();
      };
      // A destroyed response (abort) ends the iteration like an end, or with its error.
      const onClose = () => {
        if (!stream.readableEnded && failure === undefined)
          failure = new Error('the response was closed early');
        notify();
      };
      const detach = () => {
        stream.off('data', onData);
        stream.off('end', onEnd);
        stream.off('error', onError);
        stream.off('close', onClose);
      };
      stream.on('data', onData);
      stream.on('end', onEnd);
      stream.on('error', onError);
      stream.on('close', onClose);
      return {
        async next(): Promise<IteratorResult<Buffer>> {
          for (;;) {
            const chunk = queue.shift();
            if (chunk) {
              queued -= chunk.length;
              if (queued <= maxBytes / 2 && stream.isPaused() && !ended) stream.resume();
              return { value: chunk, done: false };
            }
            if (failure !== undefined) {
              detach();
              throw failure;
            }
            if (ended) {
              detach();
              return { value: undefined, done: true };
            }
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
          }
        },
        async return(): Promise<IteratorResult<Buffer>> {
          // The consumer stopped early (break): stop reading; the caller aborts the response.
          detach();
          stream.pause();
          queue.length = 0;
          return { value: undefined, done: true };
        },
      };
    },
  };
}
