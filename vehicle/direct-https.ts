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
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isIP, type OnReadOpts } from 'node:net';
import { type ConnectionOptions, connect, type TLSSocket } from 'node:tls';
import { BufferPool } from './buffer-pool.js';
import { type HttpRequest, type HttpResponse, type HttpTransport, TransportError } from './http-transport.js';

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

/** Largest response head accepted (status line and headers). */
const MAX_HEAD_BYTES = 64 * 1024;
/** Largest chunk-size line of a chunked body (hex digits, extensions). */
const MAX_CHUNK_LINE = 4096;
const BLOCK_BYTES = 256 * 1024;
/** What a socket decrypts into; a TLS record is at most 16 KiB. */
const READ_BYTES = 64 * 1024;

export class DirectHttpsTransport implements HttpTransport {
  private readonly ca: string[] | undefined;
  private readonly readAheadBytes: number;
  private readonly open = new Set<TLSSocket>();
  /** Memory reused across requests (a download is a series of them): body blocks and socket read buffers. */
  private readonly blocks: BufferPool;
  private readonly reads = new BufferPool(READ_BYTES, 4);

  constructor(private readonly options: DirectHttpsTransportOptions = {}) {
    this.ca =
      options.ca === undefined ? undefined : typeof options.ca === 'string' ? [options.ca] : [...options.ca];
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
        ...(this.ca ? { ca: this.ca } : {}),
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

/** The request line and headers; CR or LF in anything the caller passes would let it forge headers, so it throws. */
function requestHead(req: HttpRequest, url: URL): Buffer {
  const lines = [
    `${req.method} ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    'Connection: close',
  ];
  const body = req.body;
  for (const [name, value] of Object.entries(req.headers ?? {})) {
    const lower = name.toLowerCase();
    if (lower === 'host' || lower === 'connection' || lower === 'content-length') continue;
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value))
      throw new TransportError('bad_header', `header ${JSON.stringify(name)} is not valid`);
    lines.push(`${name}: ${value}`);
  }
  if (body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  return body === undefined ? head : Buffer.concat([head, Buffer.from(body)]);
}

interface ResponseHead {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
}

/** Parses one response as its bytes arrive: the head, then the body by its framing, into BodyBlocks. */
class ResponseReader {
  head: ResponseHead | undefined;
  done = false;
  /** The body runs until the server closes the connection (no length, not chunked). */
  endsWithConnection = false;
  private headBytes: Buffer[] = [];
  private headLength = 0;
  private remaining = 0;
  private chunked: ChunkedDecoder | undefined;

  constructor(
    private readonly method: string,
    private readonly body: BodyBlocks,
  ) {}

  /** The next bytes can be read straight into the body's space (head parsed, body framed by length or close). */
  get direct(): boolean {
    return this.head !== undefined && !this.done && !this.chunked && this.body.open;
  }

  /** `n` bytes were read into body.space(); answers whether to keep reading. */
  received(n: number): boolean {
    if (this.endsWithConnection) {
      this.body.commit(n);
      return this.body.wantsMore();
    }
    const take = Math.min(n, this.remaining);
    this.body.commit(take); // anything after the declared length is not this response's
    this.remaining -= take;
    if (this.remaining === 0) this.done = true;
    return !this.done && this.body.wantsMore();
  }

  /** Answers whether to keep reading. Throws TransportError on a malformed response. */
  feed(data: Uint8Array): boolean {
    if (this.done) return false;
    let rest = data;
    while (!this.head) {
      // The head is small: it is copied out of the reused read buffer and parsed once complete.
      this.headBytes.push(Buffer.from(rest));
      this.headLength += rest.length;
      const all = Buffer.concat(this.headBytes);
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.headLength > MAX_HEAD_BYTES)
          throw new TransportError('bad_response', `response head exceeds ${MAX_HEAD_BYTES} bytes`);
        this.headBytes = [all];
        return true;
      }
      const head = parseHead(all.subarray(0, end).toString('latin1'));
      rest = all.subarray(end + 4);
      this.headBytes = [];
      this.headLength = 0;
      if (head.status >= 100 && head.status < 200) continue; // informational: the real answer follows
      this.head = head;
      this.frame(head);
      if (this.done) return false;
    }
    if (rest.length === 0) return this.body.wantsMore();
    if (this.chunked) {
      this.chunked.feed(rest, (part) => this.body.push(part));
      if (this.chunked.finished) this.done = true;
    } else if (this.endsWithConnection) {
      this.body.push(rest);
    } else {
      const take = Math.min(rest.length, this.remaining);
      this.body.push(rest.subarray(0, take));
      this.remaining -= take;
      if (this.remaining === 0) this.done = true; // anything after the declared length is not this response's
    }
    return !this.done && this.body.wantsMore();
  }

  private frame(head: ResponseHead): void {
    const te = head.headers['transfer-encoding'];
    const cl = head.headers['content-length'];
    if (this.method === 'HEAD' || head.status === 204 || head.status === 304) {
      this.done = true;
      return;
    }
    if (te !== undefined) {
      if (cl !== undefined)
        throw new TransportError(
          'bad_response',
          'both Transfer-Encoding and Content-Length (request smuggling?)',
        );
      if (String(te).trim().toLowerCase() !== 'chunked')
        throw new TransportError('bad_response', `unsupported Transfer-Encoding ${String(te)}`);
      this.chunked = new ChunkedDecoder();
      return;
    }
    if (cl !== undefined) {
      if (Array.isArray(cl) || !/^\d{1,15}$/.test(cl))
        throw new TransportError('bad_response', `unusable Content-Length ${String(cl)}`);
      this.remaining = Number(cl);
      if (this.remaining === 0) this.done = true;
      return;
    }
    this.endsWithConnection = true;
  }
}

function parseHead(text: string): ResponseHead {
  const lines = text.split('\r\n');
  const statusLine = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!statusLine) throw new TransportError('bad_response', 'not an HTTP/1.1 response');
  const headers: Record<string, string | string[]> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new TransportError('bad_response', 'malformed response header');
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const seen = headers[name];
    if (name === 'set-cookie') headers[name] = [...((seen as string[] | undefined) ?? []), value];
    else if (name === 'content-length' && seen !== undefined && seen !== value)
      throw new TransportError('bad_response', 'conflicting Content-Length headers');
    else
      headers[name] = seen === undefined || name === 'content-length' ? value : `${seen as string}, ${value}`;
  }
  return { status: Number(statusLine[1]), headers: headers as IncomingHttpHeaders };
}

/** Transfer-Encoding: chunked, decoded as it arrives (sizes, data, the CRLF after each, trailers ignored). */
export class ChunkedDecoder {
  finished = false;
  private state: 'size' | 'data' | 'data-end' | 'trailer' = 'size';
  private line = '';
  private left = 0;

  feed(data: Uint8Array, out: (part: Uint8Array) => void): void {
    let i = 0;
    while (i < data.length && !this.finished) {
      if (this.state === 'data') {
        const take = Math.min(this.left, data.length - i);
        out(data.subarray(i, i + take));
        i += take;
        this.left -= take;
        if (this.left === 0) this.state = 'data-end';
        continue;
      }
      // A line: the chunk size, the CRLF after data, or a trailer.
      const nl = data.indexOf(0x0a, i);
      const stop = nl < 0 ? data.length : nl;
      this.line += Buffer.from(data.buffer, data.byteOffset + i, stop - i).toString('latin1');
      if (this.line.length > MAX_CHUNK_LINE) throw new TransportError('bad_response', 'chunk line too long');
      i = stop;
      if (nl < 0) break;
      i++; // the LF
      const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line;
      this.line = '';
      if (this.state === 'size') {
        const size = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line);
        if (!size) throw new TransportError('bad_response', 'malformed chunk size');
        this.left = Number.parseInt(size[1]!, 16);
        this.state = this.left === 0 ? 'trailer' : 'data';
      } else if (this.state === 'data-end') {
        if (line !== '') throw new TransportError('bad_response', 'chunk data longer than its size');
        this.state = 'size';
      } else if (line === '') {
        this.finished = true; // the empty line after the (ignored) trailers
      }
    }
  }
}

/**
 * The body as an async iterable over pooled blocks: bytes are copied in as they are decrypted; the part handed to the
 * consumer goes back to the pool when it asks for the next one, and every block when the iteration ends. More than
 * the read-ahead in use pauses the socket (the kernel's window then slows the sender); it resumes once half is free.
 */
class BodyBlocks implements AsyncIterable<Buffer> {
  /** Filled blocks, with how much of each is filled. */
  private readonly ready: { block: Buffer; length: number }[] = [];
  private filling: Buffer | undefined;
  private fill = 0;
  private lent: Buffer | undefined;
  /** The socket was given the filling block's free end for its next read (space()). */
  private reserved = false;
  private held = 0;
  private paused = false;
  private ended = false;
  private released = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly maxBlocks: number;

  constructor(
    private readonly pool: BufferPool,
    readAheadBytes: number,
    private readonly resume: () => void,
  ) {
    this.maxBlocks = Math.max(2, Math.ceil(readAheadBytes / BLOCK_BYTES));
  }

  /** Still taking bytes (the consumer has not finished or given up). */
  get open(): boolean {
    return !this.released && !this.ended;
  }

  /** Where the next bytes go: the free end of the filling block (the socket decrypts into it; see commit). */
  space(): Buffer {
    if (!this.filling) {
      this.filling = this.pool.take();
      this.held++;
      this.fill = 0;
    }
    this.reserved = true;
    return this.filling.subarray(this.fill);
  }

  /** `n` bytes were written at space(). */
  commit(n: number): void {
    this.reserved = false;
    if (this.released || n === 0) return;
    this.fill += n;
    if (this.fill === BLOCK_BYTES) this.seal();
    else if (this.wake) this.seal(); // a consumer waiting for data gets what there is now
    this.notify();
  }

  /** Copies bytes in (the head's read, chunked bodies): the path of a direct read, one block's room at a time. */
  push(data: Uint8Array): void {
    for (let at = 0; at < data.length && !this.released; ) {
      const room = this.space();
      const n = Math.min(room.length, data.length - at);
      room.set(data.subarray(at, at + n));
      this.commit(n);
      at += n;
    }
  }

  /** Whether the socket should keep reading (false pauses it until the consumer frees blocks). */
  wantsMore(): boolean {
    this.paused = this.held >= this.maxBlocks;
    return !this.paused;
  }

  end(): void {
    this.reserved = false; // called once the socket reads no more
    if (this.fill > 0) this.seal();
    this.ended = true;
    this.notify();
  }

  /** The response broke off: what arrived is still handed out, then err is thrown (the socket reads no more). */
  fail(err: Error): void {
    this.reserved = false;
    this.failure ??= err;
    this.notify();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async (): Promise<IteratorResult<Buffer>> => {
        this.giveBack();
        for (;;) {
          const part = this.ready.shift();
          if (part) {
            this.lent = part.block;
            this.maybeResume();
            return { value: part.block.subarray(0, part.length), done: false };
          }
          // The filling block is handed out only while the socket is not about to write into it; otherwise the next
          // read seals it (commit, since a consumer is waiting).
          if (this.fill > 0 && !this.reserved) {
            this.seal();
            continue;
          }
          if (this.failure) {
            this.release();
            throw this.failure;
          }
          if (this.ended) {
            this.release();
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => {
            this.wake = resolve;
          });
        }
      },
      return: async (): Promise<IteratorResult<Buffer>> => {
        this.giveBack();
        this.ended = true;
        this.release();
        return { value: undefined, done: true };
      },
    };
  }

  /** The filling block, as far as filled, becomes the next part. */
  private seal(): void {
    this.ready.push({ block: this.filling!, length: this.fill });
    this.filling = undefined;
    this.fill = 0;
  }

  private giveBack(): void {
    if (!this.lent) return;
    this.pool.give(this.lent);
    this.lent = undefined;
    this.held--;
    this.maybeResume();
  }

  /** The iteration is over: every block goes back to the pool (nothing is handed out any more). */
  private release(): void {
    if (this.released) return;
    this.released = true;
    for (const r of this.ready.splice(0)) this.pool.give(r.block);
    // A block the socket may still write into is left to the garbage collector, never reused.
    if (this.filling && !this.reserved) this.pool.give(this.filling);
    this.filling = undefined;
    this.fill = 0;
    this.held = 0;
  }

  private maybeResume(): void {
    if (this.paused && !this.ended && this.held <= this.maxBlocks / 2) {
      this.paused = false;
      this.resume();
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
