/**
 * HTTP/1.1 framing for the image download transport (direct-https.ts), free of any socket: the request head it
 * writes, and the parser that reads one response as its bytes arrive (status line and headers, then the body by
 * Content-Length, chunked encoding or the end of the connection) into a body sink.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { type HttpRequest, TransportError } from './http-transport.js';

/** Largest response head accepted (status line and headers). */
const MAX_HEAD_BYTES = 64 * 1024;
/** Largest chunk-size line of a chunked body (hex digits, extensions). */
const MAX_CHUNK_LINE = 4096;

/** Where a response's body bytes go (BodyBlocks in body-blocks.ts). */
export interface BodySink {
  /** Still taking bytes (the consumer has not finished or given up). */
  readonly open: boolean;
  /** `n` bytes were written where the sink said (its space()). */
  commit(n: number): void;
  /** Copies bytes in. */
  push(data: Uint8Array): void;
  /** Whether the socket should keep reading. */
  wantsMore(): boolean;
}

/** The request line and headers; CR or LF in anything the caller passes would let it forge headers, so it throws. */
export function requestHead(req: HttpRequest, url: URL, keepAlive = false): Buffer {
  const lines = [
    `${req.method} ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    keepAlive ? 'Connection: keep-alive' : 'Connection: close',
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

export interface ResponseHead {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
}

/** Parses one response as its bytes arrive: the head, then the body by its framing, into a BodySink. */
export class ResponseReader {
  head: ResponseHead | undefined;
  done = false;
  /** The body runs until the server closes the connection (no length, not chunked). */
  endsWithConnection = false;
  /** Bytes arrived after the declared length: the connection's framing is off, so it is not used again. */
  overran = false;
  private headBytes: Buffer[] = [];
  private headLength = 0;
  private remaining = 0;
  private chunked: ChunkedDecoder | undefined;

  constructor(
    private readonly method: string,
    private readonly body: BodySink,
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
    if (take < n) this.overran = true;
    this.body.commit(take); // anything after the declared length is not this response's
    this.remaining -= take;
    if (this.remaining === 0) this.done = true;
    return !this.done && this.body.wantsMore();
  }

  /**
   * The connection can carry another request: the response ended exactly at its Content-Length (a chunked or
   * close-delimited body, or bytes past the length, leave the framing in doubt) and the server did not say close.
   */
  get reusable(): boolean {
    const connection = String(this.head?.headers.connection ?? '').toLowerCase();
    return (
      this.done &&
      this.head !== undefined &&
      !this.chunked &&
      !this.endsWithConnection &&
      !this.overran &&
      !connection.split(',').some((t) => t.trim() === 'close')
    );
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
      if (this.done) {
        if (rest.length > 0) this.overran = true;
        return false;
      }
    }
    if (rest.length === 0) return this.body.wantsMore();
    if (this.chunked) {
      this.chunked.feed(rest, (part) => this.body.push(part));
      if (this.chunked.finished) this.done = true;
    } else if (this.endsWithConnection) {
      this.body.push(rest);
    } else {
      const take = Math.min(rest.length, this.remaining);
      if (take < rest.length) this.overran = true;
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
