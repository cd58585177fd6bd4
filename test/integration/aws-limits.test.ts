/**
 * The local cloud fails where AWS would: a function stopped at its timeout and at its memory size (real worker
 * threads terminated), Lambda's 6 MB event and response limits, API Gateway's 10 MB payload limit, DynamoDB's
 * 400 KB item limit. IoT Core's 128 KB message limit is tested in mqtt.test.ts (broker and data-plane shim).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient, PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { FUNCTION_SETTINGS, type FunctionSettings } from '../../lambdas/core/functions.js';
import { DYNAMODB_MAX_ITEM_BYTES, LAMBDA_SYNC_RESPONSE_BYTES } from '../../local/aws-limits.js';
import { LocalCa } from '../../local/ca.js';
import { startLocalCloud } from '../../local/cloud.js';
import { LocalGateway } from '../../local/gateway.js';
import { LocalLambdas } from '../../local/lambda-runtime.js';
import type { RouteDefinition } from '../../protocol/routes.js';
import { https } from '../support/https.js';

/** Starting or stopping the local cloud on a loaded machine. */
const HOOK_TIMEOUT = { timeout: 120_000 };

const FIXTURES = new URL('../support/limit-handlers.ts', import.meta.url).href;
const dataDir = mkdtempSync(join(tmpdir(), 'ota-limits-'));
const TOKEN = 'limits-admin-token-0123456789';
/** One open route with room for any body, so that only the AWS limits under test decide. */
const ROUTES: RouteDefinition[] = [
  {
    method: 'POST',
    resource: '/t',
    fn: 'operator-api',
    auth: 'none',
    maxBodyBytes: 64 * 1024 * 1024,
    responses: {},
    summary: 't',
  },
  {
    method: 'GET',
    resource: '/t',
    fn: 'operator-api',
    auth: 'none',
    maxBodyBytes: 0,
    responses: {},
    summary: 't',
  },
];

let tls: { keyPem: string; certPem: string };
let ca: string;

before(async () => {
  const localCa = await LocalCa.open(join(dataDir, 'ca'));
  tls = await localCa.serverCertificate();
  ca = localCa.certPem;
}, HOOK_TIMEOUT);
after(() => rmSync(dataDir, { recursive: true, force: true }), HOOK_TIMEOUT);

/** A gateway whose operator-api is the fixture export `exportName`, run by the worker runtime. */
async function withFunction(
  exportName: string,
  settings: Partial<FunctionSettings> | undefined,
  body: (url: string, lambdas: LocalLambdas) => Promise<void>,
) {
  const lambdas = new LocalLambdas({
    entry: () => ({ url: FIXTURES, exportName }),
    settings: settings
      ? { 'operator-api': { ...FUNCTION_SETTINGS['operator-api'], ...settings } }
      : undefined,
  });
  const quiet = { warn: () => {}, error: () => {} };
  const gateway = await LocalGateway.start({
    tls,
    port: 0,
    adminToken: TOKEN,
    loadHandler: lambdas.handlerLoader,
    routes: ROUTES,
    logger: quiet,
    throttle: { ratePerSecond: 1000, burst: 1000 },
  });
  try {
    await body(`${gateway.url}/t`, lambdas);
  } finally {
    await gateway.close();
    await lambdas.close();
  }
}

describe('local Lambda runtime and gateway enforce AWS limits', { timeout: 180_000 }, () => {
  it('runs a function with the timeout and memory the stack gives it (FUNCTION_SETTINGS)', async () => {
    await withFunction('info', undefined, async (url) => {
      const res = await https(url, { ca });
      assert.equal(res.status, 200);
      assert.equal(res.json.memory, String(FUNCTION_SETTINGS['operator-api'].memoryMb));
      const timeoutMs = FUNCTION_SETTINGS['operator-api'].timeoutSeconds * 1000;
      assert.ok(
        res.json.remainingMs <= timeoutMs && res.json.remainingMs > timeoutMs - 2000,
        res.json.remainingMs,
      );
      assert.notEqual(res.json.threadId, 0, 'ran in a worker thread, not in the gateway');
    });
  });

  it('stops a handler at its timeout: 502 function_timeout, and the handler runs no more', async () => {
    const heartbeat = join(dataDir, 'heartbeat');
    writeFileSync(heartbeat, '');
    await withFunction('neverEnds', { timeoutSeconds: 1 }, async (url, lambdas) => {
      const started = Date.now();
      const res = await https(url, { method: 'POST', body: JSON.stringify({ heartbeat }), ca });
      const elapsed = Date.now() - started;
      assert.equal(res.status, 502);
      assert.equal(res.json.error.code, 'function_timeout');
      assert.match(res.json.error.message, /timed out after 1 seconds/);
      assert.ok(elapsed >= 1000 && elapsed < 10_000, `answered after ${elapsed} ms`);
      assert.ok(statSync(heartbeat).size > 0, 'the handler did run');
      const sizeAtTimeout = readFileSync(heartbeat).length;
      await sleep(300);
      assert.ok(readFileSync(heartbeat).length <= sizeAtTimeout + 1, 'no heartbeat after the timeout');
      assert.deepEqual(
        lambdas.stats()['operator-api'],
        { instances: 0, coldStarts: 1 },
        'instance discarded',
      );
    });
  });

  it('stops a handler that outgrows its memory, off the heap (Buffers) or on it: 502 function_out_of_memory', async () => {
    for (const hog of ['offHeapHog', 'heapHog']) {
      await withFunction(hog, { memoryMb: 128 }, async (url) => {
        const res = await https(url, { ca });
        assert.equal(res.status, 502, hog);
        assert.equal(res.json.error.code, 'function_out_of_memory', hog);
      });
    }
  });

  it('keeps instances warm: sequential calls reuse one, concurrent calls scale out', async () => {
    await withFunction('info', undefined, async (url, lambdas) => {
      const threads = new Set<number>();
      for (let i = 0; i < 5; i++) threads.add((await https(url, { ca })).json.threadId);
      assert.equal(threads.size, 1);
      assert.deepEqual(lambdas.stats()['operator-api'], { instances: 1, coldStarts: 1 });
    });
    await withFunction('neverEnds', { timeoutSeconds: 1 }, async (url, lambdas) => {
      const heartbeat = join(dataDir, 'heartbeat-2');
      const calls = [1, 2, 3].map(() =>
        https(url, { method: 'POST', body: JSON.stringify({ heartbeat }), ca }),
      );
      await sleep(200);
      assert.equal(lambdas.stats()['operator-api']?.coldStarts, 3, 'one instance per concurrent invocation');
      await Promise.all(calls);
    });
  });

  it("answers 502 for a response above Lambda's 6 MB, and passes one just below", async () => {
    await withFunction('sized', undefined, async (url) => {
      // The limit is on the result's JSON: the body plus its envelope ({"statusCode":200,"body":"..."}).
      const ok = await https(`${url}?bytes=${LAMBDA_SYNC_RESPONSE_BYTES - 1000}`, { ca });
      assert.equal(ok.status, 200);
      assert.equal(ok.raw.length, LAMBDA_SYNC_RESPONSE_BYTES - 1000);
      const big = await https(`${url}?bytes=${LAMBDA_SYNC_RESPONSE_BYTES}`, { ca });
      assert.equal(big.status, 502);
      assert.equal(big.json.error.code, 'function_response_too_large');
    });
  });

  it("answers 413 above API Gateway's 10 MB payload and Lambda's 6 MB event, whatever the route allows", async () => {
    await withFunction('info', undefined, async (url) => {
      const post = (bytes: number) => https(url, { method: 'POST', body: Buffer.alloc(bytes, 0x61), ca });
      const small = await post(1024 * 1024);
      assert.equal(small.status, 200);
      assert.equal(small.json.bodyBytes, 1024 * 1024);
      const overApi = await post(10 * 1024 * 1024 + 1);
      assert.equal(overApi.status, 413);
      assert.equal(overApi.json.error.code, 'body_too_large');
      const overLambda = await post(7 * 1024 * 1024);
      assert.equal(overLambda.status, 413);
      assert.equal(overLambda.json.error.code, 'request_too_large');
    });
  });
});

describe('the local cloud', { timeout: 180_000 }, () => {
  it('runs the real handlers in worker instances, and DynamoDB refuses an item above 400 KB', async () => {
    const cloud = await startLocalCloud({
      dataDir: join(dataDir, 'cloud'),
      ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
      campaignTickMs: 0,
    });
    const dynamo = new DynamoDBClient({
      endpoint: cloud.endpoints.dynamodb,
      region: 'us-east-1',
      credentials: cloud.credentials,
      requestHandler: { httpsAgent: new Agent({ ca: cloud.caCertPem }) },
    });
    try {
      const res = await https(`${cloud.endpoints.api}/auth/challenge`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ vin: '1HGCM82633A004352' }),
        ca: cloud.caCertPem,
      });
      assert.equal(res.status, 200, JSON.stringify(res.json));
      assert.equal(cloud.lambdas.stats()['auth-api']?.instances, 1);

      const TableName = cloud.tables.releases;
      const item = (bytes: number) => ({ releaseId: { S: 'big' }, blob: { S: 'x'.repeat(bytes) } });
      // Attribute names and values count: 'releaseId' + 'big' + 'blob' = 16 bytes.
      await dynamo.send(new PutItemCommand({ TableName, Item: item(DYNAMODB_MAX_ITEM_BYTES - 16) }));
      await assert.rejects(
        dynamo.send(new PutItemCommand({ TableName, Item: item(DYNAMODB_MAX_ITEM_BYTES - 15) })),
        (err: Error) => err.name === 'ValidationException' && /maximum allowed size/.test(err.message),
      );
      await assert.rejects(
        dynamo.send(
          new UpdateItemCommand({
            TableName,
            Key: { releaseId: { S: 'big' } },
            UpdateExpression: 'SET more = :m',
            ExpressionAttributeValues: { ':m': { S: 'y' } },
          }),
        ),
        (err: Error) => err.name === 'ValidationException' && /maximum allowed size/.test(err.message),
      );
    } finally {
      dynamo.destroy();
      await cloud.stop();
    }
  });
});
