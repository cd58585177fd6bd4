/**
 * A light simulated vehicle for the scale-out fleet run (sim/scale.ts): the same protocol as the TCU agent
 * (vehicle/), a fraction of its memory, so thousands run in one worker process.
 *
 * What it does as the agent does:
 * - its own identity: an ECDSA P-256 device key and the certificate the backend issued for its CSR; its own
 *   mutual-TLS MQTT connection (persistent session, QoS 1 offers on vehicle/updates/{VIN}/issue_details); its
 *   own bearer tokens through the challenge-response login (vehicle/api-client.ts VehicleApiClient);
 * - every offer is checked before anything is fetched (vehicle/offer-verifier.ts verifyOfferHeader: assignment
 *   signature by the backend key, VIN, expiry, counter), the manifest comes from POST /updates/{vin}/download and
 *   must match the digest the assignment binds, then the whole offer is verified (verifyOffer: OEM release
 *   signatures, manifest consistency, assignment binding, ECU, hardware id, version);
 * - the image is downloaded from the presigned URL and every chunk's SHA-256 and the whole image's SHA-256 are
 *   checked against the signed manifest (protocol/manifest.ts ImageHasher/compareDigest);
 * - it reports like the agent (vehicle/reporter.ts, download-phase.ts, install-phase.ts): durable statuses
 *   downloading(0), verifying, installing(0) and the outcome, each published through IoT Basic Ingest
 *   ($aws/rules/<rule>/vehicle/updates/{VIN}/status, QoS 1); a phase report is done once MQTT acknowledged it, an
 *   outcome (or a report MQTT did not take) is also posted to POST /updates/{vin}/status until acknowledged
 *   (transient errors retried with backoff), in order (all of them: the agent drops phase reports an outcome overtakes, which a real install is
 *   too slow for); best-effort progress on MQTT through the
 *   agent's ProgressThrottle (per verified 64 KiB chunk while downloading, per 1 MiB block while installing),
 *   skipped while the previous one is in flight; one sequence number across both;
 * - the safety-net poll of GET /updates/{vin} for offers MQTT did not deliver (vehicle/poller.ts), jittered, while
 *   it has no outcome yet (the sim's interval, not the agent's hourly one).
 *
 * What it skips: no state file (nothing survives a restart), no A/B slots and no install (the image bytes are
 * hashed and dropped, the install progress is reported over the image size without writing it, there is no
 * health check and no rollback), no chunk-by-chunk Range requests (one GET of the whole image, resumed from where it was cut, up to 6 tries), no polling once it has an outcome, no freshness statements, no trust-anchor rotation. Many vehicles of one worker
 * share one HTTPS connection pool to the API (tokens stay per vehicle; the API authenticates by token, not by TLS).
 */
import { createPrivateKey, type KeyObject, sign } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { manifestDigest } from '../protocol/assignment.js';
import { challengeSigningInput } from '../protocol/challenge.js';
import { compareDigest, ImageHasher } from '../protocol/manifest.js';
import { type FullOffer, offerSchema, type UpdateOffer } from '../protocol/offer.js';
import type { StatusReport } from '../protocol/schemas.js';
import { basicIngestTopic, vehicleTopic } from '../protocol/topics.js';
import { type StatusBody, VehicleApiClient } from '../vehicle/api-client.js';
import { ApiError } from '../vehicle/errors.js';
import type { HttpTransport } from '../vehicle/http-transport.js';
import {
  type OfferCheckContext,
  type Rejection,
  verifyOffer,
  verifyOfferHeader,
} from '../vehicle/offer-verifier.js';
import { offerFromAnswer } from '../vehicle/poller.js';
import type { TrustAnchors } from '../vehicle/provisioning.js';
import { ProgressThrottle } from '../vehicle/rate.js';
import { TERMINAL_REPORTS } from '../vehicle/reporter.js';

type VehicleStatus = StatusReport['status'];
const INSTALL_BLOCK = 1024 * 1024;
/** Tries of one image download (the first and its resumptions) before the update is reported failed. */
const DOWNLOAD_ATTEMPTS = 6;

export interface LightVehicleEnv {
  readonly apiUrl: string;
  readonly mqttUrl: string;
  /** Topic rule of IoT Basic Ingest ($aws/rules/<rule>/...), as the agent's basicIngestRule. */
  readonly ingestRule: string;
  readonly ca: string;
  readonly trust: TrustAnchors;
  /** Shared by the vehicles of one worker. */
  readonly transport: HttpTransport;
  readonly hardwareId: string;
  /** MQTT keepalive, s. */
  readonly keepaliveSeconds: number;
  /** Safety-net poll of GET /updates while no outcome yet, s (jittered). */
  readonly pollSeconds: number;
}

/** What the run reads off each vehicle. */
export interface LightVehicleOutcome {
  readonly vin: string;
  version: string;
  /** Outcome of the last update, as reported. */
  status: VehicleStatus | null;
  reason: string | null;
  updateId: string | null;
  /** When the first offer arrived (epoch ms). */
  offeredAt: number | null;
  /** When the outcome was acknowledged by the backend (epoch ms). */
  doneAt: number | null;
  offers: number;
  bytes: number;
  /** Downloads resumed after a cut or a refused URL. */
  resumes: number;
  reportsSent: number;
}

interface Pending {
  readonly body: StatusBody;
  readonly onAck?: () => void;
}

export class LightVehicle {
  readonly outcome: LightVehicleOutcome;
  private readonly key: KeyObject;
  private readonly api: VehicleApiClient;
  private client?: MqttClient;
  private sequence = 1;
  private lastCounter = 0;
  private readonly offers: unknown[] = [];
  private readonly handled = new Set<string>();
  private working = false;
  private readonly reports: Pending[] = [];
  private reporting = false;
  private progressInFlight = false;
  private closed = false;
  private pollTimer?: NodeJS.Timeout;

  constructor(
    readonly vin: string,
    private readonly identity: { keyPem: string; certPem: string },
    private readonly env: LightVehicleEnv,
  ) {
    this.key = createPrivateKey(identity.keyPem);
    this.api = new VehicleApiClient({
      baseUrl: env.apiUrl,
      vin,
      transport: env.transport,
      signChallenge: (nonce) =>
        sign('sha256', challengeSigningInput(vin, nonce), { key: this.key, dsaEncoding: 'der' }).toString(
          'base64',
        ),
    });
    this.outcome = {
      vin,
      version: '1.0.0',
      status: null,
      reason: null,
      updateId: null,
      offeredAt: null,
      doneAt: null,
      offers: 0,
      bytes: 0,
      resumes: 0,
      reportsSent: 0,
    };
  }

  /**
   * The agent's safety net for offers MQTT did not deliver (vehicle/poller.ts): while this vehicle has no outcome
   * yet, GET /updates/{vin} every pollSeconds (jittered 0.5x to 1.5x) when idle, and take each pending update it
   * has not handled from its /download answer.
   */
  private startPolling(): void {
    const next = () => {
      if (this.closed || this.outcome.status !== null) return;
      this.pollTimer = setTimeout(
        () => void this.pollOnce().finally(next),
        this.env.pollSeconds * 1000 * (0.5 + Math.random()),
      );
      this.pollTimer.unref();
    };
    next();
  }

  private async pollOnce(): Promise<void> {
    if (!this.idle || this.outcome.status !== null) return;
    try {
      const list = await this.api.listUpdates();
      for (const u of list.pending) {
        if (this.handled.has(u.update_id)) continue;
        const answer = await this.api.download(u.firmware_version);
        this.offers.push(offerFromAnswer(answer));
      }
      void this.work();
    } catch {
      // the next poll tries again
    }
  }

  /** Connects over mutual TLS and subscribes to its offers; resolves once subscribed. */
  async connect(): Promise<void> {
    const client = mqtt.connect(this.env.mqttUrl, {
      protocolVersion: 4,
      clientId: this.vin,
      clean: false,
      ca: this.env.ca,
      key: this.identity.keyPem,
      cert: this.identity.certPem,
      rejectUnauthorized: true,
      keepalive: this.env.keepaliveSeconds,
      reconnectPeriod: 2000 + Math.floor(Math.random() * 2000),
      connectTimeout: 60_000,
      resubscribe: true,
    });
    this.client = client;
    client.on('message', (_topic, payload) => {
      try {
        this.offers.push(JSON.parse(payload.toString('utf8')));
      } catch {
        return; // not JSON: not an offer, nothing to report
      }
      void this.work();
    });
    client.on('error', () => {}); // reconnects on its own
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync(vehicleTopic(this.vin, 'issue_details'), { qos: 1 });
    this.startPolling();
  }

  get idle(): boolean {
    return !this.working && this.offers.length === 0 && this.reports.length === 0 && !this.reporting;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.pollTimer);
    await this.client?.endAsync(true).catch(() => {});
  }

  private checks(): OfferCheckContext {
    return {
      vin: this.vin,
      now: new Date(),
      lastCounter: this.lastCounter,
      trust: this.env.trust,
      ecus: { tcu: { hardware_id: this.env.hardwareId, version: this.outcome.version } },
    };
  }

  /** Handles queued offers one at a time, as the agent's inbox does. */
  private async work(): Promise<void> {
    if (this.working) return;
    this.working = true;
    try {
      for (let raw = this.offers.shift(); raw !== undefined && !this.closed; raw = this.offers.shift()) {
        this.outcome.offeredAt ??= Date.now();
        this.outcome.offers++;
        await this.handle(raw).catch((err: unknown) => {
          this.outcome.reason = `internal: ${err instanceof Error ? err.message : String(err)}`;
        });
      }
    } finally {
      this.working = false;
    }
  }

  private async handle(raw: unknown): Promise<void> {
    const parsed = offerSchema.safeParse(raw);
    if (!parsed.success) return; // not verifiably for this vehicle: dropped, not reported
    const offer = parsed.data;
    const a = offer.assignment.assignment;
    // An update already handled (its MQTT offer, or what a poll found) is not handled again: a redelivery, or the
    // offer of an update a poll already fetched under a newer assignment, is dropped quietly (offer-inbox.ts).
    if (this.handled.has(a.update_id)) return;
    this.handled.add(a.update_id);
    const header = verifyOfferHeader(offer, this.checks());
    if (header) return this.refuse(offer, header);
    let answer: Awaited<ReturnType<VehicleApiClient['download']>>;
    try {
      answer = await this.retrying(() => this.api.download(offer.firmware_version));
    } catch (err) {
      return this.finish(offer, 'rejected', `manifest_unavailable: ${(err as Error).message}`);
    }
    if (manifestDigest(answer.manifest.manifest) !== a.manifest_sha256) {
      return this.finish(offer, 'rejected', 'manifest_mismatch: the backend serves another manifest');
    }
    const verdict = verifyOffer({ ...offer, manifest: answer.manifest }, this.checks());
    if (!verdict.ok) return this.refuse(offer, verdict);
    const full: FullOffer = verdict.offer;
    this.lastCounter = a.counter;
    this.outcome.updateId = a.update_id;
    const m = full.manifest.manifest;
    const base = {
      firmware_version: m.version,
      ...(full.campaign_id ? { campaign_id: full.campaign_id } : {}),
    };

    this.status({ status: 'downloading', progress: 0, ...base });
    const hasher = new ImageHasher(m.chunk_size);
    const throttle = new ProgressThrottle();
    let received = 0;
    let reported = 0; // chunks whose progress was considered
    let url = answer.download_url;
    // As the agent does (range-fetch.ts), a cut download resumes where it stopped with a Range request, and an
    // expired or refused URL is replaced by a fresh one: a transfer broken under load costs no byte twice.
    for (let attempt = 0; ; attempt++) {
      let failure: string;
      try {
        const res = await this.env.transport.send({
          method: 'GET',
          url,
          idleTimeoutMs: 60_000,
          ...(received > 0 ? { headers: { range: `bytes=${received}-` } } : {}),
        });
        const resumed = received > 0 && res.status === 206;
        if (resumed && !String(res.headers['content-range'] ?? '').startsWith(`bytes ${received}-`)) {
          res.abort();
          return this.finish(full, 'failed', 'download failed: the resumed range starts elsewhere');
        }
        if (res.status === 200 && received > 0) {
          res.abort();
          return this.finish(full, 'failed', 'download failed: the server ignored the range request');
        }
        if (res.status !== 200 && !resumed) {
          res.abort();
          failure = `HTTP ${res.status}`;
          if (res.status === 403)
            url = (await this.retrying(() => this.api.download(m.version))).download_url;
        } else {
          for await (const part of res.body) {
            if (received + part.length > m.size) throw new Error('more bytes than the manifest names');
            hasher.update(part);
            received += part.length;
            // The agent considers a progress report as each chunk is verified.
            while (
              (reported + 1) * m.chunk_size <= received ||
              (received === m.size && reported * m.chunk_size < m.size)
            ) {
              reported++;
              const percent = (Math.min(reported * m.chunk_size, m.size) * 100) / m.size;
              if (throttle.shouldReport(percent, Date.now()))
                this.progress({ status: 'downloading', progress: percent, ...base });
            }
          }
          if (received === m.size) break;
          failure = `the body ended after ${received} of ${m.size} bytes`;
        }
      } catch (err) {
        failure = (err as Error).message;
      }
      if (this.closed || attempt >= DOWNLOAD_ATTEMPTS - 1)
        return this.finish(full, 'failed', `download failed: ${failure} (${attempt + 1} attempts)`);
      this.outcome.resumes++;
      await new Promise((r) =>
        setTimeout(r, Math.min(10_000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2)),
      );
    }
    this.outcome.bytes += received;
    const problems = compareDigest(m, hasher.digest());
    if (problems.length > 0)
      return this.finish(full, 'verification_failed', `${problems.join('; ')}; the image was deleted`);
    // What the download cost, as the agent reports it (a raw download: nothing reused).
    this.status({
      status: 'verifying',
      bytes_fetched: received,
      bytes_reused: 0,
      bytes_image: m.size,
      ...base,
    });
    this.status({ status: 'installing', progress: 0, ...base });
    const install = new ProgressThrottle();
    for (
      let written = Math.min(INSTALL_BLOCK, m.size);
      ;
      written = Math.min(written + INSTALL_BLOCK, m.size)
    ) {
      const percent = (written * 100) / m.size;
      if (install.shouldReport(percent, Date.now()))
        this.progress({ status: 'installing', progress: Math.min(99, percent), ...base });
      if (written >= m.size) break;
    }
    this.outcome.version = m.version;
    return this.finish(full, 'completed');
  }

  /** A refused offer is reported only when its assignment is genuinely for this vehicle (offer-acceptance.ts). */
  private refuse(offer: UpdateOffer, verdict: Rejection): void {
    if (!verdict.authentic) return;
    this.lastCounter = Math.max(this.lastCounter, offer.assignment.assignment.counter);
    this.finish(offer, 'rejected', `${verdict.reason}: ${verdict.message}`);
  }

  private finish(offer: UpdateOffer, status: VehicleStatus, reason?: string): void {
    const a = offer.assignment.assignment;
    this.outcome.updateId = a.update_id;
    this.outcome.status = status;
    this.outcome.reason = reason ?? null;
    this.outcome.doneAt = null;
    this.status(
      {
        status,
        firmware_version: a.version,
        ...(a.campaign_id ? { campaign_id: a.campaign_id } : {}),
        ...(reason ? { reason: reason.slice(0, 500) } : {}),
      },
      () => {
        this.outcome.doneAt = Date.now();
      },
    );
  }

  /**
   * Queues a durable report. Unlike the agent, an outcome does not drop the phase reports still unsent: the agent's
   * real install takes long enough for them to go out, the light vehicle's takes no time at all, and the run
   * should count what a real update sends.
   */
  private status(body: Omit<StatusBody, 'sequence'>, onAck?: () => void): void {
    this.reports.push({ body: { ...body, sequence: this.sequence++ }, ...(onAck ? { onAck } : {}) });
    void this.flush();
  }

  private async flush(): Promise<void> {
    if (this.reporting) return;
    this.reporting = true;
    try {
      while (this.reports.length > 0 && !this.closed) {
        const next = this.reports[0]!;
        let published = false;
        if (this.client?.connected) {
          published = await this.client
            .publishAsync(this.topic('status'), this.payload(next.body), { qos: 1 })
            .then(
              () => true,
              () => false,
            );
        }
        // As vehicle/reporter.ts: a phase report is done once MQTT acknowledged it; an outcome, or a report MQTT
        // did not take, is also posted until the backend answers.
        if (!published || TERMINAL_REPORTS.has(next.body.status)) {
          try {
            await this.retrying(() => this.api.reportStatus(next.body));
          } catch {
            // refused for good (4xx): dropped, as the agent does
          }
        }
        this.outcome.reportsSent++;
        if (this.reports[0] === next) this.reports.shift();
        next.onAck?.();
      }
    } finally {
      this.reporting = false;
    }
  }

  private progress(body: Omit<StatusBody, 'sequence'> & { progress: number }): void {
    if (this.progressInFlight || !this.client?.connected) return;
    this.progressInFlight = true;
    const report = {
      ...body,
      progress: Math.max(0, Math.min(100, Math.round(body.progress * 10) / 10)),
      sequence: this.sequence++,
    };
    this.client
      .publishAsync(this.topic('progress'), this.payload(report), { qos: 1 })
      .catch(() => {})
      .finally(() => {
        this.progressInFlight = false;
      });
  }

  private topic(channel: 'status' | 'progress'): string {
    return basicIngestTopic(this.env.ingestRule, this.vin, channel);
  }

  private payload(body: StatusBody): string {
    return JSON.stringify({ ...body, timestamp: new Date().toISOString() });
  }

  /** Retries transient API failures (network, 5xx, 429) with capped exponential backoff and jitter. */
  private async retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const transient = !(err instanceof ApiError) || err.transient;
        if (!transient || this.closed || attempt >= 30) throw err;
        const retryAfter = err instanceof ApiError ? (err.retryAfterMs ?? 0) : 0;
        const backoff = Math.min(10_000, 250 * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random() / 2);
        await new Promise((r) => setTimeout(r, Math.max(retryAfter, backoff)));
      }
    }
  }
}
