/** The offer inbox: parsing, deduplication, capacity, order and durability; the rules that spot a redelivery. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FullOffer } from '../../protocol/offer.js';
import { isKnownPending, isRedelivery, OfferInbox, parseOffer } from '../../vehicle/offer-inbox.js';
import {
  type AgentState,
  initialState,
  offerDigest,
  type RecordedOutcome,
  StateStore,
} from '../../vehicle/state-store.js';
import { TEST_VIN, testContext, testOffer, testTrust } from '../support/agent-context.js';

const root = mkdtempSync(join(tmpdir(), 'agent-inbox-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
let n = 0;
const freshDir = () => join(root, `i${++n}`);
const bytes = (o: unknown) => Buffer.from(JSON.stringify(o));

let v2: FullOffer;
let v3: FullOffer;
before(async () => {
  v2 = await testOffer('2.0.0', 7);
  v3 = await testOffer('3.0.0', 8);
}, HOOK_TIMEOUT);

describe('parseOffer', { timeout: 60_000 }, () => {
  it('answers the offer, or why there is none and the payload (whose assignment may be genuine)', () => {
    const ok = parseOffer(bytes(v2));
    assert.equal(ok.ok && ok.offer.update_id, 'release#tcu-2.0.0');
    assert.deepEqual(parseOffer(Buffer.from('{not json')), { ok: false, reason: 'not_json' });
    const bad = parseOffer(bytes({ ...v2, size: 0 }));
    assert.equal(bad.ok, false);
    assert.deepEqual(!bad.ok && bad.json, JSON.parse(bytes({ ...v2, size: 0 }).toString()));
    assert.match(!bad.ok ? bad.reason : '', /^invalid_offer: size: /);
  });
});

describe('OfferInbox.receive', { timeout: 60_000 }, () => {
  it('stores offers durably in arrival order, tells the work loop, and ignores a second delivery', async () => {
    const dir = freshDir();
    const ctx = await testContext(dir);
    let stored = 0;
    const inbox = new OfferInbox(ctx, () => stored++);
    await inbox.receive(bytes(v3), 'mqtt');
    await inbox.receive(bytes(v2), 'poll');
    await inbox.receive(bytes(v3), 'mqtt'); // QoS 1 redelivery
    assert.equal(stored, 2);
    assert.deepEqual(
      ctx.events.map((e) => (e.type === 'offer' ? [e.source, e.firmware_version, e.counter] : e.type)),
      [
        ['mqtt', '3.0.0', 8],
        ['poll', '2.0.0', 7],
      ],
    );
    // Durable: a fresh store on the same folder (the reboot) finds both, in order, with their offers.
    ctx.store.close();
    const reopened = await StateStore.open(dir, () => initialState(TEST_VIN, {}));
    const inboxAfter = reopened.state.inbox;
    assert.deepEqual(
      inboxAfter.map((i) => [i.firmware_version, i.counter, i.offer_digest]),
      [
        ['3.0.0', 8, offerDigest(v3)],
        ['2.0.0', 7, offerDigest(v2)],
      ],
    );
    assert.deepEqual(await reopened.loadOffer(inboxAfter[0]!.offer_file), v3);
  });

  it('drops offers beyond maxInbox without storing them', async () => {
    const ctx = await testContext(freshDir(), { maxInbox: 1 });
    const inbox = new OfferInbox(ctx, () => {});
    await inbox.receive(bytes(v2), 'mqtt');
    await inbox.receive(bytes(v3), 'mqtt');
    assert.deepEqual(
      ctx.store.state.inbox.map((i) => i.firmware_version),
      ['2.0.0'],
    );
    assert.equal(ctx.events.length, 1);
  });

  it('reports a malformed offer only under a genuine assignment for this VIN, and ignores one that is not JSON', async () => {
    const ctx = await testContext(freshDir());
    const inbox = new OfferInbox(ctx, () => assert.fail('nothing is stored'));
    await inbox.receive(Buffer.from('garbage'), 'mqtt');
    assert.equal(ctx.store.state.pending_reports.length, 0);
    // Anyone can write an offer naming a version: without a verifiable assignment, nothing is reported.
    await inbox.receive(bytes({ ...v2, size: 0, assignment: { nope: true } }), 'mqtt');
    const forged = { ...v2.assignment, signature: v3.assignment.signature };
    await inbox.receive(bytes({ ...v2, size: 0, assignment: forged }), 'mqtt');
    const genuine = await testOffer('2.0.0', 7);
    const ownTrust = { ...testTrust(), backendKeys: [] };
    const strict = await testContext(freshDir(), { trust: ownTrust });
    await new OfferInbox(strict, () => assert.fail('nothing is stored')).receive(
      bytes({ ...genuine, size: 0 }),
      'mqtt',
    );
    assert.equal(strict.store.state.pending_reports.length, 0, 'signed by a key this car does not trust');
    assert.equal(ctx.store.state.pending_reports.length, 0, 'no report for an unverifiable offer');
    assert.equal(ctx.events.filter((e) => e.type === 'refused').length, 2);
    // Its genuine assignment identifies the update: reported under the assignment's (signed) ids.
    await inbox.receive(bytes({ ...v2, size: 0, update_id: 'campaign#someone-else' }), 'mqtt');
    const reports = ctx.store.state.pending_reports;
    assert.equal(reports.length, 1);
    assert.equal(reports[0]?.status, 'rejected');
    assert.equal(reports[0]?.firmware_version, '2.0.0');
    assert.equal(reports[0]?.update_id, v2.update_id);
    assert.match(reports[0]?.reason ?? '', /^invalid_offer: size/);
    assert.equal(ctx.store.state.inbox.length, 0);
  });
});

function stateWith(change: Partial<AgentState>): AgentState {
  return { ...initialState(TEST_VIN, { tcu: { hardware_id: 'TCU-HW-1', version: '1.0.0' } }), ...change };
}

function outcome(o: FullOffer, change: Partial<RecordedOutcome>): RecordedOutcome {
  return {
    update_id: o.update_id,
    firmware_version: o.firmware_version,
    counter: o.assignment.assignment.counter,
    offer_digest: 'another-copy',
    status: 'completed',
    at: '2026-11-27T00:00:00.000Z',
    ...change,
  };
}

describe('isRedelivery', { timeout: 60_000 }, () => {
  it('recognises the offer in progress and another offer for the update in progress', async () => {
    const current = {
      offer_file: 'f',
      offer_digest: offerDigest(v2),
      update_id: v2.update_id,
      campaign_id: null,
      firmware_version: '2.0.0',
      ecu: 'tcu',
      counter: 7,
      phase: 'downloading' as const,
      verified_bytes: 0,
      attempts: { download: 0, verify: 0, install: 0, unexpected: 0 },
      accepted_at: '2026-11-27T00:00:00.000Z',
    };
    const s = stateWith({ current });
    assert.equal(isRedelivery(v2, offerDigest(v2), s), true);
    const reOffer = await testOffer('2.0.0', 9);
    assert.equal(isRedelivery(reOffer, offerDigest(reOffer), s), true);
    assert.equal(isRedelivery(v3, offerDigest(v3), s), false);
  });

  it('recognises finished offers, and stale copies of accepted ones, but not after a rejection', async () => {
    const same = stateWith({ recent: [outcome(v2, { offer_digest: offerDigest(v2), status: 'failed' })] });
    assert.equal(isRedelivery(v2, offerDigest(v2), same), true);
    const completed = stateWith({ recent: [outcome(v2, { counter: 1 })] });
    assert.equal(isRedelivery(v2, offerDigest(v2), completed), true);
    // An older counter than an accepted (then failed) offer of the update: stale.
    const failedLater = stateWith({ recent: [outcome(v2, { status: 'failed', counter: 7 })] });
    assert.equal(isRedelivery(v2, offerDigest(v2), failedLater), true);
    // A rejected (possibly forged) offer with a high counter does not silence the genuine one.
    const rejected = stateWith({ recent: [outcome(v2, { status: 'rejected', counter: 1000 })] });
    assert.equal(isRedelivery(v2, offerDigest(v2), rejected), false);
    // A newer offer of an update that failed is a retry, not a redelivery.
    const retry = await testOffer('2.0.0', 8);
    assert.equal(isRedelivery(retry, offerDigest(retry), failedLater), false);
  });
});

describe('isKnownPending', { timeout: 60_000 }, () => {
  const pending = { firmware_version: '2.0.0', ecu: 'tcu' };
  it('knows updates queued or awaiting their outcome report, and skips what is not a version', () => {
    assert.equal(isKnownPending(pending, stateWith({})), false);
    const queued = stateWith({
      inbox: [
        {
          offer_file: 'f',
          offer_digest: 'd',
          update_id: 'u',
          firmware_version: '2.0.0',
          ecu: 'tcu',
          counter: 7,
          received_at: '2026-11-27T00:00:00.000Z',
        },
      ],
    });
    assert.equal(isKnownPending(pending, queued), true);
    assert.equal(isKnownPending({ ...pending, ecu: 'bcm' }, queued), false);
    const report = (status: 'completed' | 'downloading') => ({
      sequence: 0,
      status,
      firmware_version: '2.0.0',
      created_at: '2026-11-27T00:00:00.000Z',
      mqtt_sent: false,
      attempts: 0,
    });
    assert.equal(isKnownPending(pending, stateWith({ pending_reports: [report('completed')] })), true);
    assert.equal(isKnownPending(pending, stateWith({ pending_reports: [report('downloading')] })), false);
    assert.equal(isKnownPending({ firmware_version: 'latest', ecu: 'tcu' }, stateWith({})), true);
  });
});
