/**
 * The storage emulators of the local cloud and what makes them behave like private AWS services: S3 on s3rver and
 * DynamoDB on dynalite, both over TLS from the local CA, both answering only requests signed with the data
 * folder's own random credentials, and S3 legal holds that make a published image permanent.
 */

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import S3rver from '@20minutes/s3rver';
import s3rverAccounts from '@20minutes/s3rver/lib/models/account.js';
import dynalite from 'dynalite';
import { recordOperation } from '../lambdas/adapters/operation-counter.js';
import type { TlsMaterial } from './ca.js';
import { transactWrite } from './dynamo-transactions.js';
import { readPrivateFile, writePrivateFile } from './files.js';
import { closeServer, listen } from './listen.js';
import { type LocalCredentials, parseAuthorization, SigV4Error, verifySigV4 } from './sigv4.js';

export const LOCAL_REGION = 'us-east-1';
export const FIRMWARE_BUCKET = 'ota-firmware';

export interface Started {
  readonly endpoint: string;
  close(): Promise<void>;
}

/**
 * S3 on @20minutes/s3rver over TLS. s3rver lets unsigned requests through as if every bucket were public; a
 * private bucket on AWS refuses them, so this front answers 403 AccessDenied to any request without a signature.
 * s3rver verifies signatures against its process-wide key registry, which ships with the fixed pair S3RVER/S3RVER
 * that anyone can read in its source: that pair is revoked and the data folder's own random pair registered.
 */
/**
 * The console (served by the gateway at https://127.0.0.1:<port>/console/) uploads release images straight to
 * their presigned URLs, a cross-origin PUT: the bucket allows it from the local origins, and exposes the ETag a
 * multipart upload's parts need. The stack's firmware bucket has the same rule for the console's domain.
 */
const CONSOLE_UPLOAD_CORS = `<CORSConfiguration><CORSRule><AllowedOrigin>https://127.0.0.1:*</AllowedOrigin>
<AllowedMethod>PUT</AllowedMethod><AllowedHeader>content-type</AllowedHeader><ExposeHeader>ETag</ExposeHeader>
<MaxAgeSeconds>600</MaxAgeSeconds></CORSRule></CORSConfiguration>`;

export async function startS3(
  tls: TlsMaterial,
  port: number,
  directory: string,
  credentials: LocalCredentials,
  holdsFile: string,
): Promise<Started & { servedBytes(keyPart?: string): number }> {
  const holds = new LegalHolds(holdsFile, credentials);
  const served = new Map<string, number>();
  const account = s3rverAccounts.DUMMY_ACCOUNT;
  account.revokeAccessKey('S3RVER');
  account.createKeyPair(credentials.accessKeyId, credentials.secretAccessKey);
  const s3rver = new S3rver({
    silent: true,
    directory,
    vhostBuckets: false,
    configureBuckets: [{ name: FIRMWARE_BUCKET, configs: [CONSOLE_UPLOAD_CORS] }],
  });
  await s3rver.configureBuckets();
  const app = s3rver.callback();
  const server = createServer({ key: tls.keyPem, cert: tls.certPem, minVersion: 'TLSv1.2' }, (req, res) => {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const signed = 'authorization' in req.headers || query.has('X-Amz-Algorithm') || query.has('Signature');
    // A CORS preflight carries no credentials on AWS either: S3 answers it from the bucket's CORS rules.
    const preflight = req.method === 'OPTIONS' && 'access-control-request-method' in req.headers;
    if (!signed && !preflight) return s3Error(res, 403, 'AccessDenied', 'Access Denied');
    if (holds.intercept(req, res, query)) return;
    if (req.method === 'GET') {
      // A presigned GET is a vehicle's download (the backend signs its own calls with a header): counted as an
      // operation, with its bytes, for the fleet's per-vehicle figures (bench/fleet-model.ts).
      const download = query.has('X-Amz-Algorithm');
      if (download) recordOperation('s3.download.GetObject');
      countServed(req, res, served, download ? (n) => recordOperation('s3.download.bytes', n) : undefined);
    }
    return app(req, res);
  });
  await listen(server, port).catch((err: unknown) => {
    s3rver.logger.close();
    account.revokeAccessKey(credentials.accessKeyId);
    throw err;
  });
  return {
    endpoint: endpointOf(server),
    servedBytes: (keyPart = '') =>
      [...served].reduce((sum, [path, n]) => (path.includes(keyPart) ? sum + n : sum), 0),
    close: async () => {
      await closeServer(server);
      s3rver.logger.close();
      account.revokeAccessKey(credentials.accessKeyId);
    },
  };
}

/**
 * DynamoDB on dynalite over TLS, persisted with LevelDB in `path`. dynalite checks no signature at all (any
 * process on the host could rewrite a vehicle's key and obtain its tokens), so its request handler only ever sees
 * requests whose SigV4 signature verifies with the data folder's credentials; the rest are answered as DynamoDB
 * does (400 UnrecognizedClientException or InvalidSignatureException). dynalite never listens on its own.
 */
export async function startDynamo(
  tls: TlsMaterial,
  caPem: string,
  port: number,
  path: string,
  credentials: LocalCredentials,
): Promise<Started> {
  const server = dynalite({
    ssl: true,
    key: tls.keyPem,
    cert: tls.certPem,
    // Without it dynalite falls back to the test CA it ships with.
    ca: caPem,
    path,
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  });
  guardWithSigV4(server, credentials);
  const close = async () => {
    const timer = setTimeout(() => server.closeAllConnections(), 2000);
    timer.unref();
    server.closeIdleConnections();
    // dynalite's close also closes LevelDB once pending writes are done, which releases its lock.
    await new Promise<void>((done, fail) => server.close((err) => (err ? fail(err) : done())));
    clearTimeout(timer);
  };
  try {
    await listen(server, port);
  } catch (err) {
    // dynalite opened LevelDB (and took its lock) when it was created, and only its server's close() releases it,
    // which needs a listening server: bind a free port just to close properly, so the data folder can be reused.
    await listen(server, 0).then(close, () => {});
    throw err;
  }
  return { endpoint: endpointOf(server), close };
}

/**
 * Body bytes of GET answers per object path: what the emulator served, so a test can tell that nothing was
 * downloaded (a vehicle waiting for its driver's consent fetches no image byte).
 */
function countServed(
  req: IncomingMessage,
  res: ServerResponse,
  served: Map<string, number>,
  onBytes?: (n: number) => void,
): void {
  const path = decodeURIComponent((req.url ?? '').split('?')[0] ?? '');
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const end = res.end.bind(res) as (chunk?: unknown, ...rest: unknown[]) => ServerResponse;
  const add = (chunk: unknown) => {
    if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) {
      const n = Buffer.byteLength(chunk);
      served.set(path, (served.get(path) ?? 0) + n);
      onBytes?.(n);
    }
  };
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    add(chunk);
    return write(chunk, ...rest);
  }) as typeof res.write;
  res.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== 'function') add(chunk);
    return end(chunk, ...rest);
  }) as typeof res.end;
}

function s3Error(res: ServerResponse, status: number, code: string, message: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * S3 Object Lock legal holds, which s3rver lacks (it would store a PutObjectLegalHold body as the object itself).
 * A signed PUT ?legal-hold with Status ON, verified here, holds the key for good (kept in a file of the data
 * folder); from then on every write to or delete of that key is refused with 403 AccessDenied: a leftover upload
 * URL, a multipart part, a delete. Stricter than AWS, where a PUT would add a version beside the held one, because
 * s3rver keeps no versions and the held bytes must stay the ones served.
 */
class LegalHolds {
  private readonly keys: Set<string>;

  constructor(
    private readonly file: string,
    private readonly credentials: LocalCredentials,
  ) {
    this.keys = new Set(existsSync(file) ? (JSON.parse(readPrivateFile(file)) as string[]) : []);
  }

  /** Answers the request itself (a legal-hold call, or a write to a held key) and says so; false lets it through. */
  intercept(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): boolean {
    const rawPath = (req.url ?? '/').split('?')[0]!;
    let key: string;
    try {
      key = decodeURIComponent(rawPath).replace(/^\/[^/]+\//, '');
    } catch {
      return false;
    }
    if (query.has('legal-hold')) {
      if (req.method !== 'PUT') {
        s3Error(res, 501, 'NotImplemented', 'Only PutObjectLegalHold is emulated');
        return true;
      }
      this.putLegalHold(req, res, rawPath, key);
      return true;
    }
    if (this.keys.has(key) && req.method !== 'GET' && req.method !== 'HEAD') {
      s3Error(res, 403, 'AccessDenied', 'The object is under a legal hold');
      return true;
    }
    return false;
  }

  private putLegalHold(req: IncomingMessage, res: ServerResponse, rawPath: string, key: string): void {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      try {
        const query = new Map(new URLSearchParams((req.url ?? '').split('?')[1] ?? ''));
        verifySigV4(
          req,
          parseAuthorization(req),
          { rawPath, query, body },
          {
            credentials: this.credentials,
            service: 's3',
            region: LOCAL_REGION,
          },
        );
      } catch (err) {
        if (err instanceof SigV4Error) return s3Error(res, 403, 'SignatureDoesNotMatch', err.message);
        return s3Error(res, 500, 'InternalError', 'Internal error');
      }
      const status = /<Status>(ON|OFF)<\/Status>/.exec(body.toString('utf8'))?.[1];
      if (status === undefined)
        return s3Error(res, 400, 'MalformedXML', 'LegalHold Status must be ON or OFF');
      // A hold is never lifted here, as the bucket policy on AWS denies PutObjectLegalHold with OFF to everyone.
      if (status === 'OFF') return s3Error(res, 403, 'AccessDenied', 'Legal holds cannot be removed');
      this.keys.add(key);
      writePrivateFile(this.file, JSON.stringify([...this.keys].sort()));
      res.writeHead(200, { 'content-length': 0 });
      res.end();
    });
  }
}

/** Largest request dynalite itself accepts. */
const DYNAMO_MAX_REQUEST_BYTES = 16 * 1024 * 1024;

/** Replaces the server's request handler with one that verifies SigV4 first and then replays the body to it. */
function guardWithSigV4(server: Server, credentials: LocalCredentials): void {
  const inner = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
  server.removeAllListeners('request');
  const refuse = (res: ServerResponse, type: string, message: string, status = 400) => {
    const body = JSON.stringify({ __type: `com.amazon.coral.service#${type}`, message });
    res.writeHead(status, {
      'content-type': 'application/x-amz-json-1.0',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= DYNAMO_MAX_REQUEST_BYTES) parts.push(chunk);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      if (size > DYNAMO_MAX_REQUEST_BYTES)
        return refuse(res, 'ValidationException', 'Request too large', 413);
      const body = Buffer.concat(parts);
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
      try {
        verifySigV4(
          req,
          parseAuthorization(req),
          { rawPath: q < 0 ? url : url.slice(0, q), query: new Map(query), body },
          { credentials, service: 'dynamodb', region: LOCAL_REGION },
        );
      } catch (err) {
        if (!(err instanceof SigV4Error)) return refuse(res, 'InternalFailure', 'Internal error', 500);
        if (err.kind === 'mismatch') return refuse(res, 'InvalidSignatureException', err.message);
        return refuse(
          res,
          'UnrecognizedClientException',
          'The security token included in the request is invalid.',
        );
      }
      if (req.headers['x-amz-target'] === 'DynamoDB_20120810.TransactWriteItems') {
        let input: { TransactItems?: Record<string, unknown>[] };
        try {
          input = JSON.parse(body.toString('utf8'));
        } catch {
          return refuse(res, 'SerializationException', 'Request body is not JSON');
        }
        void transactWrite(inner, req.headers, input).then(
          (out) => {
            const text = JSON.stringify(out.body);
            res.writeHead(out.status, {
              'content-type': 'application/x-amz-json-1.0',
              'content-length': Buffer.byteLength(text),
            });
            res.end(text);
          },
          () => refuse(res, 'InternalFailure', 'Internal error', 500),
        );
        return;
      }
      // dynalite reads the body with on('data')/on('end'): hand it the verified bytes in a stream of their own.
      const replay = Object.assign(Readable.from(body.length > 0 ? [body] : []), {
        headers: req.headers,
        method: req.method,
        url: req.url,
      }) as unknown as IncomingMessage;
      for (const handler of inner) handler(replay, res);
    });
  });
}

export function endpointOf(server: Server): string {
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** The emulators' access key pair, made once per data folder and kept owner-only. */
export function emulatorCredentials(file: string): LocalCredentials {
  if (existsSync(file)) {
    const stored = JSON.parse(readPrivateFile(file)) as Partial<LocalCredentials>;
    if (typeof stored.accessKeyId === 'string' && typeof stored.secretAccessKey === 'string') {
      return { accessKeyId: stored.accessKeyId, secretAccessKey: stored.secretAccessKey };
    }
  }
  const made: LocalCredentials = {
    accessKeyId: `LOCAL${randomBytes(8).toString('hex').toUpperCase()}`,
    secretAccessKey: randomBytes(30).toString('base64url'),
  };
  writePrivateFile(file, `${JSON.stringify(made, null, 2)}\n`);
  return made;
}
