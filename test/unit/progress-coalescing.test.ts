/**
 * Issue 12 point 5: a vehicle's progress reports are acknowledged but stored only at coarse steps (a status change,
 * or the stored progress being PROGRESS_STORE_SECONDS old); duplicates and late reports write nothing; the history
 * keeps status changes only; and the guards (offered only, current offer counter, sequence) hold whatever was
 * skipped. In-memory repositories that count every write.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  HistoryEvent,
  HistoryRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
  VehicleRepository,
} from '../../lambdas/core/ports.js';
import { PROGRESS_STORE_SECONDS, UpdateStatusService } from '../../lambdas/core/vehicle-updates.js';

const VIN = '1HGCM82633A004352';

function world(initial: Partial<UpdateRecord> = {}) {
  let now = Date.parse('2026-12-04T08:00:00Z');
  let stored: UpdateRecord = {
    vin: VIN,
    updateId: 'campaign#c1',
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    ecu: 'tcu',
    campaignId: 'c1',
    wave: 0,
    status: 'offered',
    progress: 0,
    lastSequence: -1,
    attempt: 1,
    offerCounter: 7,
    createdAt: new Date(now).toISOString(),
    updatedAt: new Date(now).toISOString(),
    revision: 1,
    ...initial,
  };
  const writes: string[] = [];
  const history: HistoryEvent[] = [];
  const updates = {
    get: async () => stored,
    listForVehicle: async () => [stored],
    put: async (next: UpdateRecord, expected: number) => {
      if (stored.revision !== expected) return false;
      writes.push(`update ${next.status} ${next.progress}`);
      stored = next;
      return true;
    },
  } as unknown as UpdateRepository;
  const vehicles = {
    recordCompletion: async (_v: VehicleRecord, ecu: string, version: string, campaignId?: string) =>
      void writes.push(`vehicle ${ecu}=${version} unlock ${campaignId}`),
    unlockCampaign: async () => void writes.push('vehicle unlock'),
  } as unknown as VehicleRepository;
  const historyRepo = {
    append: async (e: HistoryEvent) => {
      writes.push(`history ${e.status}`);
      history.push(e);
    },
  } as unknown as HistoryRepository;
  const service = new UpdateStatusService({
    vehicles,
    updates,
    history: historyRepo,
    clock: { now: () => new Date(now) },
    campaigns: { count: async (_c, _w, from, to) => void writes.push(`count ${from}->${to}`) },
  });
  const vehicle = { vin: VIN, activeUpdateId: 'campaign#c1', ecus: [] } as unknown as VehicleRecord;
  return {
    writes,
    history,
    stored: () => stored,
    advance: (seconds: number) => {
      now += seconds * 1000;
    },
    report: (r: Record<string, unknown>) =>
      service.reportStatus(vehicle, { campaign_id: 'c1', ...r } as never, 'mqtt'),
  };
}

describe('progress coalescing', { timeout: 10_000 }, () => {
  it('stores a whole update of 20 progress reports per phase as its status changes only', async () => {
    const w = world();
    let seq = 0;
    for (const phase of ['downloading', 'installing'] as const) {
      for (let p = 0; p <= 95; p += 5) {
        const answer = await w.report({ status: phase, progress: p, sequence: seq++ });
        assert.equal(answer.applied, true, `${phase} ${p} is acknowledged as moving forward`);
        assert.equal(answer.update.progress, p, 'the answer carries the reported progress');
      }
    }
    await w.report({ status: 'completed', sequence: seq++ });
    assert.deepEqual(w.writes, [
      'update downloading 0',
      'history downloading',
      'count offered->downloading',
      'update installing 0',
      'history installing',
      'count downloading->installing',
      'update completed 100',
      'history completed',
      'count installing->completed',
      'vehicle tcu=2.0.0 unlock c1',
    ]);
    assert.deepEqual(
      w.history.map((e) => e.status),
      ['downloading', 'installing', 'completed'],
    );
  });

  it(`stores progress again once the stored value is ${PROGRESS_STORE_SECONDS} s old`, async () => {
    const w = world();
    await w.report({ status: 'downloading', progress: 1, sequence: 1 });
    w.advance(PROGRESS_STORE_SECONDS - 1);
    await w.report({ status: 'downloading', progress: 30, sequence: 2 });
    assert.equal(w.stored().progress, 1, 'too early: acknowledged, not stored');
    w.advance(1);
    await w.report({ status: 'downloading', progress: 31, sequence: 3 });
    assert.equal(w.stored().progress, 31);
    assert.equal(w.stored().lastSequence, 3);
    assert.deepEqual(
      w.history.map((e) => e.status),
      ['downloading'],
      'no history item for progress',
    );
  });

  it('writes nothing for duplicates, late and backward reports, and skipping lets no stale report through', async () => {
    const w = world();
    await w.report({ status: 'downloading', progress: 10, sequence: 5 });
    await w.report({ status: 'downloading', progress: 20, sequence: 6 });
    await w.report({ status: 'downloaded', sequence: 8 });
    const before = w.writes.length;
    // Replays and late arrivals: the skipped progress (6), a report between (7), the stored ones again.
    for (const r of [
      { status: 'downloading', progress: 20, sequence: 6 },
      { status: 'downloading', progress: 60, sequence: 7 },
      { status: 'downloaded', sequence: 8 },
      { status: 'downloading', progress: 10, sequence: 5 },
    ]) {
      const answer = await w.report(r);
      assert.equal(answer.applied, false, JSON.stringify(r));
    }
    // Newer but not forward (a lower phase): refused and not written either.
    assert.equal((await w.report({ status: 'downloading', progress: 99, sequence: 9 })).applied, false);
    assert.equal(w.writes.length, before, 'no write for any of them');
    assert.deepEqual(
      { status: w.stored().status, lastSequence: w.stored().lastSequence },
      { status: 'downloaded', lastSequence: 8 },
    );
  });

  it('keeps the offered-only and offer-counter guards for reports that would be skipped', async () => {
    const stale = world({ status: 'downloading', progress: 10, lastSequence: 3 });
    await assert.rejects(
      stale.report({ status: 'downloading', progress: 11, sequence: 4, assignment_counter: 6 }),
      (err: { code?: string }) => err.code === 'stale_offer',
    );
    const unoffered = world({ status: 'scheduled', attempt: 0 });
    await assert.rejects(
      unoffered.report({ status: 'downloading', progress: 11, sequence: 4 }),
      (err: { code?: string }) => err.code === 'not_offered',
    );
    assert.deepEqual([...stale.writes, ...unoffered.writes], []);
  });

  it('releases the lock alone when a campaign update fails', async () => {
    const w = world({ status: 'installing', progress: 50, lastSequence: 3 });
    await w.report({ status: 'failed', reason: 'flash error', sequence: 4 });
    assert.deepEqual(w.writes, [
      'update failed 0',
      'history failed',
      'count installing->failed',
      'vehicle unlock',
    ]);
  });
});
