/**
 * Campaign conditions for a bundle (protocol/conditions.ts, signed in its assignment): the network the member
 * downloads may use and the maintenance window its installation must start in, judged as for a single release
 * (conditions.ts) by the vehicle's clock, time zone and link. The bundle runner waits here: before each member
 * download until the link is unmetered (a download in progress stops at its last checkpoint when the car moves onto a
 * metered link, and the next run resumes from it), and before the first slot is written until the window is open.
 *
 * Driver consent is not asked for a bundle yet: the head unit's question follows a single release's state. A bundle
 * whose assignment asks for consent is refused before anything is downloaded (bundle-runner.ts), and the backend
 * refuses to create such a campaign.
 */
import type { UpdateConditions } from '../protocol/conditions.js';
import { inWindow, localMinutes, minutesUntilWindow } from '../protocol/conditions.js';
import type { AgentContext } from './agent-context.js';
import { AgentError } from './errors.js';

export class BundleConditions {
  /** The last waiting reason told (a wait is announced once, not at every recheck). */
  private told: string | undefined;

  constructor(
    private readonly ctx: AgentContext,
    private readonly updateId: string,
    private readonly conditions: UpdateConditions | undefined,
  ) {}

  private get recheckMs(): number {
    return this.ctx.options.conditions?.recheckMs ?? 30_000;
  }

  private metered(): boolean {
    return (
      this.conditions?.network === 'unmetered' &&
      (this.ctx.options.conditions?.network?.() ?? 'unmetered') === 'metered'
    );
  }

  /** Waits until the downloads may use the link the car is on. */
  async untilDownloadAllowed(signal: AbortSignal): Promise<void> {
    while (this.metered()) {
      this.tell('waiting for an unmetered network (the campaign allows no metered download)');
      await this.ctx.runtime.sleep(this.recheckMs, signal);
    }
  }

  /**
   * For a campaign that allows no metered download: a signal aborted when the car moves onto a metered link while a
   * member downloads (looked at every recheckMs). Undefined when there is nothing to watch.
   */
  watchLink(): { readonly signal: AbortSignal; stop(): void } | undefined {
    if (this.conditions?.network !== 'unmetered' || !this.ctx.options.conditions?.network) return undefined;
    const stop = new AbortController();
    const timer = setInterval(() => {
      if (this.metered()) {
        stop.abort(new AgentError('metered_link', 'the car moved onto a metered link'));
        clearInterval(timer);
      }
    }, this.recheckMs);
    timer.unref?.();
    return { signal: stop.signal, stop: () => clearInterval(timer) };
  }

  /** Waits until the maintenance window (if any) is open, in the vehicle's local time. */
  async untilInstallAllowed(signal: AbortSignal): Promise<void> {
    const window = this.conditions?.maintenance_window;
    if (!window) return;
    const c = this.ctx.options.conditions ?? {};
    const timeZone = c.timeZone ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
    for (;;) {
      const minutes = localMinutes(c.now?.() ?? this.ctx.runtime.now(), timeZone);
      if (inWindow(minutes, window)) return;
      this.tell(
        `waiting for the maintenance window ${window.start}-${window.end} (local time; opens in ${minutesUntilWindow(minutes, window)} min)`,
      );
      await this.ctx.runtime.sleep(this.recheckMs, signal);
    }
  }

  private tell(reason: string): void {
    if (this.told === reason) return;
    this.told = reason;
    this.ctx.logger.info('bundle waits for its conditions', { update_id: this.updateId, reason });
    this.ctx.emit({ type: 'deferred', update_id: this.updateId, reason });
  }
}
