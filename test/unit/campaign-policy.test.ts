import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CANARY_MAX_PERCENT,
  canaryProblem,
  DEFAULT_POLICY,
  evaluateWave,
  haltProblem,
  policyProblems,
  reviewHalt,
  waveSettled,
  waveSizes,
} from '../../lambdas/core/campaign-policy.js';

const t0 = new Date('2026-11-27T00:00:00Z');
const later = (s: number) => new Date(t0.getTime() + s * 1000);

describe('wave sizes', { timeout: 60_000 }, () => {
  it('splits by cumulative percentages and gives every wave at least one vehicle', () => {
    assert.deepEqual(waveSizes(60, [10, 50, 100]), [6, 24, 30]);
    assert.deepEqual(waveSizes(50, [1, 10, 50, 100]), [1, 4, 20, 25]);
    assert.deepEqual(waveSizes(3, [1, 10, 50, 100]), [1, 1, 1, 0]);
    for (const [n, waves] of [
      [1000, [1, 10, 50, 100]],
      [7, [33, 66, 100]],
    ] as const) {
      assert.equal(
        waveSizes(n, waves).reduce((a, b) => a + b, 0),
        n,
      );
    }
  });
});

describe('wave evaluation', { timeout: 60_000 }, () => {
  const policy = {
    ...DEFAULT_POLICY,
    advanceSuccessPercent: 90,
    haltFailurePercent: 30,
    haltMinOutcomes: 3,
    soakSeconds: 60,
  };

  it('waits for the soak time even when the threshold is met', () => {
    assert.deepEqual(evaluateWave({ completed: 10 }, policy, t0, later(30)), { action: 'wait' });
    assert.deepEqual(evaluateWave({ completed: 10 }, policy, t0, later(60)), { action: 'advance' });
  });

  it('waits below the success threshold while vehicles are still working', () => {
    assert.deepEqual(evaluateWave({ completed: 8, installing: 2 }, policy, t0, later(120)), {
      action: 'wait',
    });
  });

  it('does not halt on early failures below the minimum number of outcomes', () => {
    assert.deepEqual(evaluateWave({ failed: 2, offered: 8 }, policy, t0, later(1)), { action: 'wait' });
  });

  it('halts when the failure share crosses the threshold, counting every failure status', () => {
    const d = evaluateWave(
      { completed: 4, failed: 1, rolled_back: 1, timed_out: 1, offered: 3 },
      policy,
      t0,
      later(1),
    );
    assert.equal(d.action, 'halt');
    assert.match(d.action === 'halt' ? d.reason : '', /3 of 7 outcomes failed/);
  });

  it('halts on an absolute failure count', () => {
    const p = { ...policy, haltFailurePercent: undefined, haltFailureCount: 2 };
    assert.equal(evaluateWave({ completed: 50, failed: 2 }, p, t0, later(1)).action, 'halt');
    assert.equal(evaluateWave({ completed: 50, failed: 1, offered: 2 }, p, t0, later(1)).action, 'wait');
  });

  it('halts a finished wave that cannot reach its threshold instead of waiting forever', () => {
    const p = { ...policy, haltFailurePercent: 50, haltMinOutcomes: 100, soakSeconds: 0 };
    const d = evaluateWave({ completed: 8, failed: 2 }, p, t0, later(1));
    assert.equal(d.action, 'halt');
  });
});

describe('empty and settled waves', { timeout: 60_000 }, () => {
  it('moves past a wave with no vehicle (fewer targets than waves) instead of waiting on it forever', () => {
    assert.deepEqual(waveSizes(1, [1, 10, 50, 100]), [1, 0, 0, 0]);
    assert.deepEqual(evaluateWave({}, DEFAULT_POLICY, t0, t0), { action: 'advance' });
  });

  it('calls a wave settled only when every vehicle has an outcome or was cancelled', () => {
    assert.equal(waveSettled({ completed: 9, offered: 1 }), false);
    assert.equal(waveSettled({ completed: 9, scheduled: 1 }), false);
    assert.equal(waveSettled({ completed: 8, timed_out: 1, cancelled: 1 }), true);
    assert.equal(waveSettled({}), true);
  });
});

describe('policy validation', { timeout: 60_000 }, () => {
  it('refuses decreasing waves, a last wave below 100 and no halt threshold', () => {
    assert.deepEqual(policyProblems(DEFAULT_POLICY), []);
    assert.equal(policyProblems({ ...DEFAULT_POLICY, waves: [50, 40, 100] }).length, 1);
    assert.equal(policyProblems({ ...DEFAULT_POLICY, waves: [10, 50] }).length, 1);
    assert.equal(
      policyProblems({ ...DEFAULT_POLICY, haltFailurePercent: undefined, haltFailureCount: undefined })
        .length,
      1,
    );
  });
});

describe('guardrails (issue 18, finding 10)', { timeout: 10_000 }, () => {
  it('wants a canary first wave unless skip_canary says otherwise', () => {
    assert.equal(CANARY_MAX_PERCENT, 50);
    assert.equal(canaryProblem({ ...DEFAULT_POLICY, waves: [1, 10, 50, 100] }), undefined);
    assert.equal(canaryProblem({ ...DEFAULT_POLICY, waves: [50, 100] }), undefined);
    assert.equal(canaryProblem({ ...DEFAULT_POLICY, waves: [51, 100] })?.code, 'canary_required');
    assert.match(canaryProblem({ ...DEFAULT_POLICY, waves: [100] })!.message, /skip_canary/);
    assert.equal(canaryProblem({ ...DEFAULT_POLICY, waves: [100], skipCanary: true }), undefined);
  });

  it('refuses halt thresholds no wave can reach', () => {
    const sizes = waveSizes(20, [10, 50, 100]);
    assert.deepEqual(sizes, [2, 8, 10]);
    assert.equal(haltProblem({ ...DEFAULT_POLICY, haltMinOutcomes: 10 }, sizes), undefined);
    assert.equal(haltProblem({ ...DEFAULT_POLICY, haltMinOutcomes: 11 }, sizes)?.code, 'unreachable_halt');
    assert.equal(
      haltProblem({ ...DEFAULT_POLICY, haltMinOutcomes: 1, haltFailureCount: 10 }, sizes),
      undefined,
    );
    assert.match(
      haltProblem({ ...DEFAULT_POLICY, haltMinOutcomes: 1, haltFailureCount: 11 }, sizes)!.message,
      /halt_failure_count 11 is more than the largest wave \(10 vehicles\)/,
    );
  });
});

describe('a halt looked at again after late outcomes', { timeout: 10_000 }, () => {
  const single = { ...DEFAULT_POLICY, waves: [100], retryBudget: 0 };
  it('lifts a halt whose only failure was a timeout the vehicle corrected by completing', () => {
    // Halted: the one vehicle timed out, so the wave finished with 0 of 1 succeeded.
    assert.equal(evaluateWave({ timed_out: 1 }, single, t0, later(5)).action, 'halt');
    assert.deepEqual(reviewHalt({ timed_out: 1 }, single, 1, t0, later(5)), { action: 'keep' });
    assert.deepEqual(reviewHalt({ completed: 1 }, single, 1, t0, later(9)), { action: 'lift' });
  });

  it('restates the reason with the corrected numbers when the halt still holds', () => {
    const policy = { ...DEFAULT_POLICY, haltFailurePercent: 10, haltMinOutcomes: 5 };
    const review = reviewHalt({ completed: 4, timed_out: 1, downloading: 5 }, policy, 2, t0, later(9));
    assert.equal(review.action, 'restate');
    assert.ok(review.action === 'restate');
    assert.equal(review.failures, 1);
    assert.match(review.reason, /1 of 5 outcomes failed \(20\.0%\)/);
  });

  it('keeps a halt whose failures stand, even when later successes dilute their share', () => {
    const policy = { ...DEFAULT_POLICY, haltFailurePercent: 10, haltMinOutcomes: 5 };
    // Halted at 2 failures of 5; 30 successes later the share is 6%, but no failure was corrected.
    assert.notEqual(evaluateWave({ completed: 30, failed: 2 }, policy, t0, later(9)).action, 'halt');
    assert.deepEqual(reviewHalt({ completed: 30, failed: 2 }, policy, 2, t0, later(9)), { action: 'keep' });
    // A timed-out vehicle that reports, late, that it failed is still a failure.
    assert.deepEqual(reviewHalt({ completed: 3, failed: 2 }, policy, 2, t0, later(9)), { action: 'keep' });
    // A halt recorded without its failure count (before the engine kept it) is left to the operator.
    assert.deepEqual(reviewHalt({ completed: 1 }, single, undefined, t0, later(9)), { action: 'keep' });
  });
});
