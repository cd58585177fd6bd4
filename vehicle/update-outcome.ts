/**
 * How an update ends: the outcome recorded and reported in one durable write, its files removed; and the image
 * that fails its whole-image check (deleted, then downloaded again or given up within the verify budget).
 */
import { rm } from 'node:fs/promises';
import type { ReleaseManifest } from '../protocol/manifest.js';
import { type AgentContext, imageFile, partFile, reportBase } from './agent-context.js';
import { AgentError } from './errors.js';
import { appendReport, TERMINAL_REPORTS } from './reporter.js';
import type { CurrentUpdate, VehicleStatus } from './state-store.js';

export class UpdateOutcomes {
  constructor(
    private readonly ctx: AgentContext,
    /** Told once an update is cleared from the state, before its stored offer is deleted (caches drop it). */
    private readonly onFinished: (cur: CurrentUpdate) => void,
  ) {}

  async finishAndClean(
    cur: CurrentUpdate,
    m: ReleaseManifest,
    status: VehicleStatus,
    reason?: string,
  ): Promise<void> {
    await this.finish(cur, status, reason);
    await rm(partFile(this.ctx.store, m), { force: true });
    await rm(imageFile(this.ctx.store, m), { force: true });
  }

  /**
   * Ends the update: in one durable write the outcome report is queued, the outcome recorded, the installed
   * version updated (completed only) and the update cleared. Then files are removed and listeners told.
   */
  async finish(cur: CurrentUpdate, status: VehicleStatus, reason?: string): Promise<void> {
    if (!TERMINAL_REPORTS.has(status)) throw new AgentError('not_terminal', `${status} is not an outcome`);
    const now = this.ctx.runtime.now();
    await this.ctx.store.update((d) => {
      // What the download cost (every run's, saved with its checkpoints), once, with the outcome: it is confirmed
      // over HTTPS and counted by the campaign (bytes saved across the fleet).
      const t = d.current?.update_id === cur.update_id ? d.current.transfer : undefined;
      const cost =
        t?.image !== undefined
          ? { bytes_fetched: t.fetched, bytes_reused: Math.min(t.reused, t.image), bytes_image: t.image }
          : {};
      appendReport(
        d,
        { status, ...reportBase(cur), ...(reason !== undefined ? { reason } : {}), ...cost },
        now,
      );
      d.recent.push({
        update_id: cur.update_id,
        firmware_version: cur.firmware_version,
        counter: cur.counter,
        offer_digest: cur.offer_digest,
        status,
        ...(reason !== undefined ? { reason } : {}),
        at: new Date(now).toISOString(),
      });
      const ecu = d.ecus[cur.ecu];
      if (status === 'completed' && ecu) ecu.version = cur.firmware_version;
      d.current = null;
    });
    this.ctx.reporter.notify();
    this.onFinished(cur);
    await this.ctx.store.deleteOffer(cur.offer_file);
    const entry = { update_id: cur.update_id, firmware_version: cur.firmware_version, status, reason };
    if (status === 'completed') this.ctx.logger.info('update finished', entry);
    else this.ctx.logger.warn('update finished', entry);
    this.ctx.emit({
      type: 'outcome',
      update_id: cur.update_id,
      firmware_version: cur.firmware_version,
      ecu: cur.ecu,
      status,
      ...(reason !== undefined ? { reason } : {}),
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Polling fallback

  /**
   * The image failed its whole-image check, at the verify step or while the installer read it (damaged on disk
   * after the download): delete it and download again, or give up with verification_failed once the budget is
   * spent. Nothing was activated either way.
   */
  async imageRefused(cur: CurrentUpdate, m: ReleaseManifest, problems: string[]): Promise<void> {
    await rm(partFile(this.ctx.store, m), { force: true });
    await rm(imageFile(this.ctx.store, m), { force: true });
    const attempts = cur.attempts.verify + 1;
    const budget = this.ctx.options.budgets?.verifyAttempts ?? 2;
    this.ctx.logger.error('image does not match the signed manifest; deleted', {
      problems,
      attempt: attempts,
      budget,
    });
    if (attempts >= budget) {
      await this.finishAndClean(
        cur,
        m,
        'verification_failed',
        `image does not match the signed manifest: ${problems.join('; ')}`,
      );
      return;
    }
    const installing = cur.phase === 'installing';
    await this.ctx.store.update((d) => {
      if (d.current) {
        d.current.attempts.verify = attempts;
        // A damaged source is not an interrupted install: it does not spend the install budget.
        if (installing) d.current.attempts.install = Math.max(0, d.current.attempts.install - 1);
        d.current.phase = 'downloading';
        d.current.verified_bytes = 0;
      }
    });
  }
}
