/**
 * Status reporting. Every report carries the vehicle's next sequence number (persisted, never reused), so the
 * backend can drop duplicates and late arrivals.
 *
 * - status(): durable. The report is first written to the state file, then published once on MQTT (QoS 1, on
 *   vehicle/updates/{VIN}/status or, with basicIngestRule, $aws/rules/<rule>/vehicle/updates/{VIN}/status). A phase
 *   report (downloading, verifying, installing...) is done once MQTT acknowledged it; an outcome, or any report
 *   while MQTT is down, is posted to POST /updates/{vin}/status until the backend answers, with exponential backoff
 *   and jitter between tries (retry-after honoured). Pending reports survive restarts. A definitive refusal (4xx
 *   other than 401/408/429) is logged and dropped: retrying cannot change it.
 * - progress(): best effort. MQTT (the progress topic, likewise) when connected, else one HTTPS post; never
 *   retried, never stored: the next progress report supersedes it.
 */

import { MAX_REASON_LENGTH } from '../protocol/schemas.js';
import { toPlainText } from '../protocol/text.js';
import { basicIngestTopic, vehicleTopic } from '../protocol/topics.js';
import type { StatusBody, VehicleApi } from './api-client.js';
import { type BackoffPolicy, backoffDelay } from './backoff.js';
import { ApiError } from './errors.js';
import { type AgentLogger, describeError, silentLogger } from './logger.js';
import { type AgentRuntime, systemRuntime, Wakeup } from './runtime.js';
import {
  type AgentState,
  type PendingReport,
  type StateStore,
  StoreClosedError,
  type VehicleStatus,
} from './state-store.js';

export const TERMINAL_REPORTS: ReadonlySet<VehicleStatus> = new Set([
  'completed',
  'failed',
  'verification_failed',
  'rolled_back',
  'rejected',
  // The driver's answers (conditions.ts): the update ends without anything installed.
  'declined',
  'expired',
]);

export interface ReportInput {
  readonly status: VehicleStatus;
  readonly firmware_version?: string;
  readonly campaign_id?: string | null;
  readonly update_id?: string;
  readonly progress?: number;
  readonly reason?: string;
  /** What the download cost (the 'verifying' report of a release, a bundle's outcome): see protocol/schemas.ts. */
  readonly bytes_fetched?: number;
  readonly bytes_reused?: number;
  readonly bytes_image?: number;
}

/** The MQTT side, as the session offers it. */
export interface ReportPublisher {
  readonly connected: boolean;
  publish(topic: string, payload: string): Promise<void>;
}

export interface ReporterOptions {
  readonly vin: string;
  readonly store: StateStore;
  readonly api: Pick<VehicleApi, 'reportStatus'>;
  /** Answers the MQTT session when there is one. */
  readonly mqtt?: () => ReportPublisher | undefined;
  /** Publish through IoT Basic Ingest to this topic rule (AgentOptions.basicIngestRule). */
  readonly basicIngestRule?: string;
  /** @default { baseMs: 1000, maxMs: 60000 } */
  readonly backoff?: BackoffPolicy;
  readonly runtime?: AgentRuntime;
  readonly logger?: AgentLogger;
}

function statusBody(
  r: Pick<
    PendingReport,
    | 'status'
    | 'firmware_version'
    | 'campaign_id'
    | 'progress'
    | 'reason'
    | 'sequence'
    | 'bytes_fetched'
    | 'bytes_reused'
    | 'bytes_image'
  >,
): StatusBody {
  return {
    status: r.status,
    sequence: r.sequence,
    ...(r.firmware_version !== undefined ? { firmware_version: r.firmware_version } : {}),
    ...(r.campaign_id !== undefined ? { campaign_id: r.campaign_id } : {}),
    ...(r.progress !== undefined ? { progress: r.progress } : {}),
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    ...(r.bytes_fetched !== undefined ? { bytes_fetched: r.bytes_fetched } : {}),
    ...(r.bytes_reused !== undefined ? { bytes_reused: r.bytes_reused } : {}),
    ...(r.bytes_image !== undefined ? { bytes_image: r.bytes_image } : {}),
  };
}

/**
 * Queues a durable report inside a state update (so it can be made durable together with other changes, e.g.
 * clearing the finished update): takes the next sequence number and drops phase reports an outcome supersedes.
 */
export function appendReport(s: AgentState, input: ReportInput, nowMs: number): PendingReport {
  const r: PendingReport = {
    sequence: s.next_sequence++,
    status: input.status,
    ...(input.firmware_version !== undefined ? { firmware_version: input.firmware_version } : {}),
    ...(input.campaign_id ? { campaign_id: input.campaign_id } : {}),
    ...(input.update_id !== undefined ? { update_id: input.update_id } : {}),
    ...(input.progress !== undefined ? { progress: input.progress } : {}),
    // Error texts may hold line breaks or escapes, which the backend refuses (400 forever for a durable report).
    ...(input.reason !== undefined ? { reason: toPlainText(input.reason.slice(0, MAX_REASON_LENGTH)) } : {}),
    ...(input.bytes_fetched !== undefined ? { bytes_fetched: input.bytes_fetched } : {}),
    ...(input.bytes_reused !== undefined ? { bytes_reused: input.bytes_reused } : {}),
    ...(input.bytes_image !== undefined ? { bytes_image: input.bytes_image } : {}),
    created_at: new Date(nowMs).toISOString(),
    mqtt_sent: false,
    attempts: 0,
  };
  if (TERMINAL_REPORTS.has(r.status)) {
    // An outcome supersedes unsent phase reports of the same update: they would only be dropped as stale.
    s.pending_reports = s.pending_reports.filter(
      (p) => TERMINAL_REPORTS.has(p.status) || p.firmware_version !== r.firmware_version,
    );
  }
  s.pending_reports.push(r);
  return r;
}

export class Reporter {
  private readonly wake = new Wakeup();
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private progressInFlight = false;
  private readonly runtime: AgentRuntime;
  private readonly logger: AgentLogger;

  constructor(private readonly options: ReporterOptions) {
    this.runtime = options.runtime ?? systemRuntime;
    this.logger = options.logger ?? silentLogger;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops sending (pending reports stay in the state file for the next start). */
  async stop(): Promise<void> {
    this.abort.abort();
    this.wake.notify();
    await this.loop;
  }

  /** Durable report: persisted with its sequence number, then sent until acknowledged. */
  async status(input: ReportInput): Promise<PendingReport> {
    const now = this.runtime.now();
    const report = await this.options.store.update((s) => appendReport(s, input, now));
    this.wake.notify();
    return report;
  }

  /** Wakes the sender after reports were queued with appendReport() inside another state update. */
  notify(): void {
    this.wake.notify();
  }

  /** Best-effort progress; skipped while the previous one is still on its way. */
  async progress(input: ReportInput & { readonly progress: number }): Promise<void> {
    if (this.progressInFlight || this.abort.signal.aborted) return;
    this.progressInFlight = true;
    try {
      const sequence = await this.options.store.update((s) => s.next_sequence++);
      const body = statusBody({
        sequence,
        status: input.status,
        progress: Math.max(0, Math.min(100, Math.round(input.progress * 10) / 10)),
        ...(input.firmware_version !== undefined ? { firmware_version: input.firmware_version } : {}),
        ...(input.campaign_id ? { campaign_id: input.campaign_id } : {}),
      });
      const mqtt = this.options.mqtt?.();
      if (mqtt?.connected) {
        try {
          await mqtt.publish(this.topic('progress'), this.mqttPayload(body));
          return;
        } catch (err) {
          this.logger.debug('progress not published on MQTT; trying HTTPS', { error: describeError(err) });
        }
      }
      await this.options.api.reportStatus(body, this.abort.signal);
    } catch (err) {
      this.logger.debug('progress report not sent', { error: describeError(err) });
    } finally {
      this.progressInFlight = false;
    }
  }

  /** Resolves once every pending report has been acknowledged (or dropped as refused). */
  async whenIdle(pollMs = 25): Promise<void> {
    while (this.options.store.state.pending_reports.length > 0 && !this.abort.signal.aborted) {
      await this.runtime.sleep(pollMs);
    }
  }

  private topic(channel: 'progress' | 'status'): string {
    const rule = this.options.basicIngestRule;
    return rule ? basicIngestTopic(rule, this.options.vin, channel) : vehicleTopic(this.options.vin, channel);
  }

  private mqttPayload(body: StatusBody): string {
    return JSON.stringify({ ...body, timestamp: new Date(this.runtime.now()).toISOString() });
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    const store = this.options.store;
    let failures = 0;
    while (!signal.aborted) {
      const next = store.state.pending_reports[0];
      if (!next) {
        await this.wake.wait(this.runtime, 60_000, signal);
        continue;
      }
      try {
        const mqtt = this.options.mqtt?.();
        if (!next.mqtt_sent && mqtt?.connected) {
          try {
            await mqtt.publish(this.topic('status'), this.mqttPayload(statusBody(next)));
            if (!TERMINAL_REPORTS.has(next.status)) {
              // A phase report the broker (or Basic Ingest) acknowledged is done: an HTTPS copy would only cost a
              // request, a Lambda invocation and a rate-limit write to be found a duplicate. Outcomes are still
              // confirmed over HTTPS: they set the registry's version and the campaign's result.
              await this.remove(next.sequence);
              failures = 0;
              this.logger.debug('phase report published', { sequence: next.sequence, status: next.status });
              continue;
            }
            await store.update((s) => {
              const r = s.pending_reports.find((p) => p.sequence === next.sequence);
              if (r) r.mqtt_sent = true;
            });
          } catch (err) {
            if (err instanceof StoreClosedError) throw err;
            this.logger.debug('status not published on MQTT', { error: describeError(err) });
          }
        }
        const answer = await this.options.api.reportStatus(statusBody(next), signal);
        await this.remove(next.sequence);
        failures = 0;
        this.logger.info('report acknowledged', {
          sequence: next.sequence,
          status: next.status,
          firmware_version: next.firmware_version,
          applied: answer.applied,
          backend_status: answer.status,
        });
      } catch (err) {
        if (signal.aborted || err instanceof StoreClosedError) return;
        if (err instanceof ApiError && !err.transient) {
          this.logger.error('backend refused a report; dropping it', {
            sequence: next.sequence,
            status: next.status,
            code: err.code,
            error: err.message,
          });
          await this.remove(next.sequence).catch(() => {});
          continue;
        }
        const delay = Math.max(
          err instanceof ApiError ? (err.retryAfterMs ?? 0) : 0,
          backoffDelay(failures++, this.options.backoff ?? { baseMs: 1000, maxMs: 60_000 }, () =>
            this.runtime.random(),
          ),
        );
        this.logger.warn('report not acknowledged; retrying', {
          sequence: next.sequence,
          in_ms: delay,
          error: describeError(err),
        });
        await store
          .update((s) => {
            const r = s.pending_reports.find((p) => p.sequence === next.sequence);
            if (r) r.attempts++;
          })
          .catch(() => {});
        await this.runtime.sleep(delay, signal).catch(() => {});
      }
    }
  }

  private remove(sequence: number): Promise<void> {
    return this.options.store.update((s) => {
      s.pending_reports = s.pending_reports.filter((p) => p.sequence !== sequence);
    });
  }
}
