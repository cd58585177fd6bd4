/**
 * The scale-out fleet run (sim/scale.ts, `npm run fleet -- --light`) at a small size, so `npm test` keeps the path
 * that the 10,000-vehicle run takes working: the local cloud in its own process, light vehicles in two worker
 * processes (each its own key, certificate, mutual-TLS MQTT connection and tokens), a real download verified
 * chunk by chunk, reports through IoT Basic Ingest, and the backend's operations counted in that run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runScaleFleet } from '../../sim/scale.js';

describe('scale-out fleet run', { timeout: 600_000 }, () => {
  it('24 light vehicles in 2 workers complete one campaign, agree with the backend, and are counted', async () => {
    const vehicles = 24;
    const imageBytes = 96 * 1024;
    const summary = await runScaleFleet({
      vehicles,
      workers: 2,
      imageBytes,
      notifyPerSecond: 50,
      tickSeconds: 2,
      waves: [25, 100],
      timeoutMs: 540_000,
    });
    assert.equal(
      summary.campaign.status,
      'completed',
      `${JSON.stringify(summary.campaign)} ${summary.notCompleted.join('; ')}`,
    );
    assert.deepEqual(summary.vehicleStatuses, { completed: vehicles });
    assert.deepEqual(summary.disagreements, []);
    // Each vehicle fetched and hashed the whole image once.
    assert.equal(summary.bytesDownloaded, vehicles * imageBytes);

    const ops = summary.operations.total;
    const n = (key: string) => ops[key] ?? 0;
    // Every report of a light vehicle went through Basic Ingest: the only device messages are to $aws/rules/.
    assert.ok(n('iot.broker.inbound') >= vehicles * 4, `device messages: ${n('iot.broker.inbound')}`);
    assert.equal(n('iot.broker.basicIngest'), n('iot.broker.inbound'));
    // One offer published and delivered per vehicle (QoS 1, persistent sessions, no redelivery needed here).
    assert.ok(n('iot.broker.delivered') >= vehicles, `deliveries: ${n('iot.broker.delivered')}`);
    // The counts are real: every vehicle cost DynamoDB writes, and assignments came from the delegated key, not
    // one KMS Sign per vehicle.
    assert.ok(summary.perVehicle.dynamodbWrites > 5, JSON.stringify(summary.perVehicle));
    assert.ok(summary.perVehicle.kmsSigns < 1, JSON.stringify(summary.perVehicle));
    assert.ok(summary.perVehicle.lambdaInvocations > 4, JSON.stringify(summary.perVehicle));
  });
});
