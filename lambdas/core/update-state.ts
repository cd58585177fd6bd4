/**
 * The per-vehicle update state machine. Pure: given the stored state and a report, decide the next state or that
 * nothing changes. Reports may arrive twice, late or out of order (HTTPS retries, MQTT QoS 1 redelivery), so the
 * state only moves forward: a higher phase, or more progress in the same phase, or nothing.
 */
import type { UpdateStatus } from '../../protocol/schemas.js';

const RANK: Record<UpdateStatus, number> = {
  scheduled: -1,
  offered: 0,
  // Waiting for the driver (campaign conditions): after the offer, before anything is downloaded. The two alternate
  // (postponed, then asked again): see CONSENT_STATUSES in applyReport.
  awaiting_consent: 0.5,
  postponed: 0.5,
  initiated: 1,
  downloading: 2,
  downloaded: 3,
  verifying: 4,
  installing: 5,
  completed: 9,
  failed: 9,
  verification_failed: 9,
  rolled_back: 9,
  rejected: 9,
  cancelled: 9,
  timed_out: 9,
  declined: 9,
  expired: 9,
};

export const TERMINAL_STATUSES: ReadonlySet<UpdateStatus> = new Set(
  (Object.keys(RANK) as UpdateStatus[]).filter((s) => RANK[s] === 9),
);
/** States in which nothing has been written to the vehicle's ECU yet (ranked below installing). */
export const BEFORE_INSTALL_STATUSES: ReadonlySet<UpdateStatus> = new Set(
  (Object.keys(RANK) as UpdateStatus[]).filter((s) => RANK[s] < RANK.installing),
);
export const FAILURE_STATUSES: ReadonlySet<UpdateStatus> = new Set([
  'failed',
  'verification_failed',
  'rolled_back',
  'rejected',
  'timed_out',
]);

export function isTerminal(status: UpdateStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

export interface UpdateProgressState {
  readonly status: UpdateStatus;
  readonly progress: number;
  /** Highest per-vehicle sequence number applied, or -1 when the vehicle sends none. */
  readonly lastSequence: number;
}

export interface StatusReport {
  readonly status: UpdateStatus;
  readonly progress?: number;
  readonly sequence?: number;
}

export type TransitionResult =
  | { readonly applied: true; readonly next: UpdateProgressState }
  /**
   * Nothing moves forward. A report with a newer sequence number still raises lastSequence (next is set), so the
   * stored state does not depend on the order in which equal reports arrive.
   */
  | {
      readonly applied: false;
      readonly reason: 'terminal' | 'stale_sequence' | 'not_forward';
      readonly next?: UpdateProgressState;
    };

/**
 * Terminal states the backend decides on its own, not from anything the vehicle said: a cancel is a wish that can
 * lose the race with a car already installing, and a timeout is a guess that the car is not coming back. Neither
 * is evidence about what the car runs, so an install outcome the car reports later overrides them.
 */
export const BACKEND_DECIDED_STATUSES: ReadonlySet<UpdateStatus> = new Set([
  'cancelled',
  'timed_out',
  'expired',
]);

/**
 * The driver's answers that end an update without a failure: declined (the driver said no) and expired (no answer
 * before the consent deadline). Never counted as failures toward a halt; a wave counts them as settled.
 */
export const DRIVER_ENDED_STATUSES: ReadonlySet<UpdateStatus> = new Set(['declined', 'expired']);

/** Asking the driver, and asking again after a postponement: each may follow the other. */
export const CONSENT_STATUSES: ReadonlySet<UpdateStatus> = new Set(['awaiting_consent', 'postponed']);

/**
 * Install outcomes a vehicle may report on an update the backend had ended (BACKEND_DECIDED_STATUSES): what the
 * car then runs is the fact that must be recorded. Nothing else moves such an update (a late progress report or a
 * stand-down does not reopen it).
 */
export const LATE_OUTCOMES: ReadonlySet<UpdateStatus> = new Set([
  'completed',
  'failed',
  'verification_failed',
  'rolled_back',
]);

export function applyReport(current: UpdateProgressState, report: StatusReport): TransitionResult {
  const lateOutcome = BACKEND_DECIDED_STATUSES.has(current.status) && LATE_OUTCOMES.has(report.status);
  if (isTerminal(current.status) && !lateOutcome) return { applied: false, reason: 'terminal' };
  if (report.sequence !== undefined && report.sequence <= current.lastSequence) {
    return { applied: false, reason: 'stale_sequence' };
  }
  if (lateOutcome) {
    return {
      applied: true,
      next: {
        status: report.status,
        progress: report.status === 'completed' ? 100 : current.progress,
        lastSequence: report.sequence ?? current.lastSequence,
      },
    };
  }
  const from = RANK[current.status];
  const to = RANK[report.status];
  const progress =
    report.status === 'completed' ? 100 : (report.progress ?? (to > from ? 0 : current.progress));
  const forward =
    to > from ||
    (to === from && progress > current.progress) ||
    (CONSENT_STATUSES.has(current.status) &&
      CONSENT_STATUSES.has(report.status) &&
      report.status !== current.status);
  if (!forward) {
    return report.sequence === undefined
      ? { applied: false, reason: 'not_forward' }
      : { applied: false, reason: 'not_forward', next: { ...current, lastSequence: report.sequence } };
  }
  return {
    applied: true,
    next: { status: report.status, progress, lastSequence: report.sequence ?? current.lastSequence },
  };
}
