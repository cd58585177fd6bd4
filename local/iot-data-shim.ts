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
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { isBackendPublishTopic } from '../protocol/topics.js';
import { parseSigV4Authorization, SigV4Error, verifySigV4 } from './sigv4.js';

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

class ShimError extends Error {
  constructor(
    readonly statusCode: number,
    readonly errorType: string,
    message: string,
  ) {
    super(message);
  }
}

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

function forbiddenUnlessSigned<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof SigV4Error) throw new ShimError(403, 'ForbiddenException', err.message);
    throw err;
  }
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
    const auth = forbiddenUnlessSigned(() => parseSigV4Authorization(req));
    const body = await readBody(req, maxBodyBytes);
    const credentials = props.credentials;
    if (credentials) {
      forbiddenUnlessSigned(() =>
        verifySigV4(req, auth, { rawPath, query, body }, { ...props, credentials, service: 'iotdata' }),
      );
    }

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
