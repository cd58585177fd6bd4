/**
 * Offer acceptance when the offer names its manifest by digest: the assignment is checked before anything is
 * fetched, the manifest comes from /download and must be the one the assignment binds, and a refusal is reported
 * only under an assignment genuinely for this vehicle.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signAssignment } from '../../protocol/assignment.js';
import { type FullOffer, offerFor, type UpdateOffer } from '../../protocol/offer.js';
import type { DownloadAnswer } from '../../protocol/responses.js';
import { RetryLater } from '../../vehicle/agent-context.js';
import { DownloadUrls } from '../../vehicle/download-phase.js';
import { ApiError } from '../../vehicle/errors.js';
import { OfferAcceptance } from '../../vehicle/offer-acceptance.js';
import { OfferInbox } from '../../vehicle/offer-inbox.js';
import { testContext, testOffer, unusedApi } from '../support/agent-context.js';
import { newReleaseKey } from '../support/fleet.js';

const root = mkdtempSync(join(tmpdir(), 'agent-acceptance-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
let n = 0;
const freshDir = () => join(root, `a${++n}`);
const bytes = (o: unknown) => Buffer.from(JSON.stringify(o));

let v2: FullOffer;
let v3: FullOffer;
let compact: UpdateOffer;
before(async () => {
  v2 = await testOffer('2.0.0', 7);
  v3 = await testOffer('3.0.0', 8);
  compact = offerFor(v2.assignment, v2.size);
}, HOOK_TIMEOUT);

function answer(manifest = v2.manifest): DownloadAnswer {
  return {
    download_url: 'https://s3.example/tcu-2.0.0',
    expires_at: '2026-11-27T00:15:00.000Z',
    expires_in: 900,
    firmware_version: '2.0.0',
    release_id: v2.assignment.assignment.release_id,
    ecu: 'tcu',
    size: v2.size,
    sha256: manifest.manifest.sha256,
    update_id: v2.update_id,
    status: 'offered',
    manifest,
    assignment: v2.assignment,
  };
}

/** An inbox holding `offer`, and the acceptance over it, with /download answering `download`. */
async function setUp(offer: unknown, download: () => Promise<DownloadAnswer>) {
  const calls: string[] = [];
  const ctx = await testContext(freshDir(), {
    api: unusedApi({
      download: (version) => {
        calls.push(version);
        return download();
      },
    }),
  });
  const inbox = new OfferInbox(ctx, () => {});
  await inbox.receive(bytes(offer), 'mqtt');
  const urls = new DownloadUrls();
  return { ctx, inbox, urls, calls, acceptance: new OfferAcceptance(ctx, inbox, urls) };
}

describe('OfferAcceptance with a manifest named by digest', { timeout: 30_000 }, () => {
  it('fetches the manifest, accepts the offer with it, and keeps the download URL', async () => {
    assert.equal(compact.manifest, undefined);
    const { ctx, inbox, urls, calls, acceptance } = await setUp(compact, async () => answer());
    await acceptance.acceptNext();
    assert.deepEqual(calls, ['2.0.0']);
    const cur = ctx.store.state.current;
    assert.equal(cur?.update_id, v2.update_id);
    assert.equal(ctx.store.state.inbox.length, 0);
    const stored = await ctx.store.loadOffer(cur!.offer_file);
    assert.deepEqual(stored.manifest, v2.manifest, 'the fetched manifest is kept with the offer');
    assert.deepEqual((await inbox.load(cur!)).manifest, v2.manifest);
    assert.equal(urls.valid(v2.update_id, ctx.runtime.now()), 'https://s3.example/tcu-2.0.0');
    assert.equal(ctx.store.state.last_counter, 7);
  });

  it('rejects, and reports, a manifest other than the one the assignment binds', async () => {
    const { ctx, acceptance } = await setUp(compact, async () => answer(v3.manifest));
    await acceptance.acceptNext();
    assert.equal(ctx.store.state.current, null);
    const [report] = ctx.store.state.pending_reports;
    assert.equal(report?.status, 'rejected');
    assert.equal(report?.update_id, v2.update_id);
    assert.match(report?.reason ?? '', /^manifest_mismatch/);
    assert.equal(ctx.store.state.last_counter, 0);
  });

  it('keeps the offer when the backend is unreachable, and reports a final refusal', async () => {
    const down = await setUp(compact, () => Promise.reject(new ApiError(0, 'network', 'connection refused')));
    await assert.rejects(down.acceptance.acceptNext(), RetryLater);
    assert.equal(down.ctx.store.state.inbox.length, 1, 'still waiting in the inbox');
    assert.equal(down.ctx.store.state.pending_reports.length, 0);
    const gone = await setUp(compact, () => Promise.reject(new ApiError(404, 'unknown_version', 'no 2.0.0')));
    await gone.acceptance.acceptNext();
    assert.equal(gone.ctx.store.state.inbox.length, 0);
    assert.match(gone.ctx.store.state.pending_reports[0]?.reason ?? '', /^manifest_unavailable/);
  });

  it('fetches nothing and reports nothing for an offer whose assignment is not genuinely for this vehicle', async () => {
    const rogue = await signAssignment(v2.assignment.assignment, newReleaseKey().signer);
    const forged = [
      offerFor(rogue, v2.size),
      offerFor({ ...rogue, key_id: v2.assignment.key_id }, v2.size),
      { ...offerFor(rogue, v2.size), manifest: v2.manifest },
    ];
    for (const offer of forged) {
      const { ctx, calls, acceptance } = await setUp(offer, async () => answer());
      await acceptance.acceptNext();
      assert.deepEqual(calls, [], 'nothing fetched');
      assert.equal(ctx.store.state.current, null);
      assert.equal(ctx.store.state.inbox.length, 0, 'dropped');
      assert.deepEqual(ctx.store.state.pending_reports, [], 'nothing reported');
      assert.deepEqual(ctx.store.state.recent, []);
      assert.deepEqual(
        ctx.events.filter((e) => e.type !== 'offer').map((e) => e.type),
        ['refused'],
      );
    }
    // Not this car's VIN (a genuine signature, but the VIN is part of what is signed): refused the same way.
    const ctx = await testContext(freshDir(), { vin: '5YJSA1E26HF000337' });
    const inbox = new OfferInbox(ctx, () => {});
    await inbox.receive(bytes(compact), 'mqtt');
    await new OfferAcceptance(ctx, inbox, new DownloadUrls()).acceptNext();
    assert.deepEqual(ctx.store.state.pending_reports, []);
    assert.equal(ctx.events.at(-1)?.type, 'refused');
  });
});
