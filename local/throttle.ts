/**
 * The local gateway's throttle: a token bucket per source IP, as API Gateway's stage throttle answers 429 with
 * Retry-After once a client's burst is spent.
 */

export interface ThrottleSettings {
  /** Tokens added per second, per source IP. */
  readonly ratePerSecond: number;
  /** Bucket size: the largest burst a source IP may send at once. */
  readonly burst: number;
}

/** Per-key token buckets; take() answers 0 when a request may pass, else the seconds to wait. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly settings: ThrottleSettings,
    private readonly clock: () => number,
  ) {
    if (!(settings.ratePerSecond > 0) || !(settings.burst >= 1)) {
      throw new Error('throttle needs ratePerSecond > 0 and burst >= 1');
    }
  }

  take(key: string): number {
    const now = this.clock();
    const { ratePerSecond, burst } = this.settings;
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * ratePerSecond);
    b.at = now;
    this.buckets.set(key, b);
    if (this.buckets.size > 10_000) this.evictFull(now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / ratePerSecond));
  }

  private evictFull(now: number): void {
    const { ratePerSecond, burst } = this.settings;
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * ratePerSecond >= burst) this.buckets.delete(key);
    }
  }
}
