/**
 * The image download transport: HTTP/1.1 over one TLS connection per request, reading into memory it owns.
 *
 * Node's https client hands every TLS record (16 KiB) to JavaScript as a freshly allocated Buffer. A 1 GiB image is
 * 65,536 of them, and V8 frees their memory only when its garbage collector gets round to it, so a download's
 * resident memory climbs by tens of MiB of dead buffers. Here the socket decrypts into one reused buffer (the `onread`
 * option of tls.connect), and body bytes are copied into a handful of blocks that are recycled as the consumer moves
 * on: nothing is allocated per record, and the memory held is the read-ahead, whatever the image size.
 *
 * Deliberately small: GET and POST, `Connection: close` (a download is a few large requests; no pooling), responses
 * framed by Content-Length, chunked encoding or the end of the connection. TLS certificates are checked against the
 * URL's host as always (an explicit CA, or the system store). A part of the body is valid only until the next part
 * is requested: consumers copy what they keep (the downloader copies into its write buffers as it hashes).
 *
 * This file is the TLS side (connection, reads, timeouts, aborts); the HTTP/1.1 framing is http1-response.ts and the
 * body's pooled memory body-blocks.ts.
 */
import { isIP, type OnReadOpts } from 'node:net';
import {
  type ConnectionOptions,
  connect,
  createSecureContext,
  type SecureContext,
  type TLSSocket,
} from 'node:tls';
import { BLOCK_BYTES, BodyBlocks } from './body-blocks.js';
import { BufferPool } from './buffer-pool.js';
import { type HttpRequest, type HttpResponse, type HttpTransport, TransportError } from './http-transport.js';
import { ResponseReader, requestHead } from './http1-response.js';

export interface DirectHttpsTransportOptions {
  /** PEM of the CA(s) to trust instead of the system store (the local cloud's CA). */
  readonly ca?: string | readonly string[];
  /** Body bytes read from the socket ahead of the consumer. @default 2 MiB */
  readonly readAheadBytes?: number;
  /**
   * Where to open the connection for a URL's host and port (tests route through a fault proxy). The TLS name checked
   * is still the URL's host. @default the URL's own
   */
  readonly route?: (host: string, port: number) => { readonly host: string; readonly port: number };
}

/** What a socket decrypts into; a TLS record is at most 16 KiB. */
const READ_BYTES = 64 * 1024;

export class DirectHttpsTransport implements HttpTransport {
  private readonly ca: string[] | undefined;
  private readonly readAheadBytes: number;
  private readonly open = new Set<TLSSocket>();
  /** Memory reused across requests (a download is a series of them): body blocks and socket read buffers. */
  private readonly blocks: BufferPool;
  private readonly reads = new BufferPool(READ_BYTES, 4);
  /**
   * Built once: a context per connection re-parsed the CA each time. Chunk reuse asks for every run of frames the
   * installed image lacks, tens to hundreds of Range requests of one URL (bench:delta).
   */
  private readonly context: SecureContext | undefined;

  constructor(private readonly options: DirectHttpsTransportOptions = {}) {
    this.ca =
      options.ca === undefined ? undefined : typeof options.ca === 'string' ? [options.ca] : [...options.ca];
    this.context = this.ca ? createSecureContext({ ca: this.ca }) : undefined;
    this.readAheadBytes = Math.max(BLOCK_BYTES, options.readAheadBytes ?? 2 * 1024 * 1024);
    this.blocks = new BufferPool(BLOCK_BYTES, 2 * Math.ceil(this.readAheadBytes / BLOCK_BYTES));
  }

  send(req: HttpRequest): Promise<HttpResponse> {
    let url: URL;
    try {
      url = new URL(req.url);
    } catch {
      return Promise.reject(new TransportError('bad_url', 'not a URL'));
    }
    if (url.protocol !== 'https:')
      return Promise.reject(new TransportError('insecure_url', 'only https URLs are used'));
    let head: Buffer;
    try {
      head = requestHead(req, url);
    } catch (err) {
      return Promise.reject(err);
    }
    if (req.signal?.aborted) return Promise.reject(abortError(req.signal));

    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = url.port === '' ? 443 : Number(url.port);
    const target = this.options.route?.(host, port) ?? { host, port };
    return new Promise<HttpResponse>((resolve, reject) => {
      const body = new BodyBlocks(this.blocks, this.readAheadBytes, () => socket.resume());
      const readBuffer = this.reads.take();
      const response = new ResponseReader(req.method, body);
      let answered = false;
      let direct = false;
      const fail = (err: Error) => {
        if (response.done) {
          socket.destroy();
          return;
        }
        if (!answered) {
          answered = true;
          reject(err);
        } else body.fail(err);
        socket.destroy();
      };
      // tls.connect honours onread (Node >= 14.17) though @types/node lists it only for net sockets.
      const options: ConnectionOptions & { onread: OnReadOpts } = {
        host: target.host,
        port: target.port,
        ...(isIP(host) ? {} : { servername: host }),
        ...(this.context ? { secureContext: this.context } : {}),
        ALPNProtocols: ['http/1.1'],
        onread: {
          // Asked before every read: once the head is parsed and the body's length is known, the socket decrypts
          // straight into the body's block (no copy in JavaScript); the head and chunked bodies go through readBuffer.
          buffer: () => {
            direct = response.direct;
            return direct ? body.space() : readBuffer;
          },
          callback: (n: number, buf: Uint8Array): boolean => {
            try {
              const wasAnswered = answered;
              const more = direct ? response.received(n) : response.feed(buf.subarray(0, n));
              if (!wasAnswered && response.head) {
                answered = true;
                resolve({
                  status: response.head.status,
                  headers: response.head.headers,
                  body,
                  abort: () => {
                    // Asked for by the consumer: the response ends here, the closing socket is no failure.
                    response.done = true;
                    body.end();
                    socket.destroy();
                  },
                });
              }
              if (response.done) {
                body.end();
                socket.destroy();
                return false;
              }
              return more;
            } catch (err) {
              fail(err as Error);
              return false;
            }
          },
        },
      };
      const socket: TLSSocket = connect(options);
      this.open.add(socket);
      socket.setNoDelay(true);
      socket.once('secureConnect', () => socket.write(head));
      if (req.idleTimeoutMs !== undefined) {
        socket.setTimeout(req.idleTimeoutMs, () =>
          fail(new TransportError('timeout', `no data for ${req.idleTimeoutMs} ms`)),
        );
      }
      const onAbort = () => fail(abortError(req.signal!));
      req.signal?.addEventListener('abort', onAbort, { once: true });
      socket.on('error', (err: Error & { code?: string }) =>
        fail(
          err instanceof TransportError
            ? err
            : new TransportError(err.code ?? 'network', err.message, { cause: err }),
        ),
      );
      socket.on('close', () => {
        this.open.delete(socket);
        this.reads.give(readBuffer);
        req.signal?.removeEventListener('abort', onAbort);
        if (response.done) return;
        if (response.head && response.endsWithConnection) {
          response.done = true;
          body.end();
          return;
        }
        fail(
          new TransportError(
            'connection_closed',
            response.head
              ? 'the connection closed before the whole body arrived'
              : 'the connection closed before an answer',
          ),
        );
      });
    });
  }

  close(): void {
    for (const s of this.open) s.destroy();
    this.open.clear();
  }
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error('the request was aborted');
  err.name = 'AbortError';
  return err;
}
