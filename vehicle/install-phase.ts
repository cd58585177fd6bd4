/**
 * The install phase of one update: wait until the vehicle is safe, confirm with the backend that the update still
 * stands (not cancelled; a lapsed assignment renewed), then write the inactive slot, activate, health-check and
 * commit. Whatever fails, the A/B state decides what runs and exactly that is reported.
 */
import { stat } from 'node:fs/promises';
import { checkAssignment } from '../protocol/assignment.js';
import type { FullOffer } from '../protocol/offer.js';
import { type AgentContext, imageFile, RetryLater, reportBase } from './agent-context.js';
import type { InstallStep } from './agent-options.js';
import type { VehicleApi } from './api-client.js';
import { ApiError, InstallError } from './errors.js';
import type { ImageToInstall } from './installer.js';
import { describeError } from './logger.js';
import { ProgressThrottle } from './rate.js';
import { abortReason } from './runtime.js';
import type { CurrentUpdate } from './state-store.js';
import type { UpdateOutcomes } from './update-outcome.js';
import { StaticVehicleState, waitUntilSafe } from './vehicle-state.js';

export class InstallPhase {
  /** Expiry of assignments renewed in this process, by update (the stored offer keeps the original). */
  private readonly renewals = new Map<string, number>();

  constructor(
    private readonly ctx: AgentContext,
    private readonly outcomes: UpdateOutcomes,
  ) {}

  /**
   * `allowed` says whether the campaign's conditions still let the install start (the maintenance window): it is
   * asked again once the car is safe, since waiting to park can outlast the window; false leaves the update
   * verified, and the runner waits for the window again.
   */
  async install(cur: CurrentUpdate, offer: FullOffer, allowed: () => boolean = () => true): Promise<void> {
    const store = this.ctx.store;
    const m = offer.manifest.manifest;
    const installer = this.ctx.options.installers[cur.ecu];
    if (!installer) {
      await this.outcomes.finishAndClean(cur, m, 'failed', `no installer for ECU ${cur.ecu}`);
      return;
    }
    const imagePath = imageFile(this.ctx.store, m);
    if (!(await exists(imagePath))) {
      this.ctx.logger.warn('verified image missing before install; downloading again', {
        firmware_version: m.version,
      });
      await store.update((d) => {
        if (d.current) {
          d.current.phase = 'downloading';
          d.current.verified_bytes = 0;
        }
      });
      return;
    }
    const installBudget = this.ctx.options.budgets?.installAttempts ?? 2;
    if (cur.attempts.install >= installBudget) {
      const active = await installer.active();
      await this.outcomes.finishAndClean(
        cur,
        m,
        'failed',
        `installation interrupted ${cur.attempts.install} times; ${active.version} kept`,
      );
      return;
    }

    this.ctx.emit({ type: 'phase', update_id: cur.update_id, firmware_version: m.version, phase: 'waiting' });
    await waitUntilSafe(
      this.ctx.options.vehicleState ?? new StaticVehicleState(),
      this.ctx.options.safety ?? {},
      {
        runtime: this.ctx.runtime,
        signal: this.ctx.signal,
        pollMs: this.ctx.options.safety?.pollMs ?? 10_000,
        onDeferred: (reason) => {
          this.ctx.logger.info('installation deferred', { firmware_version: m.version, reason });
          this.ctx.emit({ type: 'deferred', update_id: cur.update_id, reason });
        },
      },
    );

    if (!allowed()) {
      this.ctx.logger.info('safe to install only after the maintenance window closed', {
        firmware_version: m.version,
      });
      return;
    }

    if (await this.cancelledByBackend(cur)) {
      await this.outcomes.finishAndClean(
        cur,
        m,
        'rejected',
        'the backend cancelled the update before installation; nothing installed',
      );
      return;
    }
    if (!(await this.stillAuthorized(cur, offer))) return;

    await store.update((d) => {
      if (d.current) {
        d.current.phase = 'installing';
        d.current.attempts.install++;
      }
    });
    await this.ctx.reporter.status({ status: 'installing', progress: 0, ...reportBase(cur) });
    this.ctx.emit({
      type: 'phase',
      update_id: cur.update_id,
      firmware_version: m.version,
      phase: 'installing',
    });

    const image: ImageToInstall = { path: imagePath, version: m.version, size: m.size, sha256: m.sha256 };
    const info = { update_id: cur.update_id, ecu: cur.ecu, version: m.version };
    const hook = async (step: InstallStep) => {
      await this.ctx.options.hooks?.beforeInstallStep?.(step, info);
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
    };
    const throttle = new ProgressThrottle();
    try {
      await hook('write');
      await installer.writeInactive(image, {
        signal: this.ctx.signal,
        onProgress: (written) => {
          const percent = (written * 100) / m.size;
          this.ctx.emit({
            type: 'progress',
            update_id: cur.update_id,
            firmware_version: m.version,
            phase: 'installing',
            bytes: written,
            total: m.size,
            percent,
            bytesPerSecond: 0,
          });
          if (throttle.shouldReport(percent, this.ctx.runtime.now())) {
            void this.ctx.reporter.progress({
              status: 'installing',
              progress: Math.min(99, percent),
              ...reportBase(cur),
            });
          }
        },
      });
      await hook('activate');
      await installer.activate(image);
      await hook('health');
      const healthy = await installer.healthCheck();
      if (!healthy) {
        const back = await installer.rollback();
        await this.outcomes.finishAndClean(
          cur,
          m,
          'rolled_back',
          `health check failed after activating ${m.version}; ${back.version} restored`,
        );
        return;
      }
      await hook('commit');
      await installer.commit();
    } catch (err) {
      if (this.ctx.signal.aborted || this.ctx.killed()) throw abortReason(this.ctx.signal);
      if (err instanceof InstallError && err.code === 'image_damaged') {
        // Caught before anything was activated: the inactive slot was only written, and is marked empty again.
        const now = this.ctx.store.state.current;
        if (now) await this.outcomes.imageRefused(now, m, [err.message]);
        return;
      }
      // Whatever failed, the A/B state decides what runs; settle it and report exactly that.
      const settled = await installer.recover();
      if (settled.active.sha256 === m.sha256) {
        await this.outcomes.finishAndClean(cur, m, 'completed');
      } else if (settled.revertedTrial) {
        await this.outcomes.finishAndClean(
          cur,
          m,
          'rolled_back',
          `install failed after activation (${describeError(err)}); ${settled.active.version} restored`,
        );
      } else {
        await this.outcomes.finishAndClean(
          cur,
          m,
          'failed',
          `install failed (${describeError(err)}); ${settled.active.version} kept`,
        );
      }
      return;
    }
    await this.outcomes.finishAndClean(cur, m, 'completed');
  }

  /**
   * Asks the backend, just before writing to the ECU, whether the update was cancelled meanwhile (a campaign
   * cancelled while this car downloaded or waited for a safe moment). Best effort: a car that cannot reach the
   * backend installs what it accepted while the assignment is valid.
   */
  private async cancelledByBackend(cur: CurrentUpdate): Promise<boolean> {
    try {
      const list = await this.ctx.options.api.listUpdates(this.ctx.signal);
      return list.updates.some((u) => u.update_id === cur.update_id && u.status === 'cancelled');
    } catch (err) {
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
      this.ctx.logger.warn('could not ask the backend before installing; going ahead', {
        update_id: cur.update_id,
        error: describeError(err),
      });
      return false;
    }
  }

  /**
   * An assignment authorises an update for a bounded time. When it has run out by the time the car is safe to
   * install (parked for days, offline), the backend must confirm it still wants this update: a fresh assignment
   * for the same update and manifest, signed by a trusted backend key for this VIN, with a higher counter. A
   * refusal ends the update as rejected with nothing installed; an unreachable backend means waiting, never
   * installing on a lapsed authorisation.
   */
  private async stillAuthorized(cur: CurrentUpdate, offer: FullOffer): Promise<boolean> {
    const m = offer.manifest.manifest;
    if (Date.parse(offer.assignment.assignment.expires_at) > this.ctx.expiryNow()) return true;
    const renewed = this.renewals.get(cur.update_id);
    if (renewed !== undefined && renewed > this.ctx.expiryNow()) return true;
    let answer: Awaited<ReturnType<VehicleApi['download']>>;
    try {
      answer = await this.ctx.options.api.download(offer.firmware_version, this.ctx.signal);
    } catch (err) {
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
      if (err instanceof ApiError && !err.transient) {
        await this.outcomes.finishAndClean(
          cur,
          m,
          'rejected',
          `the assignment expired before installation and the backend no longer offers it: ${err.code}`,
        );
        return false;
      }
      throw new RetryLater('assignment_expired', 'the assignment expired; the backend must renew it first', {
        cause: err,
      });
    }
    const fresh = answer.assignment;
    const check = checkAssignment(fresh, {
      keys: this.ctx.options.trust.backendKeys,
      vin: this.ctx.options.vin,
      now: new Date(this.ctx.expiryNow()),
      lastCounter: cur.counter,
      manifest: m,
    });
    const problem = !check.ok
      ? check.reason
      : fresh.assignment.update_id !== cur.update_id
        ? 'another update'
        : undefined;
    if (problem) {
      await this.outcomes.finishAndClean(
        cur,
        m,
        'rejected',
        `the assignment expired before installation and its renewal was refused: ${problem}`,
      );
      return false;
    }
    const counter = fresh.assignment.counter;
    await this.ctx.store.update((d) => {
      d.last_counter = Math.max(d.last_counter, counter);
    });
    this.renewals.set(cur.update_id, Date.parse(fresh.assignment.expires_at));
    this.ctx.logger.info('assignment renewed before installation', {
      update_id: cur.update_id,
      expires_at: fresh.assignment.expires_at,
    });
    this.ctx.emit({ type: 'renewed', update_id: cur.update_id, expires_at: fresh.assignment.expires_at });
    return true;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
