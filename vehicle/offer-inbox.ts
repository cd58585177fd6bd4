/**
 * The offer inbox: offers from MQTT or built from a poll are parsed, deduplicated and stored durably, in arrival
 * order, before anything acts on them (MQTT acknowledges an offer only once it is stored, so a power cut never loses
 * one). It also holds the parsed offers in use, and the rules that recognise an offer as already handled.
 */

import { type FullOffer, offerSchema, type UpdateOffer } from '../protocol/offer.js';
import { VERSION_PATTERN } from '../protocol/schemas.js';
import type { AgentContext } from './agent-context.js';
import { AgentError } from './errors.js';
import { authenticAssignment } from './offer-verifier.js';
import { TERMINAL_REPORTS } from './reporter.js';
import { type AgentState, type CurrentUpdate, offerDigest } from './state-store.js';

export type OfferSource = 'mqtt' | 'poll';

/**
 * The payload as an offer, or why it is none (`json`: the payload, when it is JSON: its assignment may be genuine,
 * and then the refusal is reported against it).
 */
export type ParsedOffer =
  | { readonly ok: true; readonly offer: UpdateOffer }
  | { readonly ok: false; readonly reason: string; readonly json?: unknown };

export function parseOffer(payload: Buffer): ParsedOffer {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    return { ok: false, reason: 'not_json' };
  }
  const parsed = offerSchema.safeParse(json);
  if (parsed.success) return { ok: true, offer: parsed.data };
  const issue = parsed.error.issues[0];
  const reason = `invalid_offer: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'malformed'}`;
  return { ok: false, reason, json };
}

/** A redelivery of an offer already handled or in progress (QoS 1 may deliver twice), or of a finished update. */
export function isRedelivery(offer: UpdateOffer, digest: string, s: Readonly<AgentState>): boolean {
  if (s.current?.offer_digest === digest) return true;
  // Another offer for the update already under way (a re-offer, or one built from a poll while the MQTT copy
  // was queued): the update is being handled; it must not be reported as rejected.
  if (s.current?.update_id === offer.update_id) return true;
  return s.recent.some(
    (r) =>
      r.offer_digest === digest ||
      (r.status === 'completed' &&
        r.update_id === offer.update_id &&
        r.firmware_version === offer.firmware_version) ||
      // An older copy of an offer this vehicle accepted and finished: stale, but no attack to report. Only
      // accepted offers count (their counters are this vehicle's): a rejected, possibly forged one with a high
      // counter must never silence the genuine offers that follow.
      (r.status !== 'rejected' &&
        r.update_id === offer.update_id &&
        offer.assignment.assignment.counter <= (r.counter ?? 0)),
  );
}

/**
 * Whether a pending update the backend lists is already known here (in progress, queued, or finished with its
 * outcome not yet acknowledged), or unusable (not a version), so a poll does not turn it into another offer.
 */
export function isKnownPending(
  u: { readonly firmware_version: string; readonly ecu: string },
  s: Readonly<AgentState>,
): boolean {
  return (
    (s.current !== null && s.current.firmware_version === u.firmware_version && s.current.ecu === u.ecu) ||
    s.inbox.some((i) => i.firmware_version === u.firmware_version && i.ecu === u.ecu) ||
    s.pending_reports.some(
      (p) => TERMINAL_REPORTS.has(p.status) && p.firmware_version === u.firmware_version,
    ) ||
    !VERSION_PATTERN.test(u.firmware_version)
  );
}

export class OfferInbox {
  /** Parsed offers by stored file, for the update in progress (read once per process). */
  private readonly offers = new Map<string, FullOffer>();

  constructor(
    private readonly ctx: AgentContext,
    /** Told each time an offer is stored (the work loop picks it up). */
    private readonly onStored: () => void,
  ) {}

  /** Stores an offer (MQTT or polled) in the inbox. Resolving means it is durable: MQTT may acknowledge it. */
  async receive(payload: Buffer, source: OfferSource): Promise<void> {
    const { store, logger } = this.ctx;
    const parsed = parseOffer(payload);
    if (!parsed.ok) {
      if (parsed.reason === 'not_json') {
        logger.warn('offer is not JSON; ignored', { source, bytes: payload.length });
        return;
      }
      // Reported only under an assignment signed by a trusted backend key for this VIN: anyone able to publish on
      // the offer topic could otherwise end a genuine update by naming its version in a malformed offer.
      const a = authenticAssignment(parsed.json, {
        vin: this.ctx.options.vin,
        trust: this.ctx.options.trust,
      });
      logger.warn('malformed offer rejected', { source, reason: parsed.reason, reported: !!a });
      if (a && VERSION_PATTERN.test(a.version)) {
        await this.ctx.reporter.status({
          status: 'rejected',
          firmware_version: a.version,
          campaign_id: a.campaign_id,
          update_id: a.update_id,
          reason: parsed.reason,
        });
      } else {
        this.ctx.emit({ type: 'refused', reason: 'invalid_offer', message: parsed.reason });
      }
      return;
    }
    const offer = parsed.offer;
    const counter = offer.assignment.assignment.counter;
    const digest = offerDigest(offer);
    if (store.state.inbox.some((i) => i.offer_digest === digest)) return;
    if (store.state.inbox.length >= (this.ctx.options.maxInbox ?? 16)) {
      logger.error('offer inbox full; offer dropped', { update_id: offer.update_id });
      return;
    }
    const file = await store.saveOffer(offer);
    await store.update((d) => {
      d.inbox.push({
        offer_file: file,
        offer_digest: digest,
        update_id: offer.update_id,
        firmware_version: offer.firmware_version,
        ecu: offer.ecu,
        counter,
        received_at: new Date(this.ctx.runtime.now()).toISOString(),
      });
    });
    this.ctx.emit({
      type: 'offer',
      source,
      update_id: offer.update_id,
      firmware_version: offer.firmware_version,
      counter,
    });
    this.onStored();
  }

  /** The offer of the update in progress, with its manifest (kept with it when it was accepted). */
  async load(cur: CurrentUpdate): Promise<FullOffer> {
    const cached = this.offers.get(cur.offer_file);
    if (cached) return cached;
    const offer = await this.ctx.store.loadOffer(cur.offer_file);
    if (!offer.manifest) {
      throw new AgentError('offer_without_manifest', `stored offer ${cur.offer_file} has no manifest`);
    }
    const full: FullOffer = { ...offer, manifest: offer.manifest };
    this.offers.set(cur.offer_file, full);
    return full;
  }

  /** Keeps an offer just accepted (stored as `file`) for load(). */
  remember(file: string, offer: FullOffer): void {
    this.offers.set(file, offer);
  }

  forget(file: string): void {
    this.offers.delete(file);
  }
}
