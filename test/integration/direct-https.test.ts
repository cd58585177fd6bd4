/**
 * The agent's image transport over real TLS sockets: a scripted server writes exact bytes (well-formed or not), and
 * the transport must frame bodies correctly, refuse malformed or smuggling-prone answers with a TransportError,
 * keep its memory to the read-ahead, and never hand out bytes that a later read overwrote.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { LocalCa } from '../../local/ca.js';
import { DirectHttpsTransport } from '../../vehicle/direct-https.js';
import { readBody, TransportError } from '../../vehicle/http-transport.js';
import { ChunkedDecoder } from '../../vehicle/http1-response.js';

let dir: string;
let ca: string;
let server: Server;
let port: number;
/** What the server does with the next connection: gets the request head, writes the answer. */
let answer: (socket: TLSSocket, requestHead: string) => void;
const requests: string[] = [];
/** TLS connections the server accepted. */
let connections = 0;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'direct-https-'));
  const localCa = await LocalCa.open(dir);
  const tls = await localCa.serverCertificate();
  ca = localCa.certPem;
  server = createServer({ key: tls.keyPem, cert: tls.certPem }, (socket) => {
    connections++;
    // Each request head on the connection is answered in turn (a kept-alive connection carries several GETs).
    let head = '';
    socket.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      for (let end = head.indexOf('\r\n\r\n'); end >= 0; end = head.indexOf('\r\n\r\n')) {
        const one = head.slice(0, end + 4);
        head = head.slice(end + 4);
        requests.push(one);
        answer(socket, one);
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
}, HOOK_TIMEOUT);

after(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

const url = (path = '/image.bin?X-Amz-Signature=abc') => `https://127.0.0.1:${port}${path}`;

/** Writes `data` in pieces of `size` bytes, waiting for drain, then ends. */
function writeSlowly(socket: TLSSocket, data: Buffer, size: number, end = true): void {
  let at = 0;
  const next = () => {
    while (at < data.length) {
      const piece = data.subarray(at, at + size);
      at += size;
      if (!socket.write(piece)) {
        socket.once('drain', next);
        return;
      }
    }
    if (end) socket.end();
  };
  next();
}

async function drain(
  body: AsyncIterable<Buffer>,
  pauseEvery = 0,
): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let n = 0;
  for await (const part of body) {
    hash.update(part);
    bytes += part.length;
    if (pauseEvery && ++n % pauseEvery === 0) await new Promise((r) => setTimeout(r, 1));
  }
  return { sha256: hash.digest('hex'), bytes };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('DirectHttpsTransport', { timeout: 30_000 }, () => {
  it('streams a Content-Length body byte-exact, with a slow and a fast consumer, in bounded memory', async () => {
    const image = randomBytes(9 * 1024 * 1024 + 321);
    answer = (socket) => {
      socket.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${image.length}\r\n\r\n`);
      writeSlowly(socket, image, 5000);
    };
    const t = new DirectHttpsTransport({ ca, readAheadBytes: 1024 * 1024 });
    try {
      for (const pauseEvery of [0, 7]) {
        const before = process.memoryUsage().arrayBuffers;
        const res = await t.send({ method: 'GET', url: url(), headers: { range: 'bytes=0-' } });
        assert.equal(res.status, 206);
        assert.equal(res.headers['content-length'], String(image.length));
        // Parts are only valid until the next is asked for: hashing each as it comes proves none was overwritten.
        const got = await drain(res.body, pauseEvery);
        assert.equal(got.bytes, image.length);
        assert.equal(got.sha256, sha256(image));
        const grown = process.memoryUsage().arrayBuffers - before;
        assert.ok(grown < 6 * 1024 * 1024, `memory held stays near the read-ahead (grew ${grown} bytes)`);
      }
      const head = requests.at(-1)!;
      assert.match(head, /^GET \/image\.bin\?X-Amz-Signature=abc HTTP\/1\.1\r\n/);
      assert.match(head, new RegExp(`\\r\\nHost: 127\\.0\\.0\\.1:${port}\\r\\n`));
      assert.match(head, /\r\nrange: bytes=0-\r\n/);
    } finally {
      t.close();
    }
  });

  it('decodes a chunked body and ignores what follows the declared length', async () => {
    const data = randomBytes(300_000);
    answer = (socket) => {
      const parts = [data.subarray(0, 1), data.subarray(1, 70_000), data.subarray(70_000)];
      const wire = Buffer.concat([
        Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'),
        ...parts.flatMap((p) => [Buffer.from(`${p.length.toString(16)};ext=1\r\n`), p, Buffer.from('\r\n')]),
        Buffer.from('0\r\nx-trailer: yes\r\n\r\n'),
      ]);
      writeSlowly(socket, wire, 777);
    };
    const t = new DirectHttpsTransport({ ca });
    try {
      const res = await t.send({ method: 'GET', url: url() });
      const got = await drain(res.body);
      assert.equal(got.sha256, sha256(data));

      answer = (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES');
      const short = await readBody(await t.send({ method: 'GET', url: url() }), 1024);
      assert.equal(short.toString(), 'hello');
    } finally {
      t.close();
    }
  });

  it('refuses malformed and ambiguous answers with a TransportError, never a partial success', async () => {
    const t = new DirectHttpsTransport({ ca });
    const cases: [string, string, RegExp][] = [
      ['not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n', /not an HTTP\/1\.1 response/],
      [
        'both framings',
        'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
        /both Transfer-Encoding and Content-Length/,
      ],
      [
        'conflicting lengths',
        'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
        /conflicting Content-Length/,
      ],
      ['bad length', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /unusable Content-Length/],
      [
        'unknown coding',
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n',
        /unsupported Transfer-Encoding/,
      ],
      ['header without colon', 'HTTP/1.1 200 OK\r\nbroken\r\n\r\n', /malformed response header/],
    ];
    try {
      for (const [name, wire, error] of cases) {
        answer = (socket) => socket.end(wire);
        await assert.rejects(
          t.send({ method: 'GET', url: url() }),
          (e: unknown) => e instanceof TransportError && error.test(e.message),
          name,
        );
      }
      // A head that never ends is cut at 64 KiB instead of being buffered forever.
      answer = (socket) =>
        writeSlowly(socket, Buffer.from(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(200_000)}`), 4096, false);
      await assert.rejects(t.send({ method: 'GET', url: url() }), /response head exceeds/);
      // Bad chunk framing fails the request or its body (whichever the bytes reach first), never yields data.
      answer = (socket) => socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n');
      await assert.rejects(
        (async () => drain((await t.send({ method: 'GET', url: url() })).body))(),
        /malformed chunk size/,
      );
      // A connection that closes before Content-Length bytes is an error, not a short image.
      answer = (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this');
      const cut = await t.send({ method: 'GET', url: url() });
      await assert.rejects(drain(cut.body), /closed before the whole body/);
    } finally {
      t.close();
    }
  });

  it('refuses header injection, plain http and servers the CA did not sign, before sending anything', async () => {
    const t = new DirectHttpsTransport({ ca });
    try {
      const sent = requests.length;
      await assert.rejects(
        t.send({ method: 'GET', url: url(), headers: { range: 'bytes=0-\r\nx-evil: 1' } }),
        /header "range" is not valid/,
      );
      await assert.rejects(t.send({ method: 'GET', url: `http://127.0.0.1:${port}/` }), /only https/);
      assert.equal(requests.length, sent, 'nothing reached the server');
      const other = new DirectHttpsTransport({}); // system CAs: the local CA is not among them
      await assert.rejects(
        other.send({ method: 'GET', url: url() }),
        (e: unknown) => e instanceof TransportError,
      );
      other.close();
    } finally {
      t.close();
    }
  });

  it('aborts: the signal cancels a request, abort() stops a body and the server sees the connection go', async () => {
    const t = new DirectHttpsTransport({ ca });
    let closed!: Promise<void>;
    answer = (socket) => {
      closed = new Promise((resolve) => socket.on('close', () => resolve()));
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n');
      writeSlowly(socket, randomBytes(4 * 1024 * 1024), 16384, false);
    };
    try {
      const res = await t.send({ method: 'GET', url: url() });
      let got = 0;
      for await (const part of res.body) {
        got += part.length;
        if (got > 1024 * 1024) {
          res.abort();
          break;
        }
      }
      await closed;
      const controller = new AbortController();
      answer = () => {}; // never answers
      const pending = t.send({ method: 'GET', url: url(), signal: controller.signal });
      setTimeout(() => controller.abort(new Error('stop now')), 50);
      await assert.rejects(pending, /stop now/);
      const idle = t.send({ method: 'GET', url: url(), idleTimeoutMs: 100 });
      await assert.rejects(idle, (e: unknown) => e instanceof TransportError && e.code === 'timeout');
    } finally {
      t.close();
    }
  });
});

describe('DirectHttpsTransport keep-alive', { timeout: 30_000 }, () => {
  const range = (head: string) => Number(/\r\nrange: bytes=(\d+)-/.exec(head)?.[1] ?? 0);

  it('carries successive GETs of ranges on one connection, and never a POST or an answer that said close', async () => {
    const image = randomBytes(200_000);
    answer = (socket, head) => {
      const from = range(head);
      const part = image.subarray(from, from + 50_000);
      socket.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${part.length}\r\n\r\n`);
      socket.write(part);
    };
    const t = new DirectHttpsTransport({ ca });
    try {
      const before = connections;
      const parts: Buffer[] = [];
      for (let from = 0; from < image.length; from += 50_000) {
        const res = await t.send({ method: 'GET', url: url(), headers: { range: `bytes=${from}-` } });
        parts.push(await readBody(res, 100_000));
      }
      assert.equal(sha256(Buffer.concat(parts)), sha256(image), 'every range byte-exact, in order');
      assert.equal(connections - before, 1, 'four ranges, one TLS connection');
      assert.match(requests.at(-1)!, /\r\nConnection: keep-alive\r\n/);

      // A POST is never sent on a kept connection (it cannot be repeated safely if that connection was stale).
      await readBody(await t.send({ method: 'POST', url: url(), body: '{}' }), 100_000);
      assert.equal(connections - before, 2, 'the POST opened its own');
      assert.match(requests.at(-1)!, /\r\nConnection: close\r\n/);

      // An answer that says close, or sends more than its length, leaves the connection unusable: a new one follows.
      const get = async () => readBody(await t.send({ method: 'GET', url: url() }), 10);
      answer = (socket) =>
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      await get();
      assert.equal(connections - before, 2, "this GET took the ranges' idle connection");
      answer = (socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n');
      await get();
      assert.equal(connections - before, 3, 'not the one whose answer said close');
      answer = (socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      await get();
      assert.equal(connections - before, 4, 'not the one that sent more than its length');
      await get();
      assert.equal(connections - before, 4, 'a clean answer keeps its connection');
    } finally {
      t.close();
    }
  });

  it('retries a GET once on a fresh connection when the server had closed the idle one', async () => {
    const t = new DirectHttpsTransport({ ca });
    try {
      let served = 0;
      // The server answers one request per connection and then closes it, as an idle timeout would.
      answer = (socket) => {
        if (!socket.writable) return; // a request that reached the closing connection gets no answer
        served++;
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${served % 10}`);
        setTimeout(() => socket.end(), 20);
      };
      const before = connections;
      const first = await readBody(await t.send({ method: 'GET', url: url() }), 10);
      await new Promise((r) => setTimeout(r, 200)); // the server has closed it by now
      const second = await readBody(await t.send({ method: 'GET', url: url() }), 10);
      assert.deepEqual([first.toString(), second.toString()], ['1', '2']);
      assert.equal(connections - before, 2, 'the stale connection was replaced, not failed');
    } finally {
      t.close();
    }
  });
});

describe('ChunkedDecoder', { timeout: 300_000 }, () => {
  it('decodes sizes split across reads and refuses data longer than its size', () => {
    const wire = Buffer.from('5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    for (let split = 1; split < wire.length; split++) {
      const d = new ChunkedDecoder();
      const out: Buffer[] = [];
      d.feed(wire.subarray(0, split), (p) => out.push(Buffer.from(p)));
      d.feed(wire.subarray(split), (p) => out.push(Buffer.from(p)));
      assert.equal(Buffer.concat(out).toString(), 'hello world', `split at ${split}`);
      assert.ok(d.finished);
    }
    assert.throws(
      () => new ChunkedDecoder().feed(Buffer.from('2\r\nabc\r\n'), () => {}),
      /chunk data longer than its size/,
    );
  });
});
