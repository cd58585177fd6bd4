import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyReport, type StatusReport, type UpdateProgressState } from '../../lambdas/core/update-state.js';
import { compareVersions } from '../../protocol/versions.js';

const start: UpdateProgressState = { status: 'initiated', progress: 0, lastSequence: -1 };

function run(reports: StatusReport[]): UpdateProgressState {
  let s = start;
  for (const r of reports) {
    const res = applyReport(s, r);
    if (res.next) s = res.next;
  }
  return s;
}

/** Deterministic shuffle so a failure is reproducible. */
function shuffle<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('update state machine', { timeout: 60_000 }, () => {
  it('moves forward through phases and progress', () => {
    const s = run([
      { status: 'downloading', progress: 10 },
      { status: 'downloading', progress: 60 },
      { status: 'installing', progress: 5 },
      { status: 'completed' },
    ]);
    assert.deepEqual(s, { status: 'completed', progress: 100, lastSequence: -1 });
  });

  it('ignores late progress after completion and lower progress within a phase', () => {
    let s = run([{ status: 'downloading', progress: 50 }]);
    assert.equal(applyReport(s, { status: 'downloading', progress: 40 }).applied, false);
    s = run([{ status: 'completed' }]);
    const late = applyReport(s, { status: 'downloading', progress: 99 });
    assert.deepEqual(late, { applied: false, reason: 'terminal' });
  });

  it('a terminal failure is final', () => {
    const s = run([{ status: 'failed' }]);
    assert.equal(applyReport(s, { status: 'completed' }).applied, false);
  });

  it('refuses replayed sequence numbers even when the status looks forward', () => {
    const s = run([{ status: 'downloading', progress: 10, sequence: 5 }]);
    assert.deepEqual(applyReport(s, { status: 'installing', sequence: 5 }), {
      applied: false,
      reason: 'stale_sequence',
    });
    assert.equal(applyReport(s, { status: 'installing', sequence: 6 }).applied, true);
  });

  it('a newer sequence number with nothing new still raises lastSequence, so arrival order does not matter', () => {
    const s = run([{ status: 'installing', progress: 100, sequence: 1 }]);
    const res = applyReport(s, { status: 'installing', progress: 100, sequence: 2 });
    assert.equal(res.applied, false);
    assert.deepEqual(res.next, { status: 'installing', progress: 100, lastSequence: 2 });
    const a = run([
      { status: 'installing', progress: 100, sequence: 1 },
      { status: 'installing', progress: 100, sequence: 2 },
    ]);
    const b = run([
      { status: 'installing', progress: 100, sequence: 2 },
      { status: 'installing', progress: 100, sequence: 1 },
    ]);
    assert.deepEqual(a, b);
  });

  it('100 duplicated and shuffled reports leave the in-order result', () => {
    const inOrder: StatusReport[] = [];
    let seq = 0;
    for (let p = 1; p <= 45; p++) inOrder.push({ status: 'downloading', progress: p * 2, sequence: seq++ });
    for (let p = 1; p <= 4; p++) inOrder.push({ status: 'installing', progress: p * 25, sequence: seq++ });
    // A repeat with a new sequence number: equal content must not make the result order-dependent.
    inOrder.push({ status: 'installing', progress: 100, sequence: seq++ });
    const expected = run(inOrder);
    for (const seed of [1, 2, 3, 42, 1234]) {
      const noisy = shuffle([...inOrder, ...inOrder], seed);
      assert.equal(noisy.length, 100);
      assert.deepEqual(run(noisy), expected, `seed ${seed}`);
    }
  });
});

describe('version ordering', { timeout: 60_000 }, () => {
  it('follows semantic version precedence', () => {
    const ordered = [
      '1.0.0-alpha',
      '1.0.0-alpha.1',
      '1.0.0-beta',
      '1.0.0-beta.2',
      '1.0.0-beta.11',
      '1.0.0-rc.1',
      '1.0.0',
      '1.0.1',
      '1.10.0',
      '2.0.0',
    ];
    for (let i = 0; i < ordered.length - 1; i++) {
      assert.ok(compareVersions(ordered[i]!, ordered[i + 1]!) < 0, `${ordered[i]} < ${ordered[i + 1]}`);
      assert.ok(compareVersions(ordered[i + 1]!, ordered[i]!) > 0);
    }
    assert.equal(compareVersions('3.0.1', '3.0.1'), 0);
  });

  it('records an install outcome reported after a cancel (the car won the race), but nothing else', () => {
    const cancelled = { status: 'cancelled' as const, progress: 40, lastSequence: 7 };
    assert.deepEqual(applyReport(cancelled, { status: 'completed', sequence: 8 }), {
      applied: true,
      next: { status: 'completed', progress: 100, lastSequence: 8 },
    });
    assert.deepEqual(applyReport(cancelled, { status: 'rolled_back' }), {
      applied: true,
      next: { status: 'rolled_back', progress: 40, lastSequence: 7 },
    });
    for (const status of ['downloading', 'installing', 'rejected'] as const)
      assert.deepEqual(applyReport(cancelled, { status, sequence: 9 }), {
        applied: false,
        reason: 'terminal',
      });
    assert.deepEqual(applyReport(cancelled, { status: 'completed', sequence: 7 }), {
      applied: false,
      reason: 'stale_sequence',
    });
    // A terminal state the vehicle reported stays final.
    for (const status of ['completed', 'failed', 'rejected', 'rolled_back'] as const)
      assert.deepEqual(applyReport({ ...cancelled, status }, { status: 'completed', sequence: 9 }), {
        applied: false,
        reason: 'terminal',
      });
  });

  it('records an install outcome reported after a timeout (the car was late, not gone), but nothing else', () => {
    const timedOut = { status: 'timed_out' as const, progress: 100, lastSequence: 4 };
    assert.deepEqual(applyReport(timedOut, { status: 'completed', sequence: 5 }), {
      applied: true,
      next: { status: 'completed', progress: 100, lastSequence: 5 },
    });
    assert.deepEqual(applyReport(timedOut, { status: 'verification_failed', sequence: 5 }), {
      applied: true,
      next: { status: 'verification_failed', progress: 100, lastSequence: 4 + 1 },
    });
    // Progress, a stand-down or a replayed report does not reopen it.
    for (const status of ['downloading', 'downloaded', 'installing', 'rejected', 'offered'] as const)
      assert.deepEqual(applyReport(timedOut, { status, progress: 50, sequence: 9 }), {
        applied: false,
        reason: 'terminal',
      });
    assert.deepEqual(applyReport(timedOut, { status: 'completed', sequence: 4 }), {
      applied: false,
      reason: 'stale_sequence',
    });
    // Once the late outcome is recorded, it is final like any outcome: a duplicate changes nothing.
    const s = run([{ status: 'installing', sequence: 1 }]);
    const after = applyReport({ ...s, status: 'timed_out' }, { status: 'completed', sequence: 2 });
    assert.ok(after.applied);
    assert.deepEqual(applyReport(after.next, { status: 'completed', sequence: 3 }), {
      applied: false,
      reason: 'terminal',
    });
  });
});
