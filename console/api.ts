/**
 * The console's API client: the same routes as the CLI, each request signed with SigV4, answers typed by the
 * protocol's own schemas (protocol/), and which controls to show decided by the route table's roles (ROUTES).
 */
import type { OperatorRole } from '../protocol/roles.js';
import { ROUTES } from '../protocol/routes.js';
import { type Credentials, signedHeaders, signer } from './sigv4.js';

export interface ConsoleConfig {
  /** local: sign in with a local operator account's keys; aws: Cognito user pool + identity pool. */
  readonly mode: 'local' | 'aws';
  readonly region: string;
  /** Path prefix of the API on this origin ('' locally, '/v1' behind CloudFront). */
  readonly apiPath: string;
  /** AWS: the API Gateway host the signature is for (CloudFront forwards to it). */
  readonly apiHost?: string;
  readonly userPoolId?: string;
  readonly clientId?: string;
  readonly identityPoolId?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export type Query = Readonly<Record<string, string | number | undefined>>;

/** May this role call the route? (ROUTES `roles`, the same lists IAM and the local gateway enforce.) */
export function can(
  role: OperatorRole | 'iam' | 'unknown',
  method: 'GET' | 'POST',
  resource: string,
): boolean {
  const route = ROUTES.find((r) => r.method === method && r.resource === resource);
  if (!route) throw new Error(`no route ${method} ${resource}`);
  // A principal outside the four roles is whatever IAM says; show the control and let the API decide.
  if (role === 'iam') return true;
  return role !== 'unknown' && (route.roles?.includes(role) ?? false);
}

export class Api {
  private readonly sign;

  constructor(
    readonly config: ConsoleConfig,
    credentials: Credentials,
  ) {
    this.sign = signer(credentials, config.region);
  }

  url(path: string, query: Query = {}): URL {
    const url = new URL(`${this.config.apiPath}${path}`, location.origin);
    for (const [k, v] of Object.entries(query))
      if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
    return url;
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.call<T>('GET', path, undefined, query).then((r) => r.body);
  }

  async post<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
    return this.call<T>('POST', path, body);
  }

  async call<T>(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    query?: Query,
  ): Promise<{ status: number; body: T }> {
    const url = this.url(path, query);
    const text = body === undefined ? '' : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const signed = await signedHeaders(this.sign, method, url, headers, text, this.config.apiHost);
    const res = await fetch(url, {
      method,
      headers: { ...headers, ...signed },
      body: body === undefined ? undefined : text,
      credentials: 'omit',
      cache: 'no-store',
    });
    const answer = (await res.json().catch(() => undefined)) as
      | { error?: { code?: string; message?: string }; message?: string }
      | undefined;
    if (!res.ok) {
      throw new ApiError(
        res.status,
        answer?.error?.code ?? `http_${res.status}`,
        answer?.error?.message ?? answer?.message ?? res.statusText,
      );
    }
    return { status: res.status, body: answer as T };
  }
}
