/**
 * The MQTT session survives its broker and its network: a broker restart on the same port (the local broker keeps
 * sessions in memory, so they are lost and the agent must subscribe again), a connection cut with the broker still
 * up (the persistent session keeps offers that arrive meanwhile), and a black hole where packets silently vanish
 * (keep-alive notices). Offers then still reach the agent over MQTT, and outcomes still reach DynamoDB.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { VehicleMessage } from '../../local/mqtt-broker.js';
import { vehicleTopic } from '../../protocol/topics.js';
import type { AgentEvent } from '../../vehicle/agent.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  startAgent,
  startAgentCloud,
} from '../support/agent-cloud.js';
import { portOf, startFaultProxy } from '../support/agent-net.js';

let ac: AgentCloud;
let rel: PublishedRelease;
let vinSerial = 0;
const nextVin = () => `1HGCM82633A5${String(++vinSerial).padStart(5, '0')}`;
const connections = (events: AgentEvent[]) =>
  events
    .filter((e): e is Extract<AgentEvent, { type: 'connection' }> => e.type === 'connection')
    .map((e) => e.connected);
// Polling stays off while MQTT is merely down: what arrives here must come over MQTT.
const mqttOnly = { polling: { intervalMs: 60_000, connectedIntervalMs: 0, mqttGraceMs: 600_000 } };

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud();
  rel = await publishRelease(ac, { version: '2.0.0', size: 256 * 1024 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

async function expectInstalledOverMqtt(v: Awaited<ReturnType<typeof startAgent>>, vin: string, dir: string) {
  const outcome = await v.events.outcome('2.0.0');
  assert.equal(outcome.status, 'completed', outcome.reason);
  assert.ok(
    v.events.events.some((e) => e.type === 'offer' && e.source === 'mqtt'),
    'the offer arrived over MQTT',
  );
  await v.agent.whenIdle();
  assertVehicleRuns(dir, '2.0.0', rel.image);
  const backend = await backendVehicle(ac, vin);
  assert.equal(backendUpdate(backend, '2.0.0')?.status, 'completed');
  assert.equal(backend.ecus[0]?.version, '2.0.0');
}

describe('vehicle agent: MQTT session resilience', { timeout: 240_000 }, () => {
  it('reconnects and subscribes again after its broker restarts on the same port (session lost)', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const heard: VehicleMessage[] = [];
    ac.cloud.broker.onVehicleMessage((m) => {
      if (m.vin === vin) heard.push(m);
    });
    const v = await startAgent(ac, vin, dir, mqttOnly);
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'first connection');
      // Down for 1.5 s: reconnect attempts are refused meanwhile, with growing backoff.
      await ac.cloud.broker.restart(1500);
      // The new broker has no session: only a fresh SUBSCRIBE from the agent lets an offer through.
      const subscribed = new Promise<void>((resolve) =>
        ac.cloud.broker.aedes.on('subscribe', (subs, client) => {
          if (client?.id === vin && subs.some((s) => s.topic === vehicleTopic(vin, 'issue_details')))
            resolve();
        }),
      );
      await Promise.race([
        subscribed,
        sleep(15_000).then(() => Promise.reject(new Error('the agent did not subscribe again'))),
      ]);
      assert.deepEqual(connections(v.events.events), [true, false, true]);
      // The session was lost, so the agent asks the backend what it missed; nothing was pending yet.
      const catchUp = await v.events.waitFor(
        (e) => e.type === 'poll' && e.reason === 'catch_up',
        10_000,
        'catch-up poll',
      );
      assert.deepEqual(catchUp, { type: 'poll', reason: 'catch_up', pending: 0 });
      const offer = await initiateOffer(v, '2.0.0');
      await publishOffer(ac, vin, offer); // through the IoT Data Plane shim, into the restarted broker
      await expectInstalledOverMqtt(v, vin, dir);
      const statuses = heard.map((m) => JSON.parse(m.payload.toString()).status);
      assert.ok(
        statuses.includes('completed'),
        `status published to the restarted broker: ${statuses.join(',')}`,
      );
    } finally {
      await v.close();
    }
  });

  it('asks the backend for what it missed when it comes back without its session (offer lost with the broker)', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const v = await startAgent(ac, vin, dir, mqttOnly);
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'first connection');
      // The backend records the update while the broker is about to go: its notification never reaches the car,
      // and with polling off while MQTT is up, only the catch-up after the lost session can find it.
      await initiateOffer(v, '2.0.0');
      await ac.cloud.broker.restart(500);
      const catchUp = await v.events.waitFor(
        (e) => e.type === 'poll' && e.reason === 'catch_up',
        15_000,
        'catch-up poll',
      );
      assert.deepEqual(catchUp, { type: 'poll', reason: 'catch_up', pending: 1 });
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      assert.ok(v.events.events.some((e) => e.type === 'offer' && e.source === 'poll'));
      assert.equal(v.events.events.filter((e) => e.type === 'poll').length, 1, 'no poll but the catch-up');
      await v.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', rel.image);
      assert.equal(backendUpdate(await backendVehicle(ac, vin), '2.0.0')?.status, 'completed');
    } finally {
      await v.close();
    }
  });

  it('after a network cut, reconnects with backoff and receives the offer the persistent session kept', async () => {
    const proxy = await startFaultProxy(portOf(ac.cloud.endpoints.mqtt));
    ac.track(() => proxy.stop());
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const v = await startAgent(ac, vin, dir, { mqttUrl: `mqtts://127.0.0.1:${proxy.port}`, ...mqttOnly });
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'first connection');
      const offer = await initiateOffer(v, '2.0.0');
      await proxy.goDown();
      await v.events.waitFor((e) => e.type === 'connection' && !e.connected, 10_000, 'the disconnect');
      await publishOffer(ac, vin, offer); // the car is unreachable: the broker queues it in its session
      await sleep(1500);
      assert.ok(!v.events.events.some((e) => e.type === 'offer'), 'nothing arrived while cut off');
      const attempts = proxy.connections;
      await proxy.resume();
      await expectInstalledOverMqtt(v, vin, dir);
      assert.deepEqual(connections(v.events.events).slice(0, 3), [true, false, true]);
      assert.ok(proxy.connections > attempts, 'reconnected through the restored network');
    } finally {
      await v.close();
      await proxy.stop();
    }
  });

  it('notices a silent black hole through keep-alive, reconnects, and gets the queued offer', async () => {
    const proxy = await startFaultProxy(portOf(ac.cloud.endpoints.mqtt));
    ac.track(() => proxy.stop());
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const v = await startAgent(ac, vin, dir, {
      mqttUrl: `mqtts://127.0.0.1:${proxy.port}`,
      mqttKeepaliveSeconds: 2,
      ...mqttOnly,
    });
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'first connection');
      const offer = await initiateOffer(v, '2.0.0');
      proxy.freeze(); // no RST, no FIN: packets just vanish
      const frozenAt = Date.now();
      await v.events.waitFor((e) => e.type === 'connection' && !e.connected, 15_000, 'keep-alive to notice');
      assert.ok(Date.now() - frozenAt < 10_000, 'noticed within a few keep-alive periods');
      await publishOffer(ac, vin, offer);
      proxy.thaw();
      await expectInstalledOverMqtt(v, vin, dir);
    } finally {
      await v.close();
      await proxy.stop();
    }
  });
});
