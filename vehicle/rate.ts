/** Pure rate helpers with an explicit clock: progress throttling and the minimum-speed check of downloads. */

/** Lets a progress report through every `stepPercent` points or every `intervalMs`, whichever comes first. */
export class ProgressThrottle {
  private lastPercent = -Infinity;
  private lastAt = -Infinity;

  constructor(
    private readonly stepPercent = 5,
    private readonly intervalMs = 2000,
  ) {}

  /** True when this reading should be reported (and records it as reported). 100% always passes once. */
  shouldReport(percent: number, now: number): boolean {
    const due =
      percent >= this.lastPercent + this.stepPercent ||
      (percent > this.lastPercent && now - this.lastAt >= this.intervalMs) ||
      (percent >= 100 && this.lastPercent < 100);
    if (due) {
      this.lastPercent = percent;
      this.lastAt = now;
    }
    return due;
  }

  reset(): void {
    this.lastPercent = -Infinity;
    this.lastAt = -Infinity;
  }
}

/**
 * Minimum-speed guard (slow retrieval attack): once `windowMs` has passed since start, the bytes received in the
 * last `windowMs` must average at least `minBytesPerSecond`.
 */
export class SpeedMonitor {
  /** Bytes per time bucket, oldest first; bounded by windowMs / BUCKET_MS entries. */
  private readonly buckets: { at: number; bytes: number }[] = [];
  private total = 0;
  private static readonly BUCKET_MS = 250;

  constructor(
    private readonly minBytesPerSecond: number,
    private readonly windowMs: number,
    private readonly startedAt: number,
  ) {}

  add(bytes: number, now: number): void {
    this.total += bytes;
    const at = now - (now % SpeedMonitor.BUCKET_MS);
    const last = this.buckets[this.buckets.length - 1];
    if (last && last.at === at) last.bytes += bytes;
    else this.buckets.push({ at, bytes });
    const horizon = now - this.windowMs - SpeedMonitor.BUCKET_MS;
    while (this.buckets.length > 0 && this.buckets[0]!.at < horizon) this.buckets.shift();
  }

  /** Bytes per second over the last window (or since start, when shorter). */
  rate(now: number): number {
    const span = Math.min(this.windowMs, Math.max(1, now - this.startedAt));
    const horizon = now - span;
    let bytes = 0;
    for (const b of this.buckets) if (b.at >= horizon - SpeedMonitor.BUCKET_MS / 2) bytes += b.bytes;
    return (bytes * 1000) / span;
  }

  /** True when the window has elapsed and the rate over it is below the minimum. */
  tooSlow(now: number): boolean {
    if (this.minBytesPerSecond <= 0 || now - this.startedAt < this.windowMs) return false;
    return this.rate(now) < this.minBytesPerSecond;
  }

  get received(): number {
    return this.total;
  }
}
