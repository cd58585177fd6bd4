/**
 * The campaign engine's tick (every minute on AWS, every second locally). Per running campaign it decides from the
 * campaign item and its summed counter shards only, never from a wave's items: halt when failures cross the policy,
 * advance to the next wave when the current one has succeeded enough, complete when every wave is settled. It
 * times out or re-offers overdue updates found through the sparse byDeadline index (a bounded page per tick), and
 * keeps the campaign's offer pacer going (offer-pacing.ts): started when a wave begins, restarted when silent.
 * Memory and time per tick grow with the number of campaigns and waves, not with their vehicles.
 */
import type { UpdateStatus } from '../../protocol/schemas.js';
import { DUE_PER_TICK } from './campaign-counters.js';
import { evaluateWave, reviewHalt, summarize, waveSettled } from './campaign-policy.js';
import { type CampaignDeps, loadWaveCounts, transition } from './campaigns.js';
import type { CampaignChanges, CampaignRecord, OfferQueue, PacerState } from './ports.js';

/** Statuses of an update whose driver has not accepted yet. */
const BEFORE_CONSENT: ReadonlySet<UpdateStatus> = new Set(['offered', 'awaiting_consent', 'postponed']);

export interface CampaignEngineDeps extends Omit<CampaignDeps, 'releases'> {
  readonly offers: OfferQueue;
  readonly log?: { warn(message: string, extra: Record<string, unknown>): void };
}

/**
 * A pacer that has not stepped for this long while it should (a lost or dead-lettered message) is started again.
 * Generous: a step's message waits behind the offers already queued, and restarting it sooner only queues it
 * again at the back (a backlog that long raises the queue's own alarm at 15 minutes).
 */
export const PACER_SILENT_MS = 5 * 60 * 1000;

export class CampaignEngine {
  constructor(private readonly deps: CampaignEngineDeps) {}

  /** One pass over every running campaign (and a look at the halted ones). */
  async tickAll(): Promise<{ campaigns: number; reoffered: number; timedOut: number; halted: string[] }> {
    for (const c of await this.deps.campaigns.listByStatus('halted')) await this.reviewHalted(c);
    const running = await this.deps.campaigns.listByStatus('running');
    let reoffered = 0;
    let timedOut = 0;
    // Campaigns this pass halted: the operator alert's metric names them (lambdas/core/alerts.ts).
    const halted: string[] = [];
    for (const c of running) {
      const r = await this.tick(c.campaignId);
      reoffered += r.reoffered;
      timedOut += r.timedOut;
      if (r.decision === 'halt') halted.push(c.campaignId);
    }
    return { campaigns: running.length, reoffered, timedOut, halted };
  }

  /**
   * A halted campaign whose wave had failures corrected by late outcomes since it halted (campaign-policy.ts
   * reviewHalt): lifted when the policy no longer calls for the halt, its reason restated when it still does.
   */
  async reviewHalted(c: CampaignRecord): Promise<'kept' | 'lifted' | 'restated'> {
    const wave = c.currentWave;
    const counts = (await loadWaveCounts(this.deps.counters, c))[wave] ?? {};
    const startedAt = new Date(c.waves[wave]?.startedAt ?? c.createdAt);
    const now = this.deps.clock.now();
    const review = reviewHalt(counts, c.policy, c.haltFailures, startedAt, now);
    if (review.action === 'keep') return 'kept';
    const was = c.haltReason ?? 'halted';
    const failures = summarize(counts).failed;
    const changes: CampaignChanges =
      review.action === 'lift'
        ? {
            status: 'running',
            haltReason: `halt lifted: late outcomes corrected wave ${wave} to ${failures} failure(s) (was: ${was})`,
            haltFailures: failures,
          }
        : {
            haltReason: `wave ${wave}: ${review.reason} (corrected by late outcomes; was: ${was})`,
            haltFailures: review.failures,
          };
    if (!(await this.deps.campaigns.change(c.campaignId, c.revision, changes, now.toISOString())))
      return 'kept';
    this.deps.log?.warn(
      review.action === 'lift' ? 'campaign halt lifted by late outcomes' : 'campaign halt restated',
      { campaignId: c.campaignId, wave, failures, was },
    );
    return review.action === 'lift' ? 'lifted' : 'restated';
  }

  async tick(campaignId: string): Promise<{ reoffered: number; timedOut: number; decision: string }> {
    const c = await this.deps.campaigns.get(campaignId);
    if (c?.status !== 'running') return { reoffered: 0, timedOut: 0, decision: 'idle' };
    const now = this.deps.clock.now();
    const { reoffered, timedOut } = await this.overdue(c, now);
    await this.keepPacing(c, now);

    const fresh = await this.deps.campaigns.get(c.campaignId);
    if (fresh?.status !== 'running') return { reoffered, timedOut, decision: 'stopped' };
    const wave = fresh.currentWave;
    const counts = await loadWaveCounts(this.deps.counters, fresh);
    const startedAt = new Date(fresh.waves[wave]?.startedAt ?? fresh.createdAt);
    const decision = evaluateWave(counts[wave] ?? {}, fresh.policy, startedAt, now);
    const stamp = now.toISOString();
    if (decision.action === 'halt') {
      await this.deps.campaigns.change(
        c.campaignId,
        fresh.revision,
        {
          status: 'halted',
          haltReason: `wave ${wave}: ${decision.reason}`,
          haltFailures: summarize(counts[wave] ?? {}).failed,
        },
        stamp,
      );
      return { reoffered, timedOut, decision: 'halt' };
    }
    if (decision.action === 'advance') {
      if (wave + 1 < fresh.waves.length) {
        const waves = fresh.waves.map((w, i) => (i === wave + 1 ? { ...w, startedAt: stamp } : w));
        if (
          await this.deps.campaigns.change(
            c.campaignId,
            fresh.revision,
            { currentWave: wave + 1, waves },
            stamp,
          )
        )
          await this.keepPacing({ ...fresh, currentWave: wave + 1, waves }, now);
        return { reoffered, timedOut, decision: 'advance' };
      }
      // Completed once every vehicle of every wave has its outcome, not just the last wave's. The counts are exact
      // by construction (each moves in its update's transaction), so no recount of the vehicles is needed.
      if (counts.every((w) => waveSettled(w))) {
        await this.deps.campaigns.change(c.campaignId, fresh.revision, { status: 'completed' }, stamp);
        return { reoffered, timedOut, decision: 'completed' };
      }
    }
    return { reoffered, timedOut, decision: 'wait' };
  }

  /**
   * Updates past their deadline, a bounded page per tick through the byDeadline index: offered again while the
   * retry budget lasts (through the offers queue, conditional on the revision read), else timed out.
   */
  private async overdue(c: CampaignRecord, now: Date): Promise<{ reoffered: number; timedOut: number }> {
    const listed = await this.deps.updates.listDue(c.campaignId, now.toISOString(), DUE_PER_TICK);
    // An offer that needed the driver's consent and never got it ends expired: no failure, no re-offer.
    const unanswered = listed.filter((u) => u.conditions?.consent && BEFORE_CONSENT.has(u.status));
    for (const u of unanswered) {
      if (
        await transition(this.deps, u, { status: 'expired', reason: 'no driver consent before the deadline' })
      )
        await this.deps.vehicles.unlockCampaign(u.vin, c.ecu, c.campaignId);
    }
    const due = listed.filter((u) => !unanswered.includes(u));
    const retry = due.filter((u) => u.attempt <= c.policy.retryBudget);
    await this.deps.offers.send(
      retry.map((u, i) => ({
        message: { kind: 'reoffer', campaignId: c.campaignId, vin: u.vin, revision: u.revision },
        delaySeconds: Math.floor(i / Math.max(1, c.policy.notifyPerSecond)),
      })),
    );
    let timedOut = 0;
    for (const u of due.filter((x) => x.attempt > c.policy.retryBudget)) {
      if (await transition(this.deps, u, { status: 'timed_out', reason: 'no report before the deadline' })) {
        timedOut++;
        await this.deps.vehicles.unlockCampaign(u.vin, c.ecu, c.campaignId);
      }
    }
    return { reoffered: retry.length, timedOut };
  }

  /**
   * Starts the campaign's pacer when the current wave has not been paced yet, when it stopped while the campaign
   * was paused or halted, or when it has been silent too long though its wave is not full (or its last page was not
   * confirmed sent). Starting takes the next sequence number (a conditional write), so a step of a chain still
   * running from before fails its own save and sends nothing: at most one pacer per campaign takes targets.
   */
  private async keepPacing(c: CampaignRecord, now: Date): Promise<void> {
    const state = await this.deps.counters.pacer(c.campaignId);
    if (state && state.wave === c.currentWave) {
      // Full, unless its last page was saved and never confirmed sent (that step stopped): then restarted when
      // silent, so the next step sends that page's takes.
      if (state.idle && !state.pending) return;
      // Stopped because the campaign was not running (it is now): start again at once.
      if (!state.waiting && now.getTime() - Date.parse(state.steppedAt) < PACER_SILENT_MS) return;
    }
    const seq = (state?.seq ?? 0) + 1;
    // A new wave starts with nothing taken; the queue cursor carries on where the last wave stopped.
    const sameWave = state !== undefined && state.wave === c.currentWave;
    const next: PacerState = {
      seq,
      wave: c.currentWave,
      taken: sameWave ? state.taken : 0,
      ...(state?.cursor === undefined ? {} : { cursor: state.cursor }),
      idle: false,
      steppedAt: now.toISOString(),
      // A page the stopped chain saved but did not confirm sent: the new chain's first step sends it again.
      ...(state?.pending ? { pending: state.pending } : {}),
    };
    if (!(await this.deps.counters.savePacer(c.campaignId, state?.seq, next))) return;
    if (sameWave)
      this.deps.log?.warn('campaign pacer was silent; started again', { campaignId: c.campaignId, seq });
    await this.deps.offers.send([
      { message: { kind: 'pace', campaignId: c.campaignId, seq }, delaySeconds: 0 },
    ]);
  }
}
