/**
 * Per-vehicle token buckets for the ingest path (issue 18 #8): one vehicle's flood of MQTT reports must not starve
 * the others, nor drive the ingest function's invocations into the database. Each VIN refills at `ratePerSecond`
 * up to `burst`; a message finding its bucket empty is refused before any table is read.
 *
 * The buckets live in memory, per function instance: on AWS each concurrent ingest instance keeps its own, so a
 * vehicle spread over N instances gets up to N times the rate. That bounds a flood at little cost (no table write
 * per message, which would itself be what the flood drives); an exact fleet-wide limit would need a shared counter.
 * Only the `maxTracked` most recently seen VINs are kept; an evicted VIN starts again with a full bucket.
 */
export interface VinRateLimiterOptions {
  /** Messages per second a vehicle may sustain. @default 5 */
  readonly ratePerSecond?: number;
  /** Messages a vehicle may send at once after being quiet. @default 200 */
  readonly burst?: number;
  /** VINs tracked at once. @default 10000 */
  readonly maxTracked?: number;
}

export class VinRateLimiter {
  private readonly rate: number;
  private readonly burst: number;
  private readonly maxTracked: number;
  /** Map order is recency order: a touched VIN is moved to the end, the first is the least recently seen. */
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(options: VinRateLimiterOptions = {}) {
    this.rate = options.ratePerSecond ?? 5;
    this.burst = options.burst ?? 200;
    this.maxTracked = options.maxTracked ?? 10_000;
    if (!(this.rate > 0 && this.burst >= 1 && this.maxTracked >= 1)) {
      throw new Error('VinRateLimiter: ratePerSecond > 0, burst >= 1 and maxTracked >= 1 are required');
    }
  }

  /** Takes one token from the VIN's bucket; false when it is empty. */
  take(vin: string, nowMs: number): boolean {
    const seen = this.buckets.get(vin);
    const tokens = seen
      ? Math.min(this.burst, seen.tokens + (Math.max(0, nowMs - seen.at) / 1000) * this.rate)
      : this.burst;
    this.buckets.delete(vin);
    const allowed = tokens >= 1;
    this.buckets.set(vin, { tokens: allowed ? tokens - 1 : tokens, at: nowMs });
    if (this.buckets.size > this.maxTracked) this.buckets.delete(this.buckets.keys().next().value!);
    return allowed;
  }
}
