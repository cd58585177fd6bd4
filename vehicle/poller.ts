/**
 * The HTTPS polling fallback: GET /updates/{vin} every minute while MQTT is unavailable (or not configured), about
 * once a day as a safety net while it is connected (jittered x0.5-1.5 per poll, so a fleet that connected together
 * does not poll together: 1,000,000 cars make ~12 requests/s, BENCHMARKS.md), at once when a reconnect lost the MQTT session (catch-up), and never
 * while an update runs or offers wait. A failed poll backs off exponentially with jitter, at least as long as the
 * backend's Retry-After. Each pending update not yet known becomes an offer in the inbox, built from /download's
 * answer (a release) or /bundle's asked for an assignment (a bundle).
 */

import { BUNDLE_ASSIGNMENT_ECU } from '../protocol/bundle.js';
import { type FullOffer, offerFor } from '../protocol/offer.js';
import type { DownloadAnswer } from '../protocol/responses.js';
import type { AgentContext } from './agent-context.js';
import type { VehicleAgentOptions } from './agent-options.js';
import { backoffDelay } from './backoff.js';
import type { DownloadUrls } from './download-phase.js';
import { ApiError } from './errors.js';
import { describeError } from './logger.js';
import { isKnownPending, type OfferInbox } from './offer-inbox.js';
import { Wakeup } from './runtime.js';
import { StoreClosedError } from './state-store.js';

/** What the poller needs to know of MQTT: whether it is connected, or was until less than graceMs ago. */
export interface MqttAvailability {
  usable(graceMs: number): boolean;
}

/**
 * The poll interval for the MQTT situation; undefined: no interval polling (MQTT usable and the safety net
 * disabled). `mqtt` undefined: no MQTT configured.
 */
export function pollInterval(
  polling: VehicleAgentOptions['polling'] = {},
  mqtt: MqttAvailability | undefined,
): number | undefined {
  if (!mqtt) return polling.intervalMs ?? 60_000;
  // MQTT configured but down: the fallback poll. It is slow by default because a broker-wide outage puts the whole
  // fleet on it at once (1,000,000 cars at 15 min is 1,111 polls/s; at 60 s it would be 16,667).
  if (!mqtt.usable(polling.mqttGraceMs ?? 30_000))
    return polling.fallbackIntervalMs ?? polling.intervalMs ?? FALLBACK_POLL_MS;
  const connected = polling.connectedIntervalMs ?? CONNECTED_POLL_MS;
  return connected > 0 ? connected : undefined;
}

/** The safety-net poll interval while MQTT is connected: a day. */
export const CONNECTED_POLL_MS = 86_400_000;

/** The fallback poll interval while a configured MQTT connection is down: 15 minutes. */
export const FALLBACK_POLL_MS = 900_000;

/**
 * The wait before the next interval poll, jittered x0.5-1.5 whether MQTT is connected or not: a fleet that
 * connected together, or lost its broker together, must not poll together.
 */
export function nextPollWait(interval: number, random: () => number): number {
  return Math.round(interval * (0.5 + random()));
}

/**
 * How long to wait after the (failures+1)-th failed poll in a row: exponential from the interval, jittered, capped
 * at 10 minutes (or the interval if longer), and never before the backend's Retry-After.
 */
export function pollRetryDelay(
  failures: number,
  interval: number | undefined,
  err: unknown,
  random: () => number,
): number {
  const base = interval ?? 60_000;
  return Math.max(
    err instanceof ApiError ? (err.retryAfterMs ?? 0) : 0,
    backoffDelay(failures, { baseMs: base, maxMs: Math.max(base, 600_000) }, random),
  );
}

/** The offer a /download answer amounts to (it carries the signed manifest itself, and the assignment). */
export function offerFromAnswer(answer: DownloadAnswer): FullOffer {
  return {
    type: 'update_offer',
    campaign_id: answer.assignment.assignment.campaign_id,
    update_id: answer.update_id,
    firmware_version: answer.firmware_version,
    ecu: answer.ecu,
    size: answer.size,
    release_id: answer.assignment.assignment.release_id,
    manifest_sha256: answer.assignment.assignment.manifest_sha256,
    manifest: answer.manifest,
    assignment: answer.assignment,
  };
}

export class Poller {
  private readonly wakeup = new Wakeup();
  private lastPollAt = Number.NEGATIVE_INFINITY;
  /** Poll once as soon as the agent is not busy, whatever the interval (set after losing the MQTT session). */
  private catchUp = false;

  constructor(
    private readonly ctx: AgentContext,
    private readonly inbox: OfferInbox,
    private readonly urls: DownloadUrls,
    private readonly mqtt: MqttAvailability | undefined,
  ) {}

  /** Something changed (MQTT connection, stop): re-evaluate now. */
  wake(): void {
    this.wakeup.notify();
  }

  /** Poll now, whatever the interval. */
  pollNow(): void {
    this.lastPollAt = Number.NEGATIVE_INFINITY;
    this.wakeup.notify();
  }

  /** Owe a catch-up poll (made as soon as the agent is not busy). */
  requestCatchUp(): void {
    this.catchUp = true;
  }

  async loop(): Promise<void> {
    const { signal, runtime, store } = this.ctx;
    let failures = 0;
    let notBefore = 0;
    // The jittered wait drawn for the current interval; drawn again whenever the interval changes or a poll is made.
    let drawn: { interval: number; wait: number } | undefined;
    while (!signal.aborted) {
      const interval = pollInterval(this.ctx.options.polling, this.mqtt);
      if (interval !== undefined && drawn?.interval !== interval) {
        drawn = { interval, wait: nextPollWait(interval, () => runtime.random()) };
      }
      const now = runtime.now();
      const s = store.state;
      // Busy: a poll could only queue more work, and would spend the vehicle's API rate budget meanwhile.
      const busy = s.current !== null || s.inbox.length > 0;
      const due =
        this.catchUp ||
        (interval !== undefined && drawn !== undefined && now - this.lastPollAt >= drawn.wait);
      if (due && !busy && now >= notBefore) {
        this.lastPollAt = now;
        drawn = undefined;
        const catchingUp = this.catchUp;
        this.catchUp = false;
        try {
          const pending = await this.pollOnce();
          this.ctx.emit({ type: 'poll', reason: catchingUp ? 'catch_up' : 'interval', pending });
          failures = 0;
        } catch (err) {
          if (signal.aborted || err instanceof StoreClosedError) return;
          // A failed catch-up stays owed; it is retried after the same backoff as any failed poll.
          if (catchingUp) this.catchUp = true;
          const wait = pollRetryDelay(failures++, interval, err, () => runtime.random());
          notBefore = runtime.now() + wait;
          this.ctx.logger.warn('polling for updates failed', { error: describeError(err), next_in_ms: wait });
        }
      }
      await this.wakeup.wait(runtime, Math.min(interval ?? 1000, 1000), signal);
    }
  }

  /**
   * One poll of GET /updates/{vin}: each pending update not yet known here becomes an offer via /download or
   * /bundle.
   * Answers how many updates the backend listed as pending.
   */
  async pollOnce(): Promise<number> {
    const signal = this.ctx.signal;
    const list = await this.ctx.options.api.listUpdates(signal);
    for (const u of list.pending) {
      // Not skipped when the ECU already runs that version: the backend still counts the update as open (its
      // offer was lost, or it was installed under another update), and only the signed offer /download answers
      // lets the agent check it is the very image that runs (SHA-256) and report it completed.
      if (isKnownPending(u, this.ctx.store.state)) continue;
      try {
        if (u.ecu === BUNDLE_ASSIGNMENT_ECU) await this.bundleOffer(u.release_id);
        else await this.releaseOffer(u.firmware_version);
      } catch (err) {
        if (err instanceof ApiError && !err.transient) {
          // The backend will never serve it to this vehicle (e.g. downgrade refused): close it honestly.
          this.ctx.logger.warn('pending update cannot be downloaded; rejecting it', {
            firmware_version: u.firmware_version,
            code: err.code,
          });
          await this.ctx.reporter.status({
            status: 'rejected',
            firmware_version: u.firmware_version,
            campaign_id: u.campaign_id ?? null,
            reason: `backend refused the download: ${err.code}`,
          });
          continue;
        }
        throw err;
      }
    }
    return list.pending.length;
  }

  /** A release's offer from /download's answer (which carries its signed manifest and assignment). */
  private async releaseOffer(version: string): Promise<void> {
    const answer = await this.ctx.options.api.download(version, this.ctx.signal);
    this.urls.set(answer.update_id, answer.download_url, this.ctx.runtime.now() + answer.expires_in * 1000);
    await this.inbox.receive(Buffer.from(JSON.stringify(offerFromAnswer(answer))), 'poll');
  }

  /**
   * A bundle's offer, from /bundle asked for an assignment (/download serves releases: asking it for a bundle's
   * version would refuse, or name one member). The offer is the one MQTT would have carried: the assignment and the
   * size; the bundle runner fetches and checks the bundle and its members as for an MQTT offer.
   */
  private async bundleOffer(bundleId: string): Promise<void> {
    const api = this.ctx.options.api;
    if (!api.bundle) return; // an agent without bundle support: the offer is left to the backend's sweep
    const answer = await api.bundle(bundleId, this.ctx.signal, { assignment: true });
    if (!answer.assignment) {
      throw new ApiError(502, 'no_assignment', 'the bundle answer carries no assignment');
    }
    const size = answer.members.reduce((sum, m) => sum + m.manifest.manifest.size, 0);
    await this.inbox.receive(Buffer.from(JSON.stringify(offerFor(answer.assignment, size))), 'poll');
  }
}
