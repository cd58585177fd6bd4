/**
 * Freshness: the vehicle's answer to being kept from updates. Every check interval it fetches the backend's signed
 * freshness statement (protocol/freshness.ts) with the proof of its own leaf, keeps the newest one it has verified
 * (freshness.json in its state folder, so a restart cannot be fed an older one) and refuses anything older.
 *
 * - The statement says which assignment counter the backend's latest offer to this vehicle carried. Higher than
 *   any offer the vehicle has received: an offer was withheld (dropped message, blocked topic). The vehicle reports
 *   it and polls over HTTPS for its pending updates at once.
 * - No newer valid statement for maxSilenceMs: the vehicle may be frozen (statements withheld, or the backend's
 *   schedule is down); it reports that.
 * - Signed time: expiry of offers and assignments is judged by the later of the vehicle's clock and the newest
 *   statement's issued_at (signedNow()), so a clock set back cannot make an expired assignment valid again.
 *
 * Alerts are queued in freshness.json and sent (POST /updates/{vin}/freshness/alert) until the backend takes them.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import { checkFreshness, type FreshnessAlert } from '../protocol/freshness.js';
import type { AgentContext } from './agent-context.js';
import { writeFileAtomic } from './atomic-file.js';
import { ApiError } from './errors.js';
import { describeError } from './logger.js';
import { Wakeup } from './runtime.js';
import type { AgentState } from './state-store.js';

export interface FreshnessOptions {
  /**
   * How often the statement is fetched. An hour keeps a connected fleet of 1,000,000 at ~280 requests/s (the backend
   * signs one every 5 minutes; a car that misses some still sees the newest). @default 3600000 (1 hour)
   */
  readonly checkIntervalMs?: number;
  /** No newer valid statement for this long is reported as a possible freeze. @default 21600000 (6 hours) */
  readonly maxSilenceMs?: number;
  /** How far beyond "now" (own clock or the newest signed time, whichever is later) issued_at may be. @default 3600000 */
  readonly maxFutureMs?: number;
}

export const FRESHNESS_FILE = 'freshness.json';

const fileSchema = z.object({
  /** The newest verified statement. */
  held: z
    .object({
      sequence: z.number().int(),
      issued_at: z.string(),
      expires_at: z.string(),
      counter: z.number().int(),
      /** The vehicle's own clock when it was accepted (for the silence check). */
      accepted_at: z.number(),
    })
    .nullable(),
  /** The leaf counter already reported as withheld (once per offer). */
  alerted_counter: z.number().int(),
  /** Start of the silence already reported (once per silence). */
  alerted_silence_since: z.number().nullable(),
  pending_alerts: z.array(
    z.object({ kind: z.enum(['withheld_offer', 'no_statement']), sequence: z.number(), detail: z.string() }),
  ),
});
type FreshnessFile = z.infer<typeof fileSchema>;

/** The highest assignment counter among the offers this vehicle has received, whatever became of them. */
export function highestCounterSeen(s: Readonly<AgentState>): number {
  return Math.max(
    s.last_counter,
    s.current?.counter ?? 0,
    ...s.inbox.map((e) => e.counter),
    ...s.recent.map((r) => r.counter ?? 0),
  );
}

export class FreshnessMonitor {
  private file: FreshnessFile = {
    held: null,
    alerted_counter: 0,
    alerted_silence_since: null,
    pending_alerts: [],
  };
  private readonly wakeup = new Wakeup();
  private readonly startedAt: number;

  constructor(
    private readonly ctx: AgentContext,
    private readonly options: FreshnessOptions,
    /** Asks the poller for a catch-up poll (the withheld offer is fetched over HTTPS). */
    private readonly pollNow: () => void,
  ) {
    this.startedAt = ctx.runtime.now();
  }

  private get path(): string {
    return join(this.ctx.options.stateDir, FRESHNESS_FILE);
  }

  /** Reads what a previous run held; an unreadable file is started afresh (logged), never trusted in part. */
  async open(): Promise<void> {
    let raw: string;
    try {
      raw = await readFile(this.path, 'utf8');
    } catch {
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      json = undefined;
    }
    const parsed = fileSchema.safeParse(json);
    if (parsed.success) this.file = parsed.data;
    // Starting afresh accepts any valid statement again, but never an expired one, and signed time rebuilds from it.
    else this.ctx.logger.error('freshness.json unreadable; starting afresh', { error: parsed.error.message });
  }

  /** The time to judge expiry by: the vehicle's clock, or the newest signed time if that is later. */
  signedNow(): number {
    const held = this.file.held;
    return Math.max(this.ctx.runtime.now(), held ? Date.parse(held.issued_at) : Number.NEGATIVE_INFINITY);
  }

  async loop(): Promise<void> {
    const interval = this.options.checkIntervalMs ?? 3_600_000;
    // The first check at a random point of the first interval: a fleet starting together (or reconnecting after an
    // outage) spreads its statement requests instead of sending them all at once.
    await this.wakeup.wait(this.ctx.runtime, this.ctx.runtime.random() * interval, this.ctx.signal);
    while (!this.ctx.signal.aborted) {
      try {
        await this.checkOnce();
      } catch (err) {
        if (this.ctx.signal.aborted || this.ctx.killed()) return;
        this.ctx.logger.warn('freshness check failed', { error: describeError(err) });
      }
      await this.wakeup.wait(this.ctx.runtime, interval, this.ctx.signal);
    }
  }

  wake(): void {
    this.wakeup.notify();
  }

  /** One round: fetch and check the statement, look for a withheld offer and for silence, send alerts. */
  async checkOnce(): Promise<void> {
    const api = this.ctx.options.api;
    if (!api.freshness) return;
    try {
      await this.consider(await api.freshness(this.ctx.signal));
    } catch (err) {
      if (this.ctx.signal.aborted) throw err;
      // None published yet, or none covering this vehicle yet, or the backend is out of reach: silence.
      const level = err instanceof ApiError && err.status === 404 ? 'info' : 'warn';
      this.ctx.logger[level]('no freshness statement this time', { error: describeError(err) });
    }
    await this.checkSilence();
    await this.sendAlerts();
  }

  private async consider(answer: Parameters<typeof checkFreshness>[0]): Promise<void> {
    const held = this.file.held;
    const ownNow = this.ctx.runtime.now();
    const verdict = checkFreshness(answer, {
      keys: this.ctx.options.trust.backendKeys,
      vin: this.ctx.options.vin,
      ownNow,
      ...(held ? { last: { sequence: held.sequence, issuedAt: Date.parse(held.issued_at) } } : {}),
      maxFutureMs: this.options.maxFutureMs ?? 3_600_000,
    });
    if (!verdict.ok) {
      if (verdict.reason === 'same_sequence') return;
      this.ctx.logger.warn('freshness statement refused', {
        reason: verdict.reason,
        message: verdict.message,
      });
      this.ctx.emit({
        type: 'freshness',
        status: 'refused',
        reason: `${verdict.reason}: ${verdict.message}`,
      });
      return;
    }
    const s = verdict.statement;
    const next: FreshnessFile = {
      ...this.file,
      held: {
        sequence: s.sequence,
        issued_at: s.issued_at,
        expires_at: s.expires_at,
        counter: verdict.counter,
        accepted_at: ownNow,
      },
      alerted_silence_since: null,
    };
    const seen = highestCounterSeen(this.ctx.store.state);
    const withheld = verdict.counter > seen && verdict.counter > this.file.alerted_counter;
    if (withheld) {
      const detail = `statement ${s.sequence} (issued ${s.issued_at}) names an offer with counter ${verdict.counter}; the newest received has ${seen}`;
      next.alerted_counter = verdict.counter;
      next.pending_alerts = [
        ...next.pending_alerts,
        { kind: 'withheld_offer', sequence: s.sequence, detail },
      ];
      this.ctx.logger.warn('an offer was withheld from this vehicle; polling for it', { detail });
    }
    await this.save(next);
    this.ctx.emit({ type: 'freshness', status: 'fresh', sequence: s.sequence, issued_at: s.issued_at });
    if (withheld) {
      this.ctx.emit({
        type: 'freshness',
        status: 'withheld',
        sequence: s.sequence,
        counter: verdict.counter,
      });
      this.pollNow();
    }
  }

  private async checkSilence(): Promise<void> {
    const since = this.file.held?.accepted_at ?? this.startedAt;
    const silentFor = this.ctx.runtime.now() - since;
    if (silentFor < (this.options.maxSilenceMs ?? 21_600_000) || this.file.alerted_silence_since === since)
      return;
    const sequence = this.file.held?.sequence ?? 0;
    const detail = this.file.held
      ? `no freshness statement newer than ${sequence} (issued ${this.file.held.issued_at}) for ${Math.round(silentFor / 1000)} s`
      : `no valid freshness statement for ${Math.round(silentFor / 1000)} s`;
    this.ctx.logger.warn('this vehicle may be kept from updates', { detail });
    await this.save({
      ...this.file,
      alerted_silence_since: since,
      pending_alerts: [...this.file.pending_alerts, { kind: 'no_statement', sequence, detail }],
    });
    this.ctx.emit({ type: 'freshness', status: 'silent', sequence, reason: detail });
  }

  private async sendAlerts(): Promise<void> {
    const api = this.ctx.options.api;
    while (this.file.pending_alerts.length > 0 && api.freshnessAlert) {
      const alert: FreshnessAlert = this.file.pending_alerts[0]!;
      await api.freshnessAlert(alert, this.ctx.signal);
      await this.save({ ...this.file, pending_alerts: this.file.pending_alerts.slice(1) });
      this.ctx.emit({ type: 'freshness', status: 'reported', sequence: alert.sequence, reason: alert.kind });
    }
  }

  private async save(next: FreshnessFile): Promise<void> {
    if (this.ctx.killed()) return;
    await writeFileAtomic(this.path, JSON.stringify(next));
    this.file = next;
  }
}
