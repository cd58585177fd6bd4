/** Reports: sequence numbers, durability across restarts, retry until acknowledged, honest drops, MQTT once. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { StatusBody } from '../../vehicle/api-client.js';
import { ApiError } from '../../vehicle/errors.js';
import { Reporter } from '../../vehicle/reporter.js';
import { initialState, StateStore } from '../../vehicle/state-store.js';
import { FakeRuntime } from '../support/agent-fakes.js';

const VIN = '1HGCM82633A004352';
const root = mkdtempSync(join(tmpdir(), 'agent-report-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
let n = 0;
const open = (dir = join(root, `r${++n}`)) => StateStore.open(dir, () => initialState(VIN, {}));

class FakeApi {
  readonly received: StatusBody[] = [];
  constructor(private readonly answer: (body: StatusBody, i: number) => Promise<void> | void = () => {}) {}
  async reportStatus(body: StatusBody) {
    const i = this.received.push(body) - 1;
    await this.answer(body, i);
    return {
      vin: VIN,
      update_id: 'release#r1',
      status: body.status,
      progress: body.progress ?? 0,
      applied: true,
    };
  }
}

class FakeMqtt {
  connected = true;
  readonly published: { topic: string; payload: Record<string, unknown> }[] = [];
  async publish(topic: string, payload: string) {
    if (!this.connected) throw new Error('offline');
    this.published.push({ topic, payload: JSON.parse(payload) });
  }
}

describe('Reporter', { timeout: 60_000 }, () => {
  it('numbers reports in order, publishes each once on MQTT, and posts the outcome until acknowledged', async () => {
    const store = await open();
    const api = new FakeApi();
    const mqtt = new FakeMqtt();
    const r = new Reporter({ vin: VIN, store, api, mqtt: () => mqtt, runtime: new FakeRuntime() });
    r.start();
    await r.status({ status: 'downloading', firmware_version: '2.0.0', progress: 0 });
    await r.progress({ status: 'downloading', firmware_version: '2.0.0', progress: 42.123 });
    await r.status({ status: 'completed', firmware_version: '2.0.0', campaign_id: 'c-1' });
    await r.whenIdle();
    await r.stop();
    // The phase report is done once MQTT acknowledged it; the outcome is confirmed over HTTPS too.
    assert.deepEqual(
      api.received.map((b) => [b.status, b.sequence]),
      [['completed', 2]],
    );
    assert.equal(api.received[0]?.campaign_id, 'c-1');
    assert.deepEqual(
      mqtt.published.map((m) => [m.topic.split('/').at(-1), m.payload.status, m.payload.sequence]),
      [
        ['status', 'downloading', 0],
        ['progress', 'downloading', 1],
        ['status', 'completed', 2],
      ],
    );
    assert.equal(mqtt.published[1]?.payload.progress, 42.1);
    assert.equal(store.state.next_sequence, 3);
    assert.deepEqual(store.state.pending_reports, []);
  });

  it('keeps unacknowledged reports across a restart and sends them then, with new sequences never reused', async () => {
    const dir = join(root, `r${++n}`);
    const first = await open(dir);
    const down = new FakeApi(() => {
      throw new ApiError(0, 'ECONNREFUSED', 'backend unreachable');
    });
    const r1 = new Reporter({ vin: VIN, store: first, api: down, runtime: new FakeRuntime() });
    await r1.status({ status: 'failed', firmware_version: '2.0.0', reason: 'x'.repeat(600) });
    r1.start();
    while (down.received.length < 3) await new Promise((res) => setImmediate(res));
    await r1.stop();
    first.close();
    assert.equal(first.state.pending_reports.length, 1);
    assert.ok(first.state.pending_reports[0]!.attempts >= 2, 'attempts counted');

    const second = await open(dir);
    const up = new FakeApi();
    const r2 = new Reporter({ vin: VIN, store: second, api: up, runtime: new FakeRuntime() });
    r2.start();
    await r2.whenIdle();
    await r2.status({ status: 'completed', firmware_version: '3.0.0' });
    await r2.whenIdle();
    await r2.stop();
    assert.deepEqual(
      up.received.map((b) => [b.status, b.sequence]),
      [
        ['failed', 0],
        ['completed', 1],
      ],
    );
    assert.equal(up.received[0]?.reason?.length, 500, 'reasons are cut to what the API takes');
  });

  it('backs off exponentially with jitter and honours retry-after', async () => {
    const runtime = new FakeRuntime();
    const api = new FakeApi((_b, i) => {
      if (i === 0) throw new ApiError(503, 'http_503', 'unavailable');
      if (i === 1) throw new ApiError(0, 'ECONNRESET', 'reset');
      if (i === 2) throw new ApiError(429, 'rate_limited', 'slow down', 7000);
    });
    const r = new Reporter({
      vin: VIN,
      store: await open(),
      api,
      runtime,
      backoff: { baseMs: 1000, maxMs: 60_000 },
    });
    r.start();
    await r.status({ status: 'completed', firmware_version: '2.0.0' });
    await r.whenIdle(1);
    await r.stop();
    assert.equal(api.received.length, 4);
    const retryWaits = runtime.sleeps.filter((ms) => ms !== 1 && ms !== 60_000); // not the idle polls
    assert.deepEqual(
      retryWaits,
      [500, 1000, 7000],
      'jittered exponential, then the server-given retry-after',
    );
  });

  it('drops a report the backend refuses for good (4xx), and carries on with the next', async () => {
    const api = new FakeApi((b) => {
      if (b.firmware_version === '9.9.9') throw new ApiError(404, 'unknown_update', 'no such update');
    });
    const store = await open();
    const r = new Reporter({ vin: VIN, store, api, runtime: new FakeRuntime() });
    r.start();
    await r.status({ status: 'rejected', firmware_version: '9.9.9' });
    await r.status({ status: 'completed', firmware_version: '2.0.0' });
    await r.whenIdle();
    await r.stop();
    assert.deepEqual(
      api.received.map((b) => b.firmware_version),
      ['9.9.9', '2.0.0'],
    );
    assert.deepEqual(store.state.pending_reports, []);
  });

  it('lets an outcome supersede unsent phase reports of the same update', async () => {
    const store = await open();
    const api = new FakeApi();
    const r = new Reporter({ vin: VIN, store, api, runtime: new FakeRuntime() });
    await r.status({ status: 'downloading', firmware_version: '2.0.0' });
    await r.status({ status: 'downloaded', firmware_version: '2.0.0' });
    await r.status({ status: 'downloading', firmware_version: '3.0.0' });
    await r.status({ status: 'verification_failed', firmware_version: '2.0.0' });
    assert.deepEqual(
      store.state.pending_reports.map((p) => [p.firmware_version, p.status]),
      [
        ['3.0.0', 'downloading'],
        ['2.0.0', 'verification_failed'],
      ],
    );
    r.start();
    await r.whenIdle();
    await r.stop();
    assert.deepEqual(
      api.received.map((b) => b.sequence),
      [2, 3],
    );
  });

  it('sends progress over HTTPS when MQTT is down, and never retries or stores it', async () => {
    const store = await open();
    const mqtt = new FakeMqtt();
    mqtt.connected = false;
    const api = new FakeApi(() => {
      throw new ApiError(503, 'x', 'down');
    });
    const r = new Reporter({ vin: VIN, store, api, mqtt: () => mqtt, runtime: new FakeRuntime() });
    await r.progress({ status: 'downloading', firmware_version: '2.0.0', progress: 10 });
    assert.equal(api.received.length, 1);
    assert.deepEqual(store.state.pending_reports, []);
  });

  it('carries what a download cost to the backend, over MQTT and over HTTPS, and across a restart', async () => {
    const dir = join(root, `r${++n}`);
    const cost = { bytes_fetched: 1234, bytes_reused: 5678, bytes_image: 9000 };
    const mqtt = new FakeMqtt();
    mqtt.connected = false;
    // Queued while nothing answers: the report must keep its counts on disk, not only in memory.
    const first = await open(dir);
    const down = new Reporter({
      vin: VIN,
      store: first,
      api: new FakeApi(() => {
        throw new ApiError(503, 'x', 'down');
      }),
      mqtt: () => mqtt,
      runtime: new FakeRuntime(),
    });
    await down.status({ status: 'verifying', firmware_version: '2.0.0', ...cost });
    assert.equal(first.state.pending_reports[0]?.bytes_reused, 5678);

    const again = await open(dir);
    const api = new FakeApi();
    mqtt.connected = true;
    const r = new Reporter({ vin: VIN, store: again, api, mqtt: () => mqtt, runtime: new FakeRuntime() });
    r.start();
    await r.whenIdle(); // the kept report goes first (an outcome queued before it was sent would supersede it)
    await r.status({ status: 'completed', firmware_version: '2.0.0', ...cost });
    await r.whenIdle();
    await r.stop();
    const published = mqtt.published.map((m) => m.payload);
    assert.deepEqual(
      published.map((p) => [p.status, p.bytes_fetched, p.bytes_reused, p.bytes_image]),
      [
        ['verifying', 1234, 5678, 9000],
        ['completed', 1234, 5678, 9000],
      ],
    );
    const posted = api.received.find((b) => b.status === 'completed');
    assert.deepEqual([posted?.bytes_fetched, posted?.bytes_reused, posted?.bytes_image], [1234, 5678, 9000]);
  });
});
