/** The MQTT session with a fake client: backoff with jitter, resubscribe, PUBACK after storage, stop. */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt';
import { MqttSession, NotConnectedError } from '../../vehicle/mqtt-session.js';
import { FakeRuntime } from '../support/agent-fakes.js';

const VIN = '1HGCM82633A004352';

class FakeClient extends EventEmitter {
  subscribed: string[] = [];
  published: string[] = [];
  ended = false;
  handleMessage: (packet: IPublishPacket, cb: (err?: Error) => void) => void = (_p, cb) => cb();
  constructor(readonly options: IClientOptions) {
    super();
  }
  subscribe(
    topic: string,
    _o: unknown,
    cb: (err: Error | null, granted: { topic: string; qos: number }[]) => void,
  ) {
    this.subscribed.push(topic);
    cb(null, [{ topic, qos: 1 }]);
  }
  publish(topic: string, _p: unknown, _o: unknown, cb: (err?: Error) => void) {
    this.published.push(topic);
    cb();
  }
  end() {
    this.ended = true;
  }
  async endAsync() {
    this.ended = true;
  }
}

/** A runtime whose sleeps wait until the test releases them, so reconnect timing is observable. */
class SteppedRuntime extends FakeRuntime {
  readonly waiting: (() => void)[] = [];
  override async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    await new Promise<void>((resolve, reject) => {
      this.waiting.push(resolve);
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    this.time += ms;
  }
  release(): void {
    this.waiting.shift()?.();
  }
}

function setup(onOffer: (p: Buffer) => Promise<void> = async () => {}) {
  const clients: FakeClient[] = [];
  const runtime = new SteppedRuntime(0, 0.5);
  const changes: boolean[] = [];
  const session = new MqttSession({
    url: 'mqtts://broker',
    vin: VIN,
    keyPem: 'key',
    certPem: 'cert',
    ca: 'ca',
    onOffer,
    onConnectionChange: (c) => changes.push(c),
    factory: (_url, options) => {
      const c = new FakeClient(options);
      clients.push(c);
      return c as unknown as MqttClient;
    },
    backoff: { baseMs: 1000, maxMs: 8000 },
    stableAfterMs: 10_000,
    runtime,
  });
  return { session, clients, runtime, changes };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('MqttSession', { timeout: 60_000 }, () => {
  it('connects as the VIN with a persistent session over verified TLS, and subscribes on every connection', async () => {
    const { session, clients, changes } = setup();
    session.start();
    const c = clients[0]!;
    assert.equal(c.options.clientId, VIN);
    assert.equal(c.options.clean, false);
    assert.equal(c.options.protocolVersion, 4);
    assert.equal(c.options.rejectUnauthorized, true);
    assert.equal(c.options.reconnectPeriod, 0, 'reconnection is the session’s own');
    c.emit('connect', { sessionPresent: true });
    assert.deepEqual(
      c.subscribed,
      [`vehicle/updates/${VIN}/issue_details`],
      'subscribes even when the session is present',
    );
    assert.deepEqual(changes, [true]);
    await session.stop();
  });

  it('reconnects with exponential backoff and full jitter, and resets it after a stable connection', async () => {
    const { session, clients, runtime } = setup();
    session.start();
    for (let i = 0; i < 4; i++) {
      clients.at(-1)!.emit('close');
      await tick();
      runtime.release();
      await tick();
    }
    assert.deepEqual(runtime.sleeps, [500, 1000, 2000, 4000], 'random 0.5 of 1 s, 2 s, 4 s, 8 s');
    assert.equal(clients.length, 5);
    const c = clients.at(-1)!;
    c.emit('connect', { sessionPresent: false });
    runtime.time += 20_000;
    c.emit('close');
    await tick();
    assert.equal(runtime.sleeps.at(-1), 500, 'a connection that lasted resets the backoff');
    assert.equal(clients[0]!.ended, true, 'dead clients are ended');
    await session.stop();
  });

  it('acknowledges an offer only after the handler stored it; a failed store withholds the PUBACK', async () => {
    let release: () => void = () => {};
    const stored: string[] = [];
    const { session, clients } = setup(async (p) => {
      await new Promise<void>((r) => {
        release = r;
      });
      if (p.toString() === 'bad') throw new Error('disk full');
      stored.push(p.toString());
    });
    session.start();
    const c = clients[0]!;
    const acks: (Error | undefined)[] = [];
    c.handleMessage(
      { topic: `vehicle/updates/${VIN}/issue_details`, payload: Buffer.from('offer') } as IPublishPacket,
      (err) => acks.push(err),
    );
    await tick();
    assert.equal(acks.length, 0, 'no PUBACK while storing');
    release();
    await tick();
    assert.equal(acks.length, 1);
    assert.equal(acks[0], undefined, 'acknowledged without error');
    assert.deepEqual(stored, ['offer']);
    c.handleMessage(
      { topic: `vehicle/updates/${VIN}/issue_details`, payload: Buffer.from('bad') } as IPublishPacket,
      (err) => acks.push(err),
    );
    await tick();
    release();
    await tick();
    assert.match(String(acks[1]), /disk full/);
    await session.stop();
  });

  it('fails publishes at once while disconnected, and stops reconnecting after stop()', async () => {
    const { session, clients, runtime } = setup();
    session.start();
    await assert.rejects(session.publish('t', 'x'), NotConnectedError);
    clients[0]!.emit('connect', { sessionPresent: false });
    await session.publish(`vehicle/updates/${VIN}/status`, '{}');
    assert.deepEqual(clients[0]!.published, [`vehicle/updates/${VIN}/status`]);
    clients[0]!.emit('close');
    await tick();
    await session.stop();
    runtime.release();
    await tick();
    assert.equal(clients.length, 1, 'no reconnect after stop');
  });
});
