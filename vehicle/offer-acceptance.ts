/**
 * Acceptance of the next offer in the inbox: a redelivery is dropped quietly; otherwise the offer is verified
 * (signatures against the current trust anchors, VIN, counter, ECU, size) and either becomes the update in
 * progress, or is recorded and reported as rejected (or completed, when the ECU already runs exactly that image).
 */

import type { UpdateOffer } from '../protocol/offer.js';
import { VERSION_PATTERN } from '../protocol/schemas.js';
import { TRUST_ECU } from '../protocol/trust-document.js';
import type { AgentContext } from './agent-context.js';
import { describeError } from './logger.js';
import { isRedelivery, type OfferInbox } from './offer-inbox.js';
import { verifyOffer } from './offer-verifier.js';
import type { TrustAnchors } from './provisioning.js';
import { appendReport } from './reporter.js';
import { installedReleaseKeys } from './trust-store.js';

export class OfferAcceptance {
  constructor(
    private readonly ctx: AgentContext,
    private readonly inbox: OfferInbox,
  ) {}

  /**
   * The anchors offers are checked against. With a release-keys pseudo-ECU (trust-store.ts), the release keys are
   * the ones its active slot names: rotated by a signed update, read at each check so a committed rotation applies
   * to the very next offer. An unreadable key set trusts nothing (fail closed) rather than the factory keys, which
   * the rotation may have revoked.
   */
  private async trustAnchors(): Promise<TrustAnchors> {
    const installer = this.ctx.options.installers[TRUST_ECU];
    if (!installer || !this.ctx.store.state.ecus[TRUST_ECU]) return this.ctx.options.trust;
    try {
      const releaseKeys = await installedReleaseKeys(installer);
      return releaseKeys ? { ...this.ctx.options.trust, releaseKeys } : this.ctx.options.trust;
    } catch (err) {
      this.ctx.logger.error('the installed release-key set is unreadable; trusting no release key', {
        error: describeError(err),
      });
      return { ...this.ctx.options.trust, releaseKeys: [] };
    }
  }

  async acceptNext(): Promise<void> {
    const store = this.ctx.store;
    const entry = store.state.inbox[0];
    if (!entry) return;
    let offer: UpdateOffer;
    try {
      offer = await store.loadOffer(entry.offer_file);
    } catch (err) {
      this.ctx.logger.error('stored offer unreadable; dropped', {
        file: entry.offer_file,
        error: describeError(err),
      });
      await store.update((d) => void d.inbox.shift());
      await store.deleteOffer(entry.offer_file);
      return;
    }
    const s = store.state;
    if (isRedelivery(offer, entry.offer_digest, s)) {
      this.ctx.logger.info('offer already handled; ignored', { update_id: offer.update_id });
      await store.update((d) => void d.inbox.shift());
      await store.deleteOffer(entry.offer_file);
      return;
    }
    const verdict = verifyOffer(offer, {
      vin: this.ctx.options.vin,
      now: new Date(this.ctx.expiryNow()),
      lastCounter: s.last_counter,
      trust: await this.trustAnchors(),
      ecus: s.ecus,
      ...(this.ctx.options.maxImageBytes ? { maxImageBytes: this.ctx.options.maxImageBytes } : {}),
    });
    // An authentic offer for exactly the version this ECU already runs: the state the backend wants may already be
    // reached (the update finished while this copy of the offer was on its way, or another path installed it).
    // It is completed only if the image that runs is the signed one, byte for byte (its SHA-256); a different
    // build under the same version number is refused, never reported as installed.
    let satisfied = false;
    let mismatch: string | undefined;
    if (!verdict.ok && verdict.reason === 'already_installed') {
      const active = await this.ctx.options.installers[offer.ecu]?.active();
      satisfied = active?.sha256 === offer.manifest.manifest.sha256;
      if (!satisfied) {
        mismatch = `${offer.ecu} runs ${offer.firmware_version} with a different image (SHA-256 ${active?.sha256 ?? 'unknown'}) than the signed release`;
      }
    }
    if (!verdict.ok) {
      const status = satisfied ? 'completed' : 'rejected';
      const reason = satisfied
        ? `already running ${offer.firmware_version}`
        : (mismatch ?? `${verdict.reason}: ${verdict.message}`);
      this.ctx.logger.warn(satisfied ? 'offer already satisfied' : 'offer rejected', {
        update_id: offer.update_id,
        firmware_version: offer.firmware_version,
        reason,
      });
      const now = this.ctx.runtime.now();
      await store.update((d) => {
        d.inbox.shift();
        d.recent.push({
          update_id: offer.update_id,
          firmware_version: offer.firmware_version,
          counter: offer.assignment.assignment.counter,
          offer_digest: entry.offer_digest,
          status,
          reason,
          at: new Date(now).toISOString(),
        });
        appendReport(
          d,
          {
            status,
            reason,
            ...(VERSION_PATTERN.test(offer.firmware_version)
              ? { firmware_version: offer.firmware_version }
              : {}),
            campaign_id: offer.campaign_id,
            update_id: offer.update_id,
          },
          now,
        );
      });
      this.ctx.reporter.notify();
      await store.deleteOffer(entry.offer_file);
      this.ctx.emit({
        type: 'outcome',
        update_id: offer.update_id,
        firmware_version: offer.firmware_version,
        ecu: offer.ecu,
        status,
        reason,
      });
      return;
    }
    const now = new Date(this.ctx.runtime.now()).toISOString();
    await store.update((d) => {
      d.inbox.shift();
      d.last_counter = offer.assignment.assignment.counter;
      d.current = {
        offer_file: entry.offer_file,
        offer_digest: entry.offer_digest,
        update_id: offer.update_id,
        campaign_id: offer.campaign_id,
        firmware_version: offer.firmware_version,
        ecu: offer.ecu,
        counter: offer.assignment.assignment.counter,
        phase: 'accepted',
        verified_bytes: 0,
        attempts: { download: 0, verify: 0, install: 0, unexpected: 0 },
        accepted_at: now,
      };
    });
    this.inbox.remember(entry.offer_file, offer);
    this.ctx.logger.info('offer accepted', {
      update_id: offer.update_id,
      firmware_version: offer.firmware_version,
      ecu: offer.ecu,
    });
    this.ctx.emit({
      type: 'accepted',
      update_id: offer.update_id,
      firmware_version: offer.firmware_version,
      ecu: offer.ecu,
    });
  }
}
