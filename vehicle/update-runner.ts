/**
 * The update runner: one update at a time, driven by the phase stored in the state file, so a restart continues
 * where the previous run stopped (download resumes, a verified image goes on to install, an interrupted install is
 * settled by the A/B slots). With no update in progress it accepts the next offer from the inbox.
 */
import type { AgentContext } from './agent-context.js';
import { DEFAULT_RETRY_BACKOFF, RetryLater } from './agent-context.js';
import { backoffDelay } from './backoff.js';
import { ConditionGate } from './conditions.js';
import { DownloadPhase, type DownloadUrls } from './download-phase.js';
import type { Downloader } from './downloader.js';
import { InstallPhase } from './install-phase.js';
import { describeError } from './logger.js';
import type { OfferAcceptance } from './offer-acceptance.js';
import type { OfferInbox } from './offer-inbox.js';
import type { Wakeup } from './runtime.js';
import { type CurrentUpdate, StoreClosedError } from './state-store.js';
import { UpdateOutcomes } from './update-outcome.js';

export class UpdateRunner {
  private readonly outcomes: UpdateOutcomes;
  private readonly downloads: DownloadPhase;
  private readonly installs: InstallPhase;
  private retryLaterCount = 0;
  /** Campaign conditions: consent, network, maintenance window (conditions.ts); the head unit answers through it. */
  readonly gate: ConditionGate;

  constructor(
    private readonly ctx: AgentContext,
    private readonly inbox: OfferInbox,
    private readonly acceptance: OfferAcceptance,
    downloader: Downloader,
    urls: DownloadUrls,
  ) {
    this.outcomes = new UpdateOutcomes(ctx, (cur) => {
      urls.delete(cur.update_id);
      inbox.forget(cur.offer_file);
    });
    this.downloads = new DownloadPhase(ctx, downloader, urls, this.outcomes);
    this.installs = new InstallPhase(ctx, this.outcomes);
    this.gate = new ConditionGate(ctx, this.outcomes);
  }

  /** Settles every ECU's A/B state, then decides an install that was interrupted by the last shutdown. */
  async recover(): Promise<void> {
    const store = this.ctx.store;
    const reverted = new Map<string, string>();
    const active = new Map<string, { version: string; sha256: string }>();
    for (const ecu of Object.keys(store.state.ecus)) {
      const installer = this.ctx.options.installers[ecu];
      if (!installer) continue;
      const report = await installer.recover();
      active.set(ecu, report.active);
      if (report.revertedTrial) {
        reverted.set(ecu, report.revertedTrial.sha256);
        this.ctx.logger.warn('an unconfirmed install was found at start-up and switched back', {
          ecu,
          reverted: report.revertedTrial.version,
          active: report.active.version,
        });
      }
    }
    await store.update((s) => {
      for (const [ecu, a] of active) {
        const e = s.ecus[ecu];
        if (e) e.version = a.version;
      }
    });
    const cur = store.state.current;
    if (cur?.phase !== 'installing') return;
    const offer = await this.inbox.load(cur);
    const m = offer.manifest.manifest;
    if (active.get(cur.ecu)?.sha256 === m.sha256) {
      this.ctx.logger.info('install had been committed before the restart', { firmware_version: m.version });
      await this.outcomes.finishAndClean(cur, m, 'completed');
    } else if (reverted.get(cur.ecu) === m.sha256) {
      await this.outcomes.finishAndClean(
        cur,
        m,
        'rolled_back',
        `interrupted before ${m.version} was confirmed healthy; ${active.get(cur.ecu)?.version ?? 'the previous version'} restored`,
      );
    }
    // Otherwise nothing was switched: the old version runs and the install is attempted again (within budget).
  }

  /** Runs the update in progress, or accepts the next offer, until the agent stops. */
  async loop(wake: Wakeup): Promise<void> {
    const signal = this.ctx.signal;
    while (!signal.aborted) {
      try {
        const s = this.ctx.store.state;
        if (s.current) await this.runCurrent(s.current);
        else if (s.inbox.length > 0) await this.acceptance.acceptNext();
        else await wake.wait(this.ctx.runtime, 60_000, signal);
        this.retryLaterCount = 0;
      } catch (err) {
        if (signal.aborted || this.ctx.killed() || err instanceof StoreClosedError) return;
        if (err instanceof RetryLater) {
          const wait = backoffDelay(
            this.retryLaterCount++,
            this.ctx.options.retryBackoff ?? DEFAULT_RETRY_BACKOFF,
            () => this.ctx.runtime.random(),
          );
          this.ctx.logger.warn('backend unreachable; retrying later', { in_ms: wait, error: err.message });
          await this.ctx.runtime.sleep(wait, signal).catch(() => {});
          continue;
        }
        await this.unexpected(err).catch((e: unknown) => {
          this.ctx.logger.error('could not settle after an unexpected error', { error: describeError(e) });
        });
      }
    }
  }

  /** A bug or an environment failure (disk): retry a few times, then settle the A/B state and report failed. */
  private async unexpected(err: unknown): Promise<void> {
    const message = describeError(err);
    this.ctx.logger.error('unexpected error in the update flow', {
      error: message,
      stack: (err as Error)?.stack,
    });
    this.ctx.emit({ type: 'error', message });
    const cur = this.ctx.store.state.current;
    if (!cur) {
      await this.ctx.runtime.sleep(1000, this.ctx.signal).catch(() => {});
      return;
    }
    const attempts = cur.attempts.unexpected + 1;
    await this.ctx.store.update((d) => {
      if (d.current) d.current.attempts.unexpected = attempts;
    });
    if (attempts < 3) {
      await this.ctx.runtime
        .sleep(
          backoffDelay(attempts, { baseMs: 1000, maxMs: 30_000 }, () => this.ctx.runtime.random()),
          this.ctx.signal,
        )
        .catch(() => {});
      return;
    }
    const installer = this.ctx.options.installers[cur.ecu];
    const active = installer ? (await installer.recover()).active : undefined;
    const offer = await this.inbox.load(cur).catch(() => undefined);
    const reason = `internal error: ${message}; ${active ? `${active.version} runs` : 'previous version kept'}`;
    if (!offer) await this.outcomes.finish(cur, 'failed', reason);
    else if (active?.sha256 === offer.manifest.manifest.sha256)
      await this.outcomes.finishAndClean(cur, offer.manifest.manifest, 'completed');
    else await this.outcomes.finishAndClean(cur, offer.manifest.manifest, 'failed', reason);
  }

  private async runCurrent(cur: CurrentUpdate): Promise<void> {
    const offer = await this.inbox.load(cur);
    switch (cur.phase) {
      case 'accepted':
      case 'downloading':
        if (!(await this.gate.beforeDownload(cur, offer))) return;
        return this.downloads.download(cur, offer);
      case 'downloaded':
        return this.downloads.verify(cur, offer);
      case 'verified':
        if (!(await this.gate.beforeInstall(cur, offer))) return;
        return this.installs.install(cur, offer, () => this.gate.installAllowedNow(offer));
      case 'installing':
        return this.installs.install(cur, offer);
    }
  }
}
