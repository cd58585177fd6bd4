/**
 * The head-unit API: a small HTTP/1.1 API the agent serves to the car's screen, on a Unix socket (preferred) or a
 * loopback TCP port, never on a network interface.
 *
 *   GET  /v1/update            the pending update, the versions the car runs, the last outcome (head-unit.ts)
 *   POST /v1/update/accept     the driver accepts (the download may start)
 *   POST /v1/update/postpone   ask again after the campaign's interval (409 postpone_limit when none is left)
 *   POST /v1/update/decline    the update ends `declined`
 *   POST /v1/update/retry      after a failure: request the same version again (202)
 *   GET  /v1/events            progress and outcomes as Server-Sent Events (`event: <type>`, `data: <json>`)
 *
 * Errors are {"error":{"code","message"}} with 400/404/409/502. Security: whoever reaches the socket can answer
 * for the driver, so access is the socket's file permissions (0600 by default: the agent's user; give the head
 * unit's user a group and mode 0660). A TCP listener binds 127.0.0.1 only; since any web page in a browser on the
 * same machine can send requests to loopback, the server also refuses a Host header that is not loopback (DNS
 * rebinding) and POSTs that are not application/json (a browser cannot send those cross-origin without a CORS
 * preflight, which this server never allows). No backend credential is reachable through it.
 */
import { chmod, mkdtemp, rename, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import type { AgentEvent } from './agent-options.js';
import { DecisionError } from './conditions.js';
import { ApiError } from './errors.js';
import type { HeadUnit } from './head-unit.js';
import { describeError } from './logger.js';

export type HeadUnitListen =
  | { readonly socket: string; readonly mode?: number }
  | { readonly port: number; readonly host?: '127.0.0.1' | '::1' };

/** What the server needs of the agent: its head-unit facade and its event stream. */
export interface HeadUnitSource {
  readonly headUnit: HeadUnit;
  onEvent(listener: (e: AgentEvent) => void): () => void;
}

export interface HeadUnitServer {
  /** http://127.0.0.1:port, or the socket path. */
  readonly address: string;
  close(): Promise<void>;
}

const LOOPBACK_HOST = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/;

/** Agent events the head unit is told about (connection and inventory chatter is not for the driver). */
const SHOWN: ReadonlySet<AgentEvent['type']> = new Set([
  'accepted',
  'phase',
  'progress',
  'deferred',
  'consent',
  'outcome',
]);

export async function startHeadUnitServer(
  source: HeadUnitSource,
  listen: HeadUnitListen,
): Promise<HeadUnitServer> {
  const overSocket = 'socket' in listen;
  const streams = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    if (!overSocket && !LOOPBACK_HOST.test(req.headers.host ?? '')) {
      return send(res, 421, error('not_loopback', 'the head-unit API answers loopback host names only'));
    }
    handle(source, req, res, streams).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, error('internal', describeError(err)));
    });
  });
  if (overSocket) {
    await listenPrivately(server, listen.socket, listen.mode ?? 0o600);
  } else {
    await new Promise<void>((ok, fail) =>
      server.once('error', fail).listen(listen.port, listen.host ?? '127.0.0.1', ok),
    );
  }
  const unsubscribe = source.onEvent((e) => {
    if (!SHOWN.has(e.type)) return;
    const data = e.type === 'outcome' ? { ...e, message: source.headUnit.lastOutcome()?.message } : e;
    for (const res of streams) res.write(`event: ${e.type}\ndata: ${JSON.stringify(data)}\n\n`);
  });
  const address = overSocket
    ? listen.socket
    : `http://${listen.host === '::1' ? '[::1]' : '127.0.0.1'}:${(server.address() as AddressInfo).port}`;
  return {
    address,
    close: async () => {
      unsubscribe();
      for (const res of streams) res.end();
      server.closeAllConnections();
      await closeServer(server);
      if (overSocket) await rm(listen.socket, { force: true });
    },
  };
}

/**
 * Binds the socket in a fresh 0700 folder beside its path, sets its mode, then renames it into place: bound directly
 * at its path, the socket would exist with the umask's mode (often 0755, connectable by every local user) until
 * chmod ran, and a local process could connect in that window and answer for the driver.
 */
async function listenPrivately(server: Server, path: string, mode: number): Promise<void> {
  const staging = await mkdtemp(join(dirname(path), '.head-unit-'));
  try {
    const staged = join(staging, 's');
    await new Promise<void>((ok, fail) => server.once('error', fail).listen(staged, ok));
    await chmod(staged, mode);
    await rm(path, { force: true });
    await rename(staged, path);
  } catch (err) {
    server.close();
    throw err;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function handle(
  source: HeadUnitSource,
  req: IncomingMessage,
  res: ServerResponse,
  streams: Set<ServerResponse>,
): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const unit = source.headUnit;
  if (req.method === 'GET' && path === '/v1/update') return send(res, 200, await unit.view());
  if (req.method === 'GET' && path === '/v1/events') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    res.write(`event: state\ndata: ${JSON.stringify(await unit.view())}\n\n`);
    streams.add(res);
    req.on('close', () => streams.delete(res));
    return;
  }
  const action = /^\/v1\/update\/(accept|postpone|decline|retry)$/.exec(path ?? '')?.[1];
  if (!action) return send(res, 404, error('not_found', `no route ${req.method} ${path}`));
  if (req.method !== 'POST') return send(res, 405, error('method_not_allowed', 'use POST'));
  if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
    return send(res, 415, error('json_required', 'POST with content-type application/json'));
  }
  req.resume();
  try {
    if (action === 'retry') return send(res, 202, await unit.retry());
    await unit.decide(action as 'accept' | 'postpone' | 'decline');
    return send(res, 200, await unit.view());
  } catch (err) {
    if (err instanceof DecisionError) return send(res, 409, error(err.code, err.message));
    if (err instanceof ApiError) return send(res, err.transient ? 503 : 502, error(err.code, err.message));
    throw err;
  }
}

function error(code: string, message: string) {
  return { error: { code, message } };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((done) => server.close(() => done()));
}
