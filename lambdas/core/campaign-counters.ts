/**
 * The pure arithmetic of a campaign at fleet scale: which counter shard a vehicle's state changes go to, how many
 * more targets a wave may take, how a pacer step spreads its offers over time, and how a wave's counts are put
 * together from its shards and the still-queued targets. No I/O: the engine (campaigns.ts), the offer worker
 * (offer-pacing.ts) and the adapters only call these.
 *
 * Why shards: every status change of a campaign update moves one count. Kept on the campaign item, 2,000 vehicles/s
 * x up to 7 counted changes each is 14,000 writes/s on one item (DynamoDB: 1,000 WCU/s per partition). Spread over
 * COUNTER_SHARDS items per wave it is 14,000 / 256 = 55 writes/s per item. See docs/architecture.md.
 */
import { createHash } from 'node:crypto';

/** Most counter shards per wave (a wave of 4,096 targets or more has them all). */
export const COUNTER_SHARDS = 256;
/** A wave gets one shard per this many targets (so a shard never holds more vehicles than this, below the cap). */
export const VEHICLES_PER_SHARD = 16;
/** The wave index of targets not taken into a wave yet (CAMPAIGN12.md: `wave: -1`, `waveKey: q#...`). */
export const QUEUED_WAVE = -1;
export const QUEUE_KEY_PREFIX = 'q#';

/** Seconds of offers one pacer step covers; the next step is due when these have been sent. */
export const PACER_STEP_SECONDS = 10;
/** Most targets one pacer step reads and fans out (one bounded page, whatever the wave size). */
export const PACER_MAX_STEP_ITEMS = 1000;
/** SQS DelaySeconds maximum. */
const MAX_DELAY_SECONDS = 900;
/** Most overdue updates one tick handles per campaign (the rest are due on the next tick). */
export const DUE_PER_TICK = 1000;

/** How many counter shards a wave of `size` targets uses: small waves stay cheap to read, large ones spread. */
export function shardsFor(size: number): number {
  return Math.min(COUNTER_SHARDS, Math.max(1, Math.ceil(size / VEHICLES_PER_SHARD)));
}

/** The shard of a VIN among `shards`: a hash, so a wave's vehicles spread evenly and a VIN always maps the same. */
export function shardOf(vin: string, shards: number): number {
  return createHash('sha256').update(vin).digest().readUInt32BE(0) % shards;
}

/** How many more targets wave `wave` may take: exactly its size in all, never more. */
export function waveQuota(size: number, taken: number): number {
  return Math.max(0, size - taken);
}

/**
 * One pacer step: how many targets it takes (at most the wave's remaining quota, one step's worth at the
 * campaign's rate, one page), the delay of each offer so they go out at `notifyPerSecond`, and after how many
 * seconds the next step is due.
 */
export function pacerStep(
  notifyPerSecond: number,
  quota: number,
): { items: number; delays: (i: number) => number; nextStepSeconds: number } {
  const rate = Math.max(1, notifyPerSecond);
  const items = Math.max(0, Math.min(quota, rate * PACER_STEP_SECONDS, PACER_MAX_STEP_ITEMS));
  return {
    items,
    delays: (i) => Math.min(MAX_DELAY_SECONDS, Math.floor(i / rate)),
    // The step's offers take ceil(items / rate) seconds to go out; at least one second between steps.
    nextStepSeconds: Math.min(MAX_DELAY_SECONDS, Math.max(1, Math.ceil(items / rate))),
  };
}

export type Counts = Record<string, number>;

/** Adds shard counts up into one record, dropping zeros (a status every vehicle has left). */
export function sumCounts(shards: readonly Readonly<Counts>[]): Counts {
  const total: Counts = {};
  for (const s of shards) for (const [k, n] of Object.entries(s)) total[k] = (total[k] ?? 0) + n;
  return Object.fromEntries(Object.entries(total).filter(([, n]) => n !== 0));
}

function total(c: Readonly<Counts>): number {
  return Object.values(c).reduce((a, b) => a + b, 0);
}

/**
 * Each wave's counts as the operator sees them: what its shards count (the targets taken into it), plus
 * `scheduled` for the targets it has still to take. Targets withdrawn while still queued (a cancel, a revoke) are
 * counted under the queue; the pacer takes targets in queue order, so those are the queue's tail, and they are
 * shown as cancelled in the last waves' untaken places.
 */
export function waveCounts(
  sizes: readonly number[],
  taken: readonly Readonly<Counts>[],
  queued: Readonly<Counts>,
): Counts[] {
  const untaken = sizes.map((size, w) => waveQuota(size, total(taken[w] ?? {})));
  // What left the queue without being taken (cancelled), spread from the last wave backwards.
  let left = { ...queued };
  const extra: Counts[] = sizes.map(() => ({}));
  for (let w = sizes.length - 1; w >= 0; w--) {
    for (const [status, n] of Object.entries(left)) {
      const room = untaken[w]! - total(extra[w]!);
      const moved = Math.min(room, n);
      if (moved <= 0) continue;
      extra[w]![status] = (extra[w]![status] ?? 0) + moved;
      left = { ...left, [status]: n - moved };
    }
  }
  return sizes.map((_, w) => {
    const scheduled = untaken[w]! - total(extra[w]!);
    return sumCounts([taken[w] ?? {}, extra[w]!, scheduled > 0 ? { scheduled } : {}]);
  });
}

/** The index key of a target taken into wave `wave`: `<wave, 3 digits>#<VIN>` (lists a wave in VIN order). */
export function waveKeyOf(wave: number, vin: string): string {
  return `${String(wave).padStart(3, '0')}#${vin}`;
}

/** Shards of the counts of targets withdrawn while still queued (a cancel job's pace, a revoke: far below 100/s). */
export const QUEUE_SHARDS = 16;

/**
 * The count move of a campaign update going from its status to `to` (undefined: leaving its count, as a withdrawn
 * queued target does when it is taken into a wave). Queued scheduled targets are not counted (a wave's scheduled
 * count is its untaken places), so a move from there has no `from`. No move for a direct update, or no change.
 */
export function countMove(
  u: { campaignId?: string; vin: string; wave?: number; shard?: number; status: string },
  to: string | undefined,
): { campaignId: string; wave: number; shard: number; from?: string; to?: string } | undefined {
  if (u.campaignId === undefined || u.status === to) return undefined;
  const wave = u.wave ?? QUEUED_WAVE;
  const queued = wave === QUEUED_WAVE;
  const from = queued && u.status === 'scheduled' ? undefined : u.status;
  if (from === undefined && to === undefined) return undefined;
  return {
    campaignId: u.campaignId,
    wave,
    shard: queued ? shardOf(u.vin, QUEUE_SHARDS) : (u.shard ?? 0),
    ...(from === undefined ? {} : { from }),
    ...(to === undefined ? {} : { to }),
  };
}
