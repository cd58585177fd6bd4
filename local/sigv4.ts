/**
 * AWS Signature Version 4 verification for the local stand-ins of AWS endpoints (the IoT Data Plane shim, the
 * gateway's IAM-authorised operator routes): the canonical request recomputed from what arrived, the body hash
 * checked, the scope's service and region, and a 15 minute clock skew, as AWS checks them.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** A request whose signature is missing, malformed or wrong (AWS answers 403). */
export class SigV4Error extends Error {}

export interface SigV4Expectations {
  /** The only credentials accepted. */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** Service of the credential scope: iotdata, execute-api... */
  readonly service: string;
  /** Region the scope must name. @default any */
  readonly region?: string;
  /** Epoch ms. @default Date.now */
  readonly now?: () => number;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;
const MAX_SKEW_MS = 15 * 60 * 1000;

/** RFC 3986 encoding as SigV4 (and the SDK's signer) uses it. */
const escapeUri = (value: string) =>
  encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

const sha256Hex = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

/** SigV4 canonical request for a non-S3 service: path escaped once more, query sorted, named headers only. */
function canonicalRequest(
  req: IncomingMessage,
  rawPath: string,
  query: Map<string, string>,
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

export interface ParsedAuthorization {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
  readonly scope: string;
  readonly signedHeaders: string[];
  readonly signature: string;
}

export function parseSigV4Authorization(req: IncomingMessage): ParsedAuthorization {
  const header = req.headers.authorization;
  const match = header === undefined ? null : AUTH_RE.exec(header);
  if (!match) throw new SigV4Error('Missing or malformed SigV4 Authorization header');
  const credential = match[1]!.split('/');
  if (credential.length !== 5 || credential[4] !== 'aws4_request') {
    throw new SigV4Error('Malformed SigV4 credential scope');
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

export function verifySigV4(
  req: IncomingMessage,
  auth: ParsedAuthorization,
  parts: { rawPath: string; query: Map<string, string>; body: Buffer },
  props: SigV4Expectations,
): void {
  const { credentials } = props;
  const forbidden = (message: string) => new SigV4Error(message);
  if (auth.accessKeyId !== credentials.accessKeyId) throw forbidden('Unknown access key');
  if (auth.service !== props.service) throw forbidden(`Credential scope is not for ${props.service}`);
  if (props.region !== undefined && auth.region !== props.region)
    throw forbidden('Credential scope region mismatch');
  if (!auth.signedHeaders.includes('host') || !auth.signedHeaders.includes('x-amz-date')) {
    throw forbidden('host and x-amz-date must be signed');
  }
  const amzDate = req.headers['x-amz-date'];
  const dateMatch = typeof amzDate === 'string' ? /^(\d{8})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate) : null;
  if (!dateMatch || dateMatch[1] !== auth.date)
    throw forbidden('x-amz-date missing or not matching the scope');
  const d = dateMatch[1]!;
  const signedAt = Date.UTC(
    +d.slice(0, 4),
    +d.slice(4, 6) - 1,
    +d.slice(6, 8),
    +dateMatch[2]!,
    +dateMatch[3]!,
    +dateMatch[4]!,
  );
  if (Math.abs((props.now ?? Date.now)() - signedAt) > MAX_SKEW_MS) throw forbidden('Signature expired');

  const payloadHash = sha256Hex(parts.body);
  const declared = req.headers['x-amz-content-sha256'];
  if (declared !== undefined && declared !== payloadHash)
    throw forbidden('x-amz-content-sha256 does not match the body');

  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    auth.scope,
    sha256Hex(canonicalRequest(req, parts.rawPath, parts.query, auth.signedHeaders, payloadHash)),
  ].join('\n');
  let key = hmac(`AWS4${credentials.secretAccessKey}`, auth.date);
  for (const step of [auth.region, auth.service, 'aws4_request']) key = hmac(key, step);
  const expected = hmac(key, stringToSign);
  const given = Buffer.from(auth.signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw forbidden('The request signature does not match');
  }
}
