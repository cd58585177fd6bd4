/**
 * The image download transport: HTTP/1.1 over TLS, reading into memory it owns.
 *
 * Node's https client hands every TLS record (16 KiB) to JavaScript as a freshly allocated Buffer. A 1 GiB image is
 * 65,536 of them, and V8 frees their memory only when its garbage collector gets round to it, so a download's
 * resident memory climbs by tens of MiB of dead buffers. Here the socket decrypts into one reused buffer (the `onread`
 * option of tls.connect), and body bytes are copied into a handful of blocks that are recycled as the consumer moves
 * on: nothing is allocated per record, and the memory held is the read-ahead, whatever the image size.
 *
 * Deliberately small: GET and POST, responses framed by Content-Length, chunked encoding or the end of the connection.
 * A GET whose response ended exactly at its Content-Length leaves its connection open for the next GET to the same
 * origin for a few seconds: chunk reuse asks for tens to hundreds of ranges of one URL, and a TLS handshake each
 * made that path slower than the whole raw download on a fast link. A POST always uses a connection of its own.
 * TLS certificates are checked against the URL's host as always (an explicit CA, or the system store). A part of the body is valid only until the next part
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
/**
 * How long an idle connection is kept for the next GET. Below the 5 s after which Node's HTTP servers (the local
 * S3 emulator) close idle connections, so a reused one was rarely closed under us; if it was, the request is retried
 * once on a fresh connection (a GET is safe to repeat).
 */
const IDLE_MS = 4000;

/** What one request does with the bytes its connection reads. */
interface ReadHandler {
  buffer(): Buffer;
  callback(n: number, buf: Uint8Array): boolean;
}

/** A TLS connection that carries one request at a time; GETs hand it back for the next GET to the same origin. */
interface Connection {
  readonly socket: TLSSocket;
  readonly key: string;
  readonly readBuffer: Buffer;
  handler: ReadHandler | undefined;
  idleTimer: NodeJS.Timeout | undefined;
}

export class DirectHttpsTransport implements HttpTransport {
  private readonly ca: string[] | undefined;
  private readonly readAheadBytes: number;
  private readonly open = new Set<TLSSocket>();
  /** Idle connections by origin (the address dialled and the name checked). */
  private readonly idle = new Map<string, Connection[]>();
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

  async send(req: HttpRequest): Promise<HttpResponse> {
    let url: URL;
    try {
      url = new URL(req.url);
    } catch {
      throw new TransportError('bad_url', 'not a URL');
    }
    if (url.protocol !== 'https:') throw new TransportError('insecure_url', 'only https URLs are used');
    // Only GETs keep their connection: a POST that broke on a reused connection might have been acted on, and is
    // not repeated.
    const keepAlive = req.method === 'GET';
    const head = requestHead(req, url, keepAlive);
    if (req.signal?.aborted) throw abortError(req.signal);

    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = url.port === '' ? 443 : Number(url.port);
    const target = this.options.route?.(host, port) ?? { host, port };
    const key = `${target.host}|${target.port}|${host}`;
    const reused = keepAlive ? this.takeIdle(key) : undefined;
    if (reused) {
      try {
        return await this.exchange(reused, req, head, keepAlive, true);
      } catch (err) {
        // The server closed the idle connection as it was reused (no answer at all): once more on a fresh one.
        if (!(err instanceof StaleConnection)) throw err;
      }
    }
    return this.exchange(this.connect(key, target, host), req, head, keepAlive, false);
  }

  close(): void {
    for (const s of this.open) s.destroy();
    this.open.clear();
    this.idle.clear();
  }

  private connect(key: string, target: { host: string; port: number }, host: string): Connection {
    const readBuffer = this.reads.take();
    // Reads go to whichever request holds the connection; bytes while none does are a server speaking out of
    // turn, and end the connection.
    // Set once connect() returns; it asks for its first read buffer before that.
    let conn: Connection | undefined;
    // tls.connect honours onread (Node >= 14.17) though @types/node lists it only for net sockets.
    const socket: TLSSocket = connect({
      host: target.host,
      port: target.port,
      ...(isIP(host) ? {} : { servername: host }),
      ...(this.context ? { secureContext: this.context } : {}),
      ALPNProtocols: ['http/1.1'],
      onread: {
        buffer: () => conn?.handler?.buffer() ?? readBuffer,
        callback: (n: number, buf: Uint8Array): boolean => {
          if (conn?.handler) return conn.handler.callback(n, buf);
          socket.destroy();
          return false;
        },
      },
    } as ConnectionOptions & { onread: OnReadOpts });
    const opened: Connection = { socket, key, readBuffer, handler: undefined, idleTimer: undefined };
    conn = opened;
    this.open.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => {
      this.open.delete(socket);
      this.dropIdle(opened);
      this.reads.give(readBuffer);
    });
    socket.on('error', () => {}); // reported to the request holding it (below); an idle one just closes
    return opened;
  }

  private takeIdle(key: string): Connection | undefined {
    const list = this.idle.get(key);
    for (let conn = list?.pop(); conn; conn = list?.pop()) {
      clearTimeout(conn.idleTimer);
      if (!conn.socket.destroyed) return conn;
    }
    return undefined;
  }

  private putIdle(conn: Connection): void {
    conn.handler = undefined;
    conn.socket.setTimeout(0);
    const list = this.idle.get(conn.key) ?? [];
    list.push(conn);
    this.idle.set(conn.key, list);
    conn.idleTimer = setTimeout(() => conn.socket.destroy(), IDLE_MS);
    conn.idleTimer.unref();
  }

  private dropIdle(conn: Connection): void {
    clearTimeout(conn.idleTimer);
    const list = this.idle.get(conn.key);
    const at = list?.indexOf(conn) ?? -1;
    if (list && at >= 0) list.splice(at, 1);
  }

  /** One request and its response on `conn`; a fresh connection writes once TLS is up. */
  private exchange(
    conn: Connection,
    req: HttpRequest,
    head: Buffer,
    keepAlive: boolean,
    reused: boolean,
  ): Promise<HttpResponse> {
    const socket = conn.socket;
    return new Promise<HttpResponse>((resolve, reject) => {
      let handler: ReadHandler | undefined;
      const body = new BodyBlocks(this.blocks, this.readAheadBytes, () => {
        // The consumer freed memory: read on, unless the connection has moved on to another request.
        if (conn.handler === handler) socket.resume();
      });
      const response = new ResponseReader(req.method, body);
      let answered = false;
      let direct = false;
      let settled = false;
      let gotBytes = false;
      const detach = () => {
        settled = true;
        req.signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        socket.off('close', onClose);
      };
      /** The response is complete: the connection goes back for the next GET, or is closed. */
      const finish = () => {
        body.end();
        detach();
        if (keepAlive && response.reusable && !socket.destroyed) this.putIdle(conn);
        else socket.destroy();
      };
      const fail = (err: Error) => {
        if (settled) return;
        detach();
        if (response.done) {
          socket.destroy();
          return;
        }
        if (!answered) {
          answered = true;
          reject(reused && !gotBytes && !req.signal?.aborted ? new StaleConnection(err) : err);
        } else body.fail(err);
        socket.destroy();
      };
      handler = {
        // Asked before every read: once the head is parsed and the body's length is known, the socket decrypts
        // straight into the body's block (no copy in JavaScript); the head and chunked bodies go through readBuffer.
        buffer: () => {
          direct = response.direct;
          return direct ? body.space() : conn.readBuffer;
        },
        callback: (n: number, buf: Uint8Array): boolean => {
          gotBytes = true;
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
                  if (settled) return;
                  response.done = true;
                  body.end();
                  detach();
                  socket.destroy();
                },
              });
            }
            if (response.done) {
              if (!settled) finish();
              return false;
            }
            return more;
          } catch (err) {
            fail(err as Error);
            return false;
          }
        },
      };
      conn.handler = handler;
      const onAbort = () => fail(abortError(req.signal!));
      const onError = (err: Error & { code?: string }) =>
        fail(
          err instanceof TransportError
            ? err
            : new TransportError(err.code ?? 'network', err.message, { cause: err }),
        );
      const onClose = () => {
        if (settled) return;
        if (response.head && response.endsWithConnection) {
          response.done = true;
          body.end();
          detach();
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
      };
      req.signal?.addEventListener('abort', onAbort, { once: true });
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.setTimeout(req.idleTimeoutMs ?? 0);
      socket.removeAllListeners('timeout');
      if (req.idleTimeoutMs !== undefined) {
        socket.on('timeout', () =>
          fail(new TransportError('timeout', `no data for ${req.idleTimeoutMs} ms`)),
        );
      }
      if (reused) {
        socket.write(head);
        socket.resume();
      } else socket.once('secureConnect', () => socket.write(head));
    });
  }
}

/** A reused connection broke before any byte of an answer: the server had closed it while it sat idle. */
class StaleConnection extends Error {
  constructor(readonly original: Error) {
    super(original.message, { cause: original });
  }
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error('the request was aborted');
  err.name = 'AbortError';
  return err;
}
