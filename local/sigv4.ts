/**
 * SigV4 verification for the local emulators (the IoT Data Plane shim and the DynamoDB front), so that, as on AWS,
 * only a holder of the local cloud's secret can act: the canonical request is recomputed from what arrived, the
 * body hash is checked, and the signature must be under the expected access key, service and region within 15
 * minutes of now. Header-signed requests only (the SDK clients of these services never presign).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export interface LocalCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** Why a request was refused; `kind` picks the service's own error name. */
export class SigV4Error extends Error {
  constructor(
    readonly kind: 'missing' | 'unknown_key' | 'mismatch',
    message: string,
  ) {
    super(message);
  }
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;
const MAX_SKEW_MS = 15 * 60 * 1000;

/** RFC 3986 encoding as SigV4 (and the SDK's signer) uses it. */
const escapeUri = (value: string) =>
  encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

const sha256Hex = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

export interface ParsedAuthorization {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
  readonly scope: string;
  readonly signedHeaders: string[];
  readonly signature: string;
}

/** The Authorization header's parts; a missing or malformed header is refused before anything else is read. */
export function parseAuthorization(req: IncomingMessage): ParsedAuthorization {
  const header = req.headers.authorization;
  const match = header === undefined ? null : AUTH_RE.exec(header);
  if (!match) throw new SigV4Error('missing', 'Missing or malformed SigV4 Authorization header');
  const credential = match[1]!.split('/');
  if (credential.length !== 5 || credential[4] !== 'aws4_request') {
    throw new SigV4Error('missing', 'Malformed SigV4 credential scope');
  }
  const [accessKeyId, date, region, service] = credential as [string, string, string, string];
  return {
    accessKeyId,
    date,
    region,
    service,
    scope: credential.slice(1).join('/'),
    signedHeaders: match[2]!.split(';'),
    signature: match[3]!,
  };
}

/** SigV4 canonical request for a non-S3 service: path escaped once more, query sorted, named headers only. */
function canonicalRequest(
  req: IncomingMessage,
  rawPath: string,
  query: ReadonlyMap<string, string>,
  signedHeaders: string[],
  payloadHash: string,
) {
  const segments: string[] = [];
  for (const segment of rawPath.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalized = `/${segments.join('/')}${segments.length > 0 && rawPath.endsWith('/') ? '/' : ''}`;
  const canonicalPath = escapeUri(normalized).replace(/%2F/g, '/');
  const canonicalQuery = [...query.entries()]
    .map(([k, v]) => [escapeUri(k), escapeUri(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonicalHeaders = signedHeaders
    .map((name) => {
      const value = req.headers[name];
      const text = Array.isArray(value) ? value.join(',') : (value ?? '');
      return `${name}:${text.trim().replace(/\s+/g, ' ')}\n`;
    })
    .join('');
  return [
    req.method,
    canonicalPath,
    canonicalQuery,
    canonicalHeaders,
    signedHeaders.join(';'),
    payloadHash,
  ].join('\n');
}

export interface VerifyOptions {
  readonly credentials: LocalCredentials;
  readonly service: string;
  /** Region the signature must be scoped to. @default any */
  readonly region?: string;
  /** Epoch ms. @default Date.now */
  readonly now?: () => number;
}

/** Throws a SigV4Error unless the request is signed with the credentials for this service. */
export function verifySigV4(
  req: IncomingMessage,
  auth: ParsedAuthorization,
  parts: { rawPath: string; query: ReadonlyMap<string, string>; body: Buffer },
  options: VerifyOptions,
): void {
  const mismatch = (message: string) => new SigV4Error('mismatch', message);
  if (auth.accessKeyId !== options.credentials.accessKeyId) {
    throw new SigV4Error('unknown_key', 'The security token included in the request is invalid');
  }
  if (auth.service !== options.service) throw mismatch(`Credential scope is not for ${options.service}`);
  if (options.region !== undefined && auth.region !== options.region)
    throw mismatch('Credential scope region mismatch');
  if (!auth.signedHeaders.includes('host') || !auth.signedHeaders.includes('x-amz-date')) {
    throw mismatch('host and x-amz-date must be signed');
  }
  const amzDate = req.headers['x-amz-date'];
  const dateMatch = typeof amzDate === 'string' ? /^(\d{8})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate) : null;
  if (!dateMatch || dateMatch[1] !== auth.date)
    throw mismatch('x-amz-date missing or not matching the scope');
  const d = dateMatch[1]!;
  const signedAt = Date.UTC(
    +d.slice(0, 4),
    +d.slice(4, 6) - 1,
    +d.slice(6, 8),
    +dateMatch[2]!,
    +dateMatch[3]!,
    +dateMatch[4]!,
  );
  if (Math.abs((options.now ?? Date.now)() - signedAt) > MAX_SKEW_MS) throw mismatch('Signature expired');

  const payloadHash = sha256Hex(parts.body);
  const declared = req.headers['x-amz-content-sha256'];
  if (declared !== undefined && declared !== payloadHash)
    throw mismatch('x-amz-content-sha256 does not match the body');

  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    auth.scope,
    sha256Hex(canonicalRequest(req, parts.rawPath, parts.query, auth.signedHeaders, payloadHash)),
  ].join('\n');
  let key = hmac(`AWS4${options.credentials.secretAccessKey}`, auth.date);
  for (const step of [auth.region, auth.service, 'aws4_request']) key = hmac(key, step);
  const expected = hmac(key, stringToSign);
  const given = Buffer.from(auth.signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw mismatch('The request signature does not match');
  }
}
