/**
 * Creating a campaign (issue 12): the request only validates — policy, guardrails, the release published, the
 * targets well formed — stores the campaign `preparing` and queues its preparation (campaign-preparation.ts), so
 * it answers 202 at once whatever the fleet size. The targets are a filter (or `all`), a VIN list in the request
 * (kept as a small object, so it is read like an uploaded one), and/or a VIN list of up to a million uploaded
 * through a presigned PUT: the campaign then waits `awaiting_targets` until POST /campaigns/{id}/targets says the
 * upload is complete; that request reads the list once as a stream and refuses a bad one with a 400 naming the
 * line, before any vehicle is touched.
 */

import { randomBytes } from 'node:crypto';
import type { z } from 'zod';
import { BUNDLE_ASSIGNMENT_ECU } from '../../protocol/bundle.js';
import { conditionsProblems } from '../../protocol/conditions.js';
import type { CampaignCreated, CampaignView } from '../../protocol/operator-responses.js';
import type { createCampaignSchema } from '../../protocol/routes.js';
import type { TrustedKey } from '../../protocol/signatures.js';
import { checkRollbackRequest } from './bundles.js';
import {
  canaryProblem,
  DEFAULT_POLICY,
  haltProblem,
  policyProblems,
  type RolloutPolicy,
  waveSizes,
} from './campaign-policy.js';
import {
  addTotals,
  LIST_SEGMENT_BYTES,
  MAX_LIST_SEGMENTS,
  SCAN_SEGMENTS,
  segmentNumbers,
  ZERO_TOTALS,
} from './campaign-preparation.js';
import { campaignView } from './campaigns.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import type {
  BundleRepository,
  CampaignRecord,
  CampaignRepository,
  Clock,
  JobQueue,
  ObjectStore,
  PreparationRecord,
  PreparationRepository,
  PreparationTotals,
  ReleaseRepository,
} from './ports.js';
import { checkVinList, targetListKey } from './vin-list.js';

export type CreateCampaignInput = z.infer<typeof createCampaignSchema>;

/** How long the presigned PUT of a VIN list stays valid. */
const UPLOAD_TTL_SECONDS = 3600;

export interface CreationDeps {
  readonly campaigns: CampaignRepository;
  readonly releases: Pick<ReleaseRepository, 'get'>;
  /** Where bundle campaigns find their bundle (absent: bundle campaigns are refused). */
  readonly bundles?: Pick<BundleRepository, 'get'>;
  /** The OEM release keys a rollback campaign's authorisation must be signed by. */
  readonly trustedReleaseKeys?: readonly TrustedKey[];
  readonly jobs: JobQueue;
  readonly objects: Pick<ObjectStore, 'put' | 'presignPut' | 'head' | 'read'>;
  readonly preparation: PreparationRepository;
  readonly clock: Clock;
  /** Parallel scan segments for a filter. @default SCAN_SEGMENTS */
  readonly scanSegments?: number;
}

export function toPolicy(input: CreateCampaignInput['policy']): RolloutPolicy {
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
    ...(p.conditions ? { conditions: p.conditions } : {}),
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
  if (t.all === true && (criteria || t.vins !== undefined || t.vin_list !== undefined)) {
    throw new BadRequestError(
      'invalid_targets',
      'targets.all cannot be combined with vins, vin_list or filter criteria',
    );
  }
  if (t.vin_list !== undefined && t.vins !== undefined) {
    throw new BadRequestError('invalid_targets', 'targets.vins and targets.vin_list cannot be combined');
  }
}

function listSegmentsFor(size: number): number {
  return Math.min(MAX_LIST_SEGMENTS, Math.max(1, Math.ceil(size / LIST_SEGMENT_BYTES)));
}

/** One message whatever the segment count: the job fans the segments out (campaign-preparation.ts). */
async function queueSegments(deps: CreationDeps, c: CampaignRecord): Promise<void> {
  await deps.jobs.send({ type: 'prepare_campaign', campaign_id: c.campaignId });
}

/** What the campaign offers: a published release, or a stored bundle (with a rollback's authorisation checked). */
async function campaignSubject(
  deps: CreationDeps,
  input: CreateCampaignInput,
): Promise<{ releaseId: string; version: string; ecu: string; bundle: boolean }> {
  if (input.rollback) {
    if (input.bundle_id === undefined) {
      throw new BadRequestError('rollback_needs_bundle', 'A rollback campaign names the bundle to return to');
    }
    checkRollbackRequest(input.rollback, deps.trustedReleaseKeys ?? [], deps.clock.now());
    const taken = await deps.campaigns.get(input.rollback.campaign_id);
    if (!taken) throw new NotFoundError('unknown_campaign', `No campaign ${input.rollback.campaign_id}`);
  }
  if (input.bundle_id !== undefined) {
    const b = await deps.bundles?.get(input.bundle_id);
    if (!b) throw new NotFoundError('unknown_bundle', `No bundle ${input.bundle_id}`);
    return { releaseId: b.bundleId, version: b.version, ecu: BUNDLE_ASSIGNMENT_ECU, bundle: true };
  }
  const release = await deps.releases.get(input.release_id!);
  if (!release) throw new NotFoundError('unknown_release', `No release ${input.release_id}`);
  if (release.status !== 'published')
    throw new ConflictError('release_not_published', 'The release is not published');
  return { releaseId: release.releaseId, version: release.version, ecu: release.ecu, bundle: false };
}

export async function createCampaign(
  deps: CreationDeps,
  input: CreateCampaignInput,
): Promise<CampaignCreated> {
  const policy = toPolicy(input.policy);
  const problems = policyProblems(policy);
  if (problems.length) throw new BadRequestError('invalid_policy', problems.join('; '));
  const conditions = policy.conditions ? conditionsProblems(policy.conditions, deps.clock.now()) : [];
  if (conditions.length) throw new BadRequestError('invalid_conditions', conditions.join('; '));
  checkTargets(input.targets);
  const canary = canaryProblem(policy);
  if (canary) throw new BadRequestError(canary.code, canary.message);
  const release = await campaignSubject(deps, input);
  const campaignId = input.campaign_id ?? `c-${randomBytes(6).toString('hex')}`;
  if (await deps.campaigns.get(campaignId))
    throw new ConflictError('campaign_exists', `Campaign ${campaignId} exists`);

  const t = input.targets;
  // A list in the request bounds the final count: a halt that cannot fire even if every VIN is targeted never
  // will (the largest wave only shrinks with fewer targets), so it is refused now rather than failed later.
  if (t.vins !== undefined && t.filter === undefined) {
    const sizes = waveSizes(new Set(t.vins).size, policy.waves);
    const halt =
      input.policy?.halt_min_outcomes === undefined
        ? haltProblem(
            { ...policy, haltMinOutcomes: Math.min(policy.haltMinOutcomes, Math.max(...sizes)) },
            sizes,
          )
        : haltProblem(policy, sizes);
    if (halt) throw new BadRequestError(halt.code, halt.message);
  }
  const now = deps.clock.now();
  const key = targetListKey(campaignId);
  let list: PreparationRecord['source']['list'];
  if (t.vins !== undefined) {
    const vins = [...new Set(t.vins)];
    const body = `${vins.join('\n')}\n`;
    await deps.objects.put(key, body);
    list = { key, size: Buffer.byteLength(body), lines: vins.length, uploaded: false };
  } else if (t.vin_list !== undefined) {
    list = { key, size: t.vin_list.size, uploaded: true };
  }
  const filter =
    t.all === true
      ? {}
      : t.filter && Object.fromEntries(Object.entries(t.filter).filter(([, v]) => v !== undefined));
  const ttl = UPLOAD_TTL_SECONDS;
  const awaiting = list?.uploaded === true;
  const preparation: PreparationRecord = {
    state: awaiting ? 'awaiting_targets' : 'running',
    source: { ...(filter ? { filter } : {}), ...(list ? { list } : {}) },
    scanSegments: filter ? (deps.scanSegments ?? SCAN_SEGMENTS) : 0,
    listSegments: list && !awaiting ? listSegmentsFor(list.size) : 0,
    defaultHaltMinOutcomes: input.policy?.halt_min_outcomes === undefined,
    ...(awaiting ? { uploadExpiresAt: new Date(now.getTime() + ttl * 1000).toISOString() } : {}),
    startedAt: now.toISOString(),
  };
  const stamp = now.toISOString();
  const campaign: CampaignRecord = {
    campaignId,
    name: input.name,
    releaseId: release.releaseId,
    version: release.version,
    ecu: release.ecu,
    ...(release.bundle ? { bundle: true as const } : {}),
    ...(input.rollback
      ? {
          rollback: {
            campaignId: input.rollback.campaign_id,
            authorisation: input.rollback.authorisation,
          },
        }
      : {}),
    status: 'preparing',
    policy,
    // Sized when the preparation ends, from the final count.
    waves: policy.waves.map(() => ({ size: 0 })),
    currentWave: 0,
    targetCount: 0,
    excludedByReason: {},
    counts: {},
    preparation,
    createdAt: stamp,
    updatedAt: stamp,
    revision: 1,
  };
  await deps.campaigns.create(campaign);
  if (!awaiting) await queueSegments(deps, campaign);
  const view = campaignView(campaign);
  if (!awaiting || !list) return view;
  return {
    ...view,
    upload: {
      method: 'PUT',
      url: await deps.objects.presignPut(key, list.size, ttl),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(list.size) },
      expires_at: preparation.uploadExpiresAt!,
    },
  };
}

/**
 * POST /campaigns/{id}/targets: the operator's VIN list is uploaded. Checks it whole (a stream, line by line) and
 * starts its preparation. For a preparation already running it queues the segments again (harmless: each resumes
 * from its checkpoint), which restarts one whose message was lost.
 */
export async function completeTargets(deps: CreationDeps, campaignId: string): Promise<CampaignView> {
  const c = await deps.campaigns.get(campaignId);
  if (!c) throw new NotFoundError('unknown_campaign', `No campaign ${campaignId}`);
  const p = c.preparation;
  if (c.status !== 'preparing' || !p || p.state === 'finished') {
    throw new ConflictError('invalid_transition', `Campaign ${campaignId} is ${c.status}, not preparing`);
  }
  if (p.state === 'running') {
    await queueSegments(deps, c);
    return campaignView(c);
  }
  const list = p.source.list!;
  const head = await deps.objects.head(list.key);
  if (!head)
    throw new ConflictError(
      'targets_not_uploaded',
      'The VIN list is not uploaded yet: PUT it to the upload URL first',
    );
  if (head.size !== list.size) {
    throw new BadRequestError(
      'vin_list_size_mismatch',
      `The uploaded VIN list has ${head.size} bytes, not the ${list.size} declared`,
    );
  }
  const lines = await checkVinList(await deps.objects.read(list.key, head.versionId));
  const next: PreparationRecord = {
    ...p,
    state: 'running',
    source: { ...p.source, list: { ...list, versionId: head.versionId, lines } },
    listSegments: listSegmentsFor(list.size),
  };
  const stamp = deps.clock.now().toISOString();
  if (!(await deps.campaigns.change(campaignId, c.revision, { preparation: next }, stamp)))
    throw new ConflictError('concurrent_update', 'The campaign changed concurrently; retry');
  const started = { ...c, preparation: next, revision: c.revision + 1, updatedAt: stamp };
  await queueSegments(deps, started);
  return campaignView(started);
}

/** The preparation's counts so far: its segments' checkpoints summed (a few reads; no campaign-wide item). */
export async function preparationProgress(
  deps: Pick<CreationDeps, 'preparation'>,
  c: CampaignRecord,
): Promise<{ totals: PreparationTotals; done: number } | undefined> {
  const p = c.preparation;
  if (p?.state !== 'running') return undefined;
  const segments = await deps.preparation.segments(c.campaignId, segmentNumbers(p));
  return {
    totals: segments.reduce<PreparationTotals>((a, s) => (s ? addTotals(a, s) : a), ZERO_TOTALS),
    done: segments.filter((s) => s?.state === 'done' || s?.state === 'stopped').length,
  };
}

/** The preparation as the API shows it; live counts when it is running and they were read. */
export function preparationView(
  c: CampaignRecord,
  live?: { totals: PreparationTotals; done: number },
): CampaignView['preparation'] {
  const p = c.preparation;
  if (!p) return null;
  const totals = p.totals ?? live?.totals ?? ZERO_TOTALS;
  const total = p.scanSegments + p.listSegments;
  return {
    state: p.state,
    segments: { total, done: p.state === 'finished' ? total : (live?.done ?? 0) },
    scanned: totals.scanned,
    targeted: totals.targeted,
    excluded: Object.values(totals.excluded).reduce((a, b) => a + b, 0),
    duplicates: totals.duplicates,
    invalid: totals.invalid,
    failure_reason: p.failure ?? null,
    upload_expires_at: p.uploadExpiresAt ?? null,
    started_at: p.startedAt,
    finished_at: p.finishedAt ?? null,
  };
}

/**
 * Whether a cancel belongs to the preparation job (the campaign was cancelled while preparing, or failed, and
 * its targets are being taken back) rather than to the wave-by-wave withdrawal of campaign-cancel.ts.
 */
export function cancelledInPreparation(c: CampaignRecord): boolean {
  const p = c.preparation;
  return p !== undefined && (p.state === 'running' || p.sweep !== undefined);
}
