/**
 * The agent's side of a bundle offer (protocol/bundle-api.ts): an offer whose signed assignment binds a bundle
 * (ecu BUNDLE_ASSIGNMENT_ECU) is run through BundleInstaller (bundle-install.ts) instead of the single-release
 * phases. The material (signed bundle, member manifests, any rollback authorisation) comes inline in the offer or
 * from POST /updates/{vin}/bundle; either way the installer checks all of it against the trust anchors and the
 * ECU inventory before a byte is downloaded. Members are downloaded by the same verified path as single releases
 * (chunk digests, whole-image SHA-256; the manifests' OEM signatures and the backend assignment were checked
 * first), installed in order, activated and confirmed together; the outcome names the member that failed.
 *
 * Durability: `current.json` in the bundle folder names the bundle being handled from its acceptance to its
 * report; the installer's journal settles the ECUs. A restart with a journal settles it (all old or all new) and
 * reports that. One with no journal (stopped while downloading or waiting to install: no slot written) leaves the
 * offer in the inbox, which runs it again: its checks again, then each member's download resumes from its
 * checkpoint (bundle-downloads.ts), so verified bytes are not fetched twice. The member downloads are removed
 * with the outcome.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import { manifestDigest } from '../protocol/assignment.js';
import { type BundleAnswer, type BundleMaterial, rollbackOfferSchema } from '../protocol/bundle-api.js';
import type { ReleaseManifest, SignedManifest } from '../protocol/manifest.js';
import type { UpdateOffer } from '../protocol/offer.js';
import { MAX_IMAGE_SIZE } from '../protocol/schemas.js';
import { type AgentContext, RetryLater } from './agent-context.js';
import { ensureDir, writeFileAtomic } from './atomic-file.js';
import { BundleConditions } from './bundle-conditions.js';
import { BundleDownloads } from './bundle-downloads.js';
import { type BundleEcu, BundleInstaller, type BundleOutcome, type EcuProgress } from './bundle-install.js';
import { DecisionError, type DriverDecision } from './conditions.js';
import type { Downloader, DownloadSource } from './downloader.js';
import { EcuBases } from './ecu-bases.js';
import { AgentError, ApiError } from './errors.js';
import { type PendingView, pendingViewOf } from './head-unit.js';
import { describeError } from './logger.js';
import { appendReport } from './reporter.js';
import type { VehicleStatus } from './state-store.js';
import { StaticVehicleState, waitUntilSafe } from './vehicle-state.js';

const currentSchema = z.object({
  update_id: z.string(),
  campaign_id: z.string().nullable(),
  version: z.string(),
  bundle_id: z.string(),
  counter: z.number(),
  offer_digest: z.string(),
  /** The driver's answer when the campaign asks for consent (bundle-conditions.ts), kept across restarts. */
  consent: z
    .object({
      state: z.enum(['asking', 'postponed', 'given', 'declined']),
      postponements: z.number().int().min(0),
      ask_at: z.string().optional(),
    })
    .optional(),
});
type CurrentBundle = z.infer<typeof currentSchema>;

/** The bundle this process runs, for the head unit: what it is and its conditions (the consent question). */
interface ActiveBundle {
  readonly cur: CurrentBundle;
  readonly conditions: BundleConditions;
  readonly ecus: readonly string[];
  readonly size: number;
}

/** Answers a refusal for OfferAcceptance to settle (reported when the assignment is authentic). */
export type BundleRefusal = {
  readonly reason: 'bundle_unavailable' | 'bundle_unsupported';
  readonly message: string;
};

export class BundleRunner {
  private readonly dir: string;
  /** The member downloads of the bundle in progress (resumable). */
  private readonly members: BundleDownloads;
  /** Download URLs by member release id, from the latest /bundle answer. */
  private urls = new Map<string, { url: string; expiresAt: number }>();
  /** The bundle run() is working on, if any. */
  private active: ActiveBundle | undefined;

  constructor(
    private readonly ctx: AgentContext,
    downloader: Downloader,
  ) {
    this.dir = join(ctx.options.stateDir, 'bundle');
    this.members = new BundleDownloads(ctx, downloader, join(this.dir, 'members'), new EcuBases(ctx));
  }

  private installer(update_id: string, conditions?: BundleConditions): BundleInstaller {
    const o = this.ctx.options;
    const installers: Record<string, BundleEcu> = {};
    for (const [ecu, i] of Object.entries(o.installers)) {
      if (typeof (i as Partial<BundleEcu>).switchBackTo === 'function') installers[ecu] = i as BundleEcu;
    }
    return new BundleInstaller({
      dir: this.dir,
      vin: o.vin,
      releaseKeys: () => o.trust.releaseKeys,
      backendKeys: o.trust.backendKeys,
      hardwareIds: Object.fromEntries(o.ecus.map((e) => [e.ecu, e.hardware_id])),
      installers,
      now: () => this.ctx.expiryNow(),
      fetchImage: (m, signal, onProgress) => this.fetchImage(m, signal, onProgress, conditions),
      onProgress: (p) => void this.progress(update_id, p),
      // Every member is downloaded and verified; before the first slot is written, as for a single release
      // (install-phase.ts): the campaign's maintenance window (it can be hours away), then a car safe to install
      // (parked, battery, no charging, as the policy says), then the backend asked whether it cancelled the update
      // meanwhile (a campaign cancelled, a kill switch).
      beforeInstall: async (signal) => {
        // A car that became safe only after the window closed waits for the next window (as install-phase.ts).
        do {
          await conditions?.untilInstallAllowed(signal);
          await this.waitUntilSafe(update_id);
        } while (conditions && !conditions.installAllowedNow());
        return (await this.cancelledByBackend(update_id))
          ? 'the backend cancelled the update before installation; nothing installed'
          : undefined;
      },
      beforeStep: (step, ecu) => o.hooks?.beforeBundleStep?.(step, { update_id, ecu }),
    });
  }

  /**
   * Settles a bundle interrupted by the last shutdown, before the ECUs' own recovery (which would switch back
   * trials the journal decided to keep). Reports what it settled.
   */
  async recover(): Promise<void> {
    const cur = await this.readCurrent();
    const outcome = await this.installer(cur?.update_id ?? '').recover();
    if (!cur) return;
    const s = this.ctx.store.state;
    if (outcome) await this.finish(cur, outcome);
    else if (s.inbox.some((i) => i.offer_digest === cur.offer_digest)) {
      // Stopped before any slot was written (downloading, or waiting to install): the offer is still in the inbox
      // and runs again, resuming each member's download from its checkpoint.
      this.ctx.logger.info('bundle interrupted before installing; resuming', { update_id: cur.update_id });
    } else if (s.recent.some((r) => r.offer_digest === cur.offer_digest)) {
      // Run again after a restart and refused then (its assignment expired meanwhile, say): already reported.
      await this.members.clear();
      await rm(join(this.dir, 'current.json'), { force: true });
    } else {
      await this.finish(cur, {
        status: 'failed',
        update_id: cur.update_id,
        bundle_id: cur.bundle_id,
        reason: 'interrupted before any ECU was written; nothing installed',
        versions: {},
      });
    }
  }

  /**
   * Handles an authentic bundle offer (its assignment header verified by the caller). Answers a refusal for the
   * caller to report, or undefined once the bundle was accepted and run to its outcome (reported here).
   */
  async run(offer: UpdateOffer, offerDigest: string): Promise<BundleRefusal | undefined> {
    const a = offer.assignment.assignment;
    let material: BundleMaterial;
    if (offer.bundle) material = offer.bundle;
    else {
      const fetched = await this.fetchAnswer(a.release_id);
      if ('reason' in fetched) return fetched;
      material = fetched.material;
    }
    const lastCounter = this.ctx.store.state.last_counter;
    // The same offer run again after a restart keeps what the driver answered.
    const before = await this.readCurrent().catch(() => undefined);
    let cur: CurrentBundle = {
      update_id: a.update_id,
      campaign_id: a.campaign_id,
      version: a.version,
      bundle_id: a.release_id,
      counter: a.counter,
      offer_digest: offerDigest,
      ...(before?.offer_digest === offerDigest && before.consent ? { consent: before.consent } : {}),
    };
    const save = async (next: CurrentBundle) => {
      cur = next;
      if (this.active) this.active = { ...this.active, cur };
      await writeFileAtomic(join(this.dir, 'current.json'), JSON.stringify(cur));
    };
    await ensureDir(this.dir);
    await save(cur);
    await this.members.begin(offerDigest);
    this.ctx.emit({ type: 'accepted', update_id: a.update_id, firmware_version: a.version, ecu: a.ecu });
    const conditions = new BundleConditions(this.ctx, a.update_id, a.conditions, {
      get: () => cur.consent,
      set: (consent) => save({ ...cur, consent }),
      report: (status, reason) =>
        this.ctx.reporter
          .status({
            status,
            firmware_version: cur.version,
            campaign_id: cur.campaign_id,
            update_id: cur.update_id,
            ...(reason !== undefined ? { reason } : {}),
          })
          .then(() => {}),
    });
    this.active = {
      cur,
      conditions,
      ecus: material.manifests.map((m) => m.manifest.ecu),
      size: material.manifests.reduce((n, m) => n + m.manifest.size, 0),
    };
    try {
      // Nothing is downloaded before the driver accepts, when the campaign asks.
      const consent = await conditions.untilConsented(this.ctx.signal);
      if (consent !== 'given') {
        const deadline = a.conditions?.consent?.deadline;
        await this.finish(cur, {
          status: consent,
          update_id: a.update_id,
          bundle_id: a.release_id,
          reason:
            consent === 'declined'
              ? 'declined by the driver'
              : `the driver did not accept before ${deadline}`,
          versions: {},
        });
        return undefined;
      }
      await this.install(a, material, conditions, lastCounter, cur, offer);
      return undefined;
    } finally {
      this.active = undefined;
    }
  }

  private async install(
    a: UpdateOffer['assignment']['assignment'],
    material: BundleMaterial,
    conditions: BundleConditions,
    lastCounter: number,
    cur: CurrentBundle,
    offer: UpdateOffer,
  ): Promise<void> {
    const rollback = rollbackOfferSchema.safeParse(material.rollback);
    const outcome = await this.installer(a.update_id, conditions).run(
      {
        update_id: a.update_id,
        campaign_id: a.campaign_id,
        bundle: material.bundle,
        assignment: offer.assignment,
        manifests: material.manifests,
        ...(rollback.success
          ? { rollback_authorisation: rollback.data.authorisation, rollback_of: rollback.data.campaign_id }
          : material.rollback !== undefined
            ? { rollback_authorisation: material.rollback }
            : {}),
      },
      lastCounter,
      this.ctx.signal,
    );
    await this.finish(cur, outcome);
  }

  /** The bundle waiting or running now, as the head unit shows it; null when none is. */
  pendingView(): PendingView | null {
    const b = this.active;
    if (!b) return null;
    return pendingViewOf(this.ctx, {
      update_id: b.cur.update_id,
      version: b.cur.version,
      ecus: b.ecus,
      size: b.size,
      phase: 'bundle',
      conditions: b.conditions.conditions,
      consent: b.conditions.consentView(),
    });
  }

  /** Whether a bundle is asking the driver now (the head unit's answer is this bundle's). */
  get askingDriver(): boolean {
    return this.active?.conditions.asking ?? false;
  }

  /** The driver's answer to the bundle's consent question. */
  decide(decision: DriverDecision): Promise<void> {
    const b = this.active;
    if (!b) return Promise.reject(new DecisionError('no_question', 'no update is waiting for the driver'));
    return b.conditions.decide(decision);
  }

  /**
   * Whether the backend cancelled the update while the members downloaded or the car waited. Best effort: a car that
   * cannot reach the backend installs what it accepted (its assignment still valid).
   */
  private async cancelledByBackend(update_id: string): Promise<boolean> {
    try {
      const list = await this.ctx.options.api.listUpdates(this.ctx.signal);
      return list.updates.some((u) => u.update_id === update_id && u.status === 'cancelled');
    } catch (err) {
      if (this.ctx.signal.aborted) throw err;
      this.ctx.logger.warn('could not ask the backend before installing the bundle; going ahead', {
        update_id,
        error: describeError(err),
      });
      return false;
    }
  }

  private async waitUntilSafe(update_id: string): Promise<void> {
    const o = this.ctx.options;
    await waitUntilSafe(o.vehicleState ?? new StaticVehicleState(), o.safety ?? {}, {
      runtime: this.ctx.runtime,
      signal: this.ctx.signal,
      pollMs: o.safety?.pollMs ?? 10_000,
      onDeferred: (reason) => {
        this.ctx.logger.info('bundle installation deferred', { update_id, reason });
        this.ctx.emit({ type: 'deferred', update_id, reason });
      },
    });
  }

  private async fetchAnswer(
    bundleId: string,
  ): Promise<{ answer: BundleAnswer; material: BundleMaterial } | BundleRefusal> {
    const api = this.ctx.options.api;
    if (!api.bundle) return { reason: 'bundle_unsupported', message: 'this agent has no bundle API' };
    try {
      const answer = await api.bundle(bundleId, this.ctx.signal);
      const now = this.ctx.runtime.now();
      this.urls = new Map(
        answer.members.map((m) => [
          m.release_id,
          { url: m.download_url, expiresAt: now + m.expires_in * 1000 },
        ]),
      );
      const material: BundleMaterial = {
        bundle: answer.bundle,
        manifests: answer.members.map((m) => m.manifest),
        ...(answer.rollback ? { rollback: answer.rollback } : {}),
      };
      return { answer, material };
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.transient) throw new RetryLater(err.code, err.message, { cause: err });
      return { reason: 'bundle_unavailable', message: `the backend does not serve the bundle: ${err.code}` };
    }
  }

  /**
   * One member downloaded and verified like a single release, resuming from its checkpoint (bundle-downloads.ts), on
   * a link the campaign allows: a run the car's move onto a metered link stops resumes once it is unmetered again.
   */
  private async fetchImage(
    sm: SignedManifest,
    signal: AbortSignal,
    onProgress: (percent: number) => void,
    conditions?: BundleConditions,
  ): Promise<string> {
    const cur = await this.readCurrent();
    const member = { update_id: cur?.update_id ?? '', source: this.urlSource(sm.manifest, cur?.bundle_id) };
    for (;;) {
      await conditions?.untilDownloadAllowed(signal);
      const link = conditions?.watchLink();
      try {
        return await this.members.fetch(
          sm,
          link ? AbortSignal.any([signal, link.signal]) : signal,
          onProgress,
          member,
        );
      } catch (err) {
        // Not a failure: the member's download pauses at its last checkpoint and goes on from there.
        if (!link?.signal.aborted || signal.aborted) throw err;
        this.ctx.logger.info('metered link: the bundle member download pauses at its last checkpoint', {
          ecu: sm.manifest.ecu,
        });
      } finally {
        link?.stop();
      }
    }
  }

  /** A member's URL: the one the last /bundle answer gave while it is valid, else a fresh answer's. */
  private urlSource(m: ReleaseManifest, bundleId: string | undefined): DownloadSource {
    return {
      url: async (refresh) => {
        const known = this.urls.get(m.release_id);
        if (!refresh && known && known.expiresAt - 5000 > this.ctx.runtime.now()) return known.url;
        if (!bundleId) throw new AgentError('bundle_unknown', 'no bundle in progress');
        const fetched = await this.fetchAnswer(bundleId);
        if ('reason' in fetched) throw new AgentError(fetched.reason, fetched.message);
        const fresh = fetched.answer.members.find((x) => x.release_id === m.release_id);
        if (!fresh || manifestDigest(fresh.manifest.manifest) !== manifestDigest(m)) {
          throw new AgentError(
            'manifest_changed',
            `the backend now serves another manifest for ${m.release_id}`,
          );
        }
        return fresh.download_url;
      },
    };
  }

  /** Per-ECU progress: an event each step; a durable report at the steps an operator needs to see. */
  private async progress(update_id: string, p: EcuProgress): Promise<void> {
    this.ctx.emit({ type: 'bundle_progress', update_id, ...p });
    // Each report stored costs the backend a write: the steps that say where each ECU is (downloaded, switched to
    // its new image, failed its check, restored); the outcome says the rest.
    if (!['downloaded', 'activated', 'unhealthy', 'reverted'].includes(p.phase)) return;
    const cur = await this.readCurrent();
    if (!cur || this.ctx.killed()) return;
    const status: VehicleStatus = p.phase === 'downloaded' ? 'downloading' : 'installing';
    await this.ctx.reporter
      .status({
        status,
        firmware_version: cur.version,
        campaign_id: cur.campaign_id,
        update_id: cur.update_id,
        reason: `${p.ecu} ${p.version} ${p.phase}`,
      })
      .catch(() => {});
  }

  private async finish(
    cur: CurrentBundle,
    outcome: Omit<BundleOutcome, 'status'> & {
      readonly status: BundleOutcome['status'] | 'declined' | 'expired';
    },
  ): Promise<void> {
    const status: VehicleStatus = outcome.status;
    const versions = Object.entries(outcome.versions)
      .map(([e, v]) => `${e} ${v}`)
      .join(', ');
    const reason =
      outcome.status === 'completed'
        ? `bundle ${cur.bundle_id} ${cur.version} installed: ${versions}`
        : `${outcome.failed_member ? `member ${outcome.failed_member}: ` : ''}${outcome.reason ?? ''}`;
    // What the members' downloads cost, once with the outcome (the campaign sums the bytes saved across the fleet).
    const transfer = this.members.transfer();
    const bytes =
      transfer && transfer.image >= 1 && transfer.image <= MAX_IMAGE_SIZE
        ? { bytes_fetched: transfer.fetched, bytes_reused: transfer.reused, bytes_image: transfer.image }
        : {};
    const now = this.ctx.runtime.now();
    // The offer leaves the inbox with its outcome, so a restart in between finds it again and, once the outcome is
    // recorded in `recent`, drops it as handled.
    const files = this.ctx.store.state.inbox
      .filter((i) => i.offer_digest === cur.offer_digest)
      .map((i) => i.offer_file);
    await this.ctx.store.update((d) => {
      d.inbox = d.inbox.filter((i) => i.offer_digest !== cur.offer_digest);
      // Only a bundle this vehicle acted on moves the counter: a refused, possibly forged offer with a high one
      // must never silence the genuine offers that follow (as for single releases).
      if (status !== 'rejected') d.last_counter = Math.max(d.last_counter, cur.counter);
      for (const [ecu, version] of Object.entries(outcome.versions)) {
        const e = d.ecus[ecu];
        if (e) e.version = version;
      }
      d.recent.push({
        update_id: cur.update_id,
        firmware_version: cur.version,
        counter: cur.counter,
        offer_digest: cur.offer_digest,
        status,
        reason,
        at: new Date(now).toISOString(),
      });
      appendReport(
        d,
        {
          status,
          reason,
          firmware_version: cur.version,
          campaign_id: cur.campaign_id,
          update_id: cur.update_id,
          ...bytes,
        },
        now,
      );
    });
    this.ctx.reporter.notify();
    for (const f of files) await this.ctx.store.deleteOffer(f);
    // The verified member images were copied into the slots (or are not needed any more): the bundle has ended.
    await this.members.clear();
    await rm(join(this.dir, 'current.json'), { force: true });
    this.ctx.logger.info('bundle outcome', { update_id: cur.update_id, status, reason });
    this.ctx.emit({
      type: 'outcome',
      update_id: cur.update_id,
      firmware_version: cur.version,
      ecu: '@bundle',
      status,
      reason,
    });
  }

  private async readCurrent(): Promise<CurrentBundle | undefined> {
    try {
      return currentSchema.parse(JSON.parse(await readFile(join(this.dir, 'current.json'), 'utf8')));
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw new AgentError('bundle_state_invalid', `bundle state unreadable: ${describeError(err)}`);
    }
  }
}
