/**
 * The backend's AWS operations are counted where they are made (lambdas/adapters/operation-counter.ts) and the
 * local cloud adds them up over every worker-thread instance: exact counts for sequences whose operations can be
 * read off the code. DynamoDB items per batch and transaction against the real emulator; a login through the
 * gateway and the auth function's instances (challenge: rate counter ADD + challenge Put; token: conditional
 * consume + vehicle Get + one Sign for the instance's token delegation, none on the second login); an MQTT
 * connection and a status message through the broker and the rule into the ingest function.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchGetCommand, BatchWriteCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { counted, diffOperations, shapeOperations } from '../../lambdas/adapters/operation-counter.js';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, TestVehicle } from '../support/fleet.js';
import { VehicleConnection, waitFor } from '../support/mqtt-clients.js';

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-opcount-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [newReleaseKey().publicPem],
    campaignTickMs: 0,
    freshnessPeriodMs: 0,
  });
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('operation counting', { timeout: 240_000 }, () => {
  it('counts DynamoDB items per batch and query, per table (transactions: unit test; dynalite has none)', async () => {
    const db = documentClient(counted(new DynamoDBClient(clientConfig('DYNAMODB'))));
    const table = cloud.tables.exclusions;
    cloud.resetOperations();
    const items = Array.from({ length: 16 }, (_, i) => ({
      campaignId: 'count',
      vin: `COUNT${String(i).padStart(12, '0')}`,
    }));
    await db.send(
      new BatchWriteCommand({ RequestItems: { [table]: items.map((Item) => ({ PutRequest: { Item } })) } }),
    );
    await db.send(new BatchGetCommand({ RequestItems: { [table]: { Keys: items.slice(0, 5) } } }));
    await db.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: 'campaignId = :c AND vin = :v',
        ExpressionAttributeValues: { ':c': 'count', ':v': items[3]!.vin },
      }),
    );
    const ops = cloud.operations().dynamodb;
    assert.equal(ops.writes, 16);
    assert.equal(ops.reads, 5 + 1, 'BatchGet keys + one query page');
    assert.equal(ops.itemsReturned, 1);
    assert.deepEqual(ops.byOperation, { BatchWriteItem: 1, BatchGetItem: 1, Query: 1 });
    assert.deepEqual(ops.byTable, { [table]: { reads: 6, writes: 16 } });
  });

  it('counts a login exactly, over the gateway and the function instances', async () => {
    const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
    const vehicle = await TestVehicle.create('1HGCM82633A004352');
    const registered = await operator.call('POST', '/vehicles', vehicle.registration());
    assert.equal(registered.status, 201);

    const first = cloud.operationCounts();
    await vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const login = shapeOperations(diffOperations(cloud.operationCounts(), first));
    const t = cloud.tables;
    assert.deepEqual(login.dynamodb.byTable, {
      // The challenge issued into its VIN-minute item (one write), then spent from it (one write).
      [t.challenges]: { reads: 0, writes: 2 },
      [t.vehicles]: { reads: 1, writes: 0 },
    });
    assert.deepEqual(login.dynamodb.byOperation, { UpdateItem: 2, GetItem: 1 });
    assert.deepEqual(login.lambda.invocations, { 'auth-api': 2 });
    assert.equal(login.apigateway.requests, 2);
    // The instance's first token certifies a delegated key: one Sign (and the key fetched once), then none.
    assert.deepEqual(login.kms.byOperation, { Sign: 1, GetPublicKey: 1 });
    assert.deepEqual(login.kms.signByKey, { token: 1 });

    const second = cloud.operationCounts();
    await vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const again = shapeOperations(diffOperations(cloud.operationCounts(), second));
    assert.equal(again.dynamodb.writes, 2);
    assert.equal(again.dynamodb.reads, 1);
    assert.equal(again.kms.sign, 0, 'a warm instance signs tokens with its delegated key, not KMS');
    assert.deepEqual(again.lambda.invocations, { 'auth-api': 2 });

    // One MQTT connection and one status report: broker connect + inbound message + rule action + ingest.
    const before = cloud.operationCounts();
    const conn = await VehicleConnection.connect({
      url: cloud.endpoints.mqtt,
      caPem: cloud.caCertPem,
      clientId: vehicle.vin,
      identity: { keyPem: vehicle.keyPem, certPem: registered.json.certificate_pem },
    });
    try {
      // Not a valid report (the ingest function rejects it): the rule and the invocation happen all the same.
      await conn.publish(`vehicle/updates/${vehicle.vin}/status`, JSON.stringify({ status: 'downloading' }));
      assert.ok(await waitFor(() => cloud.rules.stats().delivered + cloud.rules.stats().failed >= 1, 15_000));
      await cloud.rules.idle();
    } finally {
      await conn.end();
    }
    const mqtt = shapeOperations(diffOperations(cloud.operationCounts(), before));
    assert.equal(mqtt.iot.connects, 1);
    assert.equal(mqtt.iot.inbound, 1);
    assert.equal(mqtt.iot.ruleActions, 1);
    assert.deepEqual(mqtt.lambda.invocations, { ingest: 1 });
  });

  it('resets', () => {
    cloud.resetOperations();
    assert.deepEqual(cloud.operationCounts(), {});
    assert.equal(cloud.operations().lambda.total, 0);
  });
});
