/**
 * The TCU agent: offer -> verify -> download -> verify -> wait until safe -> install -> report.
 *
 * One update runs at a time, driven by the phase stored in the state file, so a restart continues where the
 * previous run stopped: a download resumes after its last verified chunk, a verified image goes on to install,
 * and an interrupted install is settled by the A/B slots (old or new, never a mix) and reported.
 *
 * Offers arrive on MQTT (stored before they are acknowledged) or, when MQTT is unavailable, from polling
 * GET /updates/{vin} (a pending update there has no manifest: POST /download answers it with the assignment).
 * Every outcome is reported with the reason, durably; a failure never leaves unverified or half-installed
 * software active.
 *
 * Nothing here is global: a process may run many agents (fleet simulation), each with its own state folder,
 * transports and runtime.
 */
import { rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { VERSION_PATTERN } from '../lambdas/core/api-schema.js';
import { checkAssignment, manifestDigest } from '../lambdas/core/assignment.js';
import type { ReleaseManifest } from '../lambdas/core/manifest.js';
import { offerSchema, type UpdateOffer } from '../lambdas/core/offer.js';
import type { VehicleApi } from './api-client.js';
import { type BackoffPolicy, backoffDelay } from './backoff.js';
import { Downloader, type DownloaderOptions, type DownloadSource } from './downloader.js';
import { AgentError, ApiError, DownloadError, InstallError } from './errors.js';
import type { HttpTransport } from './http-transport.js';
import { type FreeSpace, verifyImageFile } from './image-file.js';
import type { EcuInstaller, ImageToInstall } from './installer.js';
import { type AgentLogger, describeError, silentLogger } from './logger.js';
import { verifyOffer } from './offer-verifier.js';
import type { TrustAnchors } from './provisioning.js';
import { ProgressThrottle } from './rate.js';
import {
  appendReport,
  Reporter,
  type ReportInput,
  type ReportPublisher,
  TERMINAL_REPORTS,
} from './reporter.js';
import { type AgentRuntime, abortReason, systemRuntime, Wakeup } from './runtime.js';
import {
  type AgentState,
  type CurrentUpdate,
  initialState,
  offerDigest,
  StateStore,
  StoreClosedError,
  type VehicleStatus,
} from './state-store.js';
import { installedReleaseKeys, TRUST_ECU } from './trust-store.js';
import {
  type InstallSafetyPolicy,
  StaticVehicleState,
  type VehicleStateProvider,
  waitUntilSafe,
} from './vehicle-state.js';

export interface EcuConfig {
  readonly ecu: string;
  readonly hardware_id: string;
  /** The version on first run; afterwards the A/B slots say what runs. */
  readonly version: string;
}

/** The MQTT side as the agent uses it (MqttSession implements it). */
export interface AgentMqttSession extends ReportPublisher {
  start(): void;
  stop(force?: boolean): Promise<void>;
}

export type AgentMqttFactory = (handlers: {
  onOffer: (payload: Buffer) => Promise<void>;
  onConnectionChange: (connected: boolean, sessionPresent?: boolean) => void;
}) => AgentMqttSession;

export type InstallStep = 'write' | 'activate' | 'health' | 'commit';

/** Points where tests (or diagnostics) can observe or freeze the agent; each is awaited. */
export interface AgentHooks {
  onChunkVerified?(info: { update_id: string; index: number; verifiedBytes: number }): Promise<void> | void;
  beforeInstallStep?(
    step: InstallStep,
    info: { update_id: string; ecu: string; version: string },
  ): Promise<void> | void;
}

export type AgentEvent =
  | { type: 'offer'; source: 'mqtt' | 'poll'; update_id: string; firmware_version: string; counter: number }
  | { type: 'poll'; reason: 'interval' | 'catch_up'; pending: number }
  /** The accepted assignment had expired by install time and the backend signed a fresh one. */
  | { type: 'renewed'; update_id: string; expires_at: string }
  | { type: 'accepted'; update_id: string; firmware_version: string; ecu: string }
  | {
      type: 'phase';
      update_id: string;
      firmware_version: string;
      phase: 'downloading' | 'verifying' | 'waiting' | 'installing';
    }
  | {
      type: 'progress';
      update_id: string;
      firmware_version: string;
      phase: 'downloading' | 'installing';
      bytes: number;
      total: number;
      percent: number;
      bytesPerSecond: number;
    }
  | { type: 'request'; update_id: string; offset: number; end: number }
  /** A download URL was asked for; refresh: the previous one was refused (expired). */
  | { type: 'url'; update_id: string; refresh: boolean }
  | { type: 'deferred'; update_id: string; reason: string }
  | {
      type: 'outcome';
      update_id: string;
      firmware_version: string;
      ecu: string;
      status: VehicleStatus;
      reason?: string;
    }
  | { type: 'connection'; connected: boolean }
  | { type: 'error'; message: string };

export interface VehicleAgentOptions {
  readonly vin: string;
  /** The agent's own folder: state.json, offers/, downloads/. */
  readonly stateDir: string;
  readonly trust: TrustAnchors;
  /** ECU inventory for the first run. */
  readonly ecus: readonly EcuConfig[];
  /** One installer per ECU name. */
  readonly installers: Readonly<Record<string, EcuInstaller>>;
  readonly api: VehicleApi;
  /** Transport for image downloads (presigned S3 URLs). */
  readonly transport: HttpTransport;
  /** Makes the MQTT session; omit for polling only. */
  readonly mqtt?: AgentMqttFactory;
  /** @default always parked with a full battery */
  readonly vehicleState?: VehicleStateProvider;
  /** @default parked, battery >= 50 %, checked every 10 s */
  readonly safety?: InstallSafetyPolicy & { readonly pollMs?: number };
  readonly download?: DownloaderOptions;
  readonly budgets?: {
    /** Download runs (each with the downloader's own retries) that may fail before the update fails. @default 3 */
    readonly downloadRuns?: number;
    /** Whole-image verifications that may fail (each followed by a fresh download). @default 2 */
    readonly verifyAttempts?: number;
    /** Install attempts (an attempt interrupted before switching slots counts). @default 2 */
    readonly installAttempts?: number;
  };
  readonly polling?: {
    /** Poll interval while MQTT is unavailable (or not configured). @default 60000 */
    readonly intervalMs?: number;
    /** Poll interval while MQTT is connected, as a safety net; 0 disables. @default 3600000 */
    readonly connectedIntervalMs?: number;
    /** MQTT down this long counts as unavailable. @default 30000 */
    readonly mqttGraceMs?: number;
  };
  /** Delay policy between a failed download run and the next, and while the backend is unreachable. */
  readonly retryBackoff?: BackoffPolicy;
  readonly reportBackoff?: BackoffPolicy;
  /** Offers waiting at most. @default 16 */
  readonly maxInbox?: number;
  /** @default 16 GiB */
  readonly maxImageBytes?: number;
  readonly freeSpace?: FreeSpace;
  readonly runtime?: AgentRuntime;
  readonly logger?: AgentLogger;
  readonly hooks?: AgentHooks;
}

/** A later retry of the same step (the backend is unreachable); no budget is consumed. */
class RetryLater extends AgentError {}

const DEFAULT_RETRY_BACKOFF: BackoffPolicy = { baseMs: 2000, maxMs: 300_000 };

export class VehicleAgent {
  private store: StateStore | undefined;
  private reporterInstance: Reporter | undefined;
  private session: AgentMqttSession | undefined;
  private readonly abort = new AbortController();
  private readonly workWake = new Wakeup();
  private readonly pollWake = new Wakeup();
  private worker: Promise<void> | undefined;
  private poller: Promise<void> | undefined;
  private killed = false;
  private readonly listeners = new Set<(e: AgentEvent) => void>();
  private readonly urls = new Map<string, { url: string; expiresAt: number }>();
  private readonly offers = new Map<string, UpdateOffer>();
  private readonly downloader: Downloader;
  private readonly runtime: AgentRuntime;
  private readonly logger: AgentLogger;
  private mqttDownSince: number;
  private lastPollAt = Number.NEGATIVE_INFINITY;
  /** Poll once as soon as the agent is not busy, whatever the interval (set after losing the MQTT session). */
  private catchUp = false;
  /** Whole-image digests the downloader computed in this process, by .part file. */
  private readonly streamedDigests = new Map<string, string>();
  /** Expiry of assignments renewed in this process, by update (the stored offer keeps the original). */
  private readonly renewals = new Map<string, number>();
  private mqttConnectedBefore = false;
  private retryLaterCount = 0;

  constructor(private readonly options: VehicleAgentOptions) {
    this.runtime = options.runtime ?? systemRuntime;
    this.logger = options.logger ?? silentLogger;
    this.downloader = new Downloader(options.transport, options.download, {
      runtime: this.runtime,
      logger: this.logger,
      ...(options.freeSpace ? { freeSpace: options.freeSpace } : {}),
    });
    this.mqttDownSince = this.runtime.now();
    for (const e of options.ecus) {
      if (!options.installers[e.ecu]) throw new AgentError('no_installer', `no installer for ECU ${e.ecu}`);
    }
  }

  get vin(): string {
    return this.options.vin;
  }

  /** The durable state (read-only); undefined before start(). */
  get state(): Readonly<AgentState> | undefined {
    return this.store?.state;
  }

  get mqttConnected(): boolean {
    return this.session?.connected ?? false;
  }

  onEvent(listener: (e: AgentEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(): Promise<void> {
    if (this.store) throw new AgentError('already_started', 'the agent is already started');
    const o = this.options;
    const inventory = Object.fromEntries(
      o.ecus.map((e) => [e.ecu, { hardware_id: e.hardware_id, version: e.version }]),
    );
    this.store = await StateStore.open(o.stateDir, () => initialState(o.vin, inventory));
    if (this.store.state.vin !== o.vin) {
      throw new AgentError('wrong_state', `${o.stateDir} belongs to ${this.store.state.vin}, not ${o.vin}`);
    }
    this.reporterInstance = new Reporter({
      vin: o.vin,
      store: this.store,
      api: o.api,
      mqtt: () => this.session,
      runtime: this.runtime,
      logger: this.logger,
      ...(o.reportBackoff ? { backoff: o.reportBackoff } : {}),
    });
    await this.recover();
    this.reporterInstance.start();
    if (o.mqtt) {
      this.session = o.mqtt({
        onOffer: (payload) => this.receiveOffer(payload, 'mqtt'),
        onConnectionChange: (connected, sessionPresent) => {
          if (!connected) this.mqttDownSince = this.runtime.now();
          // A reconnect without our session: whatever the backend published while we were away is lost at the
          // broker, so ask the backend directly instead of waiting for the campaign's deadline to re-offer.
          // (The first connection is covered by the poll every start makes.)
          if (connected && sessionPresent === false && this.mqttConnectedBefore) this.catchUp = true;
          if (connected) this.mqttConnectedBefore = true;
          this.emit({ type: 'connection', connected });
          this.pollWake.notify();
          if (connected) this.reporterInstance?.notify();
        },
      });
      this.session.start();
    }
    this.worker = this.workLoop();
    this.poller = this.pollLoop();
  }

  /** Graceful stop: the update in progress keeps its phase and resumes on the next start. */
  async stop(): Promise<void> {
    if (this.abort.signal.aborted) return;
    this.abort.abort(new AgentError('stopped', 'the agent is stopping'));
    this.workWake.notify();
    this.pollWake.notify();
    await this.session?.stop();
    const settle = (p: Promise<void> | undefined) =>
      Promise.race([p ?? Promise.resolve(), this.runtime.sleep(5000)]);
    await settle(this.worker);
    await settle(this.poller);
    await this.reporterInstance?.stop();
    this.store?.close();
  }

  /**
   * Simulated power cut: from now on nothing is written (state, slots, reports) and connections drop without
   * goodbye. Work suspended in a hook stays suspended. A new agent on the same folder is the "reboot".
   */
  kill(): void {
    this.killed = true;
    this.store?.close();
    this.abort.abort(new AgentError('killed', 'power cut'));
    void this.session?.stop(true);
    void this.reporterInstance?.stop();
    this.workWake.notify();
    this.pollWake.notify();
  }

  /** Resolves once no offer waits, no update runs and every report is acknowledged. */
  async whenIdle(pollMs = 25): Promise<void> {
    for (;;) {
      const s = this.store?.state;
      if (this.abort.signal.aborted) return;
      if (s && s.current === null && s.inbox.length === 0 && s.pending_reports.length === 0) return;
      await this.runtime.sleep(pollMs);
    }
  }

  /** Asks the polling loop to poll now. */
  pollNow(): void {
    this.lastPollAt = Number.NEGATIVE_INFINITY;
    this.pollWake.notify();
  }

  private get stateStore(): StateStore {
    if (!this.store) throw new AgentError('not_started', 'the agent is not started');
    return this.store;
  }

  private get reporter(): Reporter {
    if (!this.reporterInstance) throw new AgentError('not_started', 'the agent is not started');
    return this.reporterInstance;
  }

  private emit(event: AgentEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.logger.warn('event listener failed', { error: describeError(err) });
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Restart recovery

  /** Settles every ECU's A/B state, then decides an install that was interrupted by the last shutdown. */
  private async recover(): Promise<void> {
    const store = this.stateStore;
    const reverted = new Map<string, string>();
    const active = new Map<string, { version: string; sha256: string }>();
    for (const ecu of Object.keys(store.state.ecus)) {
      const installer = this.options.installers[ecu];
      if (!installer) continue;
      const report = await installer.recover();
      active.set(ecu, report.active);
      if (report.revertedTrial) {
        reverted.set(ecu, report.revertedTrial.sha256);
        this.logger.warn('an unconfirmed install was found at start-up and switched back', {
          ecu,
          reverted: report.revertedTrial.version,
          active: report.active.version,
        });
      }
    }
    await store.update((s) => {
      for (const [ecu, a] of active) {
        const e = s.ecus[ecu];
        if (e) e.version = a.version;
      }
    });
    const cur = store.state.current;
    if (cur?.phase !== 'installing') return;
    const offer = await this.loadOffer(cur);
    const m = offer.manifest.manifest;
    if (active.get(cur.ecu)?.sha256 === m.sha256) {
      this.logger.info('install had been committed before the restart', { firmware_version: m.version });
      await this.finishAndClean(cur, m, 'completed');
    } else if (reverted.get(cur.ecu) === m.sha256) {
      await this.finishAndClean(
        cur,
        m,
        'rolled_back',
        `interrupted before ${m.version} was confirmed healthy; ${active.get(cur.ecu)?.version ?? 'the previous version'} restored`,
      );
    }
    // Otherwise nothing was switched: the old version runs and the install is attempted again (within budget).
  }

  // ---------------------------------------------------------------------------------------------------------
  // Offers

  /** Stores an offer (MQTT or polled) in the inbox. Resolving means it is durable: MQTT may acknowledge it. */
  private async receiveOffer(payload: Buffer, source: 'mqtt' | 'poll'): Promise<void> {
    const store = this.stateStore;
    let json: unknown;
    try {
      json = JSON.parse(payload.toString('utf8'));
    } catch {
      this.logger.warn('offer is not JSON; ignored', { source, bytes: payload.length });
      return;
    }
    const parsed = offerSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const reason = `invalid_offer: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'malformed'}`;
      this.logger.warn('malformed offer rejected', { source, reason });
      const version = (json as { firmware_version?: unknown } | null)?.firmware_version;
      if (typeof version === 'string' && VERSION_PATTERN.test(version)) {
        await this.reporter.status({ status: 'rejected', firmware_version: version, reason });
      }
      return;
    }
    const offer = parsed.data;
    const counter = offer.assignment.assignment.counter;
    const s = store.state;
    const digest = offerDigest(offer);
    if (s.inbox.some((i) => i.offer_digest === digest)) return;
    if (s.inbox.length >= (this.options.maxInbox ?? 16)) {
      this.logger.error('offer inbox full; offer dropped', { update_id: offer.update_id });
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
        received_at: new Date(this.runtime.now()).toISOString(),
      });
    });
    this.emit({
      type: 'offer',
      source,
      update_id: offer.update_id,
      firmware_version: offer.firmware_version,
      counter,
    });
    this.workWake.notify();
  }

  /**
   * The anchors offers are checked against. With a release-keys pseudo-ECU (trust-store.ts), the release keys are
   * the ones its active slot names: rotated by a signed update, read at each check so a committed rotation applies
   * to the very next offer. An unreadable key set trusts nothing (fail closed) rather than the factory keys, which
   * the rotation may have revoked.
   */
  private async trustAnchors(): Promise<TrustAnchors> {
    const installer = this.options.installers[TRUST_ECU];
    if (!installer || !this.stateStore.state.ecus[TRUST_ECU]) return this.options.trust;
    try {
      const releaseKeys = await installedReleaseKeys(installer);
      return releaseKeys ? { ...this.options.trust, releaseKeys } : this.options.trust;
    } catch (err) {
      this.logger.error('the installed release-key set is unreadable; trusting no release key', {
        error: describeError(err),
      });
      return { ...this.options.trust, releaseKeys: [] };
    }
  }

  /** A redelivery of an offer already handled or in progress (QoS 1 may deliver twice), or of a finished update. */
  private isRedelivery(offer: UpdateOffer, digest: string, s: Readonly<AgentState>): boolean {
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

  private async acceptNext(): Promise<void> {
    const store = this.stateStore;
    const entry = store.state.inbox[0];
    if (!entry) return;
    let offer: UpdateOffer;
    try {
      offer = await store.loadOffer(entry.offer_file);
    } catch (err) {
      this.logger.error('stored offer unreadable; dropped', {
        file: entry.offer_file,
        error: describeError(err),
      });
      await store.update((d) => void d.inbox.shift());
      await store.deleteOffer(entry.offer_file);
      return;
    }
    const s = store.state;
    if (this.isRedelivery(offer, entry.offer_digest, s)) {
      this.logger.info('offer already handled; ignored', { update_id: offer.update_id });
      await store.update((d) => void d.inbox.shift());
      await store.deleteOffer(entry.offer_file);
      return;
    }
    const verdict = verifyOffer(offer, {
      vin: this.options.vin,
      now: new Date(this.runtime.now()),
      lastCounter: s.last_counter,
      trust: await this.trustAnchors(),
      ecus: s.ecus,
      ...(this.options.maxImageBytes ? { maxImageBytes: this.options.maxImageBytes } : {}),
    });
    // An authentic offer for exactly the version this ECU already runs: the state the backend wants may already be
    // reached (the update finished while this copy of the offer was on its way, or another path installed it).
    // It is completed only if the image that runs is the signed one, byte for byte (its SHA-256); a different
    // build under the same version number is refused, never reported as installed.
    let satisfied = false;
    let mismatch: string | undefined;
    if (!verdict.ok && verdict.reason === 'already_installed') {
      const active = await this.options.installers[offer.ecu]?.active();
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
      this.logger.warn(satisfied ? 'offer already satisfied' : 'offer rejected', {
        update_id: offer.update_id,
        firmware_version: offer.firmware_version,
        reason,
      });
      const now = this.runtime.now();
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
      this.reporter.notify();
      await store.deleteOffer(entry.offer_file);
      this.emit({
        type: 'outcome',
        update_id: offer.update_id,
        firmware_version: offer.firmware_version,
        ecu: offer.ecu,
        status,
        reason,
      });
      return;
    }
    const now = new Date(this.runtime.now()).toISOString();
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
    this.offers.set(entry.offer_file, offer);
    this.logger.info('offer accepted', {
      update_id: offer.update_id,
      firmware_version: offer.firmware_version,
      ecu: offer.ecu,
    });
    this.emit({
      type: 'accepted',
      update_id: offer.update_id,
      firmware_version: offer.firmware_version,
      ecu: offer.ecu,
    });
  }

  private async loadOffer(cur: CurrentUpdate): Promise<UpdateOffer> {
    const cached = this.offers.get(cur.offer_file);
    if (cached) return cached;
    const offer = await this.stateStore.loadOffer(cur.offer_file);
    this.offers.set(cur.offer_file, offer);
    return offer;
  }

  // ---------------------------------------------------------------------------------------------------------
  // The work loop

  private async workLoop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        const s = this.stateStore.state;
        if (s.current) await this.runCurrent(s.current);
        else if (s.inbox.length > 0) await this.acceptNext();
        else await this.workWake.wait(this.runtime, 60_000, signal);
        this.retryLaterCount = 0;
      } catch (err) {
        if (signal.aborted || this.killed || err instanceof StoreClosedError) return;
        if (err instanceof RetryLater) {
          const wait = backoffDelay(
            this.retryLaterCount++,
            this.options.retryBackoff ?? DEFAULT_RETRY_BACKOFF,
            () => this.runtime.random(),
          );
          this.logger.warn('backend unreachable; retrying later', { in_ms: wait, error: err.message });
          await this.runtime.sleep(wait, signal).catch(() => {});
          continue;
        }
        await this.unexpected(err).catch((e: unknown) => {
          this.logger.error('could not settle after an unexpected error', { error: describeError(e) });
        });
      }
    }
  }

  /** A bug or an environment failure (disk): retry a few times, then settle the A/B state and report failed. */
  private async unexpected(err: unknown): Promise<void> {
    const message = describeError(err);
    this.logger.error('unexpected error in the update flow', {
      error: message,
      stack: (err as Error)?.stack,
    });
    this.emit({ type: 'error', message });
    const cur = this.stateStore.state.current;
    if (!cur) {
      await this.runtime.sleep(1000, this.abort.signal).catch(() => {});
      return;
    }
    const attempts = cur.attempts.unexpected + 1;
    await this.stateStore.update((d) => {
      if (d.current) d.current.attempts.unexpected = attempts;
    });
    if (attempts < 3) {
      await this.runtime
        .sleep(
          backoffDelay(attempts, { baseMs: 1000, maxMs: 30_000 }, () => this.runtime.random()),
          this.abort.signal,
        )
        .catch(() => {});
      return;
    }
    const installer = this.options.installers[cur.ecu];
    const active = installer ? (await installer.recover()).active : undefined;
    const offer = await this.loadOffer(cur).catch(() => undefined);
    const reason = `internal error: ${message}; ${active ? `${active.version} runs` : 'previous version kept'}`;
    if (!offer) await this.finish(cur, 'failed', reason);
    else if (active?.sha256 === offer.manifest.manifest.sha256)
      await this.finishAndClean(cur, offer.manifest.manifest, 'completed');
    else await this.finishAndClean(cur, offer.manifest.manifest, 'failed', reason);
  }

  private async runCurrent(cur: CurrentUpdate): Promise<void> {
    const offer = await this.loadOffer(cur);
    switch (cur.phase) {
      case 'accepted':
      case 'downloading':
        return this.runDownload(cur, offer);
      case 'downloaded':
        return this.runVerify(cur, offer);
      case 'verified':
      case 'installing':
        return this.runInstall(cur, offer);
    }
  }

  private partFile(m: ReleaseManifest): string {
    return join(this.stateStore.downloadsDir, `${m.sha256}.part`);
  }

  private imageFile(m: ReleaseManifest): string {
    return join(this.stateStore.downloadsDir, `${m.sha256}.img`);
  }

  private base(cur: CurrentUpdate): Omit<ReportInput, 'status'> {
    return { firmware_version: cur.firmware_version, campaign_id: cur.campaign_id, update_id: cur.update_id };
  }

  private urlSource(offer: UpdateOffer): DownloadSource {
    return {
      url: async (refresh, signal) => {
        const cached = this.urls.get(offer.update_id);
        if (!refresh && cached && cached.expiresAt - 5000 > this.runtime.now()) return cached.url;
        this.emit({ type: 'url', update_id: offer.update_id, refresh });
        const answer = await this.options.api.download(offer.firmware_version, signal);
        if (manifestDigest(answer.manifest.manifest) !== manifestDigest(offer.manifest.manifest)) {
          throw new AgentError(
            'manifest_changed',
            'the backend now serves another manifest for this version',
          );
        }
        this.urls.set(offer.update_id, {
          url: answer.download_url,
          expiresAt: this.runtime.now() + answer.expires_in * 1000,
        });
        return answer.download_url;
      },
    };
  }

  private async runDownload(cur: CurrentUpdate, offer: UpdateOffer): Promise<void> {
    const store = this.stateStore;
    const m = offer.manifest.manifest;
    if (cur.phase === 'accepted') {
      await store.update((d) => {
        if (d.current) d.current.phase = 'downloading';
      });
      await this.reporter.status({ status: 'downloading', progress: 0, ...this.base(cur) });
    }
    this.emit({ type: 'phase', update_id: cur.update_id, firmware_version: m.version, phase: 'downloading' });
    const throttle = new ProgressThrottle();
    try {
      const stats = await this.downloader.download({
        manifest: m,
        file: this.partFile(m),
        verifiedBytes: store.state.current?.verified_bytes ?? 0,
        source: this.urlSource(offer),
        signal: this.abort.signal,
        onProgress: (bytes, bytesPerSecond) => {
          const percent = (bytes * 100) / m.size;
          this.emit({
            type: 'progress',
            update_id: cur.update_id,
            firmware_version: m.version,
            phase: 'downloading',
            bytes,
            total: m.size,
            percent,
            bytesPerSecond,
          });
          if (throttle.shouldReport(percent, this.runtime.now())) {
            void this.reporter.progress({ status: 'downloading', progress: percent, ...this.base(cur) });
          }
        },
        onCheckpoint: (verified) =>
          store.update((d) => {
            if (d.current) d.current.verified_bytes = verified;
          }),
        onRequest: (r) => this.emit({ type: 'request', update_id: cur.update_id, ...r }),
        onChunkVerified: (info) =>
          this.options.hooks?.onChunkVerified?.({ update_id: cur.update_id, ...info }),
      });
      this.logger.info('download complete', { firmware_version: m.version, ...stats });
      this.streamedDigests.set(this.partFile(m), stats.sha256);
    } catch (err) {
      if (this.abort.signal.aborted) throw abortReason(this.abort.signal);
      if (err instanceof ApiError) {
        if (err.transient) throw new RetryLater(err.code, err.message, { cause: err });
        await this.finishAndClean(cur, m, 'failed', `the backend refused a download URL: ${err.message}`);
        return;
      }
      if (err instanceof AgentError && err.code === 'manifest_changed') {
        await this.finishAndClean(cur, m, 'failed', err.message);
        return;
      }
      if (!(err instanceof DownloadError)) throw err;
      if (err.failure === 'corrupt') {
        await this.finishAndClean(cur, m, 'verification_failed', `${err.message}; the image was deleted`);
        return;
      }
      const runs = cur.attempts.download + 1;
      const budget = this.options.budgets?.downloadRuns ?? 3;
      if (runs >= budget || err.failure === 'no_space' || err.failure === 'bad_response') {
        await this.finishAndClean(cur, m, 'failed', `download failed: ${err.message}`);
        return;
      }
      await store.update((d) => {
        if (d.current) d.current.attempts.download = runs;
      });
      const wait = backoffDelay(runs, this.options.retryBackoff ?? DEFAULT_RETRY_BACKOFF, () =>
        this.runtime.random(),
      );
      this.logger.warn('download run failed; retrying later', {
        error: err.message,
        run: runs,
        budget,
        in_ms: wait,
      });
      await this.runtime.sleep(wait, this.abort.signal);
      return;
    }
    await store.update((d) => {
      if (d.current) {
        d.current.phase = 'downloaded';
        d.current.verified_bytes = m.size;
      }
    });
    await this.reporter.status({ status: 'downloaded', ...this.base(cur) });
  }

  private async runVerify(cur: CurrentUpdate, offer: UpdateOffer): Promise<void> {
    const store = this.stateStore;
    const m = offer.manifest.manifest;
    this.emit({ type: 'phase', update_id: cur.update_id, firmware_version: m.version, phase: 'verifying' });
    await this.reporter.status({ status: 'verifying', ...this.base(cur) });
    const part = this.partFile(m);
    // The digest the downloader computed over the bytes it wrote, in this process; after a restart the file is
    // read back instead.
    const streamed = this.streamedDigests.get(part);
    this.streamedDigests.delete(part);
    let problems: string[];
    try {
      problems =
        streamed === undefined
          ? await verifyImageFile(part, m, this.abort.signal)
          : streamed === m.sha256
            ? []
            : [`whole-image SHA-256 ${streamed} is not the manifest's ${m.sha256}`];
    } catch (err) {
      if (this.abort.signal.aborted) throw abortReason(this.abort.signal);
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      problems = ['the downloaded image is missing'];
    }
    if (problems.length === 0) {
      await rename(part, this.imageFile(m));
      await store.update((d) => {
        if (d.current) d.current.phase = 'verified';
      });
      this.logger.info('image verified', { firmware_version: m.version, sha256: m.sha256 });
      return;
    }
    await this.imageRefused(cur, m, problems);
  }

  /**
   * The image failed its whole-image check, at the verify step or while the installer read it (damaged on disk
   * after the download): delete it and download again, or give up with verification_failed once the budget is
   * spent. Nothing was activated either way.
   */
  private async imageRefused(cur: CurrentUpdate, m: ReleaseManifest, problems: string[]): Promise<void> {
    await rm(this.partFile(m), { force: true });
    await rm(this.imageFile(m), { force: true });
    const attempts = cur.attempts.verify + 1;
    const budget = this.options.budgets?.verifyAttempts ?? 2;
    this.logger.error('image does not match the signed manifest; deleted', {
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
    await this.stateStore.update((d) => {
      if (d.current) {
        d.current.attempts.verify = attempts;
        // A damaged source is not an interrupted install: it does not spend the install budget.
        if (installing) d.current.attempts.install = Math.max(0, d.current.attempts.install - 1);
        d.current.phase = 'downloading';
        d.current.verified_bytes = 0;
      }
    });
  }

  private async runInstall(cur: CurrentUpdate, offer: UpdateOffer): Promise<void> {
    const store = this.stateStore;
    const m = offer.manifest.manifest;
    const installer = this.options.installers[cur.ecu];
    if (!installer) {
      await this.finishAndClean(cur, m, 'failed', `no installer for ECU ${cur.ecu}`);
      return;
    }
    const imagePath = this.imageFile(m);
    if (!(await exists(imagePath))) {
      this.logger.warn('verified image missing before install; downloading again', {
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
    const installBudget = this.options.budgets?.installAttempts ?? 2;
    if (cur.attempts.install >= installBudget) {
      const active = await installer.active();
      await this.finishAndClean(
        cur,
        m,
        'failed',
        `installation interrupted ${cur.attempts.install} times; ${active.version} kept`,
      );
      return;
    }

    this.emit({ type: 'phase', update_id: cur.update_id, firmware_version: m.version, phase: 'waiting' });
    await waitUntilSafe(this.options.vehicleState ?? new StaticVehicleState(), this.options.safety ?? {}, {
      runtime: this.runtime,
      signal: this.abort.signal,
      pollMs: this.options.safety?.pollMs ?? 10_000,
      onDeferred: (reason) => {
        this.logger.info('installation deferred', { firmware_version: m.version, reason });
        this.emit({ type: 'deferred', update_id: cur.update_id, reason });
      },
    });

    if (await this.cancelledByBackend(cur)) {
      await this.finishAndClean(
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
    await this.reporter.status({ status: 'installing', progress: 0, ...this.base(cur) });
    this.emit({ type: 'phase', update_id: cur.update_id, firmware_version: m.version, phase: 'installing' });

    const image: ImageToInstall = { path: imagePath, version: m.version, size: m.size, sha256: m.sha256 };
    const info = { update_id: cur.update_id, ecu: cur.ecu, version: m.version };
    const hook = async (step: InstallStep) => {
      await this.options.hooks?.beforeInstallStep?.(step, info);
      if (this.abort.signal.aborted) throw abortReason(this.abort.signal);
    };
    const throttle = new ProgressThrottle();
    try {
      await hook('write');
      await installer.writeInactive(image, {
        signal: this.abort.signal,
        onProgress: (written) => {
          const percent = (written * 100) / m.size;
          this.emit({
            type: 'progress',
            update_id: cur.update_id,
            firmware_version: m.version,
            phase: 'installing',
            bytes: written,
            total: m.size,
            percent,
            bytesPerSecond: 0,
          });
          if (throttle.shouldReport(percent, this.runtime.now())) {
            void this.reporter.progress({
              status: 'installing',
              progress: Math.min(99, percent),
              ...this.base(cur),
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
        await this.finishAndClean(
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
      if (this.abort.signal.aborted || this.killed) throw abortReason(this.abort.signal);
      if (err instanceof InstallError && err.code === 'image_damaged') {
        // Caught before anything was activated: the inactive slot was only written, and is marked empty again.
        const now = this.stateStore.state.current;
        if (now) await this.imageRefused(now, m, [err.message]);
        return;
      }
      // Whatever failed, the A/B state decides what runs; settle it and report exactly that.
      const settled = await installer.recover();
      if (settled.active.sha256 === m.sha256) {
        await this.finishAndClean(cur, m, 'completed');
      } else if (settled.revertedTrial) {
        await this.finishAndClean(
          cur,
          m,
          'rolled_back',
          `install failed after activation (${describeError(err)}); ${settled.active.version} restored`,
        );
      } else {
        await this.finishAndClean(
          cur,
          m,
          'failed',
          `install failed (${describeError(err)}); ${settled.active.version} kept`,
        );
      }
      return;
    }
    await this.finishAndClean(cur, m, 'completed');
  }

  /**
   * Asks the backend, just before writing to the ECU, whether the update was cancelled meanwhile (a campaign
   * cancelled while this car downloaded or waited for a safe moment). Best effort: a car that cannot reach the
   * backend installs what it accepted while the assignment is valid.
   */
  private async cancelledByBackend(cur: CurrentUpdate): Promise<boolean> {
    try {
      const list = await this.options.api.listUpdates(this.abort.signal);
      return list.updates.some((u) => u.update_id === cur.update_id && u.status === 'cancelled');
    } catch (err) {
      if (this.abort.signal.aborted) throw abortReason(this.abort.signal);
      this.logger.warn('could not ask the backend before installing; going ahead', {
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
  private async stillAuthorized(cur: CurrentUpdate, offer: UpdateOffer): Promise<boolean> {
    const m = offer.manifest.manifest;
    if (Date.parse(offer.assignment.assignment.expires_at) > this.runtime.now()) return true;
    const renewed = this.renewals.get(cur.update_id);
    if (renewed !== undefined && renewed > this.runtime.now()) return true;
    let answer: Awaited<ReturnType<VehicleApi['download']>>;
    try {
      answer = await this.options.api.download(offer.firmware_version, this.abort.signal);
    } catch (err) {
      if (this.abort.signal.aborted) throw abortReason(this.abort.signal);
      if (err instanceof ApiError && !err.transient) {
        await this.finishAndClean(
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
      keys: this.options.trust.backendKeys,
      vin: this.options.vin,
      now: new Date(this.runtime.now()),
      lastCounter: cur.counter,
      manifest: m,
    });
    const problem = !check.ok
      ? check.reason
      : fresh.assignment.update_id !== cur.update_id
        ? 'another update'
        : undefined;
    if (problem) {
      await this.finishAndClean(
        cur,
        m,
        'rejected',
        `the assignment expired before installation and its renewal was refused: ${problem}`,
      );
      return false;
    }
    const counter = fresh.assignment.counter;
    await this.stateStore.update((d) => {
      d.last_counter = Math.max(d.last_counter, counter);
    });
    this.renewals.set(cur.update_id, Date.parse(fresh.assignment.expires_at));
    this.logger.info('assignment renewed before installation', {
      update_id: cur.update_id,
      expires_at: fresh.assignment.expires_at,
    });
    this.emit({ type: 'renewed', update_id: cur.update_id, expires_at: fresh.assignment.expires_at });
    return true;
  }

  private async finishAndClean(
    cur: CurrentUpdate,
    m: ReleaseManifest,
    status: VehicleStatus,
    reason?: string,
  ): Promise<void> {
    await this.finish(cur, status, reason);
    await rm(this.partFile(m), { force: true });
    await rm(this.imageFile(m), { force: true });
  }

  /**
   * Ends the update: in one durable write the outcome report is queued, the outcome recorded, the installed
   * version updated (completed only) and the update cleared. Then files are removed and listeners told.
   */
  private async finish(cur: CurrentUpdate, status: VehicleStatus, reason?: string): Promise<void> {
    if (!TERMINAL_REPORTS.has(status)) throw new AgentError('not_terminal', `${status} is not an outcome`);
    const now = this.runtime.now();
    await this.stateStore.update((d) => {
      appendReport(d, { status, ...this.base(cur), ...(reason !== undefined ? { reason } : {}) }, now);
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
    this.reporter.notify();
    this.urls.delete(cur.update_id);
    this.offers.delete(cur.offer_file);
    await this.stateStore.deleteOffer(cur.offer_file);
    const entry = { update_id: cur.update_id, firmware_version: cur.firmware_version, status, reason };
    if (status === 'completed') this.logger.info('update finished', entry);
    else this.logger.warn('update finished', entry);
    this.emit({
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

  private pollIntervalMs(): number | undefined {
    const p = this.options.polling ?? {};
    const interval = p.intervalMs ?? 60_000;
    if (!this.session) return interval;
    const mqttUsable =
      this.session.connected || this.runtime.now() - this.mqttDownSince < (p.mqttGraceMs ?? 30_000);
    if (!mqttUsable) return interval;
    const connected = p.connectedIntervalMs ?? 3_600_000;
    return connected > 0 ? connected : undefined;
  }

  private async pollLoop(): Promise<void> {
    const signal = this.abort.signal;
    let failures = 0;
    let notBefore = 0;
    while (!signal.aborted) {
      const interval = this.pollIntervalMs();
      const now = this.runtime.now();
      const s = this.store?.state;
      // Busy: a poll could only queue more work, and would spend the vehicle's API rate budget meanwhile.
      const busy = !s || s.current !== null || s.inbox.length > 0;
      const due = this.catchUp || (interval !== undefined && now - this.lastPollAt >= interval);
      if (due && !busy && now >= notBefore) {
        this.lastPollAt = now;
        const catchingUp = this.catchUp;
        this.catchUp = false;
        try {
          const pending = await this.pollOnce();
          this.emit({ type: 'poll', reason: catchingUp ? 'catch_up' : 'interval', pending });
          failures = 0;
        } catch (err) {
          if (signal.aborted || err instanceof StoreClosedError) return;
          // A failed catch-up stays owed; it is retried after the same backoff as any failed poll.
          if (catchingUp) this.catchUp = true;
          const base = interval ?? 60_000;
          const wait = Math.max(
            err instanceof ApiError ? (err.retryAfterMs ?? 0) : 0,
            backoffDelay(failures++, { baseMs: base, maxMs: Math.max(base, 600_000) }, () =>
              this.runtime.random(),
            ),
          );
          notBefore = this.runtime.now() + wait;
          this.logger.warn('polling for updates failed', { error: describeError(err), next_in_ms: wait });
        }
      }
      await this.pollWake.wait(this.runtime, Math.min(interval ?? 1000, 1000), signal);
    }
  }

  /**
   * One poll of GET /updates/{vin}: each pending update not yet known here becomes an offer via /download.
   * Answers how many updates the backend listed as pending.
   */
  async pollOnce(): Promise<number> {
    const signal = this.abort.signal;
    const list = await this.options.api.listUpdates(signal);
    for (const u of list.pending) {
      const s = this.stateStore.state;
      const known =
        (s.current && s.current.firmware_version === u.firmware_version && s.current.ecu === u.ecu) ||
        s.inbox.some((i) => i.firmware_version === u.firmware_version && i.ecu === u.ecu) ||
        s.pending_reports.some(
          (p) => TERMINAL_REPORTS.has(p.status) && p.firmware_version === u.firmware_version,
        ) ||
        !VERSION_PATTERN.test(u.firmware_version);
      // Not skipped when the ECU already runs that version: the backend still counts the update as open (its
      // offer was lost, or it was installed under another update), and only the signed offer /download answers
      // lets the agent check it is the very image that runs (SHA-256) and report it completed.
      if (known) continue;
      let answer: Awaited<ReturnType<VehicleApi['download']>>;
      try {
        answer = await this.options.api.download(u.firmware_version, signal);
      } catch (err) {
        if (err instanceof ApiError && !err.transient) {
          // The backend will never serve it to this vehicle (e.g. downgrade refused): close it honestly.
          this.logger.warn('pending update cannot be downloaded; rejecting it', {
            firmware_version: u.firmware_version,
            code: err.code,
          });
          await this.reporter.status({
            status: 'rejected',
            firmware_version: u.firmware_version,
            campaign_id: u.campaign_id ?? null,
            reason: `backend refused the download: ${err.code}`,
          });
          continue;
        }
        throw err;
      }
      this.urls.set(answer.update_id, {
        url: answer.download_url,
        expiresAt: this.runtime.now() + answer.expires_in * 1000,
      });
      const offer: UpdateOffer = {
        type: 'update_offer',
        campaign_id: answer.assignment.assignment.campaign_id,
        update_id: answer.update_id,
        firmware_version: answer.firmware_version,
        ecu: answer.ecu,
        size: answer.size,
        manifest: answer.manifest,
        assignment: answer.assignment,
      };
      await this.receiveOffer(Buffer.from(JSON.stringify(offer)), 'poll');
    }
    return list.pending.length;
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
