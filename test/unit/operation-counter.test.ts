/**
 * The counting middleware's arithmetic on real SDK clients whose HTTP handler answers canned responses (no
 * network): items per table for transactions (which the local DynamoDB emulator lacks), unprocessed batch items
 * taken off, one count per command however often the SDK retries, no middleware at all when counting is off; and
 * the tally's drain/merge/shape/diff.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient, SignCommand } from '@aws-sdk/client-kms';
import { BatchWriteCommand, PutCommand, TransactWriteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import {
  counted,
  diffOperations,
  OperationTally,
  operationTally,
  shapeOperations,
} from '../../lambdas/adapters/operation-counter.js';

type Answer = { status: number; body: unknown };

/** An HTTP handler answering the given responses in turn, counting the requests it saw. */
function canned(answers: Answer[]) {
  const seen = { requests: 0 };
  const handler = {
    metadata: { handlerProtocol: 'h1' },
    async handle() {
      const a = answers[Math.min(seen.requests++, answers.length - 1)]!;
      return {
        response: {
          statusCode: a.status,
          headers: { 'content-type': 'application/x-amz-json-1.0' },
          body: Readable.from([Buffer.from(JSON.stringify(a.body))]),
        },
      };
    },
    updateHttpClientConfig() {},
    httpHandlerConfigs: () => ({}),
    destroy() {},
  };
  return { handler, seen };
}

const config = {
  region: 'us-east-1',
  credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
};

function withCounting<T>(mode: string | undefined, fn: () => Promise<T>): Promise<T> {
  const previous = process.env.OTA_OPERATION_COUNTING;
  if (mode === undefined) delete process.env.OTA_OPERATION_COUNTING;
  else process.env.OTA_OPERATION_COUNTING = mode;
  return fn().finally(() => {
    if (previous === undefined) delete process.env.OTA_OPERATION_COUNTING;
    else process.env.OTA_OPERATION_COUNTING = previous;
  });
}

describe('operation counter', { timeout: 30_000 }, () => {
  test('transactions: writes and condition checks per table, transactional writes apart', async () => {
    await withCounting('count', async () => {
      operationTally().reset();
      const { handler } = canned([{ status: 200, body: {} }]);
      const db = documentClient(counted(new DynamoDBClient({ ...config, requestHandler: handler })));
      await db.send(
        new TransactWriteCommand({
          TransactItems: [
            { Put: { TableName: 'a', Item: { id: '1' } } },
            {
              Update: {
                TableName: 'b',
                Key: { id: '2' },
                UpdateExpression: 'SET x = :x',
                ExpressionAttributeValues: { ':x': 1 },
              },
            },
            {
              ConditionCheck: {
                TableName: 'a',
                Key: { id: '3' },
                ConditionExpression: 'attribute_exists(id)',
              },
            },
          ],
        }),
      );
      const s = operationTally().snapshot().dynamodb;
      assert.deepEqual(s.byTable, { a: { reads: 1, writes: 1 }, b: { reads: 0, writes: 1 } });
      assert.equal(s.transactionalWrites, 2);
      assert.deepEqual(s.byOperation, { TransactWriteItems: 1 });
    });
  });

  test('writes per item by key: the hottest item', async () => {
    await withCounting('count', async () => {
      operationTally().reset();
      const { handler } = canned([{ status: 200, body: {} }]);
      const db = documentClient(counted(new DynamoDBClient({ ...config, requestHandler: handler })));
      const add = (id: string) =>
        db.send(
          new UpdateCommand({
            TableName: 'campaigns',
            Key: { campaignId: id },
            UpdateExpression: 'ADD n :one',
            ExpressionAttributeValues: { ':one': 1 },
          }),
        );
      await add('c1');
      await add('c1');
      await add('c2');
      await db.send(new PutCommand({ TableName: 'campaigns', Item: { campaignId: 'c1' } }));
      const s = operationTally().snapshot().dynamodb;
      assert.deepEqual(s.hottestItems, [
        { item: 'campaigns campaignId=c1', writes: 2 },
        { item: 'campaigns campaignId=c2', writes: 1 },
      ]);
      assert.equal(s.writes, 4);
    });
  });

  test('a batch write counts its items less those returned unprocessed, once despite retries', async () => {
    await withCounting('count', async () => {
      operationTally().reset();
      const { handler, seen } = canned([
        { status: 500, body: { __type: 'InternalServerError', message: 'try again' } },
        {
          status: 200,
          body: { UnprocessedItems: { t: [{ PutRequest: { Item: { id: { S: '15' } } } }] } },
        },
      ]);
      const db = documentClient(counted(new DynamoDBClient({ ...config, requestHandler: handler })));
      const puts = Array.from({ length: 16 }, (_, i) => ({ PutRequest: { Item: { id: String(i) } } }));
      await db.send(new BatchWriteCommand({ RequestItems: { t: puts } }));
      assert.equal(seen.requests, 2, 'the SDK retried the 500');
      const s = operationTally().snapshot().dynamodb;
      assert.equal(s.writes, 15);
      assert.deepEqual(s.byOperation, { BatchWriteItem: 1 });
    });
  });

  test('KMS calls per operation; nothing at all when counting is off', async () => {
    await withCounting('count', async () => {
      operationTally().reset();
      const { handler } = canned([
        { status: 200, body: { Signature: Buffer.from('sig').toString('base64') } },
      ]);
      const kms = counted(new KMSClient({ ...config, requestHandler: handler }));
      await kms.send(
        new SignCommand({ KeyId: 'k', Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256' }),
      );
      assert.equal(operationTally().snapshot().kms.sign, 1);
    });
    await withCounting(undefined, async () => {
      operationTally().reset();
      const client = new KMSClient({
        ...config,
        requestHandler: canned([{ status: 200, body: {} }]).handler,
      });
      const before = JSON.stringify(client.middlewareStack.identify());
      assert.equal(counted(client), client);
      assert.equal(JSON.stringify(client.middlewareStack.identify()), before, 'no middleware added');
      await client.send(
        new SignCommand({ KeyId: 'k', Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256' }),
      );
      assert.deepEqual(operationTally().flat(), {});
    });
  });

  test('drain, merge, shape and diff', () => {
    const worker = new OperationTally();
    worker.add('dynamodb.write.updates', 3);
    worker.add('kms.op.Sign');
    worker.add('kms.sign.backend');
    const parent = new OperationTally();
    parent.add('lambda.invoke.ingest', 2);
    parent.merge(worker.drain(), 'campaign-tick');
    assert.equal(worker.drain(), undefined, 'drained');
    parent.add('iot.broker.connect');
    const before = parent.flat();
    parent.add('dynamodb.write.updates', 2);
    parent.add('iot.op.Publish');
    const shaped = shapeOperations(parent.flat());
    assert.equal(shaped.dynamodb.writes, 5);
    assert.deepEqual(shaped.dynamodb.byTable, { updates: { reads: 0, writes: 5 } });
    assert.deepEqual(shaped.kms, { sign: 1, byOperation: { Sign: 1 }, signByKey: { backend: 1 } });
    assert.deepEqual(shaped.lambda.invocations, { ingest: 2 });
    assert.equal(shaped.lambda.total, 2);
    assert.equal(shaped.iot.connects, 1);
    const fromTick = shapeOperations(parent.flat()).lambda;
    assert.equal(fromTick.byFunction['campaign-tick']?.dynamodbWrites, 3);
    assert.equal(fromTick.byFunction['campaign-tick']?.kmsSigns, 1);
    assert.equal(shaped.iot.publish, 1);
    assert.deepEqual(diffOperations(parent.flat(), before), {
      'dynamodb.write.updates': 2,
      'iot.op.Publish': 1,
    });
  });
});
