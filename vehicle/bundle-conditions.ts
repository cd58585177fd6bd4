/**
 * Campaign conditions for a bundle (protocol/conditions.ts, signed in its assignment): the network the member
 * downloads may use and the maintenance window its installation must start in, judged as for a single release
 * (conditions.ts) by the vehicle's clock, time zone and link. The bundle runner waits here: before each member
 * download until the link is unmetered (a download in progress stops at its last checkpoint when the car moves onto a
 * metered link, and the next run resumes from it), and before the first slot is written until the window is open.
 *
 * The driver's consent is asked before anything is downloaded, as for a single release: asked -> postponed (for the
 * signed interval, at most the signed number of times) -> asked again ... -> given, or the bundle ends `declined` (the
 * driver said no) or `expired` (the signed deadline passed). The answer comes through the head unit (head-unit.ts) and
 * is kept in the bundle's current.json (ConsentStore), so a restart asks again only what was not answered. Each
 * question and postponement is reported like any status (awaiting_consent, postponed).
 */
import type { UpdateConditions } from '../protocol/conditions.js';
import type { AgentContext } from './agent-context.js';
import {
  type ConsentView,
  DecisionError,
  type DriverDecision,
  METERED_WAIT,
  meteredNow,
  postponedUntil,
  vehicleNow,
  whileUnmetered,
  windowWait,
} from './conditions.js';
import { abortReason, Wakeup } from './runtime.js';

/** Where the driver's answer stands, kept with the bundle in progress. */
export interface BundleConsent {
  readonly state: 'asking' | 'postponed' | 'given' | 'declined';
  readonly postponements: number;
  /** When a postponed question is asked again. */
  readonly ask_at?: string;
}

/** The durable side of the consent: the bundle's current.json, and its reports. */
export interface ConsentStore {
  get(): BundleConsent | undefined;
  set(consent: BundleConsent): Promise<void>;
  report(status: 'awaiting_consent' | 'postponed', reason?: string): Promise<void>;
}

export class BundleConditions {
  /** The last waiting reason told (a wait is announced once, not at every recheck). */
  private told: string | undefined;
  private readonly wake = new Wakeup();

  constructor(
    private readonly ctx: AgentContext,
    private readonly updateId: string,
    readonly conditions: UpdateConditions | undefined,
    private readonly consent?: ConsentStore,
  ) {}

  /**
   * Waits for the driver when the campaign asks for consent: answers 'given' (or when none is asked), 'declined'
   * or 'expired'. Throws only when the agent stops.
   */
  async untilConsented(signal: AbortSignal): Promise<'given' | 'declined' | 'expired'> {
    const c = this.conditions?.consent;
    if (!c || !this.consent) return 'given';
    const deadline = Date.parse(c.deadline);
    for (;;) {
      if (signal.aborted) throw abortReason(signal);
      const st = this.consent.get();
      if (st?.state === 'given') return 'given';
      if (st?.state === 'declined') return 'declined';
      const now = vehicleNow(this.ctx);
      if (now >= deadline) return 'expired';
      if (!st || (st.state === 'postponed' && st.ask_at !== undefined && now >= Date.parse(st.ask_at))) {
        await this.consent.set({ state: 'asking', postponements: st?.postponements ?? 0 });
        await this.consent.report('awaiting_consent');
        this.ctx.logger.info('asking the driver', { update_id: this.updateId, deadline: c.deadline });
        this.ctx.emit({ type: 'consent', update_id: this.updateId, decision: 'ask' });
        continue;
      }
      const until =
        st.state === 'postponed' && st.ask_at ? Math.min(deadline, Date.parse(st.ask_at)) : deadline;
      await this.wake.wait(this.ctx.runtime, Math.max(1, Math.min(until - now, this.recheckMs)), signal);
    }
  }

  /** The question as the head unit shows it; undefined when none is asked. */
  consentView(): ConsentView | undefined {
    const c = this.conditions?.consent;
    if (!c || !this.consent) return undefined;
    const st = this.consent.get();
    const used = st?.postponements ?? 0;
    return {
      state: st?.state === 'given' ? 'given' : st?.state === 'postponed' ? 'postponed' : 'asking',
      deadline: c.deadline,
      postponements: used,
      postponements_left: Math.max(0, c.max_postponements - used),
      ask_again_at: st?.state === 'postponed' ? (st.ask_at ?? null) : null,
    };
  }

  /** Whether the driver is being asked now (the head unit's answer goes here). */
  get asking(): boolean {
    const st = this.consent?.get();
    return (
      this.conditions?.consent !== undefined &&
      st !== undefined &&
      st.state !== 'given' &&
      st.state !== 'declined'
    );
  }

  /** The driver's answer: accept (the downloads start), postpone (asked again later) or decline (the bundle ends). */
  async decide(decision: DriverDecision): Promise<void> {
    const c = this.conditions?.consent;
    const st = this.consent?.get();
    if (!c || !this.consent || !st || !this.asking) {
      throw new DecisionError('no_question', 'no update is waiting for the driver');
    }
    if (decision === 'postpone') {
      const askAt = postponedUntil(c, st, vehicleNow(this.ctx));
      await this.consent.set({ state: 'postponed', postponements: st.postponements + 1, ask_at: askAt });
      await this.consent.report('postponed', `postponed by the driver until ${askAt}`);
    } else {
      await this.consent.set({ ...st, state: decision === 'accept' ? 'given' : 'declined' });
      this.ctx.logger.info(`the driver ${decision === 'accept' ? 'accepted' : 'declined'} the bundle`, {
        update_id: this.updateId,
      });
    }
    this.ctx.emit({ type: 'consent', update_id: this.updateId, decision });
    this.wake.notify();
  }

  private get recheckMs(): number {
    return this.ctx.options.conditions?.recheckMs ?? 30_000;
  }

  /** Waits until the downloads may use the link the car is on. */
  async untilDownloadAllowed(signal: AbortSignal): Promise<void> {
    while (meteredNow(this.ctx, this.conditions)) {
      this.tell(METERED_WAIT);
      await this.ctx.runtime.sleep(this.recheckMs, signal);
    }
  }

  /**
   * For a campaign that allows no metered download: a signal aborted when the car moves onto a metered link while a
   * member downloads (looked at every recheckMs). Undefined when there is nothing to watch.
   */
  watchLink(): { readonly signal: AbortSignal; stop(): void } | undefined {
    return whileUnmetered(this.ctx, this.conditions);
  }

  /** Whether the maintenance window (if any) is open now. */
  installAllowedNow(): boolean {
    return windowWait(this.ctx, this.conditions?.maintenance_window) === undefined;
  }

  /** Waits until the maintenance window (if any) is open, in the vehicle's local time. */
  async untilInstallAllowed(signal: AbortSignal): Promise<void> {
    for (;;) {
      const wait = windowWait(this.ctx, this.conditions?.maintenance_window);
      if (wait === undefined) return;
      this.tell(wait);
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
