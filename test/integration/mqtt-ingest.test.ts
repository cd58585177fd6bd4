/**
 * The MQTT channel end to end on the local cloud: the backend publishes an offer through the real IoT Data Plane
 * client, the vehicle receives it over mutual TLS, and what the vehicle publishes travels through the rules path
 * into the ingest handler and DynamoDB.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { IoTDataPlaneClient } from '@aws-sdk/client-iot-data-plane';
import mqtt from 'mqtt';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoUpdateRepository } from '../../lambdas/adapters/dynamo-updates.js';
import { IotOfferPublisher } from '../../lambdas/adapters/iot-offer-publisher.js';
import { UpdateHistoryReader } from '../../lambdas/core/update-history.js';
import { startLocalCloud } from '../../local/cloud.js';
import { offerFor, offerSchema } from '../../protocol/offer.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { VehicleConnection, waitFor } from '../support/mqtt-clients.js';

const VINS = [
  '1HGCM82633A004352',
  '5YJSA1E26HF000337',
  'WVWZZZ1JZXW000001',
  'WVWZZZ1JZXW000002',
  'WVWZZZ1JZXW000003',
  'WVWZZZ1JZXW000004',
] as const;
const [CAR, IN_ORDER, SHUFFLED, NOISY, BURST, BATCHED] = VINS;

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let operator: Operator;
const releaseKey = newReleaseKey();
const vehicles = new Map<string, { vehicle: TestVehicle; certPem: string }>();
let updates: DynamoUpdateRepository;
let history: UpdateHistoryReader;

async function connect(vin: string): Promise<VehicleConnection> {
  const v = vehicles.get(vin)!;
  return VehicleConnection.connect({
    url: cloud.endpoints.mqtt,
    caPem: cloud.caCertPem,
    clientId: vin,
    identity: { keyPem: v.vehicle.keyPem, certPem: v.certPem },
    clean: false,
  });
}

async function startUpdate(vin: string) {
  const token = await vehicles.get(vin)!.vehicle.token(cloud.endpoints.api, cloud.caCertPem);
  const res = await jsonRequest(
    cloud.endpoints.api,
    'POST',
    `/updates/${vin}/initiate`,
    cloud.caCertPem,
    { firmware_version: '3.0.1' },
    token,
  );
  assert.equal(res.status, 200, res.raw.toString());
  return res.json;
}

/** Waits until the rules router has handed every message to the ingest handler and it has finished. */
async function settled(expectedDelivered: number) {
  assert.equal(
    await waitFor(
      () => cloud.rules.stats().delivered + cloud.rules.stats().failed >= expectedDelivered,
      15000,
    ),
    true,
    `rules delivered ${JSON.stringify(cloud.rules.stats())}, wanted ${expectedDelivered}`,
  );
  await cloud.rules.idle();
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-mqtt-ingest-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(128 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-3.0.1',
    version: '3.0.1',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
  for (const vin of VINS) {
    const vehicle = await TestVehicle.create(vin);
    const reg = await operator.call('POST', '/vehicles', vehicle.registration());
    assert.equal(reg.status, 201, reg.raw.toString());
    vehicles.set(vin, { vehicle, certPem: reg.json.certificate_pem });
  }
  const db = documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
  updates = new DynamoUpdateRepository(db, cloud.tables.updates);
  history = new UpdateHistoryReader(updates);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('backend -> vehicle', { timeout: 300_000 }, () => {
  it('a vehicle receives the offer the backend publishes through the IoT Data Plane client, also after being offline', async () => {
    const first = await connect(CAR);
    assert.deepEqual(await first.subscribe([`vehicle/updates/${CAR}/issue_details`]), [1]);
    await first.end();

    // Published while the vehicle is offline: its persistent session queues it (QoS 1).
    const offered = await startUpdate(CAR);
    const publisher = new IotOfferPublisher(new IoTDataPlaneClient(clientConfig('IOT_DATA_PLANE')));
    const offer = offerSchema.parse(offerFor(offered.assignment, offered.size));
    await publisher.publish(CAR, offer);

    const back = await connect(CAR);
    try {
      assert.equal(back.sessionPresent, true, 'the persistent session was kept');
      assert.equal(
        await waitFor(() => back.messages.length > 0, 5000),
        true,
        'the queued offer arrives on reconnect',
      );
      const received = back.messages[0]!;
      assert.equal(received.topic, `vehicle/updates/${CAR}/issue_details`);
      assert.equal(received.qos, 1);
      assert.deepEqual(offerSchema.parse(JSON.parse(received.payload.toString())), offer);
    } finally {
      await back.end();
    }
  });
});

describe('vehicle -> backend through the rules path', { timeout: 300_000 }, () => {
  it('minimal progress and status payloads land in DynamoDB, attributed to the active update', async () => {
    const car = await connect(CAR);
    const before = cloud.rules.stats().delivered;
    try {
      await car.publish(
        `vehicle/updates/${CAR}/progress`,
        JSON.stringify({ progress: 40, status: 'downloading' }),
      );
      await settled(before + 1);
      let state = await updates.get(CAR, 'release#tcu-3.0.1');
      assert.equal(state?.status, 'downloading');
      assert.equal(state?.progress, 40);

      await car.publish(`vehicle/updates/${CAR}/status`, JSON.stringify({ status: 'completed' }));
      await car.publish(
        `vehicle/updates/${CAR}/progress`,
        JSON.stringify({ progress: 90, status: 'downloading' }),
      );
      await settled(before + 3);
      state = await updates.get(CAR, 'release#tcu-3.0.1');
      assert.equal(state?.status, 'completed', 'a late progress after completed changes nothing');
      assert.equal(state?.progress, 100);
      const seen = await operator.call('GET', `/vehicles/${CAR}`);
      assert.equal(seen.json.ecus[0].version, '3.0.1');

      const events = await history.listForVehicle(CAR, 50);
      const mqttEvents = events.filter((e) => e.source === 'mqtt');
      // Status changes only: the late progress after completed changed nothing and left no history item.
      assert.deepEqual(mqttEvents.map((e) => e.status).sort(), ['completed', 'downloading']);
    } finally {
      await car.end();
    }
  });

  it('refuses bad messages without crashing and without changing state', async () => {
    await startUpdate(NOISY);
    const car = await connect(NOISY);
    const before = cloud.rules.stats();
    try {
      const topic = `vehicle/updates/${NOISY}/progress`;
      await car.publish(topic, '{"progress": 40, "status": ');
      await car.publish(topic, JSON.stringify({ progress: 140, status: 'downloading' }));
      await car.publish(topic, JSON.stringify({ progress: 10, status: 'teleporting' }));
      await car.publish(topic, JSON.stringify({ status: 'downloading' }));
      await car.publish(
        `vehicle/updates/${NOISY}/status`,
        JSON.stringify({ status: 'completed', campaign_id: 'no-such-campaign' }),
      );
      await settled(before.delivered + before.failed + 5);
      const state = await updates.get(NOISY, 'release#tcu-3.0.1');
      assert.equal(state?.status, 'initiated');
      assert.equal(
        cloud.rules.stats().failed,
        before.failed,
        'bad input is refused, not dead-lettered as a crash',
      );
      // The function still works after all that.
      await car.publish(topic, JSON.stringify({ progress: 5, status: 'downloading' }));
      await settled(before.delivered + before.failed + 6);
      assert.equal((await updates.get(NOISY, 'release#tcu-3.0.1'))?.progress, 5);
    } finally {
      await car.end();
    }
  });

  it('100 duplicated and shuffled progress messages leave the status the in-order sequence gives, and a replay writes nothing', async () => {
    const sequence: Record<string, unknown>[] = [];
    let seq = 0;
    for (let p = 2; p <= 90; p += 2) sequence.push({ progress: p, status: 'downloading', sequence: seq++ });
    for (let p = 25; p <= 100; p += 25) sequence.push({ progress: p, status: 'installing', sequence: seq++ });
    sequence.push({ progress: 100, status: 'installing', sequence: seq++ });
    assert.equal(sequence.length, 50);

    const noisy = [...sequence, ...sequence];
    for (let i = noisy.length - 1; i > 0; i--) {
      const j = (i * 7919 + 13) % (i + 1);
      [noisy[i], noisy[j]] = [noisy[j]!, noisy[i]!];
    }
    assert.equal(noisy.length, 100);
    assert.notDeepEqual(noisy.slice(0, 50), sequence, 'really shuffled');

    await startUpdate(IN_ORDER);
    await startUpdate(SHUFFLED);
    const ordered = await connect(IN_ORDER);
    const shuffled = await connect(SHUFFLED);
    const before = cloud.rules.stats();
    try {
      for (const m of sequence)
        await ordered.publish(`vehicle/updates/${IN_ORDER}/progress`, JSON.stringify(m));
      await Promise.all(
        noisy.map((m) => shuffled.publish(`vehicle/updates/${SHUFFLED}/progress`, JSON.stringify(m))),
      );
      await settled(before.delivered + before.failed + 150);
    } finally {
      await ordered.end();
      await shuffled.end();
    }
    const a = await updates.get(IN_ORDER, 'release#tcu-3.0.1');
    const b = await updates.get(SHUFFLED, 'release#tcu-3.0.1');
    // Progress within a status is stored at coarse steps only (on the status change, or when the stored value is
    // PROGRESS_STORE_SECONDS old), so the stored progress is the one of whichever installing report came first.
    assert.deepEqual({ status: a?.status, progress: a?.progress }, { status: 'installing', progress: 25 });
    assert.equal(b?.status, 'installing');
    assert.ok(
      [25, 50, 75, 100].includes(b?.progress ?? -1),
      `an installing progress that was sent: ${b?.progress}`,
    );
    assert.equal(cloud.rules.stats().failed, before.failed, 'no message was lost to the dead-letter path');
    // Every message again (duplicates, replays): nothing moves, nothing is written.
    const replayer = await connect(SHUFFLED);
    const again = cloud.rules.stats();
    try {
      await Promise.all(
        noisy.map((m) => replayer.publish(`vehicle/updates/${SHUFFLED}/progress`, JSON.stringify(m))),
      );
      await settled(again.delivered + again.failed + 100);
    } finally {
      await replayer.end();
    }
    assert.equal((await updates.get(SHUFFLED, 'release#tcu-3.0.1'))?.revision, b?.revision, 'no write');
    const recorded = (await history.listForVehicle(SHUFFLED, 500)).filter((e) => e.source === 'mqtt');
    assert.deepEqual(
      recorded.map((e) => e.status).sort(),
      ['downloading', 'installing'],
      'the history keeps the two status changes, not the 100 messages',
    );
  });
});

describe('the ingest queue: batches of vehicle messages', { timeout: 300_000 }, () => {
  it('a burst reaches the function in batches, every message recorded or refused', async () => {
    await startUpdate(BURST);
    const car = await connect(BURST);
    const before = cloud.rules.stats();
    try {
      await Promise.all(
        Array.from({ length: 30 }, (_, n) =>
          car.publish(
            `vehicle/updates/${BURST}/progress`,
            JSON.stringify({ progress: n + 1, status: 'downloading', sequence: n }),
          ),
        ),
      );
      await settled(before.delivered + before.failed + 30);
    } finally {
      await car.end();
    }
    const after = cloud.rules.stats();
    assert.equal(after.delivered - before.delivered, 30);
    assert.equal(after.failed, before.failed);
    // Four invocations at most run at once; what arrives meanwhile waits and goes ten at a time.
    const invocations = after.invocations - before.invocations;
    assert.ok(invocations <= 20, `30 messages in ${invocations} invocations`);
    assert.equal((await updates.get(BURST, 'release#tcu-3.0.1'))?.status, 'downloading');
  });

  it('the function answers a batch message by message: bad ones refused, good ones recorded, none failed', async () => {
    await startUpdate(BATCHED);
    const event = (status: string, progress: number) =>
      JSON.stringify({
        payload: Buffer.from(JSON.stringify({ status, progress })).toString('base64'),
        vin: BATCHED,
        channel: 'progress',
        received_at: Date.now(),
      });
    const record = (messageId: string, body: string) => ({
      messageId,
      receiptHandle: messageId,
      body,
      attributes: { ApproximateReceiveCount: '1', SentTimestamp: String(Date.now()) },
      eventSource: 'aws:sqs',
      eventSourceARN: 'arn:aws:sqs:local:000000000000:ota-local-vehicle-messages',
    });
    const result = await cloud.lambdas.invoke('ingest', {
      Records: [
        record('not-json', '{"payload": '),
        record('not-an-event', JSON.stringify({ vin: BATCHED })),
        record('bad-progress', event('downloading', 140)),
        record('good', event('downloading', 35)),
      ],
    });
    assert.deepEqual(result, { batchItemFailures: [] });
    const state = await updates.get(BATCHED, 'release#tcu-3.0.1');
    assert.deepEqual(
      { status: state?.status, progress: state?.progress },
      { status: 'downloading', progress: 35 },
    );
  });
});

describe('broker restart', { timeout: 300_000 }, () => {
  it('vehicles reconnect to the restarted broker and the rules path keeps recording', async () => {
    const v = vehicles.get(NOISY)!;
    const client = mqtt.connect(cloud.endpoints.mqtt, {
      protocolVersion: 4,
      clientId: NOISY,
      clean: false,
      ca: cloud.caCertPem,
      key: v.vehicle.keyPem,
      cert: v.certPem,
      reconnectPeriod: 200,
    });
    try {
      await new Promise<void>((resolve, reject) => {
        client.once('connect', () => resolve());
        client.once('error', reject);
      });
      let reconnects = 0;
      client.on('connect', () => {
        reconnects++;
      });
      await cloud.broker.restart(300);
      assert.equal(
        await waitFor(() => reconnects > 0 && client.connected, 10000),
        true,
        'reconnected after the restart',
      );
      const before = cloud.rules.stats();
      // A status change (progress within a status is stored only every PROGRESS_STORE_SECONDS).
      await client.publishAsync(
        `vehicle/updates/${NOISY}/progress`,
        JSON.stringify({ progress: 60, status: 'installing' }),
        { qos: 1 },
      );
      await settled(before.delivered + before.failed + 1);
      const state = await updates.get(NOISY, 'release#tcu-3.0.1');
      assert.deepEqual(
        { status: state?.status, progress: state?.progress },
        { status: 'installing', progress: 60 },
      );
    } finally {
      await client.endAsync();
    }
  });
});
