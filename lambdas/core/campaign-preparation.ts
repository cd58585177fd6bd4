/**
 * Writing a campaign's targets in the background (issue 12): `POST /campaigns` validates and answers 202 with the
 * campaign `preparing`; this job writes one target item per eligible vehicle and finishes the campaign.
 *
 * The work is split into segments, each its own job message, so a million targets are written by many workers
 * at once rather than by one long chain: a filter (or `all`) is a DynamoDB parallel scan of the vehicles in
 * `scanSegments` disjoint segments; a VIN list is split into `listSegments` byte ranges, each read line by line
 * with ranged reads. A segment works in slices (a scan page, or a few hundred lines) and saves its checkpoint —
 * cursor and counts — in its own item after each slice, conditionally on the slice number, so a slice is counted
 * once however often it runs: a worker stopped mid-slice is redelivered and runs the slice again, and its writes
 * are idempotent (the target item is a conditional put that finds its own earlier write by `preparedBy`, the lock
 * is re-taken by the same campaign, the exclusion is a conditional put with the same marker).
 *
 * The segment that ends last (every checkpoint done) finishes: sums the counts, sizes the waves from the final
 * count (waveSizes), lowers the default halt_min_outcomes, checks the halt guardrail, and moves the campaign to
 * `created` — or `failed` with a reason (no targets, an unreachable halt, a list changed into garbage), taking its
 * targets back. A cancel during preparation moves it to `cancelling`; every segment stops at its next slice
 * (releasing the locks of the slice it did not commit), and the last one takes the targets back and marks it
 * `cancelled`.
 */

import { countMove } from './campaign-counters.js';
import {
  bundleExclusionReason,
  type Eligibility,
  exclusionReason,
  matchesFilter,
} from './campaign-eligibility.js';
import { haltProblem, waveSizes } from './campaign-policy.js';
import { campaignUpdateId, shuffleKey } from './campaigns.js';
import type { JobResult } from './jobs.js';
import type {
  BundleRepository,
  CampaignRecord,
  CampaignRepository,
  Clock,
  ExclusionRepository,
  JobQueue,
  ObjectStore,
  PreparationRecord,
  PreparationRepository,
  PreparationTotals,
  ReleaseRepository,
  SegmentState,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
  VehicleRepository,
} from './ports.js';
import { isVin, readListSlice, vinOfLine } from './vin-list.js';

/** Parallel scan segments for a filter: a million vehicles is ~62,500 per segment, a few minutes each. */
export const SCAN_SEGMENTS = 16;
/** A VIN list gets one byte range per this many bytes (~40,000 VINs), at most MAX_LIST_SEGMENTS. */
export const LIST_SEGMENT_BYTES = 1024 * 1024;
export const MAX_LIST_SEGMENTS = 16;
/** Targets (scan page items or list lines) per slice: one checkpoint write per slice. */
export const SLICE_SIZE = 250;
/** A slice slower than this halves the next one (down to MIN_SLICE_SIZE); one under a quarter of it doubles it. */
const SLOW_SLICE_MS = 2000;
const MIN_SLICE_SIZE = 10;
/** Per-vehicle writes in flight within a slice. */
const CONCURRENCY = 32;

export const ZERO_TOTALS: PreparationTotals = {
  scanned: 0,
  targeted: 0,
  excluded: {},
  duplicates: 0,
  invalid: 0,
};

/** The target item's index key before the pacer gives it a wave: a stable pseudo-random order (CAMPAIGN12.md). */
export function queuedWaveKey(campaignId: string, vin: string): string {
  return `q#${shuffleKey(campaignId, vin)}#${vin}`;
}

export function addTotals(a: PreparationTotals, b: PreparationTotals): PreparationTotals {
  const excluded: Record<string, number> = { ...a.excluded };
  for (const [k, n] of Object.entries(b.excluded)) excluded[k] = (excluded[k] ?? 0) + n;
  return {
    scanned: a.scanned + b.scanned,
    targeted: a.targeted + b.targeted,
    excluded,
    duplicates: a.duplicates + b.duplicates,
    invalid: a.invalid + b.invalid,
  };
}

export function segmentNumbers(p: PreparationRecord): number[] {
  return Array.from({ length: p.scanSegments + p.listSegments }, (_, i) => i);
}

export interface PreparationDeps {
  readonly campaigns: CampaignRepository;
  readonly releases: Pick<ReleaseRepository, 'get'>;
  /** Bundle campaigns' bundles (absent: a bundle campaign's preparation targets nobody). */
  readonly bundles?: Pick<BundleRepository, 'get'>;
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly exclusions: ExclusionRepository;
  readonly preparation: PreparationRepository;
  readonly objects: Pick<ObjectStore, 'read'>;
  /** Where the fan-out sends the segments' messages. */
  readonly jobs: JobQueue;
  readonly clock: Clock;
  /** @default SLICE_SIZE */
  readonly sliceSize?: number;
  /** Pause between sweeps that found fewer items than were written (index lag). @default 1000 */
  readonly resweepMs?: number;
}

/** One slice read from a segment's source: candidate VINs (with the vehicle when the scan had it). */
interface SliceRead {
  readonly candidates: { vin: string; vehicle?: VehicleRecord }[];
  readonly next?: string;
  readonly scanned: number;
  readonly invalid: number;
}

async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export class CampaignPreparer {
  constructor(private readonly deps: PreparationDeps) {}

  /**
   * The job: the segment (if any) until done or out of time, then the finishing step if every segment is over.
   * Without a segment (what creation and cancel send), it first queues a message for every segment of a preparing
   * campaign that has not finished: the API sends one message whatever the segment count, and a segment whose
   * message was lost is started again (a duplicate only finds its slices committed).
   */
  async run(campaignId: string, segment: number | undefined, shouldYield: () => boolean): Promise<JobResult> {
    const c = await this.deps.campaigns.get(campaignId);
    const p = c?.preparation;
    if (!c || !p || p.state === 'awaiting_targets') return 'done';
    if (segment === undefined && c.status === 'preparing' && p.state === 'running') {
      const all = segmentNumbers(p);
      const states = await this.deps.preparation.segments(campaignId, all);
      await Promise.all(
        all
          .filter((i) => states[i]?.state !== 'done')
          .map((i) => this.deps.jobs.send({ type: 'prepare_campaign', campaign_id: campaignId, segment: i })),
      );
    }
    if (segment !== undefined && p.state === 'running' && segment < p.scanSegments + p.listSegments) {
      if ((await this.runSegment(c, segment, shouldYield)) === 'continue') return 'continue';
    }
    return this.finish(campaignId, shouldYield);
  }

  private async runSegment(
    c: CampaignRecord,
    segment: number,
    shouldYield: () => boolean,
  ): Promise<JobResult> {
    const manifest = await this.eligibility(c);
    let [st] = await this.deps.preparation.segments(c.campaignId, [segment]);
    st ??= { ...ZERO_TOTALS, segment, slices: 0, state: 'running' };
    // Slices shrink when they run slow (a throttled table, a loaded machine) so one always ends well within the
    // time a job keeps in reserve, and grow back when they are quick.
    const most = this.deps.sliceSize ?? SLICE_SIZE;
    let size = most;
    while (st.state === 'running') {
      if (shouldYield()) return 'continue';
      const began = Date.now();
      const now = await this.deps.campaigns.get(c.campaignId);
      const slice = await this.read(c, st, size);
      let next: SegmentState;
      if (now?.status !== 'preparing' || !manifest) {
        // Cancelled (or failed) meanwhile: this slice may have been begun by a worker that was stopped, with
        // locks taken and no item written yet; those locks are released, then the segment stops here.
        await pool(slice.candidates, CONCURRENCY, (t) =>
          this.deps.vehicles.unlockCampaign(t.vin, c.ecu, c.campaignId),
        );
        next = { ...st, state: 'stopped' };
      } else {
        const counted = await this.apply(c, manifest, slice, `${segment}:${st.slices}`);
        next = {
          ...addTotals(st, counted),
          segment,
          slices: st.slices + 1,
          cursor: slice.next,
          state: slice.next === undefined ? 'done' : 'running',
        };
      }
      if (!(await this.deps.preparation.save(c.campaignId, next, st.slices))) {
        // Another worker committed this slice first (a duplicate message): carry on from its checkpoint. Or a
        // cancel's finish marked this segment stopped before it started: what this slice wrote is taken back.
        [st] = await this.deps.preparation.segments(c.campaignId, [segment]);
        if (st?.state === 'stopped' && next.state !== 'stopped')
          await this.takeBack(c, slice.candidates, `${segment}:${next.slices - 1}`);
        if (!st) return 'done';
        continue;
      }
      st = next;
      const took = Date.now() - began;
      if (took > SLOW_SLICE_MS) size = Math.max(MIN_SLICE_SIZE, Math.floor(size / 2));
      else if (took < SLOW_SLICE_MS / 4) size = Math.min(most, size * 2);
    }
    return 'done';
  }

  /** Who can take the campaign's release or bundle (undefined when it is gone: nobody is targeted). */
  private async eligibility(c: CampaignRecord): Promise<Eligibility | undefined> {
    if (c.bundle) {
      const b = await this.deps.bundles?.get(c.releaseId);
      if (!b) return undefined;
      const bundle = b.signedBundle.bundle;
      return (v) => bundleExclusionReason(v, bundle.members, c.rollback !== undefined);
    }
    const manifest = (await this.deps.releases.get(c.releaseId))?.signedManifest.manifest;
    return manifest && ((v) => exclusionReason(v, manifest));
  }

  /** Undoes a slice that was not committed: its target items cancelled, its locks released. */
  private async takeBack(c: CampaignRecord, candidates: SliceRead['candidates'], marker: string) {
    const updateId = campaignUpdateId(c.campaignId);
    await pool(candidates, CONCURRENCY, async (t) => {
      const u = await this.deps.updates.get(t.vin, updateId);
      if (u?.preparedBy === marker && u.status === 'scheduled') {
        const now = this.deps.clock.now().toISOString();
        await this.deps.updates.put(
          {
            ...u,
            status: 'cancelled',
            reason: 'campaign cancelled',
            updatedAt: now,
            revision: u.revision + 1,
          },
          u.revision,
        );
      }
      await this.deps.vehicles.unlockCampaign(t.vin, c.ecu, c.campaignId);
    });
  }

  /** The next slice of a segment: a page of its scan segment, or lines of its byte range of the list. */
  private async read(c: CampaignRecord, st: SegmentState, size: number): Promise<SliceRead> {
    const p = c.preparation!;
    if (st.segment < p.scanSegments) {
      const page = await this.deps.vehicles.scanSegment(st.segment, p.scanSegments, size, st.cursor);
      const f = p.source.filter ?? {};
      return {
        candidates: page.items
          .filter((v) => matchesFilter(v, f, c.ecu))
          .map((v) => ({ vin: v.vin, vehicle: v })),
        next: page.cursor,
        scanned: page.items.length,
        invalid: 0,
      };
    }
    const list = p.source.list!;
    const j = st.segment - p.scanSegments;
    const from = st.cursor === undefined ? Math.floor((list.size * j) / p.listSegments) : Number(st.cursor);
    const end = Math.floor((list.size * (j + 1)) / p.listSegments);
    const slice = await readListSlice(
      (start, last) => this.deps.objects.read(list.key, list.versionId, start, last),
      list.size,
      from,
      end,
      size,
      st.cursor === undefined && from > 0,
    );
    const vins = slice.lines.map(vinOfLine).filter((v) => v !== '');
    const good = vins.filter(isVin);
    return {
      candidates: good.map((vin) => ({ vin })),
      next: slice.malformed || slice.next === undefined ? undefined : String(slice.next),
      scanned: vins.length,
      invalid: vins.length - good.length + (slice.malformed ? 1 : 0),
    };
  }

  /** Excludes or targets each candidate of a slice; answers what it counted (a VIN met twice counts once). */
  private async apply(
    c: CampaignRecord,
    eligible: Eligibility,
    slice: SliceRead,
    marker: string,
  ): Promise<PreparationTotals> {
    const excluded: Record<string, number> = {};
    let targeted = 0;
    let duplicates = 0;
    const seen = new Set<string>();
    const exclude = async (vin: string, reason: string) => {
      if (await this.deps.exclusions.putOnce(c.campaignId, { vin, reason }, marker))
        excluded[reason] = (excluded[reason] ?? 0) + 1;
      else duplicates++;
    };
    const updateId = campaignUpdateId(c.campaignId);
    await pool(slice.candidates, CONCURRENCY, async (t) => {
      if (seen.has(t.vin)) {
        duplicates++;
        return;
      }
      seen.add(t.vin);
      const v = t.vehicle ?? (await this.deps.vehicles.get(t.vin));
      if (!v) return exclude(t.vin, 'unknown_vehicle');
      const reason = eligible(v);
      if (reason) return exclude(v.vin, reason);
      if (!(await this.deps.vehicles.lockCampaign(v.vin, c.ecu, c.campaignId)))
        return exclude(v.vin, 'in_other_campaign');
      // Per-vehicle sequence numbers continue across updates: start from the vehicle's latest known one, so a
      // replayed report from an earlier update cannot move the new one. The same read finds an item this
      // campaign already has for the vehicle (this slice run before, or the VIN met in another slice). A vehicle
      // that never had an update offered or asked for (no active update) has no report, so nothing to continue:
      // the read is skipped and an item already there is found by the conditional put instead.
      const previous = v.activeUpdateId === undefined ? [] : await this.deps.updates.listForVehicle(v.vin);
      let mine = previous.find((u) => u.updateId === updateId);
      if (!mine) {
        const now = this.deps.clock.now().toISOString();
        const item: UpdateRecord = {
          vin: v.vin,
          updateId,
          releaseId: c.releaseId,
          version: c.version,
          ecu: c.ecu,
          campaignId: c.campaignId,
          wave: -1,
          waveKey: queuedWaveKey(c.campaignId, v.vin),
          status: 'scheduled',
          progress: 0,
          lastSequence: Math.max(-1, ...previous.map((u) => u.lastSequence)),
          attempt: 0,
          createdAt: now,
          updatedAt: now,
          revision: 1,
          preparedBy: marker,
        };
        if (await this.deps.updates.put(item, 0)) mine = item;
        else mine = await this.deps.updates.get(v.vin, updateId);
      }
      if (mine?.preparedBy === marker) targeted++;
      else duplicates++;
    });
    return { scanned: slice.scanned, targeted, excluded, duplicates, invalid: slice.invalid };
  }

  /**
   * Runs once every segment is over (any of them may call it; it is idempotent): a preparing campaign becomes
   * created or failed; a cancelled or failed one has its targets taken back.
   */
  async finish(campaignId: string, shouldYield: () => boolean): Promise<JobResult> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const c = await this.deps.campaigns.get(campaignId);
      const p = c?.preparation;
      if (!c || !p || p.state === 'awaiting_targets') return 'done';
      const stamp = this.deps.clock.now().toISOString();
      if (p.state === 'running') {
        const segments = await this.deps.preparation.segments(campaignId, segmentNumbers(p));
        if (c.status === 'preparing') {
          if (!segments.every((s) => s?.state === 'done')) return 'done';
          const totals = segments.reduce<PreparationTotals>((a, s) => addTotals(a, s!), ZERO_TOTALS);
          // On success the loop reads it again (a failed campaign goes on to its sweep); on a lost race too.
          await this.deps.campaigns.change(campaignId, c.revision, this.outcome(c, totals, stamp), stamp);
          continue;
        }
        if (c.status !== 'cancelling') return 'done';
        // Segments not started yet are marked stopped here, so the finish need not wait for their messages.
        await Promise.all(
          segmentNumbers(p).map(async (i) => {
            if (!segments[i])
              await this.deps.preparation.save(
                campaignId,
                { ...ZERO_TOTALS, segment: i, slices: 0, state: 'stopped' },
                0,
              );
          }),
        );
        const now = await this.deps.preparation.segments(campaignId, segmentNumbers(p));
        if (!now.every((s) => s?.state === 'done' || s?.state === 'stopped')) return 'done';
        const totals = now.reduce<PreparationTotals>((a, s) => addTotals(a, s!), ZERO_TOTALS);
        const changes = {
          preparation: { ...p, state: 'finished' as const, totals, finishedAt: stamp, sweep: { seen: 0 } },
          excludedByReason: totals.excluded,
        };
        await this.deps.campaigns.change(campaignId, c.revision, changes, stamp);
        continue;
      }
      // Finished: a cancelled or failed campaign's targets are taken back (items cancelled, locks released).
      if ((c.status === 'cancelling' || c.status === 'failed') && !p.sweep?.done) {
        return this.sweep(c, shouldYield);
      }
      return 'done';
    }
    return 'continue';
  }

  /** created (waves sized from the final count), or failed with the reason. */
  private outcome(c: CampaignRecord, totals: PreparationTotals, stamp: string) {
    const p = c.preparation!;
    const finished = { ...p, state: 'finished' as const, totals, finishedAt: stamp };
    const fail = (failure: string) => ({
      status: 'failed' as const,
      haltReason: failure,
      excludedByReason: totals.excluded,
      targetCount: totals.targeted,
      preparation: { ...finished, failure, sweep: { seen: 0 } },
    });
    if (totals.invalid > 0)
      return fail(
        `malformed_vin_list: ${totals.invalid} line(s) of the VIN list are not VINs (changed since upload?)`,
      );
    if (totals.targeted === 0) return fail('no_targets: no registered vehicle matches the targets');
    const sizes = waveSizes(totals.targeted, c.policy.waves);
    // The default minimum is lowered to what the largest wave can produce; a value the operator chose is checked.
    const policy = p.defaultHaltMinOutcomes
      ? { ...c.policy, haltMinOutcomes: Math.min(c.policy.haltMinOutcomes, Math.max(...sizes)) }
      : c.policy;
    const halt = haltProblem(policy, sizes);
    if (halt) return fail(`${halt.code}: ${halt.message}`);
    return {
      status: 'created' as const,
      policy,
      targetCount: totals.targeted,
      waves: sizes.map((size) => ({ size })),
      excludedByReason: totals.excluded,
      preparation: finished,
    };
  }

  /**
   * Cancels every target item still scheduled (the `q#` range of byCampaign) and releases its lock, a page at a
   * time with the cursor saved on the campaign. The index is eventually consistent: a sweep that saw fewer items
   * than the segments wrote starts over after a pause, until it has seen them all.
   */
  private async sweep(c: CampaignRecord, shouldYield: () => boolean): Promise<JobResult> {
    let campaign = c;
    const reason =
      c.status === 'failed' ? `campaign failed: ${c.haltReason ?? ''}`.trim() : 'campaign cancelled';
    for (;;) {
      const p = campaign.preparation!;
      const at = p.sweep ?? { seen: 0 };
      if (shouldYield()) return 'continue';
      const page = await this.deps.updates.pageQueued(campaign.campaignId, 100, at.cursor);
      await pool(page.items, CONCURRENCY, async (u) => {
        if (u.status === 'scheduled') {
          const now = this.deps.clock.now().toISOString();
          // Counted as withdrawn from the queue, in the same transaction (exact if the sweep runs twice).
          const move = countMove(u, 'cancelled');
          await this.deps.updates.put(
            { ...u, status: 'cancelled', reason, updatedAt: now, revision: u.revision + 1 },
            u.revision,
            move ? [move] : [],
          );
        }
        await this.deps.vehicles.unlockCampaign(u.vin, campaign.ecu, campaign.campaignId);
      });
      let sweep: PreparationRecord['sweep'] = { cursor: page.cursor, seen: at.seen + page.items.length };
      const written = p.totals?.targeted ?? 0;
      // The queue's cursor is a position (it stays after the last item read), so the end is an empty page.
      if (page.items.length === 0) {
        if (sweep.seen >= written) sweep = { seen: sweep.seen, done: true };
        else {
          await new Promise((r) => setTimeout(r, this.deps.resweepMs ?? 1000));
          sweep = { seen: 0 };
        }
      }
      const stamp = this.deps.clock.now().toISOString();
      const changes = {
        preparation: { ...p, sweep },
        ...(sweep.done && campaign.status === 'cancelling' ? { status: 'cancelled' as const } : {}),
      };
      if (!(await this.deps.campaigns.change(campaign.campaignId, campaign.revision, changes, stamp)))
        return 'done';
      if (sweep.done) return 'done';
      campaign = { ...campaign, ...changes, revision: campaign.revision + 1 } as CampaignRecord;
    }
  }
}
