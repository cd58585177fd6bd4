/**
 * Acceptance of the next offer in the inbox: a redelivery is dropped quietly; otherwise the offer's assignment is
 * verified, the signed manifest it names is fetched over HTTPS (offers carry only its digest) and checked against
 * that digest, then the whole offer is verified (signatures against the current trust anchors, VIN, counter, ECU,
 * size) and either becomes the update in progress, or is refused: reported as rejected (or completed, when the ECU
 * already runs exactly that image) only when its assignment is genuinely for this vehicle.
 */

import { manifestDigest } from '../protocol/assignment.js';
import { BUNDLE_ASSIGNMENT_ECU } from '../protocol/bundle.js';
import type { SignedManifest } from '../protocol/manifest.js';
import type { UpdateOffer } from '../protocol/offer.js';
import type { DownloadAnswer } from '../protocol/responses.js';
import { VERSION_PATTERN } from '../protocol/schemas.js';
import { TRUST_ECU } from '../protocol/trust-document.js';
import { type AgentContext, RetryLater } from './agent-context.js';
import type { BundleRunner } from './bundle-runner.js';
import type { DownloadUrls } from './download-phase.js';
import { ApiError } from './errors.js';
import { describeError } from './logger.js';
import { isRedelivery, type OfferInbox } from './offer-inbox.js';
import {
  type OfferCheckContext,
  type Rejection,
  rejecter,
  verifyOffer,
  verifyOfferHeader,
} from './offer-verifier.js';
import type { TrustAnchors } from './provisioning.js';
import { appendReport } from './reporter.js';
import type { InboxEntry } from './state-store.js';
import { installedReleaseKeys } from './trust-store.js';

export class OfferAcceptance {
  constructor(
    private readonly ctx: AgentContext,
    private readonly inbox: OfferInbox,
    private readonly urls: DownloadUrls,
    /** Runs bundle offers (absent: they are refused like any offer for an ECU this vehicle lacks). */
    private readonly bundles?: BundleRunner,
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
    const checks: OfferCheckContext = {
      vin: this.ctx.options.vin,
      now: new Date(this.ctx.expiryNow()),
      lastCounter: s.last_counter,
      trust: await this.trustAnchors(),
      ecus: s.ecus,
      ...(this.ctx.options.maxImageBytes ? { maxImageBytes: this.ctx.options.maxImageBytes } : {}),
    };
    if (offer.ecu === BUNDLE_ASSIGNMENT_ECU && this.bundles) {
      // Nothing is fetched for an offer whose assignment is not genuinely for this vehicle, as below.
      const header = verifyOfferHeader(offer, checks);
      if (header) return this.refuse(entry, offer, header);
      const refusal = await this.bundles.run(offer, entry.offer_digest);
      if (refusal) return this.refuse(entry, offer, rejecter(offer, true)(refusal.reason, refusal.message));
      return;
    }
    let candidate = offer;
    if (!offer.manifest) {
      // The offer names its manifest by digest. Nothing is fetched for an offer whose assignment is not genuinely
      // for this vehicle (a forged offer must not make the car call the backend either).
      const header = verifyOfferHeader(offer, checks);
      if (header) return this.refuse(entry, offer, header);
      const fetched = await this.fetchManifest(offer);
      if ('ok' in fetched) return this.refuse(entry, offer, fetched);
      candidate = { ...offer, manifest: fetched };
    }
    const verdict = verifyOffer(candidate, checks);
    if (!verdict.ok) return this.refuse(entry, offer, verdict);
    const accepted = verdict.offer;
    // A fetched manifest is kept with the offer, in a new file: the update's phases (and a restart) read it there.
    const file = offer.manifest ? entry.offer_file : await store.saveOffer(accepted);
    const now = new Date(this.ctx.runtime.now()).toISOString();
    await store.update((d) => {
      d.inbox.shift();
      d.last_counter = accepted.assignment.assignment.counter;
      d.current = {
        offer_file: file,
        offer_digest: entry.offer_digest,
        update_id: accepted.update_id,
        campaign_id: accepted.campaign_id,
        firmware_version: accepted.firmware_version,
        ecu: accepted.ecu,
        counter: accepted.assignment.assignment.counter,
        phase: 'accepted',
        verified_bytes: 0,
        attempts: { download: 0, verify: 0, install: 0, unexpected: 0 },
        accepted_at: now,
      };
    });
    if (file !== entry.offer_file) await store.deleteOffer(entry.offer_file);
    this.inbox.remember(file, accepted);
    this.ctx.logger.info('offer accepted', {
      update_id: accepted.update_id,
      firmware_version: accepted.firmware_version,
      ecu: accepted.ecu,
    });
    this.ctx.emit({
      type: 'accepted',
      update_id: accepted.update_id,
      firmware_version: accepted.firmware_version,
      ecu: accepted.ecu,
    });
  }

  /**
   * The signed manifest the offer names, from the backend's /download answer (which also gives the download URL,
   * kept for the download), or the rejection when the backend serves none or another one. Checked here against
   * the digest the signed assignment binds; verifyOffer then checks its signatures and everything else.
   */
  private async fetchManifest(offer: UpdateOffer): Promise<SignedManifest | Rejection> {
    // Called only once the assignment verified for this vehicle.
    const refused = rejecter(offer, true);
    let answer: DownloadAnswer;
    try {
      answer = await this.ctx.options.api.download(offer.firmware_version, this.ctx.signal);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.transient) throw new RetryLater(err.code, err.message, { cause: err });
      return refused('manifest_unavailable', `the backend does not serve the manifest: ${err.code}`);
    }
    const a = offer.assignment.assignment;
    if (manifestDigest(answer.manifest.manifest) !== a.manifest_sha256) {
      return refused('manifest_mismatch', 'the backend serves another manifest than the assignment names');
    }
    if (answer.update_id === a.update_id) {
      this.urls.set(a.update_id, answer.download_url, this.ctx.runtime.now() + answer.expires_in * 1000);
    }
    return answer.manifest;
  }

  /**
   * Settles a refused offer. Reported to the backend only when its assignment is genuinely for this vehicle (and
   * then under the assignment's ids, which are signed): anyone able to publish on the offer topic can name a real
   * update in a forged offer, and a report of `rejected` would end that update. A refused offer that
   * is authentic but for exactly the version the ECU runs is `completed` if the running image is the signed one.
   */
  private async refuse(entry: InboxEntry, offer: UpdateOffer, verdict: Rejection): Promise<void> {
    const store = this.ctx.store;
    if (!verdict.authentic) {
      this.ctx.logger.warn('offer refused: its assignment is not verifiably for this vehicle; not reported', {
        claimed_update_id: offer.update_id,
        reason: `${verdict.reason}: ${verdict.message}`,
      });
      await store.update((d) => void d.inbox.shift());
      await store.deleteOffer(entry.offer_file);
      this.ctx.emit({ type: 'refused', reason: verdict.reason, message: verdict.message });
      return;
    }
    const a = offer.assignment.assignment;
    // An authentic offer for exactly the version this ECU already runs: the state the backend wants may already be
    // reached (the update finished while this copy of the offer was on its way, or another path installed it).
    // It is completed only if the image that runs is the signed one, byte for byte (its SHA-256); a different
    // build under the same version number is refused, never reported as installed.
    let satisfied = false;
    let mismatch: string | undefined;
    if (verdict.reason === 'already_installed' && verdict.offer?.manifest) {
      const active = await this.ctx.options.installers[a.ecu]?.active();
      satisfied = active?.sha256 === verdict.offer.manifest.manifest.sha256;
      if (!satisfied) {
        mismatch = `${a.ecu} runs ${a.version} with a different image (SHA-256 ${active?.sha256 ?? 'unknown'}) than the signed release`;
      }
    }
    const status = satisfied ? 'completed' : 'rejected';
    const reason = satisfied
      ? `already running ${a.version}`
      : (mismatch ?? `${verdict.reason}: ${verdict.message}`);
    this.ctx.logger.warn(satisfied ? 'offer already satisfied' : 'offer rejected', {
      update_id: a.update_id,
      firmware_version: a.version,
      reason,
    });
    const now = this.ctx.runtime.now();
    await store.update((d) => {
      d.inbox.shift();
      d.recent.push({
        update_id: a.update_id,
        firmware_version: a.version,
        counter: a.counter,
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
          ...(VERSION_PATTERN.test(a.version) ? { firmware_version: a.version } : {}),
          campaign_id: a.campaign_id,
          update_id: a.update_id,
        },
        now,
      );
    });
    this.ctx.reporter.notify();
    await store.deleteOffer(entry.offer_file);
    this.ctx.emit({
      type: 'outcome',
      update_id: a.update_id,
      firmware_version: a.version,
      ecu: a.ecu,
      status,
      reason,
    });
  }
}
