/**
 * Campaigns: a published release rolled out to targeted vehicles in waves. Creation (campaign-creation.ts)
 * validates and answers `preparing`; a background job (campaign-preparation.ts) resolves the targets (VIN list
 * and/or filter), excludes ineligible vehicles with a reason, takes a per-vehicle, per-ECU lock so two campaigns
 * never fight over one ECU, and queues one target item per vehicle in a stable pseudo-random order
 * (CAMPAIGN12.md: `wave: -1`, `waveKey: q#...`). The offer pacer takes them into waves as it offers them
 * (offer-pacing.ts), and the engine's tick decides halts, wave changes and timeouts from the sharded counts
 * (campaign-engine.ts).
 */
import { createHash } from 'node:crypto';
import type {
  CampaignCreated,
  CampaignExcluded,
  CampaignList,
  CampaignVehicles,
  CampaignView,
} from '../../protocol/operator-responses.js';
import type { TrustedKey } from '../../protocol/signatures.js';
import { type Counts, countMove, QUEUED_WAVE, waveCounts } from './campaign-counters.js';
import {
  type CreateCampaignInput,
  cancelledInPreparation,
  completeTargets,
  createCampaign,
  preparationProgress,
  preparationView,
} from './campaign-creation.js';
import { summarize } from './campaign-policy.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import type {
  BundleRepository,
  CampaignRecord,
  CampaignRepository,
  CampaignStatus,
  Clock,
  CounterRepository,
  ExclusionRepository,
  JobQueue,
  ObjectStore,
  PreparationRepository,
  PreparationTotals,
  ReleaseRepository,
  TransferTotals,
  UpdateRecord,
  UpdateRepository,
  VehicleRepository,
} from './ports.js';
import { withTransition } from './update-history.js';
import { BEFORE_INSTALL_STATUSES, isTerminal } from './update-state.js';

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
/**
 * `waveCounts` from loadWaveCounts; a campaign still preparing has none (its waves are not sized yet). `progress`:
 * the preparation's live counts while it runs.
 */
export function campaignView(
  c: CampaignRecord,
  waveCounts: readonly Counts[] = [],
  progress?: { totals: PreparationTotals; done: number },
  transfer: TransferTotals = NO_TRANSFER,
): CampaignView {
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
    bundle_id: c.bundle ? c.releaseId : null,
    rollback_of: c.rollback?.campaignId ?? null,
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
    transfer: {
      downloads: transfer.downloads,
      bytes_fetched: transfer.fetched,
      bytes_reused: transfer.reused,
      bytes_image: transfer.image,
      bytes_saved: transfer.image - transfer.fetched,
    },
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

/**
 * A campaign's counts per wave, summed from its counter shards: the waves up to the current one (later waves have
 * taken nobody yet) and the withdrawn queued targets. Reads grow with the number of waves, not their size.
 */
export async function loadWaveCounts(counters: CounterRepository, c: CampaignRecord): Promise<Counts[]> {
  return (await loadCampaignTotals(counters, c)).counts;
}

const NO_TRANSFER: TransferTotals = { downloads: 0, fetched: 0, reused: 0, image: 0 };

/** loadWaveCounts, and the campaign's download totals from the same shard reads. */
export async function loadCampaignTotals(
  counters: CounterRepository,
  c: CampaignRecord,
): Promise<{ counts: Counts[]; transfer: TransferTotals }> {
  const sizes = c.waves.map((w) => w.size);
  const last = Math.min(c.currentWave, sizes.length - 1);
  const none = { counts: {}, transfer: NO_TRANSFER };
  const [queued, ...taken] = await Promise.all([
    counters.waveTotals(c.campaignId, QUEUED_WAVE),
    ...sizes.map((_, w) => (w <= last ? counters.waveTotals(c.campaignId, w) : Promise.resolve(none))),
  ]);
  const transfer = { ...NO_TRANSFER };
  for (const t of taken.map((x) => x.transfer)) {
    transfer.downloads += t.downloads;
    transfer.fetched += t.fetched;
    transfer.reused += t.reused;
    transfer.image += t.image;
  }
  return {
    counts: waveCounts(
      sizes,
      taken.map((x) => x.counts),
      queued?.counts ?? {},
    ),
    transfer,
  };
}

export interface CampaignDeps {
  readonly campaigns: CampaignRepository;
  readonly counters: CounterRepository;
  readonly releases: ReleaseRepository;
  readonly vehicles: VehicleRepository;
  readonly updates: UpdateRepository;
  readonly clock: Clock;
}

export interface CampaignServiceDeps extends CampaignDeps {
  /** Where cancel sends the withdrawal job, and creation its preparation. */
  readonly jobs: JobQueue;
  readonly exclusions: ExclusionRepository;
  /** VIN lists: written (inline), presigned for upload, checked. */
  readonly objects: Pick<ObjectStore, 'put' | 'presignPut' | 'head' | 'read'>;
  readonly preparation: PreparationRepository;
  /** Bundle campaigns' bundles, and the OEM keys a rollback campaign's authorisation is checked against. */
  readonly bundles?: Pick<BundleRepository, 'get'>;
  readonly trustedReleaseKeys?: readonly TrustedKey[];
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

  private async view(c: CampaignRecord): Promise<CampaignView> {
    const { counts, transfer } = await loadCampaignTotals(this.deps.counters, c);
    return campaignView(c, counts, undefined, transfer);
  }

  async get(campaignId: string): Promise<CampaignView> {
    const c = await this.load(campaignId);
    const [{ counts, transfer }, progress] = await Promise.all([
      loadCampaignTotals(this.deps.counters, c),
      preparationProgress(this.deps, c),
    ]);
    return campaignView(c, counts, progress, transfer);
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
      if (action === 'cancel' && c.status === 'cancelled') return this.view(c);
      // Cancelled while preparing: the preparation job stops its segments and takes the targets back.
      const cancelJob = () =>
        this.deps.jobs.send(
          cancelledInPreparation(c) || c.status === 'preparing'
            ? { type: 'prepare_campaign', campaign_id: campaignId }
            : { type: 'cancel_campaign', campaign_id: campaignId },
        );
      if (action === 'cancel' && c.status === 'cancelling') {
        await cancelJob();
        return this.view(c);
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
  deps: Pick<CampaignDeps, 'updates' | 'clock' | 'vehicles'>,
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
  deps: Pick<CampaignDeps, 'updates' | 'clock'>,
  u: UpdateRecord,
  changes: Partial<UpdateRecord>,
): Promise<boolean> {
  const now = deps.clock.now().toISOString();
  const changed: UpdateRecord = { ...u, ...changes, updatedAt: now, revision: u.revision + 1 };
  const next = withTransition(changed, {
    status: changed.status,
    reason: changed.reason,
    source: 'backend',
    at: now,
  });
  // The count moves in the same transaction (direct updates belong to no campaign and move none).
  const move = countMove(u, next.status);
  return deps.updates.put(next, u.revision, move ? [move] : []);
}

function nonZero(counts: Readonly<Record<string, number | undefined>>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n !== undefined && n !== 0)) as Record<
    string,
    number
  >;
}
