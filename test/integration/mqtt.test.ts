/**
 * The local IoT Core stand-in over real sockets: the MQTT broker's per-vehicle policy with real mqtt.js clients
 * over mutual TLS, the IoT Data Plane shim driven by the real IoTDataPlaneClient, and the rules router that turns
 * vehicle progress/status messages into the topic rule's event.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import { type IotDataShim, startIotDataShim } from '../../local/iot-data-shim.js';
import { type MqttBroker, startMqttBroker } from '../../local/mqtt-broker.js';
import {
  type IngestQueueEvent,
  type RoutedMessage,
  type RulesRouter,
  startRulesRouter,
  type TopicRuleEvent,
} from '../../local/rules-router.js';
import { vehicleTopic } from '../../protocol/topics.js';
import { https } from '../support/https.js';
import { rawConnectPacket, rawPublishHeader, VehicleConnection, waitFor } from '../support/mqtt-clients.js';
import { createMqttTestPki, type KeyAndCert, type MqttTestPki } from '../support/mqtt-pki.js';

const VIN = '1HGCM82633A004352';
const OTHER_VIN = '5YJSA1E26HF000337';
const THIRD_VIN = 'WVWZZZ1JZXW000001';
const CREDENTIALS = { accessKeyId: 'AKIDLOCALBACKEND', secretAccessKey: 'local-backend-secret' };
const REGION = 'eu-west-1';
/** No test may hang the run: each gets this long. */
const T = { timeout: 20_000 };
/** How long a negative assertion ("never arrives") watches after a positive control has arrived. */
const QUIET_MS = 300;

let pki: MqttTestPki;
let broker: MqttBroker;
let shim: IotDataShim;
let router: RulesRouter;
let dataDir: string;
let deadLetterFile: string;
let iotData: IoTDataPlaneClient;
let vehicleId: KeyAndCert;
let otherId: KeyAndCert;
let thirdId: KeyAndCert;
/** Every event the rules router handed to invoke, in arrival order, and the batches they came in. */
const invoked: TopicRuleEvent[] = [];
const batches: IngestQueueEvent[] = [];
/** The ingest stand-in; tests swap it to make invocations fail. */
let invoke: (event: TopicRuleEvent) => Promise<void> = async () => {};
const open: VehicleConnection[] = [];
/** What the broker logged, to tell a TLS refusal from an MQTT one. */
const brokerLog: Array<{ message: string; extra?: Record<string, unknown> }> = [];
const recordLog = (message: string, extra?: Record<string, unknown>) => brokerLog.push({ message, extra });

const connect = async (opts: Partial<Parameters<typeof VehicleConnection.connect>[0]> = {}) => {
  const conn = await VehicleConnection.connect({
    url: broker.url,
    caPem: pki.caPem,
    clientId: VIN,
    identity: vehicleId,
    ...opts,
  });
  open.push(conn);
  return conn;
};

const sdkPublish = (
  topic: string,
  payload: Buffer | string,
  extra: { qos?: number; retain?: boolean } = {},
) =>
  iotData.send(
    new PublishCommand({
      topic,
      qos: extra.qos ?? 1,
      ...(extra.retain ? { retain: true } : {}),
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
    }),
  );

const topicOf = (vin: string, channel: 'progress' | 'status') => `vehicle/updates/${vin}/${channel}`;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-mqtt-'));
  pki = await createMqttTestPki(join(dataDir, 'ca'));
  [vehicleId, otherId, thirdId] = await Promise.all([
    pki.vehicle(VIN),
    pki.vehicle(OTHER_VIN),
    pki.vehicle(THIRD_VIN),
  ]);
  deadLetterFile = join(dataDir, 'dead-letters.jsonl');
  broker = await startMqttBroker({
    host: '127.0.0.1',
    port: 0,
    key: pki.server.keyPem,
    cert: pki.server.certPem,
    ca: pki.caPem,
    log: { info: recordLog, warn: recordLog },
  });
  shim = await startIotDataShim({
    key: pki.server.keyPem,
    cert: pki.server.certPem,
    broker,
    credentials: CREDENTIALS,
    region: REGION,
  });
  router = startRulesRouter({
    source: broker,
    // No batching window and a short visibility timeout: these tests watch single messages and retries.
    batchWindowMs: 0,
    visibilityTimeoutMs: 50,
    maxReceiveCount: 2,
    invoke: async (batch) => {
      batches.push(batch);
      // What lambdas/ingest/handler.ts does: each message on its own, the ones that threw named as failures.
      const batchItemFailures: { itemIdentifier: string }[] = [];
      for (const record of batch.Records) {
        const event = JSON.parse(record.body) as TopicRuleEvent;
        invoked.push(event);
        try {
          await invoke(event);
        } catch {
          batchItemFailures.push({ itemIdentifier: record.messageId });
        }
      }
      return { batchItemFailures };
    },
    deadLetterFile,
  });
  iotData = new IoTDataPlaneClient({
    region: REGION,
    endpoint: shim.url,
    credentials: CREDENTIALS,
    maxAttempts: 1,
    requestHandler: { httpsAgent: new Agent({ ca: pki.caPem }) },
  });
}, HOOK_TIMEOUT);

beforeEach(() => {
  invoke = async () => {};
}, HOOK_TIMEOUT);

after(async () => {
  await Promise.all(open.map((c) => c.end()));
  iotData?.destroy();
  await router?.stop();
  await shim?.stop();
  await broker?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('MQTT broker policy (mutual TLS, IoT policy rules)', { timeout: 300_000 }, () => {
  it(
    'delivers an issue_details published through the real IoTDataPlaneClient to that vehicle only',
    T,
    async () => {
      const car = await connect();
      const other = await connect({ clientId: OTHER_VIN, identity: otherId });
      assert.deepEqual(await car.subscribe([vehicleTopic(VIN, 'issue_details')]), [1]);
      assert.deepEqual(await other.subscribe([vehicleTopic(OTHER_VIN, 'issue_details')]), [1]);

      const payload = JSON.stringify({ update_id: 'campaign#c-1', release_id: 'tcu-3.0.1' });
      const out = await sdkPublish(vehicleTopic(VIN, 'issue_details'), payload);
      assert.equal(out.$metadata.httpStatusCode, 200);

      assert.ok(await waitFor(() => car.messages.length === 1), 'vehicle never received the notification');
      const [message] = car.messages;
      assert.equal(message?.topic, vehicleTopic(VIN, 'issue_details'));
      assert.equal(message?.payload.toString(), payload);
      assert.equal(message?.qos, 1);
      assert.equal(message?.retain, false);
      await sleep(QUIET_MS);
      assert.equal(other.messages.length, 0, 'another vehicle received a notification not meant for it');
    },
  );

  it(
    "refuses subscriptions to another VIN's issue_details and to wildcards (SUBACK 0x80, connection kept)",
    T,
    async () => {
      const car = await connect();
      const codes = await car.subscribe([
        vehicleTopic(OTHER_VIN, 'issue_details'),
        'vehicle/updates/#',
        'vehicle/updates/+/issue_details',
        '#',
        `vehicle/updates/${VIN}/+`,
        vehicleTopic(VIN, 'issue_details'),
      ]);
      assert.deepEqual(codes, [128, 128, 128, 128, 128, 1]);
      assert.equal(car.closed, false);

      await broker.publish(vehicleTopic(OTHER_VIN, 'issue_details'), 'for the other car', 1);
      await broker.publish(vehicleTopic(VIN, 'issue_details'), 'control', 1);
      assert.ok(
        await waitFor(() => car.messages.some((m) => m.payload.toString() === 'control')),
        'control message missing',
      );
      await sleep(QUIET_MS);
      assert.deepEqual(
        car.messages.map((m) => m.topic),
        [vehicleTopic(VIN, 'issue_details')],
      );
    },
  );

  for (const channel of ['progress', 'status'] as const) {
    it(
      `closes the connection of a vehicle publishing on another VIN's ${channel}, and the message goes nowhere`,
      T,
      async () => {
        const before = invoked.length;
        const spy = await connect({ clientId: OTHER_VIN, identity: otherId });
        // Would the forged message be forwarded to a subscriber? Wildcards are refused to vehicles, so watch in-process.
        const seen: string[] = [];
        const listen = (packet: { topic: string }) => seen.push(packet.topic);
        broker.aedes.on('publish', listen);
        try {
          const car = await connect();
          await assert.rejects(car.publish(topicOf(OTHER_VIN, channel), '{"status":"failed"}', { qos: 1 }));
          assert.ok(await car.waitForClose(), 'connection stayed open after an unauthorised publish');

          const again = await connect();
          await again.publish(topicOf(VIN, channel), '{"status":"downloading","progress":1}');
          assert.ok(await waitFor(() => invoked.length > before), 'control message never reached the router');
          await router.idle();
          assert.deepEqual(
            invoked.slice(before).map((e) => e.vin),
            [VIN],
          );
          assert.ok(!seen.includes(topicOf(OTHER_VIN, channel)), 'forged message was published');
          assert.equal(spy.closed, false);
        } finally {
          broker.aedes.off('publish', listen);
        }
      },
    );
  }

  it('closes the connection on retained, QoS 2, backend-topic and oversized publishes', T, async () => {
    const before = invoked.length;
    const attempts: Array<[string, string | Buffer, { qos?: 0 | 1 | 2; retain?: boolean }]> = [
      [topicOf(VIN, 'status'), '{"status":"failed"}', { qos: 1, retain: true }],
      [topicOf(VIN, 'status'), '{"status":"failed"}', { qos: 2 }],
      [vehicleTopic(VIN, 'issue_details'), '{"forged":true}', { qos: 1 }],
      [topicOf(VIN, 'progress'), Buffer.alloc(128 * 1024 + 1, 0x20), { qos: 1 }],
      [topicOf(VIN, 'progress'), Buffer.alloc(200 * 1024, 0x20), { qos: 1 }],
    ];
    for (const [topic, payload, opts] of attempts) {
      const car = await connect();
      car.client.publish(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false });
      assert.ok(await car.waitForClose(), `connection stayed open after ${topic} ${JSON.stringify(opts)}`);
    }
    // Controls: the same vehicle's plain status, and a payload of exactly the 128 KiB limit, both go through.
    const control = await connect();
    await control.publish(topicOf(VIN, 'status'), '{"status":"installing"}');
    await control.publish(topicOf(VIN, 'progress'), Buffer.alloc(128 * 1024, 0x20));
    assert.ok(await waitFor(() => invoked.length >= before + 2), 'control messages never reached the router');
    await router.idle();
    assert.deepEqual(
      invoked.slice(before).map((e) => Buffer.from(e.payload, 'base64').length),
      ['{"status":"installing"}'.length, 128 * 1024],
    );
    assert.equal(control.closed, false);
  });

  it(
    'cuts off a client that announces an oversized MQTT packet before the broker buffers it',
    T,
    async () => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: broker.port,
        ca: pki.caPem,
        key: vehicleId.keyPem,
        cert: vehicleId.certPem,
      });
      const received: Buffer[] = [];
      socket.on('data', (d: Buffer) => received.push(d));
      socket.on('error', () => {});
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve);
        socket.once('error', reject);
      });
      socket.write(rawConnectPacket(VIN));
      assert.ok(await waitFor(() => Buffer.concat(received).length >= 4), 'no CONNACK');
      assert.deepEqual([...Buffer.concat(received).subarray(0, 4)], [0x20, 0x02, 0x00, 0x00]);
      // 10 MiB announced, a few bytes sent: only a guard reading the length field can tell it apart from a slow client.
      socket.write(rawPublishHeader(topicOf(VIN, 'progress'), 10 * 1024 * 1024));
      socket.write(Buffer.alloc(1024, 0x41));
      const cutOff = await Promise.race([closed.then(() => true), sleep(2000).then(() => false)]);
      socket.destroy();
      assert.ok(cutOff, 'connection stayed open after announcing a 10 MiB packet');
    },
  );

  it('refuses a keep-alive above the IoT Core maximum (1200 s)', T, async () => {
    await assert.rejects(connect({ keepalive: 3600 }));
    const ok = await connect({ keepalive: 1200 });
    assert.equal(ok.closed, false);
  });

  it(
    "refuses a client id that is not the certificate's CN, and a certificate whose CN is not a VIN",
    T,
    async () => {
      await assert.rejects(
        connect({ clientId: OTHER_VIN, identity: vehicleId }),
        (err: Error & { code?: number }) => {
          assert.equal(err.code, 5, err.message);
          return true;
        },
      );
      await assert.rejects(connect({ clientId: '', identity: vehicleId }));
      const backend = await pki.vehicle('ota-backend');
      await assert.rejects(connect({ clientId: 'ota-backend', identity: backend }), /Not authorized/i);
      // Positive control: the same certificate with its own id is accepted.
      const ok = await connect();
      assert.equal(ok.closed, false);
    },
  );

  it('refuses a TLS client without a certificate and one with a certificate from another CA', T, async () => {
    const sessions: string[] = [];
    const onClient = (client: { id: string }) => sessions.push(client.id);
    broker.aedes.on('client', onClient);
    try {
      // Refused in the TLS handshake itself (the broker says so), never by a CONNACK.
      const refusedBefore = brokerLog.filter((e) => e.message === 'mqtt TLS handshake refused').length;
      const notConnack = (err: Error & { code?: unknown }) => {
        assert.notEqual(err.code, 5, err.message);
        return true;
      };
      await assert.rejects(connect({ identity: undefined }), notConnack);
      // Same CN, and an issuer with the same name as the local CA would not help either: the signature decides.
      const foreign = await pki.foreign(VIN);
      await assert.rejects(connect({ identity: foreign }), notConnack);
      assert.ok(
        await waitFor(
          () =>
            brokerLog.filter((e) => e.message === 'mqtt TLS handshake refused').length === refusedBefore + 2,
        ),
        'the broker did not refuse both TLS handshakes',
      );
      assert.deepEqual(sessions, []);
      // Positive control: the broker does register a properly certified vehicle.
      await connect();
      assert.deepEqual(sessions, [VIN]);
    } finally {
      broker.aedes.off('client', onClient);
    }
  });

  it(
    'accepts username and password sent along with a valid certificate, on the certificate alone',
    T,
    async () => {
      const car = await connect({ username: 'someone-else', password: 'not checked' });
      assert.deepEqual(await car.subscribe([vehicleTopic(VIN, 'issue_details')]), [1]);
      // The password grants nothing beyond the certificate: other VINs are still refused.
      assert.deepEqual(await car.subscribe([vehicleTopic(OTHER_VIN, 'issue_details')]), [128]);
    },
  );

  it('lets a second connection with the same client id take over the first', T, async () => {
    const first = await connect();
    const second = await connect();
    assert.ok(await first.waitForClose(), 'first connection was not closed on takeover');
    assert.equal(second.closed, false);
    assert.deepEqual(await second.subscribe([vehicleTopic(VIN, 'issue_details')]), [1]);
  });
});

describe('persistent sessions', { timeout: 300_000 }, () => {
  it(
    'queues a QoS 1 issue_details published while the vehicle was offline and delivers it on reconnect',
    T,
    async () => {
      const first = await connect({ clientId: THIRD_VIN, identity: thirdId, clean: false });
      assert.deepEqual(await first.subscribe([vehicleTopic(THIRD_VIN, 'issue_details')]), [1]);
      await first.end();

      await sdkPublish(vehicleTopic(THIRD_VIN, 'issue_details'), '{"queued":true}');

      // A new client object that does not resubscribe: only the broker's session can deliver this.
      const back = await connect({
        clientId: THIRD_VIN,
        identity: thirdId,
        clean: false,
        resubscribe: false,
      });
      assert.equal(back.sessionPresent, true);
      assert.ok(await waitFor(() => back.messages.length === 1), 'queued message not delivered');
      assert.equal(back.messages[0]?.payload.toString(), '{"queued":true}');
      assert.equal(back.messages[0]?.qos, 1);
      await back.end();

      // A clean session drops it all.
      const clean = await connect({ clientId: THIRD_VIN, identity: thirdId, clean: true });
      assert.equal(clean.sessionPresent, false);
      await clean.end();
    },
  );

  it(
    'never delivers a refused filter from a persisted session, even when it shared a SUBSCRIBE with an allowed one',
    T,
    async () => {
      const first = await connect({ clientId: THIRD_VIN, identity: thirdId, clean: false });
      assert.deepEqual(
        await first.subscribe([
          vehicleTopic(OTHER_VIN, 'issue_details'),
          vehicleTopic(THIRD_VIN, 'issue_details'),
        ]),
        [128, 1],
      );
      await first.end();

      await broker.publish(vehicleTopic(OTHER_VIN, 'issue_details'), 'for the other car', 1);
      await broker.publish(vehicleTopic(THIRD_VIN, 'issue_details'), 'control', 1);

      const back = await connect({
        clientId: THIRD_VIN,
        identity: thirdId,
        clean: false,
        resubscribe: false,
      });
      assert.ok(
        await waitFor(() => back.messages.some((m) => m.payload.toString() === 'control')),
        'queued control missing',
      );
      await broker.publish(vehicleTopic(OTHER_VIN, 'issue_details'), 'for the other car, live', 1);
      await broker.publish(vehicleTopic(THIRD_VIN, 'issue_details'), 'control, live', 1);
      assert.ok(
        await waitFor(() => back.messages.some((m) => m.payload.toString() === 'control, live')),
        'live control missing',
      );
      await sleep(QUIET_MS);
      assert.deepEqual(
        back.messages.map((m) => m.topic),
        [vehicleTopic(THIRD_VIN, 'issue_details'), vehicleTopic(THIRD_VIN, 'issue_details')],
      );
      await back.end();
    },
  );
});

/** A message source the test feeds by hand (instead of the broker), for rules routers of its own. */
function handSource() {
  let listener: ((message: RoutedMessage) => void) | undefined;
  return {
    source: {
      onVehicleMessage(l: (message: RoutedMessage) => void) {
        listener = l;
        return () => {};
      },
    },
    emit: (message: RoutedMessage) => listener!(message),
  };
}

describe('rules router (topic rule -> ingest)', { timeout: 300_000 }, () => {
  it(
    'delivers a progress message as the topic rule event: base64 raw payload, vin, channel, received_at',
    T,
    async () => {
      const car = await connect();
      const raw = Buffer.concat([
        Buffer.from('{"status":"downloading","progress":42}'),
        Buffer.from([0xff, 0x00, 0xfe]),
      ]);
      const from = invoked.length;
      const sentAt = Date.now();
      await car.publish(topicOf(VIN, 'progress'), raw, { qos: 1 });
      assert.ok(await waitFor(() => invoked.length > from), 'router never invoked');
      const doneAt = Date.now();
      await router.idle();
      const events = invoked.slice(from);
      assert.equal(events.length, 1);
      const event = events[0]!;
      assert.deepEqual(Object.keys(event).sort(), ['channel', 'payload', 'received_at', 'vin']);
      assert.equal(event.payload, raw.toString('base64'));
      assert.equal(event.vin, VIN);
      assert.equal(event.channel, 'progress');
      assert.ok(
        Number.isInteger(event.received_at) && event.received_at >= sentAt && event.received_at <= doneAt,
        `received_at ${event.received_at} is not within [${sentAt}, ${doneAt}]`,
      );

      await car.publish(topicOf(VIN, 'status'), '{"status":"installed"}', { qos: 0 });
      assert.ok(await waitFor(() => invoked.length > from + 1), 'status message never reached the router');
      assert.equal(invoked.at(-1)?.channel, 'status');
    },
  );

  it(
    'receives a message the function failed again after the visibility timeout, then dead-letters it (memory and file)',
    T,
    async () => {
      const statsBefore = router.stats();
      const from = invoked.length;
      invoke = async (event) => {
        if (Buffer.from(event.payload, 'base64').toString().includes('boom'))
          throw new Error('ingest unavailable');
      };
      const car = await connect();
      await car.publish(topicOf(VIN, 'status'), '{"status":"failed","reason":"boom"}');
      await car.publish(topicOf(VIN, 'status'), '{"status":"installing"}');
      assert.ok(
        await waitFor(
          () =>
            router.stats().delivered + router.stats().failed >=
            statsBefore.delivered + statsBefore.failed + 2,
        ),
        'both messages should have settled',
      );
      await router.idle();

      const stats = router.stats();
      assert.equal(stats.failed, statsBefore.failed + 1);
      assert.equal(stats.delivered, statsBefore.delivered + 1);
      assert.equal(stats.deadLetters, statsBefore.deadLetters + 1);
      assert.equal(stats.redelivered, statsBefore.redelivered + 1, 'received twice (maxReceiveCount 2)');
      const boom = invoked
        .slice(from)
        .filter((e) => Buffer.from(e.payload, 'base64').toString().includes('boom'));
      assert.equal(boom.length, 2, 'the failed message reached the function twice');
      const letter = router.deadLetters().at(-1)!;
      assert.equal(letter.error, 'the function reported the message as failed');
      assert.equal(letter.receives, 2);
      assert.equal(letter.event.vin, VIN);
      assert.equal(
        Buffer.from(letter.event.payload, 'base64').toString(),
        '{"status":"failed","reason":"boom"}',
      );
      const lines = readFileSync(deadLetterFile, 'utf8').trim().split('\n');
      assert.deepEqual(JSON.parse(lines.at(-1)!).event, letter.event);
    },
  );

  it(
    'receives every message of an invocation that threw again, and records them when the retry succeeds',
    T,
    async () => {
      const { source, emit } = handSource();
      let calls = 0;
      const seen: string[][] = [];
      const local = startRulesRouter({
        source,
        concurrency: 1,
        batchWindowMs: 0,
        visibilityTimeoutMs: 20,
        invoke: (batch) => {
          calls++;
          seen.push(batch.Records.map((r) => r.attributes.ApproximateReceiveCount));
          if (calls === 1) throw new Error('DynamoDB unavailable');
          return { batchItemFailures: [] };
        },
      });
      for (let n = 0; n < 3; n++)
        emit({ topic: topicOf(VIN, 'progress'), payload: Buffer.from(`{"n":${n}}`), receivedAt: n });
      await local.idle();
      await local.stop();
      assert.deepEqual(
        seen,
        [['1'], ['1', '1'], ['2']],
        'the first message came again, with its receive count',
      );
      assert.deepEqual(
        { ...local.stats() },
        { delivered: 3, failed: 0, deadLetters: 0, pending: 0, throttled: 0, invocations: 3, redelivered: 1 },
      );
    },
  );

  it('batches: up to batchSize messages per invocation, a partial batch after the window', T, async () => {
    const { source, emit } = handSource();
    const sizes: number[] = [];
    const local = startRulesRouter({
      source,
      concurrency: 1,
      batchWindowMs: 150,
      invoke: (batch) => {
        sizes.push(batch.Records.length);
        for (const r of batch.Records) {
          assert.equal(r.eventSource, 'aws:sqs');
          assert.deepEqual(Object.keys(JSON.parse(r.body)).sort(), [
            'channel',
            'payload',
            'received_at',
            'vin',
          ]);
        }
      },
    });
    const startedAt = Date.now();
    for (let n = 0; n < 23; n++)
      emit({
        topic: topicOf(n % 2 ? VIN : OTHER_VIN, 'progress'),
        payload: Buffer.from('{}'),
        receivedAt: n,
      });
    await local.idle();
    const tookMs = Date.now() - startedAt;
    await local.stop();
    assert.deepEqual(sizes, [10, 10, 3], 'two full batches at once, the rest when the window closed');
    assert.ok(tookMs >= 140, `the partial batch waited for the window (${tookMs} ms)`);
    assert.equal(local.stats().invocations, 3);
    assert.equal(local.stats().delivered, 23);
  });

  it(
    'invokes asynchronously: the vehicle gets its PUBACK while the invocation is still running',
    T,
    async () => {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let finished = false;
      invoke = async () => {
        await gate;
        finished = true;
      };
      const car = await connect();
      const from = invoked.length;
      await car.publish(topicOf(VIN, 'progress'), '{"status":"downloading","progress":5}', { qos: 1 });
      assert.ok(await waitFor(() => invoked.length > from), 'router never invoked');
      assert.equal(finished, false);
      assert.equal(router.stats().pending, 1);
      release();
      await router.idle();
      assert.equal(finished, true);
      assert.equal(router.stats().pending, 0);
    },
  );

  it('bounds concurrent invocations and dead-letters what overflows its queue', T, async () => {
    const { source, emit } = handSource();
    let running = 0;
    let peak = 0;
    const gates: Array<() => void> = [];
    const local = startRulesRouter({
      source,
      concurrency: 2,
      batchSize: 1,
      batchWindowMs: 0,
      maxQueued: 3,
      invoke: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((resolve) => gates.push(resolve));
        running--;
      },
    });
    const message = (n: number): RoutedMessage => ({
      topic: topicOf(VIN, 'progress'),
      payload: Buffer.from(`{"n":${n}}`),
      receivedAt: 1_700_000_000_000 + n,
    });
    for (let n = 0; n < 6; n++) emit(message(n));
    // Not a progress/status topic: the rule's WHERE clause drops it.
    emit({ topic: vehicleTopic(VIN, 'issue_details'), payload: Buffer.from('{}'), receivedAt: 0 });
    assert.ok(await waitFor(() => gates.length === 2), 'two invocations should be running');
    assert.equal(local.stats().pending, 5);
    assert.equal(local.stats().failed, 1);
    assert.equal(local.deadLetters()[0]?.error, 'rules router queue is full');
    assert.equal(Buffer.from(local.deadLetters()[0]!.event.payload, 'base64').toString(), '{"n":5}');
    while (local.stats().pending > 0) {
      await waitFor(() => gates.length > 0);
      gates.shift()!();
      await sleep(1);
    }
    await local.stop();
    assert.equal(peak, 2);
    assert.deepEqual(local.stats(), {
      delivered: 5,
      failed: 1,
      deadLetters: 1,
      pending: 0,
      throttled: 0,
      invocations: 5,
      redelivered: 0,
    });
  });
});

describe('IoT Data Plane shim', { timeout: 300_000 }, () => {
  it(
    'refuses requests without a SigV4 Authorization header (403 JSON), and nothing is published',
    T,
    async () => {
      const car = await connect();
      await car.subscribe([vehicleTopic(VIN, 'issue_details')]);
      const url = `${shim.url}/topics/${encodeURIComponent(vehicleTopic(VIN, 'issue_details'))}?qos=1`;
      const unsigned = await https(url, { method: 'POST', body: '{"unsigned":true}', ca: pki.caPem });
      assert.equal(unsigned.status, 403);
      assert.equal(unsigned.headers['x-amzn-errortype'], 'ForbiddenException');
      assert.equal(typeof unsigned.json?.message, 'string');
      const bearer = await https(url, {
        method: 'POST',
        headers: { authorization: 'Bearer abc' },
        body: '{"unsigned":true}',
        ca: pki.caPem,
      });
      assert.equal(bearer.status, 403);

      await sdkPublish(vehicleTopic(VIN, 'issue_details'), '{"signed":true}');
      assert.ok(await waitFor(() => car.messages.length > 0), 'signed publish not delivered');
      await sleep(QUIET_MS);
      assert.deepEqual(
        car.messages.map((m) => m.payload.toString()),
        ['{"signed":true}'],
      );
    },
  );

  it('verifies the signature: a wrong secret or a tampered body is refused', T, async () => {
    const forged = new IoTDataPlaneClient({
      region: REGION,
      endpoint: shim.url,
      credentials: { accessKeyId: CREDENTIALS.accessKeyId, secretAccessKey: 'guessed' },
      maxAttempts: 1,
      requestHandler: { httpsAgent: new Agent({ ca: pki.caPem }) },
    });
    try {
      await assert.rejects(
        forged.send(
          new PublishCommand({
            topic: vehicleTopic(VIN, 'issue_details'),
            qos: 1,
            payload: Buffer.from('{}'),
          }),
        ),
        (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
          assert.equal(err.name, 'ForbiddenException');
          assert.equal(err.$metadata?.httpStatusCode, 403);
          return true;
        },
      );
    } finally {
      forged.destroy();
    }
    // Same signed headers, different body: the payload hash no longer matches.
    const tampering = new IoTDataPlaneClient({
      region: REGION,
      endpoint: shim.url,
      credentials: CREDENTIALS,
      maxAttempts: 1,
      requestHandler: { httpsAgent: new Agent({ ca: pki.caPem }) },
    });
    tampering.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { body?: unknown };
        request.body = Buffer.from('{"ok":2}'); // same length, so only the signature can notice
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'tamperAfterSigning' },
    );
    try {
      await assert.rejects(
        tampering.send(
          new PublishCommand({
            topic: vehicleTopic(VIN, 'issue_details'),
            qos: 1,
            payload: Buffer.from('{"ok":1}'),
          }),
        ),
        { name: 'ForbiddenException' },
      );
    } finally {
      tampering.destroy();
    }
  });

  it('refuses topics other than issue_details, retained publishes and QoS 2 (403/400)', T, async () => {
    const spy = await connect({ clientId: OTHER_VIN, identity: otherId });
    await spy.subscribe([vehicleTopic(OTHER_VIN, 'issue_details')]);
    const from = invoked.length;
    for (const topic of [
      topicOf(VIN, 'progress'),
      topicOf(VIN, 'status'),
      'vehicle/updates/#',
      `vehicle/updates/${VIN}/issue_details/extra`,
      'vehicle/updates/not-a-vin/issue_details',
      '$aws/things/x/shadow/update',
    ]) {
      await assert.rejects(
        sdkPublish(topic, '{"status":"installed"}'),
        (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
          assert.equal(err.name, 'ForbiddenException', topic);
          assert.equal(err.$metadata?.httpStatusCode, 403);
          return true;
        },
      );
    }
    await assert.rejects(sdkPublish(vehicleTopic(OTHER_VIN, 'issue_details'), '{}', { retain: true }), {
      name: 'ForbiddenException',
    });
    await assert.rejects(sdkPublish(vehicleTopic(OTHER_VIN, 'issue_details'), '{}', { qos: 2 }), {
      name: 'InvalidRequestException',
    });

    await sdkPublish(vehicleTopic(OTHER_VIN, 'issue_details'), 'control', { qos: 0 });
    assert.ok(await waitFor(() => spy.messages.length > 0), 'control publish not delivered');
    await sleep(QUIET_MS);
    assert.deepEqual(
      spy.messages.map((m) => m.payload.toString()),
      ['control'],
    );
    assert.equal(invoked.length, from, 'a shim publish reached the rules router');
  });

  it('refuses bodies over 128 KiB with 413 and accepts exactly 128 KiB', T, async () => {
    await assert.rejects(
      sdkPublish(vehicleTopic(VIN, 'issue_details'), Buffer.alloc(128 * 1024 + 1)),
      (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
        assert.equal(err.$metadata?.httpStatusCode, 413);
        assert.equal(err.name, 'RequestEntityTooLargeException');
        return true;
      },
    );
    const ok = await sdkPublish(vehicleTopic(VIN, 'issue_details'), Buffer.alloc(128 * 1024));
    assert.equal(ok.$metadata.httpStatusCode, 200);
  });
});
