/**
 * The functions' X-Ray tracing without the X-Ray SDK (lambdas/adapters/tracing.ts): a real UDP socket stands in for
 * the daemon and a real local HTTP server for DynamoDB, called by a real SDK client; the documents the daemon gets
 * are checked as X-Ray reads them (header line, then a subsegment document).
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { traceClient, traceContext, traceInvocation } from '../../lambdas/adapters/tracing.js';

const HOOK_TIMEOUT = { timeout: 10_000 };
const ROOT = '1-67891233-abcdef012345678912345678';
const PARENT = '53995c3f42cd8ad8';

const daemon = createSocket('udp4');
const docs: Record<string, unknown>[] = [];
let traceHeaders: (string | undefined)[] = [];
let status = 200;
const dynamo = createServer((req, res) => {
  traceHeaders.push(req.headers['x-amzn-trace-id'] as string | undefined);
  req.resume();
  res
    .writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'REQ1' })
    .end(status === 200 ? '{"TableNames":[]}' : '{"__type":"com.amazon.coral.validate#ValidationException"}');
});
let client: DynamoDBClient;

before(async () => {
  daemon.on('message', (m) => {
    const [header, body] = m.toString().split('\n');
    assert.equal(header, '{"format":"json","version":1}');
    docs.push(JSON.parse(body!) as Record<string, unknown>);
  });
  daemon.bind(0, '127.0.0.1');
  await once(daemon, 'listening');
  dynamo.listen(0, '127.0.0.1');
  await once(dynamo, 'listening');
  process.env.AWS_XRAY_DAEMON_ADDRESS = `127.0.0.1:${daemon.address().port}`;
  process.env.POWERTOOLS_SERVICE_NAME = 'vehicle-api';
  client = traceClient(
    new DynamoDBClient({
      endpoint: `http://127.0.0.1:${(dynamo.address() as AddressInfo).port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKID', secretAccessKey: 'secret' },
      maxAttempts: 1,
    }),
  );
}, HOOK_TIMEOUT);

after(() => {
  daemon.close();
  dynamo.close();
}, HOOK_TIMEOUT);

async function docsArrived(n: number): Promise<void> {
  const deadline = Date.now() + 3000;
  while (docs.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

describe('X-Ray tracing without the X-Ray SDK', { timeout: 30_000 }, () => {
  it('reads the sampled trace Lambda hands the invocation, and nothing else', () => {
    const header = `Root=${ROOT};Parent=${PARENT};Sampled=1`;
    assert.deepEqual(traceContext({ _X_AMZN_TRACE_ID: header }), { root: ROOT, parent: PARENT });
    assert.equal(traceContext({ _X_AMZN_TRACE_ID: `Root=${ROOT};Parent=${PARENT};Sampled=0` }), undefined);
    assert.equal(traceContext({}), undefined);
    assert.equal(
      traceContext({ _X_AMZN_TRACE_ID: header, POWERTOOLS_TRACE_ENABLED: 'false' }),
      undefined,
      'the local cloud switches it off',
    );
  });

  it('sends a subsegment per SDK call under ## handler, and ## handler under the facade, with the trace header on the call', async () => {
    process.env._X_AMZN_TRACE_ID = `Root=${ROOT};Parent=${PARENT};Sampled=1`;
    docs.length = 0;
    traceHeaders = [];
    status = 200;
    await traceInvocation(() => client.send(new ListTablesCommand({})));
    await docsArrived(2);
    const [call, handler] = docs;
    assert.equal(handler?.name, '## handler');
    assert.equal(handler?.type, 'subsegment');
    assert.equal(handler?.trace_id, ROOT);
    assert.equal(handler?.parent_id, PARENT);
    assert.deepEqual(handler?.annotations, { ColdStart: true, Service: 'vehicle-api' });
    assert.equal(call?.name, 'DynamoDB');
    assert.equal(call?.namespace, 'aws');
    assert.equal(call?.parent_id, handler?.id);
    assert.deepEqual(call?.aws, { operation: 'ListTables', request_id: 'REQ1', retries: 0 });
    assert.deepEqual(call?.http, { response: { status: 200 } });
    assert.ok((call?.end_time as number) >= (call?.start_time as number));
    assert.equal(traceHeaders[0], `Root=${ROOT};Parent=${call?.id};Sampled=1`);
  });

  it('marks a refused call as an error and a throwing handler as a fault; the next invocation is warm', async () => {
    docs.length = 0;
    status = 400;
    await assert.rejects(traceInvocation(() => client.send(new ListTablesCommand({}))));
    await docsArrived(2);
    const [call, handler] = docs;
    assert.equal(call?.error, true);
    assert.equal(call?.fault, undefined);
    assert.deepEqual(call?.http, { response: { status: 400 } });
    assert.equal(handler?.fault, true);
    assert.deepEqual(handler?.annotations, { ColdStart: false, Service: 'vehicle-api' });
  });

  it('sends nothing and adds no header when the invocation is not sampled', async () => {
    process.env._X_AMZN_TRACE_ID = `Root=${ROOT};Parent=${PARENT};Sampled=0`;
    docs.length = 0;
    traceHeaders = [];
    status = 200;
    assert.equal(await traceInvocation(async () => 'ok'), 'ok');
    await traceInvocation(() => client.send(new ListTablesCommand({})));
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(docs, []);
    assert.deepEqual(traceHeaders, [undefined]);
  });
});
