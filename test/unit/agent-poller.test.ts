/** The polling fallback (interval, backoff, catch-up, what a poll turns into offers) and the MQTT bookkeeping. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FullOffer } from '../../protocol/offer.js';
import type { DownloadAnswer, UpdateList, UpdateView } from '../../protocol/responses.js';
import type { AgentMqttFactory } from '../../vehicle/agent-options.js';
import { DownloadUrls } from '../../vehicle/download-phase.js';
import { ApiError } from '../../vehicle/errors.js';
import { MqttLink } from '../../vehicle/mqtt-link.js';
import { OfferInbox } from '../../vehicle/offer-inbox.js';
import { nextPollWait, Poller, pollInterval, pollRetryDelay } from '../../vehicle/poller.js';
import { testContext, testOffer, unusedApi } from '../support/agent-context.js';
import { FakeRuntime } from '../support/agent-fakes.js';

const root = mkdtempSync(join(tmpdir(), 'agent-poller-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
let n = 0;
const freshDir = () => join(root, `p${++n}`);

const usable = { usable: () => true };
const unusable = { usable: () => false };

describe('pollInterval', { timeout: 60_000 }, () => {
  it('polls every minute without MQTT, hourly as a safety net while MQTT is usable', () => {
    assert.equal(pollInterval(undefined, undefined), 60_000);
    assert.equal(pollInterval({ intervalMs: 5000 }, undefined), 5000);
    assert.equal(pollInterval({}, unusable), 900_000);
    assert.equal(pollInterval({ intervalMs: 5000 }, unusable), 5000);
    assert.equal(pollInterval({ intervalMs: 5000, fallbackIntervalMs: 7000 }, unusable), 7000);
    assert.equal(pollInterval({}, usable), 86_400_000);
    assert.equal(pollInterval({ connectedIntervalMs: 0 }, usable), undefined);
  });

  it('asks MQTT with the configured grace period', () => {
    const graces: number[] = [];
    pollInterval({}, { usable: (g) => graces.push(g) > 0 });
    pollInterval({ mqttGraceMs: 5 }, { usable: (g) => graces.push(g) > 0 });
    assert.deepEqual(graces, [30_000, 5]);
  });
});

describe('pollRetryDelay', { timeout: 60_000 }, () => {
  it('backs off exponentially from the interval with full jitter, capped at 10 minutes', () => {
    assert.equal(
      pollRetryDelay(0, 60_000, new Error('x'), () => 0.5),
      30_000,
    );
    assert.equal(
      pollRetryDelay(2, 60_000, new Error('x'), () => 0.5),
      120_000,
    );
    assert.equal(
      pollRetryDelay(20, 60_000, new Error('x'), () => 0.5),
      300_000,
    );
    assert.equal(
      pollRetryDelay(0, undefined, new Error('x'), () => 0),
      0,
    );
    // An interval longer than the cap is the cap.
    assert.equal(
      pollRetryDelay(20, 3_600_000, new Error('x'), () => 0.5),
      1_800_000,
    );
  });

  it('never comes back before the backend said (Retry-After)', () => {
    const throttled = new ApiError(429, 'throttled', 'slow down', 90_000);
    assert.equal(
      pollRetryDelay(0, 60_000, throttled, () => 0.5),
      90_000,
    );
    assert.equal(
      pollRetryDelay(3, 60_000, throttled, () => 0.5),
      240_000,
    );
  });
});

function answerFor(o: FullOffer): DownloadAnswer {
  return {
    download_url: `https://s3.example/${o.firmware_version}`,
    expires_at: '2026-11-27T00:15:00.000Z',
    expires_in: 900,
    firmware_version: o.firmware_version,
    release_id: o.manifest.manifest.release_id,
    ecu: o.ecu,
    size: o.size,
    sha256: o.manifest.manifest.sha256,
    update_id: o.update_id,
    status: 'notified',
    manifest: o.manifest,
    assignment: o.assignment,
  };
}

function view(version: string, campaign: string | null = null): UpdateView {
  return {
    update_id: `release#tcu-${version}`,
    release_id: `tcu-${version}`,
    firmware_version: version,
    ecu: 'tcu',
    campaign_id: campaign,
    status: 'notified',
    progress: 0,
    attempt: 1,
    pending: true,
    created_at: '2026-12-01T00:00:00.000Z',
    updated_at: '2026-12-01T00:00:00.000Z',
  };
}

/** A GET /updates/{vin} answer as the backend sends it. */
function listOf(pending: UpdateView[]): UpdateList {
  return { vin: 'TESTVIN0000000001', active_update_id: null, updates: [], pending };
}

let v2: FullOffer;
let v4: FullOffer;
before(async () => {
  v2 = await testOffer('2.0.0', 7);
  v4 = await testOffer('4.0.0', 9);
}, HOOK_TIMEOUT);

describe('Poller.pollOnce', { timeout: 60_000 }, () => {
  it('turns each unknown pending update into an offer, rejects what the backend refuses, skips the rest', async () => {
    const downloads: string[] = [];
    const list = listOf([view('2.0.0'), view('3.0.0', 'camp-1'), view('latest'), view('4.0.0')]);
    const ctx = await testContext(freshDir(), {
      api: unusedApi({
        listUpdates: async () => list,
        download: async (version) => {
          downloads.push(version);
          if (version === '3.0.0') throw new ApiError(409, 'downgrade_refused', 'no');
          if (version === '2.0.0') return answerFor(v2);
          throw new Error(`unexpected download of ${version}`);
        },
      }),
    });
    const inbox = new OfferInbox(ctx, () => {});
    await inbox.receive(Buffer.from(JSON.stringify(v4)), 'mqtt'); // already queued from MQTT
    const urls = new DownloadUrls();
    const poller = new Poller(ctx, inbox, urls, undefined);

    assert.equal(await poller.pollOnce(), 4);
    assert.deepEqual(downloads, ['2.0.0', '3.0.0']);
    const s = ctx.store.state;
    assert.deepEqual(
      s.inbox.map((i) => i.firmware_version),
      ['4.0.0', '2.0.0'],
    );
    assert.deepEqual(await ctx.store.loadOffer(s.inbox[1]!.offer_file), v2);
    assert.equal(urls.valid(v2.update_id, ctx.runtime.now()), 'https://s3.example/2.0.0');
    assert.equal(
      urls.valid(v2.update_id, ctx.runtime.now() + 900_000),
      undefined,
      'expired URLs are not reused',
    );
    assert.deepEqual(
      s.pending_reports.map((r) => [r.status, r.firmware_version, r.campaign_id, r.reason]),
      [['rejected', '3.0.0', 'camp-1', 'backend refused the download: downgrade_refused']],
    );

    // The next poll knows all of them: 2.0.0 and 4.0.0 are queued, 3.0.0's outcome awaits its acknowledgement.
    downloads.length = 0;
    assert.equal(await poller.pollOnce(), 4);
    assert.deepEqual(downloads, []);
  });

  it('lets a transient failure through for the loop to retry, reporting nothing', async () => {
    const ctx = await testContext(freshDir(), {
      api: unusedApi({
        listUpdates: async () => listOf([view('2.0.0')]),
        download: async () => {
          throw new ApiError(503, 'unavailable', 'try later');
        },
      }),
    });
    const poller = new Poller(ctx, new OfferInbox(ctx, () => {}), new DownloadUrls(), undefined);
    await assert.rejects(poller.pollOnce(), (err: unknown) => err instanceof ApiError && err.status === 503);
    assert.equal(ctx.store.state.pending_reports.length, 0);
    assert.equal(ctx.store.state.inbox.length, 0);
  });
});

describe('nextPollWait', { timeout: 60_000 }, () => {
  it('jitters the connected safety net x0.5-1.5, so a fleet that connected together does not poll together', () => {
    assert.equal(
      nextPollWait(86_400_000, () => 0),
      43_200_000,
    );
    assert.equal(
      nextPollWait(86_400_000, () => 0.999999),
      Math.round(86_400_000 * 1.499999),
    );
    assert.equal(
      nextPollWait(86_400_000, () => 0.5),
      86_400_000,
    );
    // The fallback poll is jittered too: a broker outage puts the whole fleet on it at the same moment.
    assert.equal(
      nextPollWait(900_000, () => 0),
      450_000,
    );
    assert.equal(
      nextPollWait(900_000, () => 0.25),
      675_000,
    );
  });
});

describe('Poller.loop', { timeout: 60_000 }, () => {
  it('polls at start, backs off after a failure (Retry-After), then keeps the interval, and makes a catch-up poll', async () => {
    const polls: number[] = [];
    let failNext = true;
    const ctx = await testContext(freshDir(), {
      polling: { intervalMs: 60_000 },
      api: unusedApi({
        listUpdates: async () => {
          polls.push(ctx.runtime.now());
          if (failNext) {
            failNext = false;
            throw new ApiError(503, 'unavailable', 'later', 120_000);
          }
          return listOf([]);
        },
      }),
    });
    const t0 = ctx.runtime.now();
    const poller = new Poller(ctx, new OfferInbox(ctx, () => {}), new DownloadUrls(), undefined);
    const loop = poller.loop();
    while (polls.length < 3) await new Promise((r) => setImmediate(r));
    poller.requestCatchUp();
    poller.wake();
    while (polls.length < 4) await new Promise((r) => setImmediate(r));
    ctx.abort.abort();
    await loop;
    const at = polls.map((t) => t - t0);
    assert.equal(at[0], 0);
    assert.equal(at[1], 120_000, 'not before Retry-After');
    assert.equal(at[2], 180_000, 'then every interval');
    assert.ok(at[3]! < 240_000, `the catch-up poll does not wait for the interval (${at[3]})`);
    assert.deepEqual(
      ctx.events.map((e) => (e.type === 'poll' ? e.reason : e.type)),
      ['interval', 'interval', 'catch_up'],
    );
  });
});

describe('MqttLink', { timeout: 60_000 }, () => {
  function link(runtime: FakeRuntime) {
    let change: ((connected: boolean, sessionPresent?: boolean) => void) | undefined;
    const session = { connected: false, started: false };
    const factory: AgentMqttFactory = (h) => {
      change = (connected, sessionPresent) => {
        session.connected = connected;
        h.onConnectionChange(connected, sessionPresent);
      };
      return {
        get connected() {
          return session.connected;
        },
        publish: async () => {},
        start: () => {
          session.started = true;
        },
        stop: async () => {},
      };
    };
    const catchUps: boolean[] = [];
    const l = new MqttLink(factory, runtime, {
      onOffer: async () => {},
      onConnectionChange: (_c, catchUp) => catchUps.push(catchUp),
    });
    l.start();
    assert.equal(session.started, true);
    return { l, catchUps, change: (c: boolean, sp?: boolean) => change?.(c, sp) };
  }

  it('asks for a catch-up poll only when a reconnect lost the session', () => {
    const { catchUps, change } = link(new FakeRuntime());
    change(true, false); // the first connection: the start-up poll covers it
    change(false);
    change(true, true); // the broker kept the session: queued offers arrive
    change(false);
    change(true, false); // session lost: what was published meanwhile is gone
    assert.deepEqual(catchUps, [false, false, false, false, true]);
  });

  it('counts as usable while connected or down for less than the grace period', () => {
    const runtime = new FakeRuntime();
    const { l, change } = link(runtime);
    assert.equal(l.usable(30_000), true, 'just started: not yet worth polling');
    runtime.time += 30_000;
    assert.equal(l.usable(30_000), false);
    change(true, false);
    assert.equal(l.connected, true);
    assert.equal(l.usable(30_000), true);
    change(false);
    runtime.time += 29_999;
    assert.equal(l.usable(30_000), true);
    runtime.time += 1;
    assert.equal(l.usable(30_000), false);
  });
});
