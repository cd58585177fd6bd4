/**
 * A local stand-in for API Gateway (REST, Lambda proxy integration): an HTTPS server on 127.0.0.1 that matches
 * requests against ROUTES, turns them into APIGatewayProxyEvent objects for the same handler modules that run on
 * Lambda, and writes their results back. It mirrors what API Gateway does before a function runs: unknown route
 * (404), wrong method (405), operator authorisation (IAM on AWS; here the local operator accounts' SigV4
 * signatures or the admin token: 401/403, and the route's roles: 403, recorded in the audit log), body size (the route's
 * limit, and never above API Gateway's 10 MB: 413), throttling (429), integration timeout (504), a function error
 * (timeout, out of memory, crash) or a response above Lambda's 6 MB (502), and a fixed body for anything
 * unexpected (500), never a stack.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { auditEntryFor } from '../lambdas/core/audit.js';
import { INTERNAL_ERROR_BODY } from '../lambdas/core/errors.js';
import { FUNCTION_SETTINGS } from '../lambdas/core/functions.js';
import { json } from '../lambdas/core/http.js';
import type { AuditEntry } from '../protocol/audit.js';
import { type FunctionName, ROUTES, type RouteDefinition } from '../protocol/routes.js';
import {
  API_GATEWAY_INTEGRATION_TIMEOUT_MS,
  API_GATEWAY_MAX_PAYLOAD_BYTES,
  LAMBDA_SYNC_REQUEST_BYTES,
  LAMBDA_SYNC_RESPONSE_BYTES,
} from './aws-limits.js';
import type { TlsMaterial } from './ca.js';
import { type ConsoleFiles, serveConsole } from './console-files.js';
import { type LambdaFailure, LambdaInvocationError } from './lambda-runtime.js';
import { closeServer, LOCALHOST, listen } from './listen.js';
import { type LocalOperatorAccount, principalArn } from './operator-accounts.js';
import { type ParsedAuthorization, parseAuthorization, SigV4Error, verifySigV4 } from './sigv4.js';

export type ProxyHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;
/** Returns the `handler` export of lambdas/<fn>/handler.ts, or a stand-in for it in tests. */
export type HandlerLoader = (fn: FunctionName) => Promise<ProxyHandler>;

export interface GatewayLogger {
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

export interface ThrottleSettings {
  /** Tokens added per second, per source IP. */
  readonly ratePerSecond: number;
  /** Bucket size: the largest burst a source IP may send at once. */
  readonly burst: number;
}

export interface LocalGatewayProps {
  /** Server key and certificate (the local CA's 127.0.0.1 certificate). */
  readonly tls: TlsMaterial;
  /** TCP port on 127.0.0.1; 0 picks a free one. */
  readonly port: number;
  /** Bearer token that operator routes require, standing in for IAM authorisation. */
  readonly adminToken: string;
  /**
   * Operator routes also take requests signed with SigV4 (service execute-api) with these credentials, as the
   * deployed API's IAM authorisation does, so `ota ... --aws` works against the local cloud too.
   * @default admin token only
   */
  readonly sigv4?: {
    readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
    readonly region: string;
  };
  /**
   * Local operator accounts (one per role): operator requests signed with their credentials act with their role,
   * and a route whose `roles` leave that role out answers 403. The admin token and the `sigv4` credentials act as
   * admin. @default none
   */
  readonly operators?: readonly LocalOperatorAccount[];
  /**
   * Records the refusals the gateway makes itself (a signed-in role calling a route it may not), as the
   * operator-api function records the mutations it answers. @default not recorded
   */
  readonly audit?: (entry: AuditEntry) => Promise<void>;
  /** The operator console, served at /console/ on the API's origin. @default not served */
  readonly console?: ConsoleFiles;
  readonly loadHandler: HandlerLoader;
  /** @default ROUTES */
  readonly routes?: readonly RouteDefinition[];
  /** Per-source-IP token bucket. @default { ratePerSecond: 100, burst: 200 } */
  readonly throttle?: ThrottleSettings;
  /** How long a handler may run before the caller gets 504, as API Gateway's integration timeout. @default 29000 */
  readonly timeoutMs?: number;
  /** @default JSON lines on stderr */
  readonly logger?: GatewayLogger;
  /** Milliseconds since the epoch. @default Date.now */
  readonly clock?: () => number;
  /**
   * Routes the local cloud itself answers, not a function (GET only, operator token): `GET /local/alerts` lists the
   * local alarms' records (local/alarms.ts). They have no AWS counterpart, so they are not in ROUTES or the
   * OpenAPI document: on AWS the alerts go to the stack's SNS topic. @default none
   */
  readonly localRoutes?: Readonly<Record<string, () => unknown>>;
}

const HOST = LOCALHOST;
const LOCAL_ACCOUNT = '000000000000';
/** Who holds the admin token, or the local cloud's own credentials (`ota --aws` against the local cloud). */
const ADMIN_TOKEN_HOLDER = { name: 'local-admin', role: 'admin' } as const;
const ROOT_CREDENTIALS_HOLDER = { name: 'local-root', role: 'admin' } as const;
type Principal = Pick<LocalOperatorAccount, 'name' | 'role'>;

const errorBody = (code: string, message: string) => ({ error: { code, message } });

const stderrLogger: GatewayLogger = {
  warn: (message, extra) =>
    process.stderr.write(
      `${JSON.stringify({ level: 'WARN', service: 'local-gateway', message, ...extra })}\n`,
    ),
  error: (message, extra) =>
    process.stderr.write(
      `${JSON.stringify({ level: 'ERROR', service: 'local-gateway', message, ...extra })}\n`,
    ),
};

interface CompiledRoute {
  readonly segments: readonly ({ literal: string } | { param: string })[];
  readonly resource: string;
}

function compile(resource: string): CompiledRoute {
  const segments = resource
    .split('/')
    .slice(1)
    .map((s) => {
      const m = /^\{([A-Za-z0-9_]+)\}$/.exec(s);
      return m ? { param: m[1]! } : { literal: s };
    });
  return { resource, segments };
}

/** Per-key token buckets; take() answers 0 when a request may pass, else the seconds to wait. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly settings: ThrottleSettings,
    private readonly clock: () => number,
  ) {
    if (!(settings.ratePerSecond > 0) || !(settings.burst >= 1)) {
      throw new Error('throttle needs ratePerSecond > 0 and burst >= 1');
    }
  }

  take(key: string): number {
    const now = this.clock();
    const { ratePerSecond, burst } = this.settings;
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * ratePerSecond);
    b.at = now;
    this.buckets.set(key, b);
    if (this.buckets.size > 10_000) this.evictFull(now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / ratePerSecond));
  }

  private evictFull(now: number): void {
    const { ratePerSecond, burst } = this.settings;
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * ratePerSecond >= burst) this.buckets.delete(key);
    }
  }
}

function sameSecret(given: string, expected: string): boolean {
  // Hashing first gives equal-length inputs, so neither the content nor the length leaks through timing.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer[ ]+(\S+)[ ]*$/i.exec(header ?? '');
  return m?.[1];
}

function sourceIp(req: IncomingMessage): string {
  const ip = req.socket.remoteAddress ?? '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

function headersOf(req: IncomingMessage): {
  headers: Record<string, string>;
  multiValueHeaders: Record<string, string[]>;
} {
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!;
    const value = req.rawHeaders[i + 1]!;
    headers[name] = value;
    multiValueHeaders[name] = [...(multiValueHeaders[name] ?? []), value];
  }
  return { headers, multiValueHeaders };
}

function queryOf(rawQuery: string): {
  single: Record<string, string> | null;
  multi: Record<string, string[]> | null;
} {
  if (rawQuery === '') return { single: null, multi: null };
  const single: Record<string, string> = {};
  const multi: Record<string, string[]> = {};
  for (const [k, v] of new URLSearchParams(rawQuery)) {
    single[k] = v;
    multi[k] = [...(multi[k] ?? []), v];
  }
  return Object.keys(single).length ? { single, multi } : { single: null, multi: null };
}

function isProxyResult(value: unknown): value is APIGatewayProxyResult {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  return (
    Number.isInteger(r.statusCode) &&
    (r.statusCode as number) >= 100 &&
    (r.statusCode as number) <= 599 &&
    (r.body === undefined || typeof r.body === 'string') &&
    (r.headers === undefined || (typeof r.headers === 'object' && r.headers !== null)) &&
    (r.multiValueHeaders === undefined ||
      (typeof r.multiValueHeaders === 'object' && r.multiValueHeaders !== null))
  );
}

class BodyTooLarge extends Error {}
class ClientGone extends Error {}

export class LocalGateway {
  public readonly url: string;
  public readonly port: number;

  private readonly routes: readonly (RouteDefinition & { compiled: CompiledRoute })[];
  private readonly handlers = new Map<FunctionName, Promise<ProxyHandler>>();
  private readonly buckets: TokenBuckets;
  private readonly logger: GatewayLogger;
  private readonly clock: () => number;
  private readonly timeoutMs: number;
  /** Access key id -> who signs with it: the local operator accounts, and the local cloud's own credentials. */
  private readonly signers = new Map<string, LocalOperatorAccount>();
  private readonly region: string | undefined;

  private constructor(
    private readonly server: Server,
    private readonly props: LocalGatewayProps,
  ) {
    const address = server.address() as AddressInfo;
    this.port = address.port;
    this.url = `https://${HOST}:${this.port}`;
    this.routes = (props.routes ?? ROUTES).map((r) => ({ ...r, compiled: compile(r.resource) }));
    this.clock = props.clock ?? Date.now;
    this.logger = props.logger ?? stderrLogger;
    this.timeoutMs = props.timeoutMs ?? API_GATEWAY_INTEGRATION_TIMEOUT_MS;
    this.region = props.sigv4?.region;
    if (props.sigv4) {
      const { accessKeyId, secretAccessKey } = props.sigv4.credentials;
      this.signers.set(accessKeyId, { ...ROOT_CREDENTIALS_HOLDER, accessKeyId, secretAccessKey });
    }
    for (const account of props.operators ?? []) this.signers.set(account.accessKeyId, account);
    this.buckets = new TokenBuckets(props.throttle ?? { ratePerSecond: 100, burst: 200 }, this.clock);
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      // node's own answer to an unparsable request is plain text; API Gateway answers JSON.
      if (!socket.writable) return socket.destroy();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const body = JSON.stringify(errorBody('bad_request', 'Malformed HTTP request'));
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => {
        this.logger.error('gateway failure', { error: describe(err) });
        if (!res.headersSent) this.send(res, json(500, INTERNAL_ERROR_BODY), randomUUID());
        else res.destroy();
      });
    });
  }

  static async start(props: LocalGatewayProps): Promise<LocalGateway> {
    if (props.adminToken.length < 16) throw new Error('the admin token must be at least 16 characters');
    const server = createServer({
      key: props.tls.keyPem,
      cert: props.tls.certPem,
      minVersion: 'TLSv1.2',
      headersTimeout: 10_000,
      requestTimeout: 60_000,
    });
    await listen(server, props.port);
    return new LocalGateway(server, props);
  }

  async close(): Promise<void> {
    await closeServer(this.server);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const ip = sourceIp(req);
    const wait = this.buckets.take(ip);
    if (wait > 0) {
      return this.refuse(
        req,
        res,
        requestId,
        json(429, errorBody('too_many_requests', 'Too many requests'), { 'retry-after': String(wait) }),
      );
    }

    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const path = q === -1 ? target : target.slice(0, q);
    const local = this.props.localRoutes?.[path];
    if (local && req.method === 'GET') {
      const token = bearer(req.headers.authorization);
      const answer =
        token !== undefined && sameSecret(token, this.props.adminToken)
          ? json(200, local())
          : json(
              401,
              errorBody('unauthorized', 'Local routes need the admin token: Authorization: Bearer <token>'),
            );
      return this.refuse(req, res, requestId, answer);
    }
    if (this.props.console && (await serveConsole(req, res, path, this.props.console))) return;
    const found = this.match(req.method ?? 'GET', path);
    if (found.kind === 'not_found') {
      return this.refuse(req, res, requestId, json(404, errorBody('not_found', 'No such route')));
    }
    if (found.kind === 'bad_path') {
      return this.refuse(
        req,
        res,
        requestId,
        json(400, errorBody('invalid_path', 'The request path is malformed')),
      );
    }
    if (found.kind === 'method_not_allowed') {
      return this.refuse(
        req,
        res,
        requestId,
        json(405, errorBody('method_not_allowed', `Use ${found.allow.join(', ')} on this path`), {
          allow: found.allow.join(', '),
        }),
      );
    }
    const { route, pathParameters } = found;

    let signed: { auth: ParsedAuthorization; account: LocalOperatorAccount } | undefined;
    let principal: Principal | undefined;
    const forbidden = (err: SigV4Error) =>
      json(403, errorBody('forbidden', `SigV4 authorisation failed: ${err.message}`));
    if (
      route.auth === 'operator' &&
      this.signers.size > 0 &&
      /^AWS4-HMAC-SHA256 /.test(req.headers.authorization ?? '')
    ) {
      try {
        const auth = parseAuthorization(req);
        const account = this.signers.get(auth.accessKeyId);
        if (!account) {
          throw new SigV4Error('unknown_key', 'The security token included in the request is invalid');
        }
        signed = { auth, account };
        principal = account;
      } catch (err) {
        if (err instanceof SigV4Error) return this.refuse(req, res, requestId, forbidden(err));
        throw err;
      }
    } else if (route.auth === 'operator') {
      principal = ADMIN_TOKEN_HOLDER;
      const token = bearer(req.headers.authorization);
      if (token === undefined || !sameSecret(token, this.props.adminToken)) {
        return this.refuse(
          req,
          res,
          requestId,
          json(
            401,
            errorBody('unauthorized', 'Operator routes need the admin token: Authorization: Bearer <token>'),
            {
              'www-authenticate': 'Bearer',
            },
          ),
        );
      }
    }

    const limit = Math.min(route.maxBodyBytes, API_GATEWAY_MAX_PAYLOAD_BYTES);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      return this.refuse(req, res, requestId, tooLarge(limit));
    }
    let body: Buffer;
    try {
      body = await readBody(req, limit);
    } catch (err) {
      if (err instanceof BodyTooLarge) return this.refuse(req, res, requestId, tooLarge(limit));
      if (err instanceof ClientGone) return;
      throw err;
    }

    if (signed) {
      // Checked once the body is read: the signature covers its hash.
      try {
        const query = new Map(new URLSearchParams(target.slice(path.length + 1)));
        verifySigV4(
          req,
          signed.auth,
          { rawPath: path, query, body },
          { credentials: signed.account, region: this.region, service: 'execute-api' },
        );
      } catch (err) {
        if (err instanceof SigV4Error) return this.send(res, forbidden(err), requestId);
        throw err;
      }
    }

    const event = this.event(
      req,
      route,
      path,
      target.slice(path.length + 1),
      pathParameters,
      body,
      requestId,
      ip,
      principal,
    );
    if (principal && route.roles && !route.roles.includes(principal.role)) {
      // IAM's refusal on AWS: the role's policy does not allow execute-api:Invoke on this route.
      const refusal = json(
        403,
        errorBody(
          'forbidden',
          `Role ${principal.role} may not call ${route.method} ${route.resource} (allowed: ${route.roles.join(', ')})`,
        ),
      );
      await this.recordRefusal(event, refusal);
      return this.send(res, refusal, requestId);
    }
    const eventBytes = Buffer.byteLength(JSON.stringify(event));
    if (eventBytes > LAMBDA_SYNC_REQUEST_BYTES) {
      // Lambda refuses the invocation (RequestEntityTooLargeException); API Gateway answers 413.
      return this.send(
        res,
        json(
          413,
          errorBody(
            'request_too_large',
            `The request (${eventBytes} bytes as a Lambda event) exceeds Lambda's ${LAMBDA_SYNC_REQUEST_BYTES} bytes`,
          ),
        ),
        requestId,
      );
    }
    const result = await this.invoke(route.fn, event, requestId);
    this.send(res, result, requestId);
  }

  private match(
    method: string,
    path: string,
  ):
    | { kind: 'not_found' }
    | { kind: 'bad_path' }
    | { kind: 'method_not_allowed'; allow: string[] }
    | { kind: 'ok'; route: RouteDefinition; pathParameters: Record<string, string> | null } {
    if (!path.startsWith('/')) return { kind: 'not_found' };
    const parts = path.split('/').slice(1);
    let best: { resource: string; score: number[]; raw: Record<string, string> } | undefined;
    for (const r of this.routes) {
      const segs = r.compiled.segments;
      if (segs.length !== parts.length) continue;
      const raw: Record<string, string> = {};
      const score: number[] = [];
      let ok = true;
      for (let i = 0; i < segs.length && ok; i++) {
        const seg = segs[i]!;
        const part = parts[i]!;
        if ('literal' in seg) {
          ok = seg.literal === part;
          score.push(1);
        } else {
          ok = part !== '';
          raw[seg.param] = part;
          score.push(0);
        }
      }
      // A literal segment beats a {param} at the same position, as in API Gateway.
      if (ok && (!best || compareScores(score, best.score) > 0)) best = { resource: r.resource, score, raw };
    }
    if (!best) return { kind: 'not_found' };
    const candidates = this.routes.filter((r) => r.resource === best.resource);
    const route = candidates.find((r) => r.method === method);
    if (!route) return { kind: 'method_not_allowed', allow: [...new Set(candidates.map((r) => r.method))] };
    const params: Record<string, string> = {};
    try {
      for (const [k, v] of Object.entries(best.raw)) params[k] = decodeURIComponent(v);
    } catch {
      return { kind: 'bad_path' };
    }
    return { kind: 'ok', route, pathParameters: Object.keys(params).length ? params : null };
  }

  private event(
    req: IncomingMessage,
    route: RouteDefinition,
    path: string,
    rawQuery: string,
    pathParameters: Record<string, string> | null,
    body: Buffer,
    requestId: string,
    ip: string,
    principal: Principal | undefined,
  ): APIGatewayProxyEvent {
    const { headers, multiValueHeaders } = headersOf(req);
    const query = queryOf(rawQuery);
    const method = req.method ?? 'GET';
    return {
      resource: route.resource,
      path,
      httpMethod: method,
      headers,
      multiValueHeaders,
      queryStringParameters: query.single,
      multiValueQueryStringParameters: query.multi,
      pathParameters,
      stageVariables: null,
      body: body.length ? body.toString('utf8') : null,
      isBase64Encoded: false,
      requestContext: {
        accountId: LOCAL_ACCOUNT,
        apiId: 'local',
        authorizer: null,
        domainName: `${HOST}:${this.port}`,
        httpMethod: method,
        path: `/local${path}`,
        protocol: `HTTP/${req.httpVersion}`,
        requestId,
        requestTimeEpoch: this.clock(),
        resourceId: createHash('sha256').update(route.resource).digest('hex').slice(0, 6),
        resourcePath: route.resource,
        stage: 'local',
        identity: {
          accessKey: null,
          accountId: null,
          apiKey: null,
          apiKeyId: null,
          caller: null,
          clientCert: null,
          cognitoAuthenticationProvider: null,
          cognitoAuthenticationType: null,
          cognitoIdentityId: null,
          cognitoIdentityPoolId: null,
          principalOrgId: null,
          sourceIp: ip,
          user: null,
          userAgent: req.headers['user-agent'] ?? null,
          userArn: route.auth === 'operator' && principal ? principalArn(principal) : null,
        },
      },
    };
  }

  private async recordRefusal(event: APIGatewayProxyEvent, refusal: APIGatewayProxyResult): Promise<void> {
    if (!this.props.audit || event.httpMethod === 'GET') return;
    try {
      await this.props.audit(auditEntryFor(event, refusal.statusCode, undefined, new Date(this.clock())));
    } catch (err) {
      this.logger.error('audit write failed', { error: describe(err) });
    }
  }

  private async invoke(
    fn: FunctionName,
    event: APIGatewayProxyEvent,
    requestId: string,
  ): Promise<APIGatewayProxyResult> {
    // The stand-in context of a handler run in this process; the worker runtime makes its own (lambda-worker.ts).
    const settings = FUNCTION_SETTINGS[fn];
    const deadline = this.clock() + settings.timeoutSeconds * 1000;
    const context: Context = {
      callbackWaitsForEmptyEventLoop: true,
      functionName: `fleet-ota-${fn}`,
      functionVersion: '$LATEST',
      invokedFunctionArn: `arn:aws:lambda:us-east-1:${LOCAL_ACCOUNT}:function:fleet-ota-${fn}`,
      memoryLimitInMB: String(settings.memoryMb),
      awsRequestId: randomUUID(),
      logGroupName: `/aws/lambda/fleet-ota-${fn}`,
      logStreamName: 'local',
      getRemainingTimeInMillis: () => Math.max(0, deadline - this.clock()),
      done: () => {},
      fail: () => {},
      succeed: () => {},
    };
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.timeoutMs);
    });
    try {
      const outcome = await Promise.race([this.handlerFor(fn).then((h) => h(event, context)), timedOut]);
      if (outcome === 'timeout') {
        this.logger.error('handler timed out', { requestId, fn, timeoutMs: this.timeoutMs });
        return json(504, errorBody('timeout', 'Endpoint request timed out'));
      }
      if (!isProxyResult(outcome)) {
        this.logger.error('malformed handler result', { requestId, fn });
        return json(502, INTERNAL_ERROR_BODY);
      }
      const size = Buffer.byteLength(JSON.stringify(outcome));
      if (size > LAMBDA_SYNC_RESPONSE_BYTES) {
        // Lambda refuses to return it ("Response payload size exceeded"): a function error, 502 at the gateway.
        this.logger.error('handler response too large', { requestId, fn, bytes: size });
        return json(
          502,
          errorBody(
            'function_response_too_large',
            `The function's response (${size} bytes) exceeds Lambda's ${LAMBDA_SYNC_RESPONSE_BYTES} bytes`,
          ),
        );
      }
      return outcome;
    } catch (err) {
      if (err instanceof LambdaInvocationError) {
        this.logger.error('function error', { requestId, fn, kind: err.kind, error: err.message });
        return json(502, errorBody(FAILURE_CODES[err.kind], err.message));
      }
      this.logger.error('handler failed', { requestId, fn, error: describe(err) });
      return json(500, INTERNAL_ERROR_BODY);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Loads each function once, like a warm Lambda; a failed load (init error) is retried on the next request. */
  private handlerFor(fn: FunctionName): Promise<ProxyHandler> {
    let loaded = this.handlers.get(fn);
    if (!loaded) {
      loaded = this.props.loadHandler(fn);
      this.handlers.set(fn, loaded);
      loaded.catch(() => this.handlers.delete(fn));
    }
    return loaded;
  }

  /**
   * Answers without running a function. When a request body is still unread, the answer carries
   * `connection: close`: node then closes the socket as soon as the answer is written, so the rest of the body
   * is never read, however much the client keeps sending.
   */
  private refuse(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    result: APIGatewayProxyResult,
  ): void {
    const complete =
      req.readableEnded ||
      ((req.headers['content-length'] ?? '0') === '0' && !req.headers['transfer-encoding']);
    if (!complete) res.setHeader('connection', 'close');
    this.send(res, result, requestId);
  }

  private send(res: ServerResponse, result: APIGatewayProxyResult, requestId: string): void {
    if (res.headersSent || res.destroyed) return;
    const body =
      result.body === undefined
        ? Buffer.alloc(0)
        : Buffer.from(result.body, result.isBase64Encoded ? 'base64' : 'utf8');
    for (const [name, value] of Object.entries(result.headers ?? {})) res.setHeader(name, String(value));
    for (const [name, values] of Object.entries(result.multiValueHeaders ?? {})) {
      res.setHeader(name, values.map(String));
    }
    res.setHeader('x-amzn-requestid', requestId);
    res.setHeader('content-length', body.length);
    res.statusCode = result.statusCode;
    res.end(body);
  }
}

function tooLarge(limit: number): APIGatewayProxyResult {
  return json(413, errorBody('body_too_large', `The request body exceeds ${limit} bytes`));
}

/** A Lambda function error reaches the caller as API Gateway's 502; the code says which one. */
const FAILURE_CODES: Record<LambdaFailure, string> = {
  timeout: 'function_timeout',
  out_of_memory: 'function_out_of_memory',
  crashed: 'function_crashed',
  init_failed: 'function_init_failed',
  handler_error: 'function_error',
};

function compareScores(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return 0;
}

/** Reads at most `limit` bytes; past that it stops reading and throws BodyTooLarge. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) {
        req.pause();
        reject(err);
      } else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return done(new BodyTooLarge());
      chunks.push(chunk);
    };
    const onEnd = () => done();
    const onError = () => done(new ClientGone());
    const onClose = () => {
      if (!req.readableEnded) done(new ClientGone());
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function describe(err: unknown): Record<string, unknown> {
  return err instanceof Error
    ? { name: err.name, message: err.message, stack: err.stack }
    : { value: String(err) };
}
