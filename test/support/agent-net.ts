/**
 * Network faults over real sockets for the agent tests:
 * - FaultProxy: a TCP proxy that counts bytes, cuts connections after N bytes, and can refuse connections for a
 *   while (network loss) and come back on the same port;
 * - HostileServer: an HTTPS server with a certificate from the same CA that answers downloads the way a
 *   compromised or broken server would (endless data, trickle).
 */

import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';

export function portOf(url: string): number {
  return Number(new URL(url).port);
}

export interface FaultProxy {
  readonly port: number;
  /** Bytes sent from the target to clients, all connections. */
  readonly bytesToClient: number;
  readonly connections: number;
  /** Cuts every open connection once `bytes` more have gone to the client (one shot), then optionally refuses
   * connections for `downForMs` (the network is gone for a while). */
  cutAfter(bytes: number, downForMs?: number): void;
  /** Cuts every open connection each time another `bytes` have gone to the client, `times` times. */
  cutEvery(bytes: number, times: number): void;
  /** Cuts made so far. */
  readonly cuts: number;
  /** Cuts everything now and refuses connections until resume(). */
  goDown(): Promise<void>;
  /** Black hole: connections stay open but no byte passes either way, new ones too (a dead cellular link).
   * thaw() lets new connections through again and drops the frozen ones. */
  freeze(): void;
  thaw(): void;
  /** Listens again on the same port. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

export async function startFaultProxy(targetPort: number, port = 0): Promise<FaultProxy> {
  const sockets = new Set<Socket>();
  let bytesToClient = 0;
  let connections = 0;
  let cutAt: number | undefined;
  let downFor = 0;
  let frozen = false;
  let cutEveryBytes = 0;
  let cutsLeft = 0;
  let cuts = 0;
  let server: Server | undefined;
  const cutAll = () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  const listen = (p: number) =>
    new Promise<Server>((resolve, reject) => {
      const s = createServer((client) => {
        connections++;
        const upstream = connect(targetPort, '127.0.0.1');
        sockets.add(client);
        sockets.add(upstream);
        const close = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', close);
        upstream.on('error', close);
        client.on('close', close);
        upstream.on('close', close);
        client.on('data', (data: Buffer) => {
          if (!frozen) upstream.write(data);
        });
        upstream.on('data', (data: Buffer) => {
          if (frozen) return;
          if (cutAt !== undefined && bytesToClient + data.length >= cutAt) {
            // Exactly at the byte asked for: a read from upstream can be 64 KiB on loopback, and counting the whole
            // of it while dropping it made "bytes served" depend on how warm the connection was.
            const head = data.subarray(0, cutAt - bytesToClient);
            bytesToClient += head.length;
            if (head.length > 0) client.write(head);
            cutAt = cutsLeft-- > 0 ? bytesToClient + cutEveryBytes : undefined;
            cuts++;
            cutAll();
            if (downFor > 0) {
              void closeServer().then(() => setTimeout(() => void reopen(), downFor));
            }
            return;
          }
          bytesToClient += data.length;
          if (!client.write(data)) {
            upstream.pause();
            client.once('drain', () => upstream.resume());
          }
        });
      });
      s.once('error', reject);
      s.listen(p, '127.0.0.1', () => resolve(s));
    });
  server = await listen(port);
  const boundPort = (server.address() as AddressInfo).port;
  const reopen = async () => {
    if (!server) server = await listen(boundPort);
  };
  const closeServer = async () => {
    const s = server;
    server = undefined;
    cutAll();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  return {
    port: boundPort,
    get bytesToClient() {
      return bytesToClient;
    },
    get connections() {
      return connections;
    },
    cutAfter(bytes, downForMs = 0) {
      cutAt = bytesToClient + bytes;
      downFor = downForMs;
    },
    cutEvery(bytes, times) {
      cutEveryBytes = bytes;
      cutsLeft = times - 1;
      cutAt = bytesToClient + bytes;
    },
    get cuts() {
      return cuts;
    },
    goDown: closeServer,
    resume: reopen,
    freeze() {
      frozen = true;
    },
    thaw() {
      cutAll();
      frozen = false;
    },
    stop: closeServer,
  };
}

export type HostileBehaviour =
  /** The requested range, correct, then garbage without end (the response never stops on its own). */
  | { kind: 'correct-then-endless'; image: Buffer }
  /** Garbage from the first byte, without end. */
  | { kind: 'endless-garbage' }
  /** Headers, then one byte every intervalMs. */
  | { kind: 'trickle'; intervalMs: number };

export interface HostileServer {
  readonly port: number;
  /** Body bytes this server managed to write (before clients hung up). */
  readonly bytesSent: number;
  readonly requests: number;
  stop(): Promise<void>;
}

/** An HTTPS server (certificate from the same CA as the real one) that misbehaves as told; never stops by itself. */
export async function startHostileServer(
  tls: { keyPem: string; certPem: string },
  behaviour: HostileBehaviour,
): Promise<HostileServer> {
  let bytesSent = 0;
  let requests = 0;
  const garbage = randomBytes(64 * 1024);
  const sockets = new Set<Socket>();
  const server: HttpsServer = createHttpsServer(
    { key: tls.keyPem, cert: tls.certPem },
    (req: IncomingMessage, res: ServerResponse) => {
      requests++;
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      const start = range ? Number(range[1]) : 0;
      const pump = (next: () => Buffer | undefined) => {
        const write = () => {
          for (;;) {
            if (res.destroyed) return;
            const data = next();
            if (!data) return;
            bytesSent += data.length;
            if (!res.write(data)) {
              res.once('drain', write);
              return;
            }
          }
        };
        res.on('close', () => res.removeAllListeners('drain'));
        write();
      };
      switch (behaviour.kind) {
        case 'correct-then-endless': {
          // Claims the proper range but never ends it: after the bytes asked for, garbage keeps coming.
          const end = range?.[2] ? Number(range[2]) : behaviour.image.length - 1;
          res.writeHead(range ? 206 : 200, {
            'content-range': `bytes ${start}-${end}/${behaviour.image.length}`,
            'transfer-encoding': 'chunked',
          });
          let sentCorrect = false;
          pump(() => {
            if (!sentCorrect) {
              sentCorrect = true;
              return behaviour.image.subarray(start, end + 1);
            }
            return garbage;
          });
          return;
        }
        case 'endless-garbage':
          res.writeHead(200, { 'transfer-encoding': 'chunked' });
          pump(() => garbage);
          return;
        case 'trickle': {
          res.writeHead(206, {
            'content-range': `bytes ${start}-${start + 1_000_000}/*`,
            'transfer-encoding': 'chunked',
          });
          const timer = setInterval(() => {
            if (res.destroyed) return clearInterval(timer);
            bytesSent += 1;
            res.write(garbage.subarray(0, 1));
          }, behaviour.intervalMs);
          res.on('close', () => clearInterval(timer));
          return;
        }
      }
    },
  );
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    get bytesSent() {
      return bytesSent;
    },
    get requests() {
      return requests;
    },
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
