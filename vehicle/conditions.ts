/**
 * Campaign conditions on the vehicle (protocol/conditions.ts): signed in the assignment, so they are exactly what
 * the campaign asked. Before anything is downloaded the driver must have accepted (when consent is required) and
 * the link must be allowed (unmetered only); before installing, the local time must be in the maintenance window.
 * The gate only waits and asks; the download and install phases are unchanged.
 *
 * Consent is durable (state.json `current.consent`): asked -> postponed (bounded, for the signed interval) ->
 * asked again ... -> given, or the update ends `declined` (the driver said no) or `expired` (the signed deadline
 * passed). Each question and postponement is reported like any status (awaiting_consent, postponed), so the
 * operator sees where the fleet waits for its drivers.
 *
 * Time: the vehicle's clock and time zone (`conditions.now`, `conditions.timeZone`), not the backend's, since the
 * window is the car's night, wherever it is. The network is checked before each download run and while it runs: a
 * run in progress when the car moves onto a metered link stops at its last checkpoint (whileUnmetered) and the next
 * one, once the link is unmetered again, resumes from there.
 */
import type { UpdateConditions } from '../protocol/conditions.js';
import { inWindow, localMinutes, minutesUntilWindow } from '../protocol/conditions.js';
import type { FullOffer } from '../protocol/offer.js';
import { type AgentContext, reportBase } from './agent-context.js';
import { AgentError } from './errors.js';
import { appendReport } from './reporter.js';
import { Wakeup } from './runtime.js';
import type { CurrentUpdate } from './state-store.js';
import type { UpdateOutcomes } from './update-outcome.js';

export type NetworkKind = 'metered' | 'unmetered';

export interface ConditionOptions {
  /** The vehicle's IANA time zone (from the head unit). @default the system's */
  readonly timeZone?: string;
  /** The clock conditions are judged by (the head unit's; tests inject one). @default the agent runtime's */
  readonly now?: () => number;
  /** The link the car is on now. @default always unmetered (an integrator without a link type says so) */
  readonly network?: () => NetworkKind;
  /** How often a waiting condition is looked at again. @default 30000 */
  readonly recheckMs?: number;
}

export type DriverDecision = 'accept' | 'postpone' | 'decline';

/** A driver's answer that does not apply now (no question pending, no postponement left): 409 at the head unit. */
export class DecisionError extends AgentError {}

export interface ConsentView {
  readonly state: 'asking' | 'postponed' | 'given';
  readonly deadline: string;
  readonly postponements: number;
  readonly postponements_left: number;
  readonly ask_again_at: string | null;
}

/** The vehicle's clock (the head unit's), as conditions are judged by; tests inject one. */
export function vehicleNow(ctx: AgentContext): number {
  return ctx.options.conditions?.now?.() ?? ctx.runtime.now();
}

/** The vehicle's IANA time zone (the head unit's), the maintenance window's. */
export function vehicleTimeZone(ctx: AgentContext): string {
  return ctx.options.conditions?.timeZone ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** Why the install must wait for the maintenance window now, or undefined when it may start (no window, or open). */
export function windowWait(
  ctx: AgentContext,
  window: UpdateConditions['maintenance_window'],
): string | undefined {
  if (!window) return undefined;
  const minutes = localMinutes(vehicleNow(ctx), vehicleTimeZone(ctx));
  if (inWindow(minutes, window)) return undefined;
  const opensIn = minutesUntilWindow(minutes, window);
  return `waiting for the maintenance window ${window.start}-${window.end} (local time; opens in ${opensIn} min)`;
}

export const METERED_WAIT = 'waiting for an unmetered network (the campaign allows no metered download)';

/** Whether the campaign allows no metered download and the car is on a metered link now. */
export function meteredNow(ctx: AgentContext, c: UpdateConditions | undefined): boolean {
  return c?.network === 'unmetered' && (ctx.options.conditions?.network?.() ?? 'unmetered') === 'metered';
}

/**
 * For a campaign that allows no metered download: a signal aborted when the car moves onto a metered link while the
 * download runs (looked at every recheckMs). The run then stops at its last checkpoint, and the gate waits for an
 * unmetered link before the next one, which resumes from there. Undefined when there is nothing to watch. A single
 * release's download and a bundle's member downloads alike.
 */
export function whileUnmetered(
  ctx: AgentContext,
  conditions: UpdateConditions | undefined,
): { readonly signal: AbortSignal; stop(): void } | undefined {
  if (conditions?.network !== 'unmetered' || !ctx.options.conditions?.network) return undefined;
  const stop = new AbortController();
  const timer = setInterval(() => {
    if (meteredNow(ctx, conditions)) {
      stop.abort(new AgentError('metered_link', 'the car moved onto a metered link'));
      clearInterval(timer);
    }
  }, ctx.options.conditions?.recheckMs ?? 30_000);
  timer.unref?.();
  return { signal: stop.signal, stop: () => clearInterval(timer) };
}

/**
 * When a postponed question is asked again, for a driver who postpones now; DecisionError when the signed conditions
 * allow no postponement now (already postponed, none left, no interval). Shared by releases and bundles.
 */
export function postponedUntil(
  consent: NonNullable<UpdateConditions['consent']>,
  st: { readonly state: string; readonly postponements: number },
  now: number,
): string {
  if (st.state === 'postponed') throw new DecisionError('already_postponed', 'already postponed');
  if (st.postponements >= consent.max_postponements || consent.postpone_seconds === undefined) {
    throw new DecisionError(
      'postpone_limit',
      `no postponement left (${consent.max_postponements} allowed): accept or decline`,
    );
  }
  return new Date(now + consent.postpone_seconds * 1000).toISOString();
}

export class ConditionGate {
  private readonly wake = new Wakeup();
  /** The last waiting reason told (so a wait is announced once, not at every recheck). */
  private told: string | undefined;

  constructor(
    private readonly ctx: AgentContext,
    private readonly outcomes: UpdateOutcomes,
  ) {}

  private get options(): ConditionOptions {
    return this.ctx.options.conditions ?? {};
  }

  /** True when the download may run now; false when it waited (or ended the update): the runner comes back. */
  async beforeDownload(cur: CurrentUpdate, offer: FullOffer): Promise<boolean> {
    const c = offer.assignment.assignment.conditions;
    if (!c) return true;
    if (c.consent && cur.consent?.state !== 'given') {
      await this.consent(cur, c.consent);
      return false;
    }
    if (meteredNow(this.ctx, c)) {
      await this.waitFor(cur, METERED_WAIT);
      return false;
    }
    return true;
  }

  /** True when the install may start now (inside the maintenance window, in the vehicle's local time). */
  async beforeInstall(cur: CurrentUpdate, offer: FullOffer): Promise<boolean> {
    const wait = windowWait(this.ctx, offer.assignment.assignment.conditions?.maintenance_window);
    if (wait === undefined) return true;
    await this.waitFor(cur, wait);
    return false;
  }

  /** Whether the maintenance window (if any) is open now, without waiting. */
  installAllowedNow(offer: FullOffer): boolean {
    return windowWait(this.ctx, offer.assignment.assignment.conditions?.maintenance_window) === undefined;
  }

  /** The consent question of the update in progress, for the head unit; undefined when none is asked. */
  consentView(cur: CurrentUpdate, c: UpdateConditions | undefined): ConsentView | undefined {
    if (!c?.consent) return undefined;
    const st = cur.consent;
    const used = st?.postponements ?? 0;
    return {
      state: st?.state ?? 'asking',
      deadline: c.consent.deadline,
      postponements: used,
      postponements_left: Math.max(0, c.consent.max_postponements - used),
      ask_again_at: st?.state === 'postponed' ? (st.ask_at ?? null) : null,
    };
  }

  /**
   * The driver's answer to the pending question. accept: the download may start; postpone: asked again after the
   * signed interval, within the signed number of postponements; decline: the update ends `declined`.
   */
  async decide(decision: DriverDecision, c: UpdateConditions | undefined): Promise<void> {
    const cur = this.ctx.store.state.current;
    const consent = c?.consent;
    if (!cur || !consent || cur.consent === undefined || cur.consent.state === 'given') {
      throw new DecisionError('no_question', 'no update is waiting for the driver');
    }
    const now = vehicleNow(this.ctx);
    if (decision === 'decline') {
      await this.outcomes.finish(cur, 'declined', 'declined by the driver');
    } else if (decision === 'accept') {
      await this.ctx.store.update((d) => {
        if (d.current?.consent) d.current.consent = { ...d.current.consent, state: 'given' };
      });
      this.ctx.logger.info('the driver accepted the update', { update_id: cur.update_id });
    } else {
      const used = cur.consent.postponements;
      const askAt = postponedUntil(consent, cur.consent, now);
      await this.ctx.store.update((d) => {
        if (!d.current) return;
        d.current.consent = { state: 'postponed', postponements: used + 1, ask_at: askAt };
        appendReport(
          d,
          { status: 'postponed', ...reportBase(cur), reason: `postponed by the driver until ${askAt}` },
          this.ctx.runtime.now(),
        );
      });
      this.ctx.reporter.notify();
    }
    this.ctx.emit({ type: 'consent', update_id: cur.update_id, decision });
    this.told = undefined;
    this.wake.notify();
  }

  private async consent(
    cur: CurrentUpdate,
    consent: NonNullable<UpdateConditions['consent']>,
  ): Promise<void> {
    const now = vehicleNow(this.ctx);
    const deadline = Date.parse(consent.deadline);
    if (now >= deadline) {
      await this.outcomes.finish(cur, 'expired', `the driver did not accept before ${consent.deadline}`);
      return;
    }
    const st = cur.consent;
    if (!st || (st.state === 'postponed' && st.ask_at !== undefined && now >= Date.parse(st.ask_at))) {
      await this.ctx.store.update((d) => {
        if (!d.current) return;
        d.current.consent = { state: 'asking', postponements: st?.postponements ?? 0 };
        appendReport(d, { status: 'awaiting_consent', ...reportBase(cur) }, this.ctx.runtime.now());
      });
      this.ctx.reporter.notify();
      this.ctx.logger.info('asking the driver', { update_id: cur.update_id, deadline: consent.deadline });
      this.ctx.emit({ type: 'consent', update_id: cur.update_id, decision: 'ask' });
      return;
    }
    const until = Math.min(deadline, st.ask_at ? Date.parse(st.ask_at) : deadline);
    await this.pause(until - now);
  }

  private async waitFor(cur: CurrentUpdate, reason: string): Promise<void> {
    if (this.told !== reason) {
      this.told = reason;
      this.ctx.logger.info('update waits for its conditions', { update_id: cur.update_id, reason });
      this.ctx.emit({ type: 'deferred', update_id: cur.update_id, reason });
    }
    await this.pause(Number.POSITIVE_INFINITY);
  }

  /** Waits for a decision, the recheck interval or `ms`, whichever comes first. */
  private pause(ms: number): Promise<void> {
    const wait = Math.max(1, Math.min(ms, this.options.recheckMs ?? 30_000));
    return this.wake.wait(this.ctx.runtime, wait, this.ctx.signal);
  }

  /** Something changed outside (network, clock set): look again now. */
  recheck(): void {
    this.wake.notify();
  }
}
