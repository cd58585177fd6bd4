/**
 * Exponential backoff with full jitter (a uniformly random delay up to the exponential cap), so a fleet that
 * lost its broker or API at the same moment does not come back in lock-step.
 */
export interface BackoffPolicy {
  /** Cap of the first retry delay, ms. */
  readonly baseMs: number;
  /** Largest delay, ms. */
  readonly maxMs: number;
}

/** Delay before retry number `attempt` (0 for the first retry): uniform in [0, min(max, base * 2^attempt)]. */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number): number {
  const cap = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.floor(random() * cap);
}
