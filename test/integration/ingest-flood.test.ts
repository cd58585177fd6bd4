/**
 * Issue 18 #8 attacked over real MQTT on the local cloud: one vehicle's flood of 14,000 messages filled the rules
 * path's queue, and another vehicle's acknowledged status was dead-lettered. Now each vehicle has its own queue,
 * served in turn and capped, and ingest keeps a token bucket per VIN.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import { vehicleTopic } from '../../protocol/topics.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { VehicleConnection, waitFor } from '../support/mqtt-clients.js';

const FLOODER = '1HGCM82633A004352';
const VICTIM = '5YJSA1E26HF000337';
const FLOOD = 14_000;

let cloud: LocalCloud;
let dataDir: string;
let operator: Operator;
const releaseKey = newReleaseKey();
const cars = new Map<string, { vehicle: TestVehicle; certPem: string; token: string }>();

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-flood-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = Buffer.alloc(10_000, 7);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-8.0.0',
    version: '8.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
  for (const vin of [FLOODER, VICTIM]) {
    const vehicle = await TestVehicle.create(vin);
    const reg = await operator.call('POST', '/vehicles', vehicle.registration());
    assert.equal(reg.status, 201);
    const token = await vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const started = await jsonRequest(
      cloud.endpoints.api,
      'POST',
      `/updates/${vin}/initiate`,
      cloud.caCertPem,
      { firmware_version: '8.0.0' },
      token,
    );
    assert.equal(started.status, 200, started.raw.toString());
    cars.set(vin, { vehicle, certPem: reg.json.certificate_pem, token });
  }
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

const connect = (vin: string) =>
  VehicleConnection.connect({
    url: cloud.endpoints.mqtt,
    caPem: cloud.caCertPem,
    clientId: vin,
    identity: { keyPem: cars.get(vin)!.vehicle.keyPem, certPem: cars.get(vin)!.certPem },
  });

describe('one vehicle flooding MQTT (issue 18 #8)', { timeout: 180_000 }, () => {
  it("does not get another vehicle's acknowledged status dead-lettered or lost", async () => {
    const flooder = await connect(FLOODER);
    const victim = await connect(VICTIM);
    try {
      const topic = vehicleTopic(FLOODER, 'progress');
      for (let n = 0; n < FLOOD; n++) {
        flooder.client.publish(topic, JSON.stringify({ status: 'downloading', progress: 1, sequence: n }), {
          qos: 0,
        });
      }
      // Mid-flood, the victim reports; the broker acknowledges it (QoS 1).
      await victim.client.publishAsync(
        vehicleTopic(VICTIM, 'status'),
        JSON.stringify({ status: 'downloading', progress: 40, sequence: 1 }),
        { qos: 1 },
      );
      assert.ok(
        await waitFor(() => cloud.rules.stats().throttled > 0, 60_000),
        'the flood reaches the per-vehicle cap',
      );
      await cloud.rules.idle();
      const stats = cloud.rules.stats();
      assert.equal(stats.deadLetters, 0, JSON.stringify(stats));
      assert.equal(cloud.rules.deadLetters().filter((d) => d.event.vin === VICTIM).length, 0);
      const seen = await jsonRequest(
        cloud.endpoints.api,
        'GET',
        `/updates/${VICTIM}`,
        cloud.caCertPem,
        undefined,
        cars.get(VICTIM)!.token,
      );
      assert.deepEqual(
        seen.json.updates.map((u: { status: string; progress: number }) => [u.status, u.progress]),
        [['downloading', 40]],
        "the victim's status was applied",
      );
      // The flood was cut short twice: by the router's per-vehicle queue, and by ingest's bucket before any read.
      assert.ok(stats.throttled > 0 && stats.delivered < FLOOD + 1, JSON.stringify(stats));
    } finally {
      await flooder.end();
      await victim.end();
    }
  });
});
