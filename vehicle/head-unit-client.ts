/**
 * Example head-unit client (what the car's screen does), over the agent's head-unit API (head-unit-server.ts).
 * No dependency beyond node:http, so a head-unit team can read it as the reference of the protocol. Used by the
 * tests, by `npm run head-unit` (bin/head-unit.ts) and by the agent CLI's --driver option.
 */
import { request } from 'node:http';
import type { HeadUnitView } from './head-unit.js';

/** `socket` (a path) or `url` (http://127.0.0.1:port). */
export type HeadUnitAddress = { readonly socket: string } | { readonly url: string };

export class HeadUnitError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface HeadUnitEvent {
  readonly type: string;
  readonly data: Record<string, unknown>;
}

export class HeadUnitClient {
  constructor(private readonly address: HeadUnitAddress) {}

  view(): Promise<HeadUnitView> {
    return this.call('GET', '/v1/update') as Promise<HeadUnitView>;
  }

  accept(): Promise<HeadUnitView> {
    return this.call('POST', '/v1/update/accept') as Promise<HeadUnitView>;
  }

  postpone(): Promise<HeadUnitView> {
    return this.call('POST', '/v1/update/postpone') as Promise<HeadUnitView>;
  }

  decline(): Promise<HeadUnitView> {
    return this.call('POST', '/v1/update/decline') as Promise<HeadUnitView>;
  }

  retry(): Promise<{ version: string }> {
    return this.call('POST', '/v1/update/retry') as Promise<{ version: string }>;
  }

  /** Follows /v1/events (Server-Sent Events) until the returned function is called. */
  events(onEvent: (e: HeadUnitEvent) => void): () => void {
    const req = request({ ...this.target('/v1/events'), method: 'GET' }, (res) => {
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        buffer += text;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const type = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (data !== undefined) onEvent({ type, data: JSON.parse(data) as Record<string, unknown> });
        }
      });
      res.on('error', () => {});
    });
    req.on('error', () => {});
    req.end();
    return () => req.destroy();
  }

  private target(path: string) {
    return 'socket' in this.address
      ? { socketPath: this.address.socket, path, headers: { host: 'localhost' } }
      : { host: new URL(this.address.url).hostname, port: new URL(this.address.url).port, path };
  }

  private call(method: 'GET' | 'POST', path: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const headers = method === 'POST' ? { 'content-type': 'application/json', 'content-length': 2 } : {};
      const t = this.target(path);
      const req = request(
        { ...t, method, headers: { ...('headers' in t ? t.headers : {}), ...headers } },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => {
            const body = JSON.parse(Buffer.concat(parts).toString() || '{}') as {
              error?: { code: string; message: string };
            };
            const status = res.statusCode ?? 0;
            if (status >= 400) {
              reject(
                new HeadUnitError(status, body.error?.code ?? 'error', body.error?.message ?? String(status)),
              );
            } else resolve(body);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(method === 'POST' ? '{}' : undefined);
    });
  }
}

/**
 * A head unit without a screen (agent CLI --driver, demos): follows the events and gives `decision` to every
 * consent question. Returns the function that stops it.
 */
export function autoDriver(
  client: HeadUnitClient,
  decision: 'accept' | 'postpone' | 'decline',
  log: (line: string) => void = () => {},
): () => void {
  const answer = async () => {
    const view = await client.view();
    const pending = view.pending;
    if (pending?.consent?.state !== 'asking') return;
    log(
      `head unit: update ${pending.version} (${pending.size} bytes) asks the driver; answering ${decision}`,
    );
    await client[decision]().catch((err: unknown) => log(`head unit: ${(err as Error).message}`));
  };
  void answer().catch(() => {});
  return client.events((e) => {
    if (e.type === 'consent' && e.data.decision === 'ask') void answer().catch(() => {});
    if (e.type === 'outcome') log(`head unit: ${String(e.data.message)}`);
  });
}
