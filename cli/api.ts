/**
 * The operator API client: JSON in, JSON out, errors as ApiError with the API's stable {code, message}. How a
 * request is authorised is a small interface: the admin token locally, SigV4 on a deployed stack.
 */
import { readFileSync } from 'node:fs';
import type { Agent } from 'node:https';
import type { Connection } from './config.js';
import { ApiError, CliError } from './errors.js';
import { send } from './http.js';

export interface SignableRequest {
  readonly method: string;
  readonly url: URL;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export interface Authorizer {
  /** Headers that authorise this exact request. */
  headers(req: SignableRequest): Promise<Record<string, string>>;
  /** Said with a 401/403: where the credentials came from, never their value. */
  readonly hint: string;
  /** Values to mask in any output. */
  secrets(): readonly string[];
}

/** Bearer admin token read from a file on first use (commands that make no request never read it). */
export class AdminTokenAuthorizer implements Authorizer {
  private token?: string;

  constructor(private readonly file: string) {}

  get hint(): string {
    return `the admin token in ${this.file} was refused; pass the right one with --token-file or OTA_ADMIN_TOKEN_FILE`;
  }

  private read(): string {
    if (this.token === undefined) {
      let text: string;
      try {
        text = readFileSync(this.file, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new CliError(
          code === 'ENOENT'
            ? `no admin token file at ${this.file}; start the local cloud (npm start), pass --token-file or OTA_ADMIN_TOKEN_FILE, or use --aws for a deployed stack`
            : `cannot read the admin token file ${this.file} (${code ?? 'error'})`,
        );
      }
      const token = text.trim();
      if (token === '' || /\s/.test(token))
        throw new CliError(`the admin token file ${this.file} holds no single token`);
      this.token = token;
    }
    return this.token;
  }

  async headers(): Promise<Record<string, string>> {
    return { authorization: `Bearer ${this.read()}` };
  }

  secrets(): readonly string[] {
    return this.token ? [this.token] : [];
  }
}

export type Query = Readonly<Record<string, string | number | undefined>>;

export class ApiClient {
  constructor(
    private readonly connection: Connection,
    private readonly agent: Agent,
    private readonly auth: Authorizer,
    private readonly signal?: AbortSignal,
  ) {}

  get endpoint(): URL {
    return this.connection.endpoint;
  }

  /** The URL of an API path under the endpoint, keeping a stage prefix (…/prod) when the endpoint has one. */
  url(path: string, query: Query = {}): URL {
    const base = this.connection.endpoint.pathname.replace(/\/+$/, '');
    const url = new URL(this.connection.endpoint.origin);
    url.pathname = `${base}${path}`;
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    return url;
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.call<T>('GET', path, undefined, query);
  }

  /**
   * Every item of a paginated listing: follows next_token from page to page (protocol/routes.ts PAGE_LIMITS) and
   * answers the items of `field` in order, with the other fields of the last page.
   */
  async getAll<T>(
    path: string,
    field: string,
    query: Query = {},
  ): Promise<{ items: T[]; page: Record<string, unknown> }> {
    const items: T[] = [];
    let token: string | undefined;
    for (;;) {
      const page = await this.get<Record<string, unknown>>(path, { ...query, next_token: token });
      items.push(...((page[field] as T[] | undefined) ?? []));
      token = typeof page.next_token === 'string' ? page.next_token : undefined;
      if (!token) return { items, page };
    }
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  async call<T>(method: 'GET' | 'POST', path: string, body?: unknown, query?: Query): Promise<T> {
    const url = this.url(path, query);
    const text = body === undefined ? '' : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(text));
    }
    const signed = { ...headers, ...(await this.auth.headers({ method, url, headers, body: text })) };
    const res = await send(url, {
      method,
      headers: signed,
      body: body === undefined ? undefined : text,
      agent: this.agent,
      signal: this.signal,
      // Publishing streams the stored image through its digests before it answers.
      idleTimeoutMs: 15 * 60_000,
    });
    const parsed = parseJson(res.body);
    if (res.status >= 200 && res.status < 300) {
      if (parsed === undefined) {
        throw new CliError(`${method} ${url.pathname} answered ${res.status} without a JSON body`);
      }
      return parsed as T;
    }
    throw toApiError(res.status, parsed, res.body, this.auth.hint);
  }
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

export function toApiError(status: number, parsed: unknown, raw: Buffer, hint?: string): ApiError {
  const p = parsed as
    | { error?: { code?: unknown; message?: unknown }; message?: unknown; Message?: unknown }
    | undefined;
  const credentialHint = status === 401 || status === 403 ? hint : undefined;
  if (typeof p?.error?.code === 'string') {
    return new ApiError(status, p.error.code, String(p.error.message ?? ''), credentialHint);
  }
  // API Gateway's own refusals (IAM, throttling) carry {"message"} or {"Message"}.
  const message = p?.message ?? p?.Message;
  if (typeof message === 'string') return new ApiError(status, `http_${status}`, message, credentialHint);
  const text = raw.toString('utf8').trim().slice(0, 200);
  return new ApiError(status, `http_${status}`, text || 'the API answered with no body', credentialHint);
}
