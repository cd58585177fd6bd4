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
import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { auditEntryFor } from '../lambdas/core/audit.js';
import { INTERNAL_ERROR_BODY } from '../lambdas/core/errors.js';
import { FUNCTION_SETTINGS } from '../lambdas/core/functions.js';
import { json } from '../lambdas/core/http.js';
import { type FunctionName, ROUTES } from '../protocol/routes.js';
import {
  API_GATEWAY_INTEGRATION_TIMEOUT_MS,
  API_GATEWAY_MAX_PAYLOAD_BYTES,
  LAMBDA_SYNC_REQUEST_BYTES,
  LAMBDA_SYNC_RESPONSE_BYTES,
} from './aws-limits.js';
import { serveConsole } from './console-files.js';
import type { GatewayLogger, LocalGatewayProps, ProxyHandler } from './gateway-options.js';
import {
  BodyTooLarge,
  bearer,
  ClientGone,
  describe,
  isProxyResult,
  LOCAL_ACCOUNT,
  proxyEvent,
  readBody,
  sameSecret,
  sourceIp,
} from './gateway-requests.js';
import { type LambdaFailure, LambdaInvocationError } from './lambda-runtime.js';
import { closeServer, LOCALHOST, listen } from './listen.js';
import { type LocalOperatorAccount, principalArn } from './operator-accounts.js';
import { RouteTable } from './route-table.js';
import { type ParsedAuthorization, parseAuthorization, SigV4Error, verifySigV4 } from './sigv4.js';
import { type ThrottleSettings, TokenBuckets } from './throttle.js';

export type { GatewayLogger, HandlerLoader, LocalGatewayProps, ProxyHandler } from './gateway-options.js';
export { type ThrottleSettings, TokenBuckets };

const HOST = LOCALHOST;
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

export class LocalGateway {
  public readonly url: string;
  public readonly port: number;

  private readonly routes: RouteTable;
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
    this.routes = new RouteTable(props.routes ?? ROUTES);
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
    const found = this.routes.match(req.method ?? 'GET', path);
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

    const event = proxyEvent(req, {
      route,
      path,
      rawQuery: target.slice(path.length + 1),
      pathParameters,
      body,
      requestId,
      ip,
      userArn: route.auth === 'operator' && principal ? principalArn(principal) : null,
      domainName: `${HOST}:${this.port}`,
      now: this.clock(),
    });
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
