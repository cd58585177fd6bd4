/**
 * The offer path of a campaign at fleet scale, run by the offer worker function from the offers queue (SQS on AWS,
 * the local stand-in locally). Three messages:
 *  - `pace` (one chain per campaign): one pacer step. It reads one bounded page of the queued targets from the
 *    persisted cursor, at most the current wave's remaining quota and one step's worth at notify_per_second, saves
 *    the cursor, the wave's tally and the page (a write conditional on the step's sequence), and only then fans the
 *    page out as `take` messages delayed over the step's seconds, confirms them sent and sends the next step. A
 *    duplicated or late `pace` message finds another sequence and does nothing; a step stopped before its save is
 *    redone whole, one stopped after it resends its saved page. A full wave stops the chain; the tick starts it
 *    when the wave advances.
 *  - `take`: takes one queued target into its wave and offers it: the conditional write (still queued, same
 *    revision) moves it scheduled -> offered with its wave, waveKey and counter shard, with the wave's count in the
 *    same transaction; then the offer's counter and the vehicle's active update (one write), the signed assignment
 *    and the publish. A target withdrawn while queued is taken as it is (still counted in its wave), so each wave
 *    takes exactly its size.
 *  - `reoffer`: an overdue update the tick found with retries left, offered again if still at that revision.
 * Every invocation handles one page or one message: memory and time do not grow with the wave.
 */
import { conditionsForOffer, consentDeadline } from '../../protocol/conditions.js';
import { offerFor } from '../../protocol/offer.js';
import { type AssignmentIssuer, type AssignmentTarget, assignmentTargetOf } from './assignment-issuer.js';
import { bundleTarget } from './bundles.js';
import {
  countMove,
  PACER_STEP_SECONDS,
  pacerStep,
  shardOf,
  shardsFor,
  waveKeyOf,
  waveQuota,
} from './campaign-counters.js';
import { type CampaignDeps, transition } from './campaigns.js';
import type {
  BundleRepository,
  CampaignRecord,
  CountMove,
  OfferMessage,
  OfferPublisher,
  OfferQueue,
  PacerPage,
  PacerState,
  UpdateRecord,
  VehicleRecord,
} from './ports.js';
import { withTransition } from './update-history.js';

export interface OfferWorkerDeps extends CampaignDeps {
  readonly assignments: Pick<AssignmentIssuer, 'assignTarget'>;
  /** Where bundle campaigns' bundles are read (absent: bundle campaigns are never offered). */
  readonly bundles?: BundleRepository;
  readonly vehicles: CampaignDeps['vehicles'];
  readonly publisher: OfferPublisher;
  readonly offers: OfferQueue;
  readonly log?: { warn(message: string, extra: Record<string, unknown>): void };
}

/** What a campaign offers: a published release, or a stored bundle (always offerable once stored). */
interface OfferSubject {
  readonly status: string;
  readonly target: AssignmentTarget;
  readonly size: number;
}

/** The count of an update newly taken into its wave, in its status. */
function countedInto(u: UpdateRecord): CountMove {
  return { campaignId: u.campaignId!, wave: u.wave!, shard: u.shard ?? 0, to: u.status };
}

export type OfferOutcome = 'paced' | 'offered' | 'taken' | 'deferred' | 'skipped' | 'not_delivered';

export class OfferWorker {
  constructor(private readonly deps: OfferWorkerDeps) {}

  /**
   * Handles a batch of messages side by side. The campaign and release items they share are read once per batch
   * (a batch is at most 10 messages and a second old), not once per vehicle.
   */
  async handleBatch(messages: readonly OfferMessage[]): Promise<PromiseSettledResult<OfferOutcome>[]> {
    const shared = new Map<string, Promise<unknown>>();
    const once = <T>(key: string, read: () => Promise<T>): Promise<T> => {
      if (!shared.has(key)) shared.set(key, read());
      return shared.get(key) as Promise<T>;
    };
    return Promise.allSettled(messages.map((m) => this.handle(m, once)));
  }

  async handle(
    m: OfferMessage,
    once: <T>(key: string, read: () => Promise<T>) => Promise<T> = (_k, read) => read(),
  ): Promise<OfferOutcome> {
    if (m.kind === 'pace') return this.pace(m.campaignId, m.seq);
    const c = await once(`c#${m.campaignId}`, () => this.deps.campaigns.get(m.campaignId));
    if (!c) return 'skipped';
    const u = await this.deps.updates.get(m.vin, `campaign#${m.campaignId}`);
    if (!u) return 'skipped';
    const release = () => once(`r#${c.releaseId}`, () => this.subject(c));
    return m.kind === 'take' ? this.take(c, u, m.wave, release) : this.reoffer(c, u, m.revision, release);
  }

  private async subject(c: CampaignRecord): Promise<OfferSubject | undefined> {
    if (c.bundle) {
      const b = await this.deps.bundles?.get(c.releaseId);
      if (!b) return undefined;
      return {
        status: 'published',
        target: bundleTarget(b),
        size: b.signedBundle.bundle.members.reduce((sum, m) => sum + m.size, 0),
      };
    }
    const r = await this.deps.releases.get(c.releaseId);
    if (!r) return undefined;
    const m = r.signedManifest.manifest;
    return { status: r.status, target: assignmentTargetOf(m), size: m.size };
  }

  /**
   * One pacer step (see the file comment). The step's page is saved (cursor, tally, and the page itself as
   * `pending`) by a write conditional on the step's sequence BEFORE any of its takes is sent, and confirmed after:
   * of two chains stepping at once (a restart by the tick while the old step still runs, a duplicated message),
   * only the one whose save lands sends takes, so a wave never takes more than its size. A step stopped between
   * its save and its confirmation is redone from `pending`: by its redelivered message, or else by the next step of
   * a chain the tick restarted (its takes sent again are harmless: a take of a target no longer queued does nothing).
   */
  async pace(campaignId: string, seq: number): Promise<'paced' | 'skipped'> {
    const state = await this.deps.counters.pacer(campaignId);
    if (!state) return 'skipped';
    // This step saved its page but did not confirm its takes sent (stopped, then redelivered): redo them.
    if (state.seq === seq + 1 && state.pending?.seq === seq) {
      await this.resend(campaignId, state.pending);
      if (!(await this.confirm(campaignId, state))) return 'skipped';
      if (!state.idle && !state.waiting) await this.next(campaignId, seq + 1, 1);
      return 'paced';
    }
    if (state.seq !== seq || state.idle || state.waiting) return 'skipped';
    const c = await this.deps.campaigns.get(campaignId);
    const now = this.deps.clock.now().toISOString();
    const stop = (s: PacerState, why: 'full' | 'waiting') =>
      this.deps.counters.savePacer(campaignId, seq, {
        ...s,
        ...(why === 'full' ? { idle: true } : { waiting: true }),
        steppedAt: now,
      });
    // Paused, halted, cancelled...: the chain stops; the tick starts it again when the campaign runs.
    if (c?.status !== 'running') {
      await stop(state, 'waiting');
      return 'skipped';
    }
    // A page saved by an earlier step and never confirmed (that step stopped, the tick restarted the chain).
    if (state.pending) await this.resend(campaignId, state.pending);
    const { pending: _done, ...settled } = state;
    // The tick advanced the wave since: the new wave starts with nothing taken.
    const at = c.currentWave > settled.wave ? { ...settled, wave: c.currentWave, taken: 0 } : settled;
    const quota = waveQuota(c.waves[at.wave]?.size ?? 0, at.taken);
    const step = pacerStep(c.policy.notifyPerSecond, quota);
    const page =
      step.items > 0 ? await this.deps.updates.pageQueued(campaignId, step.items, at.cursor) : undefined;
    const items = page?.items ?? [];
    if (items.length === 0) {
      await stop(at, 'full');
      return 'skipped';
    }
    const taken = at.taken + items.length;
    const full = taken >= (c.waves[at.wave]?.size ?? 0);
    const pending: PacerPage = {
      seq,
      wave: at.wave,
      ...(at.cursor === undefined ? {} : { after: at.cursor }),
      lastKey: items.at(-1)!.waveKey!,
      count: items.length,
    };
    const next: PacerState = {
      seq: seq + 1,
      wave: at.wave,
      taken,
      ...(page?.cursor === undefined ? {} : { cursor: page.cursor }),
      idle: full,
      steppedAt: now,
      pending,
    };
    // Saved first: a step whose save fails (another chain moved on) sends nothing.
    if (!(await this.deps.counters.savePacer(campaignId, seq, next))) return 'skipped';
    await this.deps.offers.send(
      items.map((u, i) => ({
        message: { kind: 'take', campaignId, vin: u.vin, wave: at.wave },
        delaySeconds: step.delays(i),
      })),
    );
    // Not confirmed: the chain was restarted meanwhile, and its next step redoes this page (harmless).
    if (!(await this.confirm(campaignId, next))) return 'paced';
    if (!full) await this.next(campaignId, seq + 1, step.nextStepSeconds);
    return 'paced';
  }

  /** Marks a saved page's takes as sent (conditional on the sequence the save left). */
  private confirm(campaignId: string, saved: PacerState): Promise<boolean> {
    const { pending: _sent, ...rest } = saved;
    return this.deps.counters.savePacer(campaignId, saved.seq, rest);
  }

  private next(campaignId: string, seq: number, delaySeconds: number): Promise<void> {
    return this.deps.offers.send([{ message: { kind: 'pace', campaignId, seq }, delaySeconds }]);
  }

  /** Sends again the takes of a saved page whose targets are still queued (the others were taken already). */
  private async resend(campaignId: string, page: PacerPage): Promise<void> {
    const { items } = await this.deps.updates.pageQueued(campaignId, page.count, page.after);
    const left = items.filter((u) => u.waveKey! <= page.lastKey);
    if (left.length === 0) return;
    this.deps.log?.warn('pacer step redone: its takes were saved but not confirmed sent', {
      campaignId,
      seq: page.seq,
      wave: page.wave,
      targets: left.length,
    });
    await this.deps.offers.send(
      left.map((u, i) => ({
        message: { kind: 'take', campaignId, vin: u.vin, wave: page.wave },
        delaySeconds: Math.min(900, Math.floor(i / 100)),
      })),
    );
  }

  /** Takes a queued target into `wave` and offers it; a duplicate finds it taken already and does nothing. */
  private async take(
    c: CampaignRecord,
    u: UpdateRecord,
    wave: number,
    readRelease: () => Promise<OfferSubject | undefined>,
  ): Promise<OfferOutcome> {
    if (u.wave !== -1) return 'skipped';
    const into = {
      wave,
      waveKey: waveKeyOf(wave, u.vin),
      shard: shardOf(u.vin, shardsFor(c.waves[wave]?.size ?? 1)),
    };
    if (c.status === 'paused' || c.status === 'halted') {
      // Not offered while the campaign is stopped, and not lost either (the pacer's cursor is past it): the take
      // comes back a step later, and is offered once the campaign runs again.
      await this.deps.offers.send([
        {
          message: { kind: 'take', campaignId: c.campaignId, vin: u.vin, wave },
          delaySeconds: PACER_STEP_SECONDS,
        },
      ]);
      return 'deferred';
    }
    const [release, vehicle] = await Promise.all([readRelease(), this.deps.vehicles.get(u.vin)]);
    const withdrawn =
      u.status !== 'scheduled'
        ? undefined // already withdrawn while queued: taken as it is
        : c.status === 'cancelling' || c.status === 'cancelled'
          ? 'campaign cancelled'
          : release?.status !== 'published'
            ? 'release withdrawn'
            : !vehicle || vehicle.revokedAt !== undefined
              ? 'vehicle revoked'
              : undefined;
    if (u.status !== 'scheduled' || withdrawn) {
      // Counted in its wave as it ends up; a withdrawn-while-queued target leaves the queue's count.
      const taken: UpdateRecord = {
        ...u,
        ...into,
        ...(withdrawn ? { status: 'cancelled', reason: withdrawn } : {}),
        updatedAt: this.deps.clock.now().toISOString(),
        revision: u.revision + 1,
      };
      const left = countMove(u, undefined);
      const moves: CountMove[] = [...(left ? [left] : []), countedInto(taken)];
      if (!(await this.deps.updates.put(taken, u.revision, moves))) return 'skipped';
      await this.deps.vehicles.unlockCampaign(u.vin, u.ecu, c.campaignId);
      return 'taken';
    }
    return this.offer(c, { ...u, ...into }, u, release!, vehicle!);
  }

  private async reoffer(
    c: CampaignRecord,
    u: UpdateRecord,
    revision: number,
    readRelease: () => Promise<OfferSubject | undefined>,
  ): Promise<OfferOutcome> {
    if (u.revision !== revision || c.status !== 'running') return 'skipped';
    const [release, vehicle] = await Promise.all([readRelease(), this.deps.vehicles.get(u.vin)]);
    // A withdrawn release is never offered again (kill switch); its withdrawal cancels the update.
    if (release?.status !== 'published') return 'skipped';
    if (!vehicle || vehicle.revokedAt !== undefined) return 'skipped';
    return this.offer(c, u, u, release, vehicle);
  }

  /**
   * Offers `u` (already placed in its wave): the conditional state change with its count, then one vehicle write
   * for the offer's counter and active update, the signed assignment and the publish. `stored` is the item as read
   * (its revision is the write's condition; a queued one is counted into the wave from nothing).
   */
  private async offer(
    c: CampaignRecord,
    u: UpdateRecord,
    stored: UpdateRecord,
    release: OfferSubject,
    vehicle: VehicleRecord,
  ): Promise<OfferOutcome> {
    const now = this.deps.clock.now();
    const offerCounter = await this.deps.vehicles.reserveOffer(u.vin, u.updateId);
    const conditions = conditionsForOffer(c.policy.conditions, now);
    // With driver consent, the vehicle has the consent time and then its usual time to finish.
    const consent = c.policy.conditions?.consent;
    const consentSeconds = consent
      ? Math.max(0, (consentDeadline(consent, now).getTime() - now.getTime()) / 1000)
      : 0;
    const changes: Partial<UpdateRecord> = {
      status: 'offered',
      progress: 0,
      attempt: u.attempt + 1,
      offeredAt: now.toISOString(),
      deadline: new Date(
        now.getTime() + (c.policy.vehicleTimeoutSeconds + consentSeconds) * 1000,
      ).toISOString(),
      reason: undefined,
      offerCounter,
      conditions,
    };
    const next: UpdateRecord = {
      ...u,
      ...changes,
      updatedAt: now.toISOString(),
      revision: stored.revision + 1,
    };
    const move = stored.wave === -1 ? countedInto(next) : countMove(u, 'offered');
    const offered = withTransition(next, { status: 'offered', source: 'backend', at: next.updatedAt });
    if (!(await this.deps.updates.put(offered, stored.revision, move ? [move] : []))) return 'skipped';
    return this.publish(c, offered, u.attempt, vehicle, release);
  }

  private async publish(
    c: CampaignRecord,
    offered: UpdateRecord,
    previousAttempt: number,
    vehicle: VehicleRecord,
    subject: OfferSubject,
  ): Promise<OfferOutcome> {
    const assignment = await this.deps.assignments.assignTarget(
      vehicle,
      offered,
      subject.target,
      offered.offerCounter,
    );
    try {
      // The offer names the manifest by digest; the vehicle fetches it over HTTPS, so the message stays small.
      await this.deps.publisher.publish(offered.vin, offerFor(assignment, subject.size));
      return 'offered';
    } catch (err) {
      // Not delivered (broker or Data Plane unavailable). The update stays offered and active, so a polling vehicle
      // still sees it; its deadline is moved to now so the next tick offers it again, and the attempt is given
      // back: an unreachable broker must not spend the vehicle's retry budget. If the vehicle acted meanwhile, the
      // revision moved on and this does nothing.
      this.deps.log?.warn('offer publish failed; will retry', {
        vin: offered.vin,
        campaignId: c.campaignId,
        error: String(err),
      });
      await transition(this.deps, offered, {
        attempt: previousAttempt,
        deadline: this.deps.clock.now().toISOString(),
        reason: 'offer not delivered; retrying',
      });
      return 'not_delivered';
    }
  }
}
