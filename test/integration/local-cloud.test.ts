/**
 * The local cloud itself, over real sockets: TLS from the local CA, the S3 and DynamoDB emulators through the
 * real AWS SDK clients, persistence across restarts, and the gateway's API Gateway behaviour. The handlers are a
 * fake here, so this file tests the platform, not the backend (backend-flow.test.ts does that).
 */
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import {
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ListTablesCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { APIGatewayProxyEvent, Context } from 'aws-lambda';
import { INTERNAL_ERROR_BODY } from '../../lambdas/core/errors.js';
import { TABLES } from '../../lambdas/core/tables.js';
import { LocalCa } from '../../local/ca.js';
import { type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import {
  type GatewayLogger,
  type HandlerLoader,
  LocalGateway,
  type ProxyHandler,
} from '../../local/gateway.js';
import type { FunctionName } from '../../protocol/routes.js';
import { createCa, generateKeyAndCsr } from '../../protocol/x509.js';
import { https } from '../support/https.js';

const VIN = '1HGCM82633A004352';

interface Call {
  readonly fn: FunctionName;
  readonly event: APIGatewayProxyEvent;
  readonly context: Context;
}

/** Stands in for the handler modules: echoes the event, throws on demand, records what it saw. */
class FakeFunctions {
  readonly calls: Call[] = [];
  readonly loads: { fn: FunctionName; tableEnv: string | undefined }[] = [];

  readonly load: HandlerLoader = async (fn) => {
    this.loads.push({ fn, tableEnv: process.env.TABLE_RELEASES });
    const handler: ProxyHandler = async (event, context) => {
      this.calls.push({ fn, event, context });
      if (event.pathParameters?.releaseId === 'boom') {
        throw new Error('database password is hunter2 at /srv/secret/path.ts:12');
      }
      return {
        statusCode: 201,
        headers: { 'content-type': 'application/json', 'x-handled-by': fn },
        body: JSON.stringify({ fn, resource: event.resource }),
      };
    };
    return handler;
  };

  reset(): void {
    this.calls.length = 0;
  }
}

class CapturingLogger implements GatewayLogger {
  readonly entries: { level: string; message: string; extra?: Record<string, unknown> }[] = [];
  warn(message: string, extra?: Record<string, unknown>) {
    this.entries.push({ level: 'warn', message, extra });
  }
  error(message: string, extra?: Record<string, unknown>) {
    this.entries.push({ level: 'error', message, extra });
  }
}

let dataDir: string;
let cloud: LocalCloud;
const fake = new FakeFunctions();
const logger = new CapturingLogger();
let clients: { s3: S3Client; dynamo: DynamoDBClient } | undefined;

const start = () =>
  startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0 },
    loadHandler: fake.load,
    logger,
    presignTtlSeconds: 60,
  });

function s3Client(overrides: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({
    endpoint: cloud.endpoints.s3,
    region: 'us-east-1',
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    credentials: cloud.credentials,
    // An Agent instance, not agent options: for uploads over 2 MB the SDK sends Expect: 100-continue through a
    // fresh default Agent unless the agent is the caller's own, and that one would not trust the local CA.
    requestHandler: { httpsAgent: new Agent({ ca: cloud.caCertPem, keepAlive: true }) },
    ...overrides,
  });
}

function dynamoClient(): DynamoDBClient {
  return new DynamoDBClient({
    endpoint: cloud.endpoints.dynamodb,
    region: 'us-east-1',
    credentials: cloud.credentials,
    requestHandler: { httpsAgent: new Agent({ ca: cloud.caCertPem, keepAlive: true }) },
  });
}

function connectClients() {
  clients = { s3: s3Client(), dynamo: dynamoClient() };
  return clients;
}

function closeClients() {
  clients?.s3.destroy();
  clients?.dynamo.destroy();
  clients = undefined;
}

const api = (
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
) => https(`${cloud.endpoints.api}${path}`, { ...opts, ca: cloud.caCertPem });
const operator = (path: string, opts: { method?: string; body?: string } = {}) =>
  api(path, { ...opts, headers: { authorization: `Bearer ${cloud.adminToken}` } });

/** Expects a JSON error body with this status and code, and that no function ran. */
function refused(res: Awaited<ReturnType<typeof api>>, status: number, code: string) {
  assert.equal(res.status, status, res.raw.toString());
  assert.match(String(res.headers['content-type']), /^application\/json/);
  assert.equal(res.json?.error?.code, code);
  assert.equal(typeof res.json?.error?.message, 'string');
  assert.equal(fake.calls.length, 0, 'no function ran');
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-local-cloud-'));
  cloud = await start();
  connectClients();
}, HOOK_TIMEOUT);

after(async () => {
  closeClients();
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('TLS from the local CA', { timeout: 300_000 }, () => {
  const endpoints = () => Object.entries(cloud.endpoints);
  // The MQTT endpoint's mutual TLS is covered in mqtt.test.ts.
  const httpsEndpoints = () => endpoints().filter(([, url]) => url.startsWith('https:'));

  it('every endpoint serves a 127.0.0.1 certificate that chains to the CA', async () => {
    for (const [name, url] of httpsEndpoints()) {
      const issuer = await new Promise<string>((resolve, reject) => {
        const req = httpsRequest(url, { ca: cloud.caCertPem }, (res) => {
          const cert = (res.socket as TLSSocket).getPeerCertificate();
          res.resume();
          resolve(String(cert.issuer.CN));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(issuer, 'Fleet OTA local CA', name);
    }
  });

  it('is refused without the CA and with another CA, by node:https and by fetch', async () => {
    const stranger = await createCa('Fleet OTA local CA');
    for (const [name, url] of httpsEndpoints()) {
      for (const ca of [undefined, stranger.certPem]) {
        await assert.rejects(
          new Promise((resolve, reject) => {
            const req = httpsRequest(url, ca ? { ca } : {}, resolve);
            req.on('error', reject);
            req.end();
          }),
          (err: NodeJS.ErrnoException) => {
            assert.match(
              String(err.code),
              /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|CERT_SIGNATURE_FAILURE/,
              name,
            );
            return true;
          },
        );
      }
      await assert.rejects(fetch(url), (err: Error & { cause?: { code?: string } }) => {
        assert.match(String(err.cause?.code), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/, name);
        return true;
      });
    }
  });

  it('listens on 127.0.0.1 only', async () => {
    const others = [
      '127.0.0.2',
      '::1',
      ...Object.values(networkInterfaces())
        .flat()
        .filter((i) => i && !i.internal)
        .map((i) => i!.address),
    ];
    for (const [name, url] of endpoints()) {
      const { hostname, port } = new URL(url);
      assert.equal(hostname, '127.0.0.1', name);
      await new Promise<void>((resolve, reject) => {
        const s = connect(Number(port), '127.0.0.1', () => {
          s.destroy();
          resolve();
        });
        s.on('error', reject);
      });
      for (const host of others) {
        const outcome = await new Promise<string>((resolve) => {
          const s = connect({ port: Number(port), host, timeout: 1000 }, () => {
            s.destroy();
            resolve('connected');
          });
          s.on('error', (err: NodeJS.ErrnoException) => resolve(String(err.code)));
          s.on('timeout', () => {
            s.destroy();
            resolve('timeout');
          });
        });
        assert.notEqual(outcome, 'connected', `${name} must not accept connections on ${host}`);
      }
    }
  });
});

describe('S3 emulator', { timeout: 300_000 }, () => {
  it('round-trips bytes exactly, from a buffer and from a stream', async () => {
    const { s3 } = clients!;
    const image = randomBytes(3 * 1024 * 1024 + 17);
    await s3.send(new PutObjectCommand({ Bucket: cloud.bucket, Key: 'buffer.bin', Body: image }));
    const got = await s3.send(new GetObjectCommand({ Bucket: cloud.bucket, Key: 'buffer.bin' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(image));

    const chunks = Array.from({ length: 40 }, () => randomBytes(32 * 1024 + 3));
    const whole = Buffer.concat(chunks);
    await s3.send(
      new PutObjectCommand({
        Bucket: cloud.bucket,
        Key: 'stream.bin',
        Body: Readable.from(chunks),
        ContentLength: whole.length,
      }),
    );
    const streamed = await s3.send(new GetObjectCommand({ Bucket: cloud.bucket, Key: 'stream.bin' }));
    const back = Buffer.from(await streamed.Body!.transformToByteArray());
    assert.equal(back.length, whole.length, 'no chunk framing stored in the object');
    assert.equal(
      createHash('sha256').update(back).digest('hex'),
      createHash('sha256').update(whole).digest('hex'),
    );
  });

  it('refuses a tampered signature, a wrong secret and an unsigned request with 403', async () => {
    await clients!.s3.send(
      new PutObjectCommand({ Bucket: cloud.bucket, Key: 'private.bin', Body: 'private' }),
    );
    const tampering = s3Client();
    type Args = { request: { headers: Record<string, string> } };
    const tamper = (next: (args: Args) => Promise<unknown>) => async (args: Args) => {
      args.request.headers.authorization = args.request.headers.authorization!.replace(
        /Signature=([0-9a-f])/,
        (_m, c: string) => `Signature=${c === '0' ? '1' : '0'}`,
      );
      return next(args);
    };
    tampering.middlewareStack.addRelativeTo(tamper as never, {
      relation: 'after',
      toMiddleware: 'httpSigningMiddleware',
      name: 'tamperSignature',
    });
    const wrongSecret = s3Client({
      credentials: { ...cloud.credentials, secretAccessKey: 'not-the-secret' },
    });
    try {
      for (const client of [tampering, wrongSecret]) {
        await assert.rejects(
          client.send(new GetObjectCommand({ Bucket: cloud.bucket, Key: 'private.bin' })),
          (err: { name: string; $metadata: { httpStatusCode?: number } }) => {
            assert.equal(err.$metadata.httpStatusCode, 403);
            assert.equal(err.name, 'SignatureDoesNotMatch');
            return true;
          },
        );
      }
    } finally {
      tampering.destroy();
      wrongSecret.destroy();
    }
    const anonymous = await https(`${cloud.endpoints.s3}/${cloud.bucket}/private.bin`, {
      ca: cloud.caCertPem,
    });
    assert.equal(anonymous.status, 403);
    assert.match(anonymous.raw.toString(), /AccessDenied/);
    assert.doesNotMatch(anonymous.raw.toString(), /private/);
  });

  it('serves a presigned GET, and refuses it with a tampered signature or key or once expired', async () => {
    const body = randomBytes(70_000);
    await clients!.s3.send(
      new PutObjectCommand({ Bucket: cloud.bucket, Key: 'releases/presigned', Body: body }),
    );
    const url = await getSignedUrl(
      clients!.s3,
      new GetObjectCommand({ Bucket: cloud.bucket, Key: 'releases/presigned' }),
      { expiresIn: 60 },
    );
    const ok = await https(url, { ca: cloud.caCertPem });
    assert.equal(ok.status, 200);
    assert.ok(ok.raw.equals(body));

    const signature = new URL(url);
    const sig = signature.searchParams.get('X-Amz-Signature')!;
    signature.searchParams.set('X-Amz-Signature', `${sig[0] === 'a' ? 'b' : 'a'}${sig.slice(1)}`);
    assert.equal((await https(signature.toString(), { ca: cloud.caCertPem })).status, 403);

    await clients!.s3.send(
      new PutObjectCommand({ Bucket: cloud.bucket, Key: 'releases/other', Body: 'other' }),
    );
    const otherKey = new URL(url);
    otherKey.pathname = otherKey.pathname.replace('presigned', 'other');
    assert.equal((await https(otherKey.toString(), { ca: cloud.caCertPem })).status, 403);

    const shortLived = await getSignedUrl(
      clients!.s3,
      new GetObjectCommand({ Bucket: cloud.bucket, Key: 'releases/presigned' }),
      { expiresIn: 1 },
    );
    await sleep(2100);
    assert.equal((await https(shortLived, { ca: cloud.caCertPem })).status, 403);
  });
});

describe('DynamoDB emulator', { timeout: 300_000 }, () => {
  it('has every table of TABLES with its keys and GSIs', async () => {
    const { dynamo } = clients!;
    const listed = await dynamo.send(new ListTablesCommand({}));
    for (const table of TABLES) {
      const name = cloud.tables[table.name];
      assert.ok(listed.TableNames?.includes(name), name);
      const { Table } = await dynamo.send(new DescribeTableCommand({ TableName: name }));
      assert.equal(Table?.TableStatus, 'ACTIVE');
      const keyOf = (schema: typeof Table.KeySchema) => [
        schema?.find((k) => k.KeyType === 'HASH')?.AttributeName,
        schema?.find((k) => k.KeyType === 'RANGE')?.AttributeName,
      ];
      assert.deepEqual(keyOf(Table?.KeySchema), [table.partitionKey, table.sortKey]);
      assert.deepEqual(
        (Table?.GlobalSecondaryIndexes ?? []).map((i) => [i.IndexName, ...keyOf(i.KeySchema)]),
        table.indexes.map((i) => [i.indexName, i.partitionKey, i.sortKey]),
      );
    }
    assert.ok(
      TABLES.some((t) => t.indexes.length > 0),
      'at least one GSI is checked',
    );
  });
});

describe('environment for the functions', { timeout: 300_000 }, () => {
  it('is set per ENV before a function is loaded, and each function is loaded once', async () => {
    assert.equal(process.env.TABLE_RELEASES, cloud.tables.releases);
    for (const table of TABLES) assert.equal(process.env[table.envVar], cloud.tables[table.name]);
    assert.equal(process.env.FIRMWARE_BUCKET, cloud.bucket);
    assert.equal(process.env.PRESIGN_TTL_SECONDS, '60');
    assert.equal(process.env.AWS_ENDPOINT_URL_S3, cloud.endpoints.s3);
    assert.equal(process.env.AWS_ENDPOINT_URL_DYNAMODB, cloud.endpoints.dynamodb);
    assert.equal(process.env.OTA_ENDPOINT_CA_FILE, cloud.caFile);
    assert.equal(readFileSync(cloud.caFile, 'utf8'), cloud.caCertPem);
    assert.equal(process.env.LOCAL_CA_DIR, join(cloud.dataDir, 'ca'));
    assert.equal(process.env.AWS_REGION, 'us-east-1');
    assert.equal(process.env.AWS_ACCESS_KEY_ID, cloud.credentials.accessKeyId);
    const signing = createPrivateKey(readFileSync(process.env.LOCAL_SIGNING_KEY_FILE!, 'utf8'));
    assert.equal(signing.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(cloud.releaseKeyFiles, 'a development release key is made when none is given');
    assert.deepEqual(JSON.parse(process.env.RELEASE_PUBLIC_KEYS!), [
      readFileSync(cloud.releaseKeyFiles.publicKey, 'utf8'),
    ]);

    fake.reset();
    for (let i = 0; i < 3; i++)
      assert.equal((await api('/auth/challenge', { method: 'POST', body: '{}' })).status, 201);
    assert.equal((await api(`/updates/${VIN}`)).status, 201);
    const loads = fake.loads.filter((l) => l.fn === 'auth-api');
    assert.equal(loads.length, 1, 'loaded once, like a warm Lambda');
    assert.equal(loads[0]?.tableEnv, cloud.tables.releases, 'the environment was set when it loaded');
  });

  it('keeps secrets in owner-only files', () => {
    for (const file of [
      cloud.adminTokenFile!,
      join(cloud.dataDir, 'ca', 'ca.key.pem'),
      join(cloud.dataDir, 'ca', 'server.key.pem'),
      cloud.signingKeyFile,
      cloud.releaseKeyFiles!.privateKey,
    ]) {
      assert.equal(statSync(file).mode & 0o777, 0o600, file);
    }
    assert.equal(readFileSync(cloud.adminTokenFile!, 'utf8').trim(), cloud.adminToken);
    assert.match(cloud.adminToken, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
  });
});

describe('gateway', { timeout: 300_000 }, () => {
  it('builds an API Gateway proxy event for the matched route and writes the result back', async () => {
    fake.reset();
    const res = await api(`/updates/${VIN}/firmware/3.0.1?x=1&x=2&y=z`, {
      headers: { 'X-Custom-Header': 'Value', authorization: 'Bearer vehicle-token' },
    });
    assert.equal(res.status, 201);
    assert.equal(res.headers['x-handled-by'], 'vehicle-api');
    assert.deepEqual(res.json, { fn: 'vehicle-api', resource: '/updates/{vin}/firmware/{version}' });
    assert.equal(fake.calls.length, 1);
    const { fn, event, context } = fake.calls[0]!;
    assert.equal(fn, 'vehicle-api');
    assert.equal(event.resource, '/updates/{vin}/firmware/{version}');
    assert.equal(event.path, `/updates/${VIN}/firmware/3.0.1`);
    assert.equal(event.httpMethod, 'GET');
    assert.deepEqual(event.pathParameters, { vin: VIN, version: '3.0.1' });
    assert.deepEqual(event.queryStringParameters, { x: '2', y: 'z' });
    assert.deepEqual(event.multiValueQueryStringParameters, { x: ['1', '2'], y: ['z'] });
    assert.equal(event.headers['X-Custom-Header'], 'Value', 'headers as received');
    assert.equal(event.headers.authorization, 'Bearer vehicle-token');
    assert.deepEqual(event.multiValueHeaders['X-Custom-Header'], ['Value']);
    assert.equal(event.body, null);
    assert.equal(event.isBase64Encoded, false);
    assert.equal(event.requestContext.stage, 'local');
    assert.equal(event.requestContext.resourcePath, '/updates/{vin}/firmware/{version}');
    assert.equal(event.requestContext.httpMethod, 'GET');
    assert.equal(event.requestContext.identity.sourceIp, '127.0.0.1');
    assert.equal(event.requestContext.identity.userArn, null);
    assert.equal(res.headers['x-amzn-requestid'], event.requestContext.requestId);
    assert.ok(context.getRemainingTimeInMillis() > 0);

    fake.reset();
    const body = JSON.stringify({ vin: VIN, note: 'é' });
    assert.equal((await api('/auth/challenge', { method: 'POST', body })).status, 201);
    assert.equal(fake.calls[0]?.fn, 'auth-api');
    assert.equal(fake.calls[0]?.event.body, body);
    assert.equal(fake.calls[0]?.event.pathParameters, null);
    assert.equal(fake.calls[0]?.event.queryStringParameters, null);
  });

  it('answers 404 for unknown paths and 405 for a wrong method, in JSON', async () => {
    fake.reset();
    for (const path of [
      '/nope',
      '/updates',
      `/updates//initiate`,
      `/updates/${VIN}/initiate/extra`,
      '/releases/',
    ]) {
      refused(await api(path), 404, 'not_found');
    }
    const wrong = await api('/releases', { method: 'DELETE' });
    refused(wrong, 405, 'method_not_allowed');
    assert.equal(wrong.headers.allow, 'POST, GET');
    refused(await api(`/updates/${VIN}/initiate`), 405, 'method_not_allowed');
  });

  it('answers a malformed HTTP request with a JSON 400', async () => {
    const { port } = new URL(cloud.endpoints.api);
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: Number(port), ca: cloud.caCertPem }, () => {
        socket.end('GET /releases HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n');
      });
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString();
      });
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    assert.match(raw, /^HTTP\/1\.1 400 /);
    assert.match(raw, /content-type: application\/json/);
    assert.match(raw, /"code":"bad_request"/);
  });

  it('requires the admin token on operator routes (401), and passes the operator identity on', async () => {
    fake.reset();
    refused(await api('/releases'), 401, 'unauthorized');
    const wrong = `${cloud.adminToken.slice(0, -1)}${cloud.adminToken.endsWith('A') ? 'B' : 'A'}`;
    for (const authorization of [
      `Bearer ${wrong}`,
      `Basic ${cloud.adminToken}`,
      cloud.adminToken,
      'Bearer',
    ]) {
      const res = await api('/releases', { headers: { authorization } });
      refused(res, 401, 'unauthorized');
      assert.equal(res.headers['www-authenticate'], 'Bearer');
    }
    const ok = await operator('/releases/tcu-1.0.0');
    assert.equal(ok.status, 201);
    assert.equal(fake.calls[0]?.fn, 'operator-api');
    assert.deepEqual(fake.calls[0]?.event.pathParameters, { releaseId: 'tcu-1.0.0' });
    // The admin token acts as the local admin: an assumed-role ARN naming the admin role, as IAM would report it.
    assert.equal(
      fake.calls[0]?.event.requestContext.identity.userArn,
      'arn:aws:sts::000000000000:assumed-role/fleet-ota-admin/local-admin',
    );
  });

  it('answers 413 for a body over the route limit without running the function', async () => {
    fake.reset();
    const limit = 16 * 1024;
    refused(
      await api('/auth/challenge', { method: 'POST', body: 'x'.repeat(limit + 1) }),
      413,
      'body_too_large',
    );
    refused(
      await api(`/updates/${VIN}`, { method: 'GET', body: 'x', headers: { 'content-length': '1' } }),
      413,
      'body_too_large',
    );
    assert.equal((await api('/auth/challenge', { method: 'POST', body: 'x'.repeat(limit) })).status, 201);
  });

  it('stops reading a chunked body past the limit: answers 413 and cuts a sender that keeps going', async () => {
    fake.reset();
    const outcome = await new Promise<{ status: number; sent: number; closedAfterMs: number }>(
      (resolve, reject) => {
        let status = 0;
        let sent = 0;
        let answeredAt = 0;
        const req = httpsRequest(`${cloud.endpoints.api}/auth/challenge`, {
          method: 'POST',
          ca: cloud.caCertPem,
          headers: { 'transfer-encoding': 'chunked' },
        });
        req.on('response', (res) => {
          status = res.statusCode ?? 0;
          answeredAt = Date.now();
          res.resume();
        });
        const chunk = Buffer.alloc(8 * 1024, 'x');
        const timer = setInterval(() => {
          if (req.destroyed) return;
          req.write(chunk);
          sent += chunk.length;
        }, 5);
        const finish = () => {
          clearInterval(timer);
          if (!status) reject(new Error('no response before the connection closed'));
          else resolve({ status, sent, closedAfterMs: Date.now() - answeredAt });
        };
        req.on('error', finish);
        req.on('close', finish);
        setTimeout(() => {
          clearInterval(timer);
          req.destroy();
          reject(new Error(`still connected after sending ${sent} bytes`));
        }, 10_000).unref();
      },
    );
    assert.equal(outcome.status, 413);
    assert.ok(outcome.closedAfterMs < 5000, `connection closed ${outcome.closedAfterMs} ms after the answer`);
    assert.equal(fake.calls.length, 0);
  });

  it('answers 500 with the fixed body when a function throws, and logs the details instead', async () => {
    fake.reset();
    const before = logger.entries.length;
    const res = await operator('/releases/boom');
    assert.equal(res.status, 500);
    assert.deepEqual(res.json, INTERNAL_ERROR_BODY);
    assert.doesNotMatch(res.raw.toString(), /hunter2|secret|\.ts:|\bat\b/);
    const logged = logger.entries.slice(before).find((e) => e.level === 'error');
    assert.match(JSON.stringify(logged?.extra), /hunter2/, 'the error is logged with its message');
    assert.match(JSON.stringify(logged?.extra), /stack/);
  });
});

describe('gateway, standalone', { timeout: 300_000 }, () => {
  let tls: { keyPem: string; certPem: string };
  let caPem: string;
  const TOKEN = 'standalone-admin-token-0123456789';
  before(async () => {
    const ca = await LocalCa.open(join(dataDir, 'standalone-ca'));
    tls = await ca.serverCertificate();
    caPem = ca.certPem;
  });

  async function withGateway(
    props: Partial<Parameters<typeof LocalGateway.start>[0]>,
    body: (url: string) => Promise<void>,
  ) {
    const gateway = await LocalGateway.start({
      tls,
      port: 0,
      adminToken: TOKEN,
      loadHandler: fake.load,
      logger: new CapturingLogger(),
      ...props,
    });
    try {
      await body(gateway.url);
    } finally {
      await gateway.close();
    }
  }

  it('throttles per source IP with a token bucket: 429 JSON with Retry-After', async () => {
    let now = 1_000_000;
    await withGateway({ throttle: { ratePerSecond: 0.5, burst: 2 }, clock: () => now }, async (url) => {
      const get = () => https(`${url}/updates/${VIN}`, { ca: caPem });
      assert.equal((await get()).status, 201);
      assert.equal((await get()).status, 201);
      const limited = await get();
      assert.equal(limited.status, 429);
      assert.equal(limited.json?.error?.code, 'too_many_requests');
      assert.equal(limited.headers['retry-after'], '2');
      now += 1000;
      assert.equal((await get()).status, 429, 'half a token is not enough');
      now += 1000;
      assert.equal((await get()).status, 201, 'refilled at the configured rate');
      assert.equal((await get()).status, 429);
    });
  });

  it('answers 504 when a function outlives the integration timeout, 502 for a malformed result', async () => {
    const slow: HandlerLoader = async () => async () => {
      await sleep(500);
      return { statusCode: 200, body: '' };
    };
    await withGateway({ loadHandler: slow, timeoutMs: 50 }, async (url) => {
      const res = await https(`${url}/updates/${VIN}`, { ca: caPem });
      assert.equal(res.status, 504);
      assert.equal(res.json?.error?.code, 'timeout');
    });
    const malformed: HandlerLoader = async () => async () => ({ body: 'no status' }) as never;
    await withGateway({ loadHandler: malformed }, async (url) => {
      const res = await https(`${url}/updates/${VIN}`, { ca: caPem });
      assert.equal(res.status, 502);
      assert.deepEqual(res.json, INTERNAL_ERROR_BODY);
    });
  });

  it('answers 500 when a function fails to load, and loads it again on the next request', async () => {
    let attempts = 0;
    const flaky: HandlerLoader = async (fn) => {
      attempts++;
      if (attempts === 1) throw new Error('init failed: missing TABLE_RELEASES');
      return fake.load(fn);
    };
    await withGateway({ loadHandler: flaky }, async (url) => {
      const first = await https(`${url}/updates/${VIN}`, { ca: caPem });
      assert.equal(first.status, 500);
      assert.deepEqual(first.json, INTERNAL_ERROR_BODY);
      assert.equal((await https(`${url}/updates/${VIN}`, { ca: caPem })).status, 201);
      assert.equal(attempts, 2);
    });
  });
});

describe('LocalCa', { timeout: 300_000 }, () => {
  it('is made once per folder, signs only a CSR that names the VIN, and renews its server certificate', async () => {
    const dir = join(dataDir, 'ca-unit');
    const ca = await LocalCa.open(dir);
    assert.equal((await LocalCa.open(dir)).certPem, ca.certPem, 'loaded, not remade');

    const { csrPem } = await generateKeyAndCsr(VIN);
    const cert = new X509Certificate(await ca.signCsr(csrPem, VIN));
    assert.equal(cert.subject, `CN=${VIN}`);
    assert.ok(cert.verify(new X509Certificate(ca.certPem).publicKey));
    await assert.rejects(ca.signCsr(csrPem, '5YJSA1E26HF000337'), /common name must be the VIN/);

    const first = await ca.serverCertificate();
    assert.equal((await ca.serverCertificate()).certPem, first.certPem, 'cached');
    const later = new Date(Date.now() + 390 * 86_400_000);
    const renewed = await ca.serverCertificate(later);
    assert.notEqual(renewed.certPem, first.certPem, 'renewed close to expiry');
    assert.equal(readFileSync(join(dir, 'server.cert.pem'), 'utf8'), renewed.certPem);

    rmSync(join(dir, 'ca.cert.pem'));
    await assert.rejects(LocalCa.open(dir), /only half of a CA/);
  });
});

describe('restart', { timeout: 300_000 }, () => {
  it('keeps objects, items, tables, the CA, keys and the admin token across stop and start', async () => {
    const { s3, dynamo } = clients!;
    const object = randomBytes(4096);
    await s3.send(new PutObjectCommand({ Bucket: cloud.bucket, Key: 'persist/object', Body: object }));
    await dynamo.send(
      new PutItemCommand({
        TableName: cloud.tables.releases,
        Item: { releaseId: { S: 'persisted-1' }, version: { S: '1.2.3' } },
      }),
    );
    const beforeRestart = {
      ca: cloud.caCertPem,
      token: cloud.adminToken,
      signing: readFileSync(cloud.signingKeyFile, 'utf8'),
      release: readFileSync(cloud.releaseKeyFiles!.publicKey, 'utf8'),
      server: readFileSync(join(cloud.dataDir, 'ca', 'server.cert.pem'), 'utf8'),
    };
    const tableEnv = process.env.TABLE_RELEASES;

    closeClients();
    await cloud.stop();
    assert.notEqual(process.env.TABLE_RELEASES, tableEnv, 'stop restores the environment');
    await assert.rejects(fetch(`${cloud.endpoints.api}/releases`), 'the gateway is closed');

    cloud = await start();
    const again = connectClients();
    assert.equal(cloud.caCertPem, beforeRestart.ca);
    assert.equal(cloud.adminToken, beforeRestart.token);
    assert.equal(readFileSync(cloud.signingKeyFile, 'utf8'), beforeRestart.signing);
    assert.equal(readFileSync(cloud.releaseKeyFiles!.publicKey, 'utf8'), beforeRestart.release);
    assert.equal(readFileSync(join(cloud.dataDir, 'ca', 'server.cert.pem'), 'utf8'), beforeRestart.server);

    const got = await again.s3.send(new GetObjectCommand({ Bucket: cloud.bucket, Key: 'persist/object' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(object));
    const item = await again.dynamo.send(
      new GetItemCommand({ TableName: cloud.tables.releases, Key: { releaseId: { S: 'persisted-1' } } }),
    );
    assert.equal(item.Item?.version?.S, '1.2.3');
    assert.equal((await operator('/releases')).status, 201, 'the admin token still opens operator routes');
  });

  it('refuses a second local cloud in the same process', async () => {
    await assert.rejects(start(), /already running/);
  });
});
