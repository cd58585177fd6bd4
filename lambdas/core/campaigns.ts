/**
 * Campaigns: a published release rolled out to targeted vehicles in waves. Creation resolves the targets (VIN list
 * and/or filter), excludes incompatible vehicles with a reason, takes a per-vehicle, per-ECU lock so two campaigns
 * never fight over one ECU, and queues every target in a stable pseudo-random order (CAMPAIGN12.md: `wave: -1`,
 * `waveKey: q#...`); the offer pacer takes them into waves as it offers them (offer-pacing.ts), and the engine's
 * tick decides halts, wave changes and timeouts from the sharded counts (campaign-engine.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { z } from 'zod';
import type {
  CampaignExcluded,
  CampaignList,
  CampaignVehicles,
  CampaignView,
} from '../../protocol/operator-responses.js';
import type { createCampaignSchema } from '../../protocol/routes.js';
import { compareVersions } from '../../protocol/versions.js';
import { type Counts, countMove, QUEUE_KEY_PREFIX, QUEUED_WAVE, waveCounts } from './campaign-counters.js';
import {
  canaryProblem,
  DEFAULT_POLICY,
  haltProblem,
  policyProblems,
  type RolloutPolicy,
  summarize,
  waveSizes,
} from './campaign-policy.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import type {
  CampaignRecord,
  CampaignRepository,
  CampaignStatus,
  Clock,
  CounterRepository,
  ExclusionRepository,
  HistoryRepository,
  JobQueue,
  ReleaseRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRecord,
  VehicleRepository,
} from './ports.js';
import { BEFORE_INSTALL_STATUSES, isTerminal } from './update-state.js';

export type CreateCampaignInput = z.infer<typeof createCampaignSchema>;

export function waveKeyPrefix(wave: number): string {
  return String(wave).padStart(3, '0');
}

export function campaignUpdateId(campaignId: string): string {
  return `campaign#${campaignId}`;
}

/** Wave membership is a stable pseudo-random order of the targets, so early waves are a sample, not VIN order. */
function shuffleKey(campaignId: string, vin: string): string {
  return createHash('sha256').update(`${campaignId}:${vin}`).digest('hex');
}

function toPolicy(input: CreateCampaignInput['policy']): RolloutPolicy {
  const p = input ?? {};
  const halt = p.halt_failure_count !== undefined || p.halt_failure_percent !== undefined;
  return {
    waves: p.waves ?? DEFAULT_POLICY.waves,
    advanceSuccessPercent: p.advance_success_percent ?? DEFAULT_POLICY.advanceSuccessPercent,
    soakSeconds: p.soak_seconds ?? DEFAULT_POLICY.soakSeconds,
    haltFailureCount: halt ? p.halt_failure_count : DEFAULT_POLICY.haltFailureCount,
    haltFailurePercent: halt ? p.halt_failure_percent : DEFAULT_POLICY.haltFailurePercent,
    haltMinOutcomes: p.halt_min_outcomes ?? DEFAULT_POLICY.haltMinOutcomes,
    vehicleTimeoutSeconds: p.vehicle_timeout_seconds ?? DEFAULT_POLICY.vehicleTimeoutSeconds,
    retryBudget: p.retry_budget ?? DEFAULT_POLICY.retryBudget,
    notifyPerSecond: p.notify_per_second ?? DEFAULT_POLICY.notifyPerSecond,
    ...(p.skip_canary ? { skipCanary: true } : {}),
  };
}

/** An empty filter targets every registered vehicle: only with an explicit `all`, never by omission. */
function checkTargets(t: CreateCampaignInput['targets']): void {
  const criteria = t.filter !== undefined && Object.values(t.filter).some((v) => v !== undefined);
  if (t.filter !== undefined && !criteria && t.all !== true) {
    throw new BadRequestError(
      'explicit_all_required',
      'targets.filter has no criteria, which would target every vehicle; set targets.all = true to mean that',
    );
  }
  if (t.all === true && (criteria || t.vins !== undefined)) {
    throw new BadRequestError(
      'invalid_targets',
      'targets.all cannot be combined with vins or filter criteria',
    );
  }
}

/** The answer is typed by the protocol's schema, so a field that drifts from the API document breaks the build. */
export function campaignView(c: CampaignRecord, waveCounts: readonly Counts[]): CampaignView {
  const totals: Record<string, number> = {};
  const waves = c.waves.map((w, i) => {
    const counts = nonZero(waveCounts[i] ?? {});
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

/**
 * A campaign's counts per wave, summed from its counter shards: the waves up to the current one (later waves have
 * taken nobody yet) and the withdrawn queued targets. Reads grow with the number of waves, not their size.
 */
export async function loadWaveCounts(counters: CounterRepository, c: CampaignRecord): Promise<Counts[]> {
  const sizes = c.waves.map((w) => w.size);
  const last = Math.min(c.currentWave, sizes.length - 1);
  const [queued, ...taken] = await Promise.all([
    counters.waveCounts(c.campaignId, QUEUED_WAVE),
    ...sizes.map((_, w) => (w <= last ? counters.waveCounts(c.campaignId, w) : Promise.resolve({}))),
  ]);
  return waveCounts(sizes, taken, queued ?? {});
}

export interface CampaignDeps {
  readonly campaigns: CampaignRepository;
  readonly counters: CounterRepository;
  readonly releases: ReleaseRepository;
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly history: HistoryRepository;
  readonly clock: Clock;
}

export interface CampaignServiceDeps extends CampaignDeps {
  /** Where cancel sends the withdrawal job. */
  readonly jobs: JobQueue;
  readonly exclusions: ExclusionRepository;
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

  async create(input: CreateCampaignInput): Promise<CampaignView> {
    let policy = toPolicy(input.policy);
    const problems = policyProblems(policy);
    if (problems.length) throw new BadRequestError('invalid_policy', problems.join('; '));
    checkTargets(input.targets);
    const canary = canaryProblem(policy);
    if (canary) throw new BadRequestError(canary.code, canary.message);
    const release = await this.deps.releases.get(input.release_id);
    if (!release) throw new NotFoundError('unknown_release', `No release ${input.release_id}`);
    if (release.status !== 'published')
      throw new ConflictError('release_not_published', 'The release is not published');
    const campaignId = input.campaign_id ?? `c-${randomBytes(6).toString('hex')}`;
    if (await this.deps.campaigns.get(campaignId))
      throw new ConflictError('campaign_exists', `Campaign ${campaignId} exists`);

    const { targets, excluded } = await this.resolveTargets(input.targets, release.signedManifest.manifest);
    if (targets.length === 0)
      throw new ConflictError('no_targets', 'No registered vehicle matches the targets');
    const sizes = waveSizes(targets.length, policy.waves);
    // The default minimum is lowered to what the largest wave can produce; a value the operator chose is checked.
    if (input.policy?.halt_min_outcomes === undefined)
      policy = { ...policy, haltMinOutcomes: Math.min(policy.haltMinOutcomes, Math.max(...sizes)) };
    const halt = haltProblem(policy, sizes);
    if (halt) throw new BadRequestError(halt.code, halt.message);

    // One active campaign per vehicle and ECU: refuse the whole campaign rather than silently shrink it.
    const held = (
      await Promise.all(
        targets.map(async (v) => ({
          vin: v.vin,
          by: await this.deps.vehicles.campaignLock(v.vin, release.ecu),
        })),
      )
    ).filter((h) => h.by !== undefined && h.by !== campaignId);
    if (held.length > 0) {
      throw new ConflictError(
        'campaign_conflict',
        `${held.length} target vehicle(s) are in another active campaign for ${release.ecu} (e.g. ${held[0]!.vin} in ${held[0]!.by})`,
      );
    }
    const locked: string[] = [];
    let lost: string | undefined;
    await pool(targets, 16, async (v) => {
      if (lost) return;
      if (await this.deps.vehicles.lockCampaign(v.vin, release.ecu, campaignId)) locked.push(v.vin);
      else lost ??= v.vin;
    });
    if (lost) {
      await pool(locked, 16, (vin) => this.deps.vehicles.unlockCampaign(vin, release.ecu, campaignId));
      throw new ConflictError(
        'campaign_conflict',
        `Vehicle ${lost} joined another campaign for ${release.ecu} meanwhile`,
      );
    }

    const ordered = targets;
    const now = this.deps.clock.now().toISOString();
    const campaign: CampaignRecord = {
      campaignId,
      name: input.name,
      releaseId: release.releaseId,
      version: release.version,
      ecu: release.ecu,
      status: 'created',
      policy,
      waves: sizes.map((size) => ({ size })),
      currentWave: 0,
      targetCount: ordered.length,
      excludedByReason: countBy(excluded.map((e) => e.reason)),
      createdAt: now,
      updatedAt: now,
      revision: 1,
    };
    // Queued, not yet in a wave (CAMPAIGN12.md): the pacer takes them into waves in waveKey order as it offers.
    const records: UpdateRecord[] = ordered.map((v) => ({
      vin: v.vin,
      updateId: campaignUpdateId(campaignId),
      releaseId: release.releaseId,
      version: release.version,
      ecu: release.ecu,
      campaignId,
      wave: QUEUED_WAVE,
      waveKey: `${QUEUE_KEY_PREFIX}${shuffleKey(campaignId, v.vin)}#${v.vin}`,
      status: 'scheduled',
      progress: 0,
      lastSequence: -1,
      attempt: 0,
      createdAt: now,
      updatedAt: now,
      revision: 1,
    }));
    await pool(records, 16, async (r) => {
      // Per-vehicle sequence numbers continue across updates: start from the vehicle's latest known one, so a
      // replayed report from an earlier update cannot move the new one.
      const previous = await this.deps.updates.listForVehicle(r.vin);
      const lastSequence = Math.max(-1, ...previous.map((u) => u.lastSequence));
      if (!(await this.deps.updates.put({ ...r, lastSequence }, 0))) {
        throw new ConflictError('campaign_exists', `Vehicle ${r.vin} already has an update in ${campaignId}`);
      }
    });
    // Before the campaign item: a campaign that exists always has all its exclusions listed.
    await this.deps.exclusions.putAll(campaignId, excluded);
    await this.deps.campaigns.create(campaign);
    return this.view(campaign);
  }

  private async view(c: CampaignRecord): Promise<CampaignView> {
    return campaignView(c, await loadWaveCounts(this.deps.counters, c));
  }

  private async resolveTargets(
    targets: CreateCampaignInput['targets'],
    manifest: { ecu: string; hardware_ids: string[]; version: string },
  ): Promise<{ targets: VehicleRecord[]; excluded: { vin: string; reason: string }[] }> {
    const candidates = new Map<string, VehicleRecord>();
    const excluded: { vin: string; reason: string }[] = [];
    for (const vin of new Set(targets.vins ?? [])) {
      const v = await this.deps.vehicles.get(vin);
      if (v) candidates.set(vin, v);
      else excluded.push({ vin, reason: 'unknown_vehicle' });
    }
    const f = targets.all === true ? {} : targets.filter;
    if (f) {
      let cursor: string | undefined;
      do {
        const page = await this.deps.vehicles.scan(cursor);
        for (const v of page.items) {
          const ecu = v.ecus.find((e) => e.ecu === manifest.ecu);
          if (f.model !== undefined && v.model !== f.model) continue;
          if (f.hardware_id !== undefined && ecu?.hardware_id !== f.hardware_id) continue;
          if (f.current_version !== undefined && ecu?.version !== f.current_version) continue;
          candidates.set(v.vin, v);
        }
        cursor = page.cursor;
      } while (cursor);
    }
    const chosen: VehicleRecord[] = [];
    for (const v of candidates.values()) {
      const ecu = v.ecus.find((e) => e.ecu === manifest.ecu);
      if (v.revokedAt !== undefined) excluded.push({ vin: v.vin, reason: 'revoked' });
      else if (!ecu) excluded.push({ vin: v.vin, reason: `no_${manifest.ecu}_ecu` });
      else if (!manifest.hardware_ids.includes(ecu.hardware_id))
        excluded.push({ vin: v.vin, reason: 'incompatible_hardware' });
      else if (compareVersions(ecu.version, manifest.version) >= 0)
        excluded.push({ vin: v.vin, reason: 'already_at_or_above_version' });
      else chosen.push(v);
    }
    return { targets: chosen, excluded };
  }

  async get(campaignId: string): Promise<CampaignView> {
    return this.view(await this.load(campaignId));
  }

  async list(limit: number, token?: string): Promise<CampaignList> {
    const page = await this.deps.campaigns.list(limit, token);
    return {
      campaigns: await Promise.all(page.items.map((c) => this.view(c))),
      next_token: page.token ?? null,
    };
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
      cancel: ['created', 'running', 'paused', 'halted'],
    };
    const target: Record<typeof action, CampaignStatus> = {
      start: 'running',
      pause: 'paused',
      resume: 'running',
      cancel: 'cancelling',
    };
    for (let attempt = 0; attempt < 5; attempt++) {
      const c = await this.load(campaignId);
      if (action === 'cancel' && c.status === 'cancelled') return this.view(c);
      if (action === 'cancel' && c.status === 'cancelling') {
        await this.deps.jobs.send({ type: 'cancel_campaign', campaign_id: campaignId });
        return this.view(c);
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
        if (action === 'cancel')
          await this.deps.jobs.send({ type: 'cancel_campaign', campaign_id: campaignId });
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
  deps: Pick<CampaignDeps, 'updates' | 'history' | 'clock' | 'vehicles'>,
  listed: UpdateRecord,
  reason: string,
): Promise<UpdateRecord | undefined> {
  let u: UpdateRecord | undefined = listed;
  for (let attempt = 0; u && attempt < 5; attempt++) {
    if (!BEFORE_INSTALL_STATUSES.has(u.status)) break;
    if (await transition(deps, u, { status: 'cancelled', reason })) {
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
 * A backend-driven transition of one update (timeout, cancel, a failed publish), with its campaign count moved in
 * the same transaction. False when the item changed under us; the next tick sees the new state.
 */
export async function transition(
  deps: Pick<CampaignDeps, 'updates' | 'history' | 'clock'>,
  u: UpdateRecord,
  changes: Partial<UpdateRecord>,
): Promise<boolean> {
  const now = deps.clock.now().toISOString();
  const next: UpdateRecord = { ...u, ...changes, updatedAt: now, revision: u.revision + 1 };
  // The count moves in the same transaction (direct updates belong to no campaign and move none).
  const move = countMove(u, next.status);
  if (!(await deps.updates.put(next, u.revision, move ? [move] : []))) return false;
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

function countBy(values: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

function nonZero(counts: Readonly<Record<string, number | undefined>>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n !== undefined && n !== 0)) as Record<
    string,
    number
  >;
}
