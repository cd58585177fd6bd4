/**
 * Campaign rollout policy, pure: how targets split into waves, when a wave may be followed by the next, and when
 * failures must halt the campaign. The campaign engine only feeds it counts and times.
 */

import type { CampaignConditions } from '../../protocol/conditions.js';
import type { UpdateStatus } from '../../protocol/schemas.js';
import { DRIVER_ENDED_STATUSES, FAILURE_STATUSES } from './update-state.js';

export interface RolloutPolicy {
  /** Cumulative share of the targets reached by the end of each wave, in percent, ending at 100. */
  readonly waves: readonly number[];
  /** Share of a wave's vehicles that must have completed before the next wave starts, in percent. */
  readonly advanceSuccessPercent: number;
  /** Minimum time a wave runs before the next may start, in seconds (0: as soon as the threshold is met). */
  readonly soakSeconds: number;
  /** Halt when a wave has this many failures... */
  readonly haltFailureCount?: number;
  /** ...or when this share of its outcomes failed, in percent... */
  readonly haltFailurePercent?: number;
  /** ...once it has at least this many outcomes (so one early failure of three does not read as 33%). */
  readonly haltMinOutcomes: number;
  /** A vehicle that has not finished this long after being offered is timed out. */
  readonly vehicleTimeoutSeconds: number;
  /** How many times a timed-out vehicle is offered the update again. */
  readonly retryBudget: number;
  /** Notifications sent per second. */
  readonly notifyPerSecond: number;
  /** The operator chose a first wave above CANARY_MAX_PERCENT (recorded so the choice shows on the campaign). */
  readonly skipCanary?: boolean;
  /** Driver consent, maintenance window, network (protocol/conditions.ts); signed into each offer's assignment. */
  readonly conditions?: CampaignConditions;
}

/**
 * The first wave is a canary: at most this share of the targets, so a bad release meets a sample of the fleet
 * before all of it. A larger first wave (a single 100% wave for a few test cars) must be asked for (skip_canary).
 */
export const CANARY_MAX_PERCENT = 50;

/** A problem with a campaign that would run, but not as an operator means it to: a 400 with its own code. */
export interface GuardrailProblem {
  readonly code: 'canary_required' | 'unreachable_halt';
  readonly message: string;
}

export function canaryProblem(p: RolloutPolicy): GuardrailProblem | undefined {
  const first = p.waves[0] ?? 100;
  if (first <= CANARY_MAX_PERCENT || p.skipCanary) return undefined;
  return {
    code: 'canary_required',
    message: `the first wave (${first}%) must be a canary of at most ${CANARY_MAX_PERCENT}% of the targets; add waves (e.g. 10,100) or set policy.skip_canary`,
  };
}

/**
 * Halt thresholds must be able to fire: failures and outcomes are counted per wave, so a threshold above the
 * largest wave's size can never be reached and the campaign would roll on through any failure rate.
 */
export function haltProblem(p: RolloutPolicy, sizes: readonly number[]): GuardrailProblem | undefined {
  const largest = Math.max(0, ...sizes);
  if (p.haltMinOutcomes > largest) {
    return {
      code: 'unreachable_halt',
      message: `halt_min_outcomes ${p.haltMinOutcomes} is more than the largest wave (${largest} vehicles) can produce`,
    };
  }
  if (p.haltFailureCount !== undefined && p.haltFailureCount > largest) {
    return {
      code: 'unreachable_halt',
      message: `halt_failure_count ${p.haltFailureCount} is more than the largest wave (${largest} vehicles) can reach`,
    };
  }
  return undefined;
}

export const DEFAULT_POLICY: RolloutPolicy = {
  waves: [1, 10, 50, 100],
  advanceSuccessPercent: 90,
  soakSeconds: 0,
  haltFailurePercent: 10,
  haltMinOutcomes: 5,
  vehicleTimeoutSeconds: 24 * 3600,
  retryBudget: 1,
  notifyPerSecond: 50,
};

/** Checks a policy's internal consistency; returns the problems (empty when valid). */
export function policyProblems(p: RolloutPolicy): string[] {
  const problems: string[] = [];
  if (p.waves.length === 0 || p.waves.length > 20) problems.push('waves: 1 to 20 waves');
  if (p.waves.some((w, i) => w <= 0 || w > 100 || (i > 0 && w <= p.waves[i - 1]!))) {
    problems.push('waves: cumulative percentages, strictly increasing, within (0, 100]');
  }
  if (p.waves.at(-1) !== 100) problems.push('waves: the last wave must reach 100');
  if (p.haltFailureCount === undefined && p.haltFailurePercent === undefined) {
    problems.push('a halt threshold (haltFailureCount or haltFailurePercent) is required');
  }
  return problems;
}

/**
 * Number of vehicles in each wave for a target count. Every wave that can have a vehicle gets at least one, so a
 * 1% first wave of a 50-vehicle campaign is one canary vehicle rather than none.
 */
export function waveSizes(total: number, waves: readonly number[]): number[] {
  const sizes: number[] = [];
  let assigned = 0;
  for (const cumulative of waves) {
    const target = Math.min(total, Math.max(Math.ceil((total * cumulative) / 100), assigned + 1));
    sizes.push(target - assigned);
    assigned = target;
  }
  return sizes;
}

export type WaveCounts = Partial<Record<UpdateStatus | 'pending', number>>;

export function summarize(counts: WaveCounts): {
  size: number;
  succeeded: number;
  failed: number;
  outcomes: number;
  /** Declined or expired (the driver's choice): neither a success nor a failure. */
  driverEnded: number;
} {
  let size = 0;
  let failed = 0;
  let driverEnded = 0;
  for (const [status, n] of Object.entries(counts)) {
    size += n ?? 0;
    if (FAILURE_STATUSES.has(status as UpdateStatus)) failed += n ?? 0;
    if (DRIVER_ENDED_STATUSES.has(status as UpdateStatus)) driverEnded += n ?? 0;
  }
  const succeeded = counts.completed ?? 0;
  return { size, succeeded, failed, outcomes: succeeded + failed, driverEnded };
}

/** Every vehicle of the wave has an outcome, was cancelled or ended by its driver: nothing can change any more. */
export function waveSettled(counts: WaveCounts): boolean {
  const { size, outcomes, driverEnded } = summarize(counts);
  return outcomes + driverEnded + (counts.cancelled ?? 0) >= size;
}

export type WaveDecision =
  | { readonly action: 'halt'; readonly reason: string }
  | { readonly action: 'advance' }
  | { readonly action: 'wait' };

export function evaluateWave(
  counts: WaveCounts,
  policy: RolloutPolicy,
  waveStartedAt: Date,
  now: Date,
): WaveDecision {
  const all = summarize(counts);
  // Vehicles whose drivers declined (or let the consent deadline pass) are out of the wave's measure: neither
  // failures toward a halt nor missing successes (a wave of decliners must not halt the campaign).
  const { succeeded, failed, outcomes } = all;
  const size = all.size - all.driverEnded;
  // A campaign with fewer vehicles than waves has empty waves (waveSizes): nothing to wait for in them.
  if (size === 0) return { action: 'advance' };
  if (outcomes >= policy.haltMinOutcomes) {
    if (policy.haltFailureCount !== undefined && failed >= policy.haltFailureCount) {
      return {
        action: 'halt',
        reason: `${failed} failures in the wave reached the limit of ${policy.haltFailureCount}`,
      };
    }
    const percent = (failed / outcomes) * 100;
    if (policy.haltFailurePercent !== undefined && percent >= policy.haltFailurePercent) {
      return {
        action: 'halt',
        reason: `${failed} of ${outcomes} outcomes failed (${percent.toFixed(1)}%), at or above ${policy.haltFailurePercent}%`,
      };
    }
  }
  const soaked = now.getTime() - waveStartedAt.getTime() >= policy.soakSeconds * 1000;
  const successPercent = size > 0 ? (succeeded / size) * 100 : 0;
  if (size > 0 && soaked && successPercent >= policy.advanceSuccessPercent) return { action: 'advance' };
  // Every vehicle of the wave has an outcome and too few succeeded: waiting would never end.
  if (
    size > 0 &&
    outcomes + (counts.cancelled ?? 0) >= size &&
    successPercent < policy.advanceSuccessPercent
  ) {
    return {
      action: 'halt',
      reason: `the wave finished with ${succeeded} of ${size} succeeded, below the ${policy.advanceSuccessPercent}% needed to continue`,
    };
  }
  return { action: 'wait' };
}

export type HaltReview =
  | { readonly action: 'keep' }
  | { readonly action: 'lift' }
  | { readonly action: 'restate'; readonly reason: string; readonly failures: number };

/**
 * A halted wave looked at again. A halt is the engine's reaction to failures; when some of those failures are
 * corrected by the vehicles themselves (a timed-out car reports, late, that it installed), the wave has fewer
 * failures than when it halted. Then the policy is applied to the corrected counts: if it no longer calls for a
 * halt the halt is lifted (the campaign was stopped for failures it did not have), and if it still does, the
 * reason is restated with the corrected numbers. A halt whose failures stand is kept, even when more successes
 * arrive and dilute the failure share: stopping early is the point of the halt, and only an operator resumes it.
 */
export function reviewHalt(
  counts: WaveCounts,
  policy: RolloutPolicy,
  failuresAtHalt: number | undefined,
  waveStartedAt: Date,
  now: Date,
): HaltReview {
  const { failed } = summarize(counts);
  // Halted before the engine recorded its failures (an older record): nothing to compare with.
  if (failuresAtHalt === undefined || failed >= failuresAtHalt) return { action: 'keep' };
  const decision = evaluateWave(counts, policy, waveStartedAt, now);
  if (decision.action === 'halt') return { action: 'restate', reason: decision.reason, failures: failed };
  return { action: 'lift' };
}
