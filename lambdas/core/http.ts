/**
 * The thin HTTP layer every handler shares: find the route, bound and parse the body, validate it with the
 * route's schema, and map results and typed errors to API Gateway proxy responses. No AWS SDK here.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import type { z } from 'zod';
import { ProtocolError } from '../../protocol/errors.js';
import { type FunctionName, ROUTES, type RouteDefinition } from '../../protocol/routes.js';
import { VERSION_PATTERN, VIN_PATTERN } from '../../protocol/schemas.js';
import {
  BadRequestError,
  INTERNAL_ERROR_BODY,
  NotFoundError,
  OtaError,
  PayloadTooLargeError,
} from './errors.js';

const SECURITY_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
} as const;

export function json(
  statusCode: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyResult {
  return { statusCode, headers: { ...SECURITY_HEADERS, ...headers }, body: JSON.stringify(body) };
}

export interface ErrorLogger {
  warn(message: string, extra: Record<string, unknown>): void;
  error(message: string, extra: Record<string, unknown>): void;
}

export function errorResponse(err: unknown, logger: ErrorLogger): APIGatewayProxyResult {
  // A message that breaks the wire contract is the caller's mistake: 400 with the protocol's own code.
  if (err instanceof ProtocolError)
    err = new BadRequestError(err.code, err.message, { cause: err, context: err.context });
  if (err instanceof OtaError && err.statusCode < 500) {
    // The text goes under `reason`: `message` is reserved by the Powertools logger and would be dropped.
    logger.warn('request refused', {
      ...err.context,
      code: err.code,
      statusCode: err.statusCode,
      reason: err.message,
    });
    return json(err.statusCode, err.toBody(), err.statusCode === 429 ? { 'retry-after': '1' } : {});
  }
  logger.error('unhandled error', {
    error: err instanceof Error ? { name: err.name, message: err.message, stack: err.stack } : String(err),
  });
  return json(500, INTERNAL_ERROR_BODY);
}

export function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(event.headers ?? {})) {
    if (k.toLowerCase() === lower && v !== undefined) return v;
  }
  return undefined;
}

export interface RouteRequest<B> {
  readonly event: APIGatewayProxyEvent;
  readonly route: RouteDefinition;
  readonly body: B;
  readonly params: Record<string, string>;
  /** The query string validated against the route's query schema ({} for routes without one). */
  // biome-ignore lint/suspicious/noExplicitAny: each route's query type differs; its schema validated it already
  readonly query: any;
}

function describeIssue(issue: z.core.$ZodIssue): { code: string; message: string } {
  const path = issue.path.length ? issue.path.join('.') : 'body';
  if (issue.code === 'unrecognized_keys') {
    return { code: 'unknown_field', message: `${path}: unknown field(s) ${issue.keys.join(', ')}` };
  }
  return { code: 'invalid_request', message: `${path}: ${issue.message}` };
}

export function parseBody(event: APIGatewayProxyEvent, route: RouteDefinition): unknown {
  const raw = event.body ?? '';
  const text = event.isBase64Encoded ? Buffer.from(raw, 'base64').toString('utf8') : raw;
  if (!route.body) {
    if (text.length > 0) throw new BadRequestError('unexpected_body', 'This route takes no request body');
    return undefined;
  }
  if (Buffer.byteLength(text, 'utf8') > route.maxBodyBytes) {
    throw new PayloadTooLargeError('body_too_large', `The request body exceeds ${route.maxBodyBytes} bytes`);
  }
  if (text.trim() === '') throw new BadRequestError('missing_body', 'A JSON request body is required');
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new BadRequestError('malformed_json', 'The request body is not valid JSON');
  }
  const result = route.body.safeParse(data);
  if (!result.success) {
    const { code, message } = describeIssue(result.error.issues[0]!);
    throw new BadRequestError(code, message);
  }
  return result.data;
}

/** Validates the query string against the route's schema (listings: limit, next_token); 400 on anything else. */
export function parseQuery(event: APIGatewayProxyEvent, route: RouteDefinition): unknown {
  if (!route.query) return {};
  const result = route.query.safeParse(event.queryStringParameters ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const { message } = describeIssue(issue);
    throw new BadRequestError(
      `invalid_${String(issue.path[0] ?? 'query')}`,
      message.replace(/^body/, 'query'),
    );
  }
  return result.data;
}

const PARAM_PATTERNS: Record<string, { pattern: RegExp; code: string; message: string }> = {
  vin: {
    pattern: VIN_PATTERN,
    code: 'invalid_vin',
    message: 'VIN must be 17 characters: digits and letters except I, O, Q',
  },
  version: {
    pattern: VERSION_PATTERN,
    code: 'invalid_version',
    message: 'version must be a semantic version such as 3.0.1',
  },
  campaignId: {
    pattern: /^[a-z0-9][a-z0-9-]{2,63}$/,
    code: 'invalid_campaign_id',
    message: 'invalid campaign id',
  },
  releaseId: {
    pattern: /^[a-z0-9][a-z0-9._-]{0,63}$/,
    code: 'invalid_release_id',
    message: 'invalid release id',
  },
};

export function pathParams(event: APIGatewayProxyEvent): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(event.pathParameters ?? {})) {
    if (value === undefined) continue;
    const rule = PARAM_PATTERNS[name];
    if (rule && !rule.pattern.test(value)) throw new BadRequestError(rule.code, rule.message);
    out[name] = value;
  }
  return out;
}

/**
 * Builds the proxy handler of one function from its routes. Each route's handler receives the body already
 * validated against that route's schema.
 */
export function createRouter(
  fn: FunctionName,
  // biome-ignore lint/suspicious/noExplicitAny: each route's body type differs; its schema validated it already
  handlers: Record<string, (req: RouteRequest<any>) => Promise<APIGatewayProxyResult>>,
  logger: ErrorLogger,
): (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult> {
  const routes = ROUTES.filter((r) => r.fn === fn);
  for (const r of routes) {
    if (!handlers[`${r.method} ${r.resource}`]) throw new Error(`no handler for ${r.method} ${r.resource}`);
  }
  return async (event) => {
    try {
      const route = routes.find((r) => r.method === event.httpMethod && r.resource === event.resource);
      if (!route) throw new NotFoundError('not_found', 'No such route');
      const handle = handlers[`${route.method} ${route.resource}`]!;
      const params = pathParams(event);
      const body = parseBody(event, route);
      const query = parseQuery(event, route);
      return await handle({ event, route, body, params, query });
    } catch (err) {
      return errorResponse(err, logger);
    }
  };
}
