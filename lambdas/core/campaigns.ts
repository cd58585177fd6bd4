/**
 * Campaigns: a published release rolled out to targeted vehicles in waves. Creation (campaign-creation.ts)
 * validates and answers `preparing`; a background job (campaign-preparation.ts) resolves the targets (VIN list
 * and/or filter), excludes ineligible vehicles with a reason, takes a per-vehicle, per-ECU lock so two campaigns
 * never fight over one ECU, and writes one target item per vehicle. The engine's tick (every minute on AWS, every
 * second locally) offers the current wave at a paced rate, times out silent vehicles (re-offering within a retry
 * budget), halts the campaign when failures cross the policy's threshold and starts the next wave when the
 * current one has succeeded enough.
 */
import { createHash } from 'node:crypto';
import { offerFor } from '../../protocol/offer.js';
import type {
  CampaignCreated,
  CampaignExcluded,
  CampaignList,
  CampaignVehicles,
  CampaignView,
} from '../../protocol/operator-responses.js';
import {
  type CreateCampaignInput,
  cancelledInPreparation,
  completeTargets,
  createCampaign,
  preparationProgress,
  preparationView,
} from './campaign-creation.js';
import { evaluateWave, reviewHalt, summarize, waveSettled } from './campaign-policy.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import type {
  CampaignChanges,
  CampaignRecord,
  CampaignRepository,
  CampaignStatus,
  Clock,
  ExclusionRepository,
  HistoryRepository,
  JobQueue,
  ObjectStore,
  OfferPublisher,
  PreparationRepository,
  PreparationTotals,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRepository,
} from './ports.js';
import { BEFORE_INSTALL_STATUSES, isTerminal } from './update-state.js';
import type { AssignmentIssuer } from './vehicle-updates.js';

export type { CreateCampaignInput };

export function waveKeyPrefix(wave: number): string {
  return String(wave).padStart(3, '0');
}

export function campaignUpdateId(campaignId: string): string {
  return `campaign#${campaignId}`;
}

/** Wave membership is a stable pseudo-random order of the targets, so early waves are a sample, not VIN order. */
export function shuffleKey(campaignId: string, vin: string): string {
  return createHash('sha256').update(`${campaignId}:${vin}`).digest('hex');
}

/** The answer is typed by the protocol's schema, so a field that drifts from the API document breaks the build. */
export function campaignView(
  c: CampaignRecord,
  progress?: { totals: PreparationTotals; done: number },
): CampaignView {
  const totals: Record<string, number> = {};
  const waves = c.waves.map((w, i) => {
    const counts = nonZero(c.counts[`w${i}`] ?? {});
    for (const [s, n] of Object.entries(counts)) totals[s] = (totals[s] ?? 0) + n;
    const sum = summarize(counts);
    return {
      wave: i,
      size: w.size,
      started_at: w.startedAt ?? null,
      counts,
      succeeded: sum.succeeded,
      failed: sum.failed,
    };
  });
  return {
    campaign_id: c.campaignId,
    name: c.name,
    release_id: c.releaseId,
    version: c.version,
    ecu: c.ecu,
    status: c.status,
    halt_reason: c.haltReason ?? null,
    /** While cancelling: the wave being withdrawn (the counts show how many are cancelled so far). */
    cancel: c.cancel
      ? { wave: Math.min(c.cancel.wave, c.waves.length), started_at: c.cancel.startedAt }
      : null,
    current_wave: c.currentWave,
    target_count: c.targetCount,
    // A bounded summary; the VINs are listed a page at a time by GET /campaigns/{id}/excluded.
    excluded: excludedSummary(c),
    counts: totals,
    waves,
    policy: { ...c.policy, waves: [...c.policy.waves] },
    preparation: preparationView(c, progress),
    created_at: c.createdAt,
    updated_at: c.updatedAt,
  };
}

/** Counts per reason; campaigns stored before exclusions had their own items carried the list itself. */
function excludedSummary(c: CampaignRecord): { count: number; by_reason: Record<string, number> } {
  const legacy = (c as { excluded?: readonly { reason: string }[] }).excluded;
  const byReason: Record<string, number> = { ...(c.excludedByReason ?? {}) };
  for (const e of legacy ?? []) byReason[e.reason] = (byReason[e.reason] ?? 0) + 1;
  return { count: Object.values(byReason).reduce((a, b) => a + b, 0), by_reason: byReason };
}

export interface CampaignDeps {
  readonly campaigns: CampaignRepository;
  readonly releases: ReleaseRepository;
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly history: HistoryRepository;
  readonly clock: Clock;
}

export interface CampaignServiceDeps extends CampaignDeps {
  /** Where cancel sends the withdrawal job, and creation its preparation. */
  readonly jobs: JobQueue;
  readonly exclusions: ExclusionRepository;
  /** VIN lists: written (inline), presigned for upload, checked. */
  readonly objects: Pick<ObjectStore, 'put' | 'presignPut' | 'head' | 'read'>;
  readonly preparation: PreparationRepository;
}

/** Runs fn over items with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(workers);
}

export class CampaignService {
  constructor(private readonly deps: CampaignServiceDeps) {}

  /** Validates and answers the campaign `preparing`; its targets are written in the background. */
  create(input: CreateCampaignInput): Promise<CampaignCreated> {
    return createCampaign(this.deps, input);
  }

  /** POST /campaigns/{id}/targets: the uploaded VIN list is complete. */
  completeTargets(campaignId: string): Promise<CampaignView> {
    return completeTargets(this.deps, campaignId);
  }

  async get(campaignId: string): Promise<CampaignView> {
    const c = await this.load(campaignId);
    return campaignView(c, await preparationProgress(this.deps, c));
  }

  async list(limit: number, token?: string): Promise<CampaignList> {
    const page = await this.deps.campaigns.list(limit, token);
    return { campaigns: page.items.map((c) => campaignView(c)), next_token: page.token ?? null };
  }

  /** One page of a wave's vehicles (VIN order). */
  async vehicles(campaignId: string, wave: number, limit: number, token?: string): Promise<CampaignVehicles> {
    const c = await this.load(campaignId);
    if (!Number.isInteger(wave) || wave < 0 || wave >= c.waves.length) {
      throw new BadRequestError('invalid_wave', `wave must be 0-${c.waves.length - 1}`);
    }
    const page = await this.deps.updates.pageByCampaignWave(campaignId, wave, limit, token);
    return {
      campaign_id: campaignId,
      wave,
      next_token: page.token ?? null,
      vehicles: page.items.map((u) => ({
        vin: u.vin,
        status: u.status,
        progress: u.progress,
        attempt: u.attempt,
        reason: u.reason ?? null,
        offered_at: u.offeredAt ?? null,
        deadline: u.deadline ?? null,
        updated_at: u.updatedAt,
      })),
    };
  }

  /** One page of the targets the campaign excluded, with the reason (VIN order). */
  async excluded(campaignId: string, limit: number, token?: string): Promise<CampaignExcluded> {
    const c = await this.load(campaignId);
    const legacy = (c as { excluded?: { vin: string; reason: string }[] }).excluded;
    const page = legacy
      ? { items: legacy, token: undefined }
      : await this.deps.exclusions.page(campaignId, limit, token);
    return { campaign_id: campaignId, excluded: page.items, next_token: page.token ?? null };
  }

  private async load(campaignId: string): Promise<CampaignRecord> {
    const c = await this.deps.campaigns.get(campaignId);
    if (!c) throw new NotFoundError('unknown_campaign', `No campaign ${campaignId}`);
    return c;
  }

  /**
   * Operator actions; each is a conditional status change, refused with 409 from a state it does not apply to.
   * Cancel marks the campaign cancelling and queues the withdrawal (campaign-cancel.ts); cancelling again while
   * it runs queues it again (a stopped job resumes from its checkpoint), and once cancelled it changes nothing.
   */
  async act(campaignId: string, action: 'start' | 'pause' | 'resume' | 'cancel'): Promise<CampaignView> {
    const allowed: Record<typeof action, CampaignStatus[]> = {
      start: ['created'],
      pause: ['running'],
      resume: ['paused', 'halted'],
      cancel: ['preparing', 'created', 'running', 'paused', 'halted'],
    };
    const target: Record<typeof action, CampaignStatus> = {
      start: 'running',
      pause: 'paused',
      resume: 'running',
      cancel: 'cancelling',
    };
    for (let attempt = 0; attempt < 5; attempt++) {
      const c = await this.load(campaignId);
      if (action === 'cancel' && c.status === 'cancelled') return campaignView(c);
      // Cancelled while preparing: the preparation job stops its segments and takes the targets back.
      const cancelJob = () =>
        this.deps.jobs.send(
          cancelledInPreparation(c) || c.status === 'preparing'
            ? { type: 'prepare_campaign', campaign_id: campaignId }
            : { type: 'cancel_campaign', campaign_id: campaignId },
        );
      if (action === 'cancel' && c.status === 'cancelling') {
        await cancelJob();
        return campaignView(c);
      }
      // Still waiting for its VIN list: nothing was written, so nothing to take back.
      if (action === 'cancel' && c.status === 'preparing' && c.preparation?.state === 'awaiting_targets') {
        const now = this.deps.clock.now().toISOString();
        const finished = { ...c.preparation, state: 'finished' as const, finishedAt: now };
        if (
          await this.deps.campaigns.change(
            campaignId,
            c.revision,
            { status: 'cancelled', preparation: finished },
            now,
          )
        )
          return this.get(campaignId);
        continue;
      }
      if (!allowed[action].includes(c.status)) {
        throw new ConflictError('invalid_transition', `Cannot ${action} a campaign that is ${c.status}`);
      }
      const now = this.deps.clock.now().toISOString();
      const changes =
        action === 'start'
          ? { status: target[action], waves: c.waves.map((w, i) => (i === 0 ? { ...w, startedAt: now } : w)) }
          : action === 'resume'
            ? { status: target[action], haltReason: '' }
            : action === 'cancel'
              ? { status: target[action], cancel: { wave: 0, startedAt: now } }
              : { status: target[action] };
      if (await this.deps.campaigns.change(campaignId, c.revision, changes, now)) {
        if (action === 'cancel') await cancelJob();
        return this.get(campaignId);
      }
    }
    throw new ConflictError('concurrent_update', 'The campaign changed concurrently; retry');
  }
}

/**
 * Takes back one update not yet being installed (campaign cancel, release withdraw, vehicle revoke): cancelled with
 * the reason, its campaign count moved, and the vehicle's campaign lock released once the update is final. A
 * vehicle's report can land between the read and the write (downloading -> downloaded): the write then fails on
 * the revision, and the update is read again and withdrawn if it is still before installing. Without this retry a
 * raced update stayed open, and its car would install a cancelled campaign's image. Answers the update as it ends.
 */
export async function withdrawUpdate(
  deps: Pick<CampaignDeps, 'updates' | 'campaigns' | 'history' | 'clock' | 'vehicles'>,
  listed: UpdateRecord,
  reason: string,
): Promise<UpdateRecord | undefined> {
  let u: UpdateRecord | undefined = listed;
  for (let attempt = 0; u && attempt < 5; attempt++) {
    if (!BEFORE_INSTALL_STATUSES.has(u.status)) break;
    if (await transition(deps, u.campaignId, u, { status: 'cancelled', reason })) {
      u = { ...u, status: 'cancelled', reason };
      break;
    }
    u = await deps.updates.get(u.vin, u.updateId);
  }
  if (u?.campaignId !== undefined && isTerminal(u.status)) {
    await deps.vehicles.unlockCampaign(u.vin, u.ecu, u.campaignId);
  }
  return u;
}

/**
 * A backend-driven transition of one update (offer, timeout, cancel), with its campaign count moved in the same
 * breath. False when the item changed under us; the next tick sees the new state.
 */
export async function transition(
  deps: Pick<CampaignDeps, 'updates' | 'history' | 'clock'> & {
    readonly campaigns: Pick<CampaignRepository, 'count'>;
  },
  campaignId: string | undefined,
  u: UpdateRecord,
  changes: Partial<UpdateRecord>,
): Promise<boolean> {
  const now = deps.clock.now().toISOString();
  const next: UpdateRecord = { ...u, ...changes, updatedAt: now, revision: u.revision + 1 };
  if (!(await deps.updates.put(next, u.revision))) return false;
  // Direct (vehicle-initiated) updates belong to no campaign and move no counts; nor does a target not yet given
  // a wave (wave -1, campaign-preparation.ts): wave counts start when its wave does.
  if (campaignId !== undefined && (u.wave ?? 0) >= 0)
    await deps.campaigns.count(campaignId, u.wave ?? 0, u.status, next.status);
  await deps.history.append({
    vin: u.vin,
    updateId: u.updateId,
    status: next.status,
    reason: next.reason,
    source: 'backend',
    applied: true,
    at: now,
  });
  return true;
}

export interface CampaignEngineDeps extends CampaignDeps {
  readonly assignments: Pick<AssignmentIssuer, 'assign' | 'reserveCounter'>;
  readonly publisher: OfferPublisher;
  /** Seconds between ticks: the notification budget of a tick is notifyPerSecond x this. */
  readonly tickSeconds: number;
  readonly log?: { warn(message: string, extra: Record<string, unknown>): void };
}

export class CampaignEngine {
  private remainingMs: () => number = () => Number.POSITIVE_INFINITY;
  /** Last tally/counts mismatch seen per campaign wave (a mismatch must repeat before it is repaired). */
  private readonly mismatches = new Map<string, string>();

  constructor(private readonly deps: CampaignEngineDeps) {}

  /** One pass over every running campaign. */
  /**
   * @param remainingMs how long the invocation may still run; offers stop starting 10 s before it ends, so a
   * tick never leaves a vehicle marked offered without its offer published.
   */
  async tickAll(
    remainingMs: () => number = () => Number.POSITIVE_INFINITY,
  ): Promise<{ campaigns: number; offered: number; timedOut: number; halted: string[] }> {
    this.remainingMs = remainingMs;
    for (const c of await this.deps.campaigns.listByStatus('halted')) await this.reviewHalted(c);
    const running = await this.deps.campaigns.listByStatus('running');
    let offered = 0;
    let timedOut = 0;
    // Campaigns this pass halted: the operator alert's metric names them (lambdas/core/alerts.ts).
    const halted: string[] = [];
    for (const c of running) {
      const r = await this.tick(c.campaignId);
      offered += r.offered;
      timedOut += r.timedOut;
      if (r.decision === 'halt') halted.push(c.campaignId);
    }
    return { campaigns: running.length, offered, timedOut, halted };
  }

  /**
   * A halted campaign whose wave had failures corrected by late outcomes since it halted (campaign-policy.ts
   * reviewHalt): lifted when the policy no longer calls for the halt (the next tick carries on, or completes it),
   * its reason restated when it still does. Either way halt_reason says what happened. Costs no read beyond the
   * campaign itself.
   */
  async reviewHalted(c: CampaignRecord): Promise<'kept' | 'lifted' | 'restated'> {
    const wave = c.currentWave;
    const startedAt = new Date(c.waves[wave]?.startedAt ?? c.createdAt);
    const now = this.deps.clock.now();
    const review = reviewHalt(c.counts[`w${wave}`] ?? {}, c.policy, c.haltFailures, startedAt, now);
    if (review.action === 'keep') return 'kept';
    const was = c.haltReason ?? 'halted';
    const failures = summarize(c.counts[`w${wave}`] ?? {}).failed;
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

  async tick(campaignId: string): Promise<{ offered: number; timedOut: number; decision: string }> {
    const c = await this.deps.campaigns.get(campaignId);
    if (c?.status !== 'running') return { offered: 0, timedOut: 0, decision: 'idle' };
    const now = this.deps.clock.now();
    const wave = c.currentWave;
    let items = await this.deps.updates.listByCampaignWave(c.campaignId, wave);
    const size = c.waves[wave]?.size ?? 0;
    if (items.length < size) {
      await this.fillWave(c, wave, size - items.length);
      items = await this.deps.updates.listByCampaignWave(c.campaignId, wave);
    }
    // A wave advances on its success threshold, not on every vehicle's outcome, so earlier waves may still have
    // vehicles under way (a lost offer, a slow download). Their deadlines and retries are watched too; the
    // counts say which waves have any, so a settled wave costs no read.
    const laggards: UpdateRecord[] = [];
    for (let w = 0; w < wave; w++) {
      if (waveSettled(c.counts[`w${w}`] ?? {})) continue;
      const earlier = await this.deps.updates.listByCampaignWave(c.campaignId, w);
      laggards.push(...earlier.filter((u) => !isTerminal(u.status)));
    }
    const watched = [...laggards, ...items];
    await this.recount(c, wave, items, 'tick');

    let timedOut = 0;
    const retry: UpdateRecord[] = [];
    for (const u of watched) {
      if (
        u.status === 'scheduled' ||
        isTerminal(u.status) ||
        !u.deadline ||
        Date.parse(u.deadline) > now.getTime()
      )
        continue;
      if (u.attempt <= c.policy.retryBudget) retry.push(u);
      else if (
        await transition(this.deps, c.campaignId, u, {
          status: 'timed_out',
          reason: 'no report before the deadline',
        })
      ) {
        timedOut++;
        await this.deps.vehicles.unlockCampaign(u.vin, c.ecu, c.campaignId);
      }
    }

    const budget = Math.max(1, Math.floor(c.policy.notifyPerSecond * this.deps.tickSeconds));
    const toOffer = [...retry, ...watched.filter((u) => u.status === 'scheduled')].slice(0, budget);
    const release = await this.deps.releases.get(c.releaseId);
    let offered = 0;
    // A withdrawn release is never offered again, even if its campaign was not cancelled yet (kill switch).
    if (release?.status === 'published') {
      await pool(toOffer, 16, async (u) => {
        if (this.remainingMs() < 10_000) return;
        if (await this.offer(c, u, release.signedManifest, now)) offered++;
      });
    }

    const fresh = await this.deps.campaigns.get(c.campaignId);
    if (fresh?.status !== 'running') return { offered, timedOut, decision: 'stopped' };
    const startedAt = new Date(fresh.waves[wave]?.startedAt ?? fresh.createdAt);
    const decision = evaluateWave(fresh.counts[`w${wave}`] ?? {}, fresh.policy, startedAt, now);
    const stamp = now.toISOString();
    if (decision.action === 'halt') {
      await this.deps.campaigns.change(
        c.campaignId,
        fresh.revision,
        {
          status: 'halted',
          haltReason: `wave ${wave}: ${decision.reason}`,
          haltFailures: summarize(fresh.counts[`w${wave}`] ?? {}).failed,
        },
        stamp,
      );
      return { offered, timedOut, decision: 'halt' };
    }
    if (decision.action === 'advance') {
      if (wave + 1 < fresh.waves.length) {
        const waves = fresh.waves.map((w, i) => (i === wave + 1 ? { ...w, startedAt: stamp } : w));
        await this.deps.campaigns.change(
          c.campaignId,
          fresh.revision,
          { currentWave: wave + 1, waves },
          stamp,
        );
        return { offered, timedOut, decision: 'advance' };
      }
      // Completed only once every vehicle of every wave has its outcome, not just the last wave's; and since
      // that is final, the counts are checked against the vehicles themselves first.
      if (
        fresh.waves.every((_, w) => waveSettled(fresh.counts[`w${w}`] ?? {})) &&
        (await this.countsConfirmed(fresh))
      ) {
        await this.deps.campaigns.change(c.campaignId, fresh.revision, { status: 'completed' }, stamp);
        return { offered, timedOut, decision: 'completed' };
      }
    }
    return { offered, timedOut, decision: 'wait' };
  }

  /**
   * BRIDGE until the paced offer worker (pace12, CAMPAIGN12.md point 3) assigns waves at offer time; the lead drops
   * it at merge. Targets are written by the preparation job without a wave (`q#` keys); this moves the next `need`
   * of them, in their shuffled order, into the current wave when it starts.
   */
  private async fillWave(c: CampaignRecord, wave: number, need: number): Promise<void> {
    let token: string | undefined;
    while (need > 0) {
      const page = await this.deps.updates.pageQueued(c.campaignId, need, token);
      await pool(page.items, 16, async (u) => {
        const waveKey = `${waveKeyPrefix(wave)}#${u.vin}`;
        const next = { ...u, wave, waveKey, revision: u.revision + 1 };
        if (u.status === 'scheduled' && (await this.deps.updates.put(next, u.revision))) need--;
      });
      token = page.token;
      if (!token) break;
    }
  }

  /**
   * Counters move in a second write after each vehicle's state (transition, ingest); a write lost in between (a
   * crash, a throttle) leaves them off for good, and a campaign deciding on them could stall or finish early.
   * This compares a wave's stored counts with a tally of its vehicles and rewrites them from the tally when they
   * differ: at once before completing, and on a tick only when the same difference was also seen on the previous
   * tick (so a change in flight between the two reads is not taken for drift). Answers whether they agreed.
   */
  private async recount(
    c: CampaignRecord,
    wave: number,
    items: readonly UpdateRecord[],
    when: 'tick' | 'completion',
  ): Promise<boolean> {
    const key = `${c.campaignId}#${wave}`;
    const tally = tallyOf(items);
    const stored = nonZero(c.counts[`w${wave}`] ?? {});
    if (sameCounts(tally, stored)) {
      this.mismatches.delete(key);
      return true;
    }
    const signature = JSON.stringify([tally, stored]);
    if (when === 'tick' && this.mismatches.get(key) !== signature) {
      this.mismatches.set(key, signature);
      return false;
    }
    this.mismatches.delete(key);
    this.deps.log?.warn('campaign counts drifted from the vehicles; recounted', {
      campaignId: c.campaignId,
      wave,
      when,
      stored,
      tally,
    });
    await this.deps.campaigns.resetCounts(c.campaignId, wave, tally);
    return false;
  }

  /** Recounts every wave from its vehicles before a campaign completes; false if any had to be repaired. */
  private async countsConfirmed(c: CampaignRecord): Promise<boolean> {
    let confirmed = true;
    for (let wave = 0; wave < c.waves.length; wave++) {
      const items = await this.deps.updates.listByCampaignWave(c.campaignId, wave);
      if (!(await this.recount(c, wave, items, 'completion'))) confirmed = false;
    }
    return confirmed;
  }

  private async offer(
    c: CampaignRecord,
    u: UpdateRecord,
    manifest: import('../../protocol/manifest.js').SignedManifest,
    now: Date,
  ): Promise<boolean> {
    const vehicle = await this.deps.vehicles.get(u.vin);
    if (!vehicle || vehicle.revokedAt !== undefined) return false;
    const deadline = new Date(now.getTime() + c.policy.vehicleTimeoutSeconds * 1000).toISOString();
    // The offer's counter is recorded with it: reports about an earlier offer of this update are refused.
    // Drawn as an offer's counter: the vehicle's latest offer, which the freshness statement commits to.
    const offerCounter = await this.deps.assignments.reserveCounter(u.vin, 'offer');
    const changes: Partial<UpdateRecord> = {
      status: 'offered',
      progress: 0,
      attempt: u.attempt + 1,
      offeredAt: now.toISOString(),
      deadline,
      reason: undefined,
      offerCounter,
    };
    if (!(await transition(this.deps, c.campaignId, u, changes))) return false;
    await this.deps.vehicles.setActiveUpdate(u.vin, u.updateId);
    const assignment = await this.deps.assignments.assign(
      vehicle,
      { ...u, ...changes } as UpdateRecord,
      manifest.manifest,
      offerCounter,
    );
    try {
      // The offer names the manifest by digest; the vehicle fetches it (with its chunk digests) over HTTPS, so the
      // message stays small whatever the image size.
      await this.deps.publisher.publish(u.vin, offerFor(assignment, manifest.manifest.size));
    } catch (err) {
      // Not delivered (broker or Data Plane unavailable). The update stays offered and active, so a polling vehicle
      // still sees it and can install it; its deadline is moved to now so the next tick publishes it again, and
      // the attempt is given back: an unreachable broker must not spend the vehicle's retry budget. If the vehicle
      // acted meanwhile, the revision moved on and this does nothing.
      this.deps.log?.warn('offer publish failed; will retry', {
        vin: u.vin,
        campaignId: c.campaignId,
        error: String(err),
      });
      const offered: UpdateRecord = { ...u, ...changes, revision: u.revision + 1 };
      await transition(this.deps, c.campaignId, offered, {
        attempt: u.attempt,
        deadline: now.toISOString(),
        reason: 'offer not delivered; retrying',
      });
      return false;
    }
    return true;
  }
}

function tallyOf(items: readonly UpdateRecord[]): Record<string, number> {
  const tally: Record<string, number> = {};
  for (const u of items) tally[u.status] = (tally[u.status] ?? 0) + 1;
  return tally;
}

function nonZero(counts: Readonly<Record<string, number | undefined>>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n !== undefined && n !== 0)) as Record<
    string,
    number
  >;
}

function sameCounts(a: Record<string, number>, b: Record<string, number>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) if ((a[k] ?? 0) !== (b[k] ?? 0)) return false;
  return true;
}
