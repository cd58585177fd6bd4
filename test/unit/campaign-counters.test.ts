import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  COUNTER_SHARDS,
  countMove,
  PACER_MAX_STEP_ITEMS,
  PACER_STEP_SECONDS,
  pacerStep,
  QUEUE_SHARDS,
  QUEUED_WAVE,
  shardOf,
  shardsFor,
  sumCounts,
  waveCounts,
  waveKeyOf,
  waveQuota,
} from '../../lambdas/core/campaign-counters.js';

const vin = (i: number) => `TEST${String(i).padStart(13, '0')}`;

describe('counter shards', { timeout: 60_000 }, () => {
  it('gives a wave one shard per 16 targets, at most 256', () => {
    assert.equal(shardsFor(1), 1);
    assert.equal(shardsFor(16), 1);
    assert.equal(shardsFor(17), 2);
    assert.equal(shardsFor(4096), COUNTER_SHARDS);
    assert.equal(shardsFor(1_000_000), COUNTER_SHARDS);
  });

  it('maps a VIN to the same shard every time, and spreads a large wave evenly', () => {
    assert.equal(shardOf(vin(7), 256), shardOf(vin(7), 256));
    const hits = new Array<number>(COUNTER_SHARDS).fill(0);
    const n = 256_000;
    for (let i = 0; i < n; i++) hits[shardOf(vin(i), COUNTER_SHARDS)]!++;
    // 1,000 per shard on average; the busiest stays within 20% of it, so at 2,000 vehicles/s x 7 counted changes
    // (14,000 writes/s) no shard item takes more than 14,000 / 256 x 1.2 = 66 writes/s.
    assert.ok(Math.max(...hits) < 1200, `busiest shard ${Math.max(...hits)}`);
    assert.ok(Math.min(...hits) > 800, `idlest shard ${Math.min(...hits)}`);
    assert.ok((2000 * 7 * (Math.max(...hits) / (n / COUNTER_SHARDS))) / COUNTER_SHARDS < 100);
  });

  it('moves a taken update between statuses in its own wave shard, and a queued one in the queue shards', () => {
    const taken = { campaignId: 'c', vin: vin(1), wave: 2, shard: 5, status: 'offered' };
    assert.deepEqual(countMove(taken, 'downloading'), {
      campaignId: 'c',
      wave: 2,
      shard: 5,
      from: 'offered',
      to: 'downloading',
    });
    assert.equal(countMove(taken, 'offered'), undefined, 'no change, no move');
    assert.equal(countMove({ ...taken, campaignId: undefined }, 'completed'), undefined, 'direct updates');
    const queued = { campaignId: 'c', vin: vin(1), wave: QUEUED_WAVE, status: 'scheduled' };
    const move = countMove(queued, 'cancelled');
    assert.deepEqual(move, {
      campaignId: 'c',
      wave: QUEUED_WAVE,
      shard: shardOf(vin(1), QUEUE_SHARDS),
      to: 'cancelled',
    });
    // Leaving the queue's count when a withdrawn queued target is taken into a wave.
    assert.deepEqual(countMove({ ...queued, status: 'cancelled' }, undefined), {
      campaignId: 'c',
      wave: QUEUED_WAVE,
      shard: shardOf(vin(1), QUEUE_SHARDS),
      from: 'cancelled',
    });
  });
});

describe('wave quota', { timeout: 60_000 }, () => {
  it('lets a wave take exactly its size, never more', () => {
    assert.equal(waveQuota(100, 0), 100);
    assert.equal(waveQuota(100, 99), 1);
    assert.equal(waveQuota(100, 100), 0);
    assert.equal(waveQuota(100, 130), 0);
  });

  it('keys a taken target by wave and VIN', () => {
    assert.equal(waveKeyOf(3, vin(1)), `003#${vin(1)}`);
  });
});

describe('pacing arithmetic', { timeout: 60_000 }, () => {
  it('takes one step of offers at the campaign rate, bounded by the quota and one page', () => {
    assert.equal(pacerStep(10, 1_000_000).items, 10 * PACER_STEP_SECONDS);
    assert.equal(pacerStep(10, 7).items, 7);
    assert.equal(pacerStep(5000, 1_000_000).items, PACER_MAX_STEP_ITEMS);
    assert.equal(pacerStep(10, 0).items, 0);
  });

  it('spreads a step over its seconds at notify_per_second and starts the next when it is sent', () => {
    const step = pacerStep(10, 1000);
    const delays = Array.from({ length: step.items }, (_, i) => step.delays(i));
    for (let s = 0; s < PACER_STEP_SECONDS; s++) {
      assert.equal(delays.filter((d) => d === s).length, 10, `second ${s} sends 10`);
    }
    assert.equal(step.nextStepSeconds, PACER_STEP_SECONDS);
    // 1,000 a second: a page of 1,000 goes out in one second, the next step a second later.
    const fast = pacerStep(1000, 1_000_000);
    assert.equal(fast.delays(fast.items - 1), 0);
    assert.equal(fast.nextStepSeconds, 1);
    // A short last step still waits at least a second, and delays never exceed SQS's 900 s.
    assert.equal(pacerStep(10, 3).nextStepSeconds, 1);
    assert.equal(pacerStep(1, 10_000).delays(5000), 900);
  });
});

describe('wave counts from shards', { timeout: 60_000 }, () => {
  it('adds shards up and drops zeros', () => {
    assert.deepEqual(
      sumCounts([
        { offered: 2, completed: 1 },
        { offered: -2, completed: 3 },
      ]),
      { completed: 4 },
    );
  });

  it("shows each wave's untaken places as scheduled", () => {
    assert.deepEqual(waveCounts([6, 24, 30], [{ completed: 5, offered: 1 }, { offered: 4 }], {}), [
      { completed: 5, offered: 1 },
      { offered: 4, scheduled: 20 },
      { scheduled: 30 },
    ]);
  });

  it('shows targets withdrawn while queued as cancelled in the last untaken places', () => {
    const counts = waveCounts([6, 24, 30], [{ completed: 6 }, { cancelled: 4 }], { cancelled: 50 });
    assert.deepEqual(counts, [{ completed: 6 }, { cancelled: 24 }, { cancelled: 30 }]);
    const total = sumCounts(counts);
    assert.deepEqual(total, { completed: 6, cancelled: 54 });
  });
});
