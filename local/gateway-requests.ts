/**
 * What the local gateway does with a raw HTTP request before any route logic: match its path against a route's
 * resource, read its body within a limit, take its headers, query and source as API Gateway puts them in a proxy
 * event, check a bearer token in constant time, and recognise a function's proxy result.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import type { RouteDefinition } from '../protocol/routes.js';

/** The account id the local cloud's ARNs carry. */
export const LOCAL_ACCOUNT = '000000000000';

export function sameSecret(given: string, expected: string): boolean {
  // Hashing first gives equal-length inputs, so neither the content nor the length leaks through timing.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer[ ]+(\S+)[ ]*$/i.exec(header ?? '');
  return m?.[1];
}

export function sourceIp(req: IncomingMessage): string {
  const ip = req.socket.remoteAddress ?? '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

export function headersOf(req: IncomingMessage): {
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

export function queryOf(rawQuery: string): {
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

export function isProxyResult(value: unknown): value is APIGatewayProxyResult {
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

export class BodyTooLarge extends Error {}
export class ClientGone extends Error {}

/** Reads at most `limit` bytes; past that it stops reading and throws BodyTooLarge. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
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

export function describe(err: unknown): Record<string, unknown> {
  return err instanceof Error
    ? { name: err.name, message: err.message, stack: err.stack }
    : { value: String(err) };
}

/**
 * The proxy event API Gateway gives a function for a request: headers and query in their single and multi-value
 * forms, the body as text, and the request context (the caller's IP, and the operator's ARN on operator routes).
 */
export function proxyEvent(
  req: IncomingMessage,
  r: {
    readonly route: RouteDefinition;
    readonly path: string;
    readonly rawQuery: string;
    readonly pathParameters: Record<string, string> | null;
    readonly body: Buffer;
    readonly requestId: string;
    readonly ip: string;
    /** The signed-in operator's ARN, on operator routes. */
    readonly userArn: string | null;
    /** host:port the gateway answers on. */
    readonly domainName: string;
    readonly now: number;
  },
): APIGatewayProxyEvent {
  const { route, path, body, requestId } = r;
  const { headers, multiValueHeaders } = headersOf(req);
  const query = queryOf(r.rawQuery);
  const method = req.method ?? 'GET';
  return {
    resource: route.resource,
    path,
    httpMethod: method,
    headers,
    multiValueHeaders,
    queryStringParameters: query.single,
    multiValueQueryStringParameters: query.multi,
    pathParameters: r.pathParameters,
    stageVariables: null,
    body: body.length ? body.toString('utf8') : null,
    isBase64Encoded: false,
    requestContext: {
      accountId: LOCAL_ACCOUNT,
      apiId: 'local',
      authorizer: null,
      domainName: r.domainName,
      httpMethod: method,
      path: `/local${path}`,
      protocol: `HTTP/${req.httpVersion}`,
      requestId,
      requestTimeEpoch: r.now,
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
        sourceIp: r.ip,
        user: null,
        userAgent: req.headers['user-agent'] ?? null,
        userArn: r.userArn,
      },
    },
  };
}
