/**
 * Local stand-in for the AWS IoT Data Plane Publish API, so the backend's real IoTDataPlaneClient publishes into
 * the local broker unchanged (endpoint override plus an https.Agent trusting the local CA).
 *
 * Wire shape, as sent by @aws-sdk/client-iot-data-plane's PublishCommand:
 *   POST /topics/{topic, one path segment with '/' as %2F}?qos=1[&retain=true][&contentType=..][&messageExpiry=..]
 *   content-type: application/octet-stream, body = the raw payload (possibly empty),
 *   SigV4 headers: authorization (AWS4-HMAC-SHA256, service iotdata), x-amz-date, x-amz-content-sha256.
 * The SDK takes any 200 as success; errors are read from the x-amzn-errortype header and the body's message.
 *
 * Policy, as the backend role is scoped on AWS: only `vehicle/updates/{VIN}/issue_details`, QoS 0 or 1, never
 * retained; anything else is 403. Requests must carry a SigV4 Authorization header; with `credentials` set, the
 * signature itself is verified too (canonical request recomputed, body hash checked, 15 minute clock skew).
 * MQTT 5 properties (contentType, messageExpiry, user properties...) are ignored: the broker speaks MQTT 3.1.1.
 */
import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { isBackendPublishTopic } from '../protocol/topics.js';

export interface IotDataShimProps {
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** 0 picks an ephemeral port. @default 0 */
  readonly port?: number;
  /** PEM private key and certificate (issued by the local CA for the host). */
  readonly key: string;
  readonly cert: string;
  /** Where publishes go: the local broker's in-process publish. */
  readonly broker: { publish(topic: string, payload: Buffer, qos: 0 | 1): Promise<void> };
  /**
   * Credentials the backend signs with. When set, SigV4 signatures are verified; when not, only the presence and
   * form of the Authorization header is checked. @default form check only
   */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** Region the signature must be scoped to (checked only with credentials). @default any */
  readonly region?: string;
  /** Largest payload, in bytes (IoT Core: 128 KB). @default 131072 */
  readonly maxBodyBytes?: number;
  /** Epoch ms; injectable for clock-skew tests. @default Date.now */
  readonly now?: () => number;
  /** @default silent */
  readonly log?: { warn(message: string, extra?: Record<string, unknown>): void };
}

export interface IotDataShim {
  readonly port: number;
  /** https://host:port, the IoTDataPlaneClient endpoint. */
  readonly url: string;
  stop(): Promise<void>;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;
const MAX_SKEW_MS = 15 * 60 * 1000;

class ShimError extends Error {
  constructor(
    readonly statusCode: number,
    readonly errorType: string,
    message: string,
  ) {
    super(message);
  }
}

/** RFC 3986 encoding as SigV4 (and the SDK's signer) uses it. */
const escapeUri = (value: string) =>
  encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

const sha256Hex = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

function parseQuery(rawQuery: string): Map<string, string> {
  const query = new Map<string, string>();
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    try {
      query.set(decodeURIComponent(key), decodeURIComponent(value));
    } catch {
      throw new ShimError(400, 'InvalidRequestException', 'malformed query string');
    }
  }
  return query;
}

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

interface ParsedAuthorization {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
  readonly scope: string;
  readonly signedHeaders: string[];
  readonly signature: string;
}

function parseAuthorization(req: IncomingMessage): ParsedAuthorization {
  const header = req.headers.authorization;
  const match = header === undefined ? null : AUTH_RE.exec(header);
  if (!match)
    throw new ShimError(403, 'ForbiddenException', 'Missing or malformed SigV4 Authorization header');
  const credential = match[1]!.split('/');
  if (credential.length !== 5 || credential[4] !== 'aws4_request') {
    throw new ShimError(403, 'ForbiddenException', 'Malformed SigV4 credential scope');
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

function verifySignature(
  req: IncomingMessage,
  auth: ParsedAuthorization,
  parts: { rawPath: string; query: Map<string, string>; body: Buffer },
  props: Pick<IotDataShimProps, 'region' | 'now'>,
  credentials: NonNullable<IotDataShimProps['credentials']>,
  service = 'iotdata',
): void {
  const forbidden = (message: string) => new ShimError(403, 'ForbiddenException', message);
  if (auth.accessKeyId !== credentials.accessKeyId) throw forbidden('Unknown access key');
  if (auth.service !== service) throw forbidden(`Credential scope is not for ${service}`);
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

/**
 * The same SigV4 check for another local AWS stand-in (local/job-queue.ts, service sqs): throws an error with a
 * statusCode of 403 when the request is unsigned or its signature does not verify.
 */
export function verifySigV4(
  req: IncomingMessage,
  body: Buffer,
  opts: {
    credentials: NonNullable<IotDataShimProps['credentials']>;
    region: string;
    service: string;
  },
): void {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const rawPath = q < 0 ? url : url.slice(0, q);
  const query = parseQuery(q < 0 ? '' : url.slice(q + 1));
  verifySignature(
    req,
    parseAuthorization(req),
    { rawPath, query, body },
    opts,
    opts.credentials,
    opts.service,
  );
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit)
    return Promise.reject(new ShimError(413, 'RequestEntityTooLargeException', 'Payload too large'));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        reject(new ShimError(413, 'RequestEntityTooLargeException', 'Payload too large'));
        return;
      }
      parts.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    'x-amzn-requestid': randomUUID(),
    ...headers,
  });
  res.end(text);
}

export async function startIotDataShim(props: IotDataShimProps): Promise<IotDataShim> {
  const host = props.host ?? '127.0.0.1';
  const maxBodyBytes = props.maxBodyBytes ?? 128 * 1024;

  async function handle(req: IncomingMessage): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const query = parseQuery(q < 0 ? '' : url.slice(q + 1));
    const match = /^\/topics\/([^/]+)$/.exec(rawPath);
    if (!match)
      throw new ShimError(404, 'ResourceNotFoundException', 'Only POST /topics/{topic} is emulated');
    if (req.method !== 'POST') throw new ShimError(405, 'MethodNotAllowedException', 'Use POST');

    // Authentication comes before anything about the request is acted on or revealed.
    const auth = parseAuthorization(req);
    const body = await readBody(req, maxBodyBytes);
    if (props.credentials) verifySignature(req, auth, { rawPath, query, body }, props, props.credentials);

    let topic: string;
    try {
      topic = decodeURIComponent(match[1]!);
    } catch {
      throw new ShimError(400, 'InvalidRequestException', 'Malformed topic');
    }
    if (!isBackendPublishTopic(topic)) {
      throw new ShimError(403, 'ForbiddenException', 'Not authorized to publish to this topic');
    }
    const qos = query.get('qos') ?? '0';
    if (qos !== '0' && qos !== '1') throw new ShimError(400, 'InvalidRequestException', 'qos must be 0 or 1');
    if (query.get('retain') === 'true') {
      throw new ShimError(403, 'ForbiddenException', 'Not authorized to publish retained messages');
    }
    await props.broker.publish(topic, body, qos === '1' ? 1 : 0);
  }

  const server: Server = createServer(
    { key: props.key, cert: props.cert, minVersion: 'TLSv1.2', requestTimeout: 30_000 },
    (req, res) => {
      handle(req).then(
        () => send(res, 200, { message: 'OK', traceId: randomUUID() }),
        (err: unknown) => {
          if (err instanceof ShimError) {
            if (err.statusCode >= 500 || err.statusCode === 403) {
              props.log?.warn('iot data publish refused', {
                status: err.statusCode,
                reason: err.message,
                url: req.url,
              });
            }
            // A refused upload is not read to its end: say so and drop the connection once answered.
            const closing = !req.complete;
            send(
              res,
              err.statusCode,
              { message: err.message },
              {
                'x-amzn-errortype': err.errorType,
                ...(closing ? { connection: 'close' } : {}),
              },
            );
            if (closing) res.once('finish', () => req.socket.destroySoon());
            return;
          }
          props.log?.warn('iot data publish failed', { error: String(err) });
          send(res, 500, { message: 'Internal error' }, { 'x-amzn-errortype': 'InternalFailureException' });
        },
      );
    },
  );
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(props.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('IoT Data shim has no TCP address');

  let stopped: Promise<void> | undefined;
  return {
    port: address.port,
    url: `https://${host}:${address.port}`,
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return stopped;
    },
  };
}
