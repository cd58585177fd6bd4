/**
 * The 1,000,000-vehicle model (bench/fleet-model.ts) is arithmetic over a run's counted operations: loads scale
 * with the vehicle rate, quota verdicts follow the loads, and costs follow the counts (nothing hard-coded).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  costPerVehicle,
  imageGets,
  lambdaTime,
  QUOTAS,
  quotaLoads,
  renderModel,
} from '../../bench/fleet-model.js';

const options = {
  rate: 2000,
  fleet: 1_000_000,
  imageMb: 500,
  rangeMb: 32,
  lambdaMs: 50,
  lambdaMb: 512,
  offerKb: 9,
};

/** 10 vehicles' counts: 10 writes and 2 Signs per vehicle, one campaign item written 3 times per vehicle. */
const input = {
  vehicles: 10,
  operations: {
    'dynamodb.write.updates': 60,
    'dynamodb.write.campaigns': 40,
    'dynamodb.read.updates': 30,
    'dynamodb.item.campaigns campaignId=c': 30,
    'kms.op.Sign': 20,
    'kms.sign.backend': 20,
    'iot.op.Publish': 10,
    'iot.broker.inbound': 100,
    'iot.broker.basicIngest': 60,
    'iot.broker.delivered': 10,
    'iot.rule.actions': 100,
    'lambda.invoke.ingest': 100,
    'lambda.invoke.vehicle-api': 60,
    'apigateway.request': 80,
  },
};

describe('fleet model', { timeout: 10_000 }, () => {
  test('loads are the counted operations per vehicle times the rate', () => {
    const loads = quotaLoads(input, options);
    const by = (detail: string) => loads.find((l) => l.detail.startsWith(detail));
    assert.equal(by('updates writes')?.load, 6 * 2000);
    assert.equal(by('campaigns writes')?.load, 4 * 2000);
    assert.equal(by('hottest item')?.load, 3 * 2000);
    assert.equal(by('hottest item')?.limit, QUOTAS.dynamoPartitionWru.value);
    assert.equal(by('Sign')?.load, 2 * 2000);
    assert.equal(by('device messages')?.load, (10 + 1) * 2000);
    assert.equal(by('API requests')?.load, 8 * 2000);
    assert.equal(by('invocations')?.load, ((16 * 50) / 1000) * 2000);
    // Half the rate, half the load.
    const half = quotaLoads(input, { ...options, rate: 1000 });
    assert.equal(half.find((l) => l.detail === 'Sign')?.load, 2000);
  });

  test('the verdict names each limit the rate exceeds, and how far', () => {
    const text = renderModel({ ...input, source: 'test' }, options);
    assert.match(text, /Quota increase needed:\*\* KMS .* from 1,000 to at least 4,000/);
    assert.match(text, /Design limit, not adjustable:\*\* DynamoDB partition .* 6,000\/s against 1,000/);
    assert.match(text, /Quota increase needed:\*\* API Gateway .* to at least 16,000/);
    assert.match(text, /takes 8\.3 min \(within 10 min\)/);
    const slow = renderModel({ ...input, source: 'test' }, { ...options, rate: 100 });
    assert.match(slow, /Every default quota holds that rate/);
    assert.match(slow, /over 10 min/);
  });

  test('cost per vehicle follows the counts', () => {
    const costs = costPerVehicle(input, options);
    const kms = costs.find((c) => c.item === 'KMS')!;
    assert.ok(Math.abs(kms.perVehicle - 2 * (0.15 / 1e4)) < 1e-12);
    const writes = costs.find((c) => c.item === 'DynamoDB writes')!;
    assert.ok(Math.abs(writes.perVehicle - 10 * (0.625 / 1e6)) < 1e-12);
    // Basic Ingest messages carry no messaging charge: 4 charged device messages of 10, 1 offer metered 2x, 1
    // delivery metered 2x (9 KB offers, 5 KB increments).
    const iot = costs.find((c) => c.item.startsWith('IoT messages'))!;
    assert.ok(Math.abs(iot.perVehicle - (4 + 2 + 2) * (1 / 1e6)) < 1e-12, String(iot.perVehicle));
  });

  test("image GETs are the run's counted presigned downloads unless a range size is given", () => {
    const { rangeMb: _, ...counted } = options;
    const withDownloads = {
      ...input,
      operations: { ...input.operations, 's3.download.GetObject': 13, 's3.download.bytes': 13 * 262_144 },
    };
    assert.equal(imageGets(withDownloads, counted).perVehicle, 1.3);
    assert.match(imageGets(withDownloads, counted).detail, /counted/);
    const gets = quotaLoads(withDownloads, counted).find((l) => l.quota === 's3GetPerPrefix')!;
    assert.equal(gets.load, 1.3 * 2000);
    const s3 = costPerVehicle(withDownloads, counted).find((c) => c.item === 'S3 GET')!;
    assert.ok(Math.abs(s3.perVehicle - 1.3 * (0.0004 / 1e3)) < 1e-15, String(s3.perVehicle));
    // The backend's own S3 calls are not downloads.
    assert.equal(imageGets({ ...input, operations: { 's3.op.GetObject': 50 } }, counted).perVehicle, 1);
    // 500 MB in 32 MiB ranges: 15 GETs, whatever was counted.
    assert.equal(imageGets(withDownloads, options).perVehicle, 15);
  });

  test("Lambda time: vehicle-api's duration given, the others scaled by their counted local time", () => {
    // Per vehicle: 10 ingest invocations of 300 ms locally, 6 vehicle-api invocations of 100 ms.
    const timed = {
      ...input,
      operations: {
        ...input.operations,
        'lambda.fn.ingest.ms': 100 * 300,
        'lambda.fn.vehicle-api.ms': 60 * 100,
      },
    };
    const t = lambdaTime(timed, options);
    assert.equal(t.msPerVehicle, 6 * 50 + 10 * 50 * 3);
    assert.match(t.detail, /vehicle-api 50 ms assumed/);
    const load = quotaLoads(timed, options).find((l) => l.quota === 'lambdaConcurrency')!;
    assert.equal(load.load, ((6 * 50 + 10 * 150) / 1000) * 2000);
    // Without counted time, every invocation is --lambda-ms.
    assert.deepEqual(lambdaTime(input, options), {
      msPerVehicle: 16 * 50,
      detail: 'invocations x 50 ms (assumed)',
    });
  });
});
