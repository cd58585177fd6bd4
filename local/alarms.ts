/**
 * The local cloud's CloudWatch alarms: the same conditions lib/operator-alerts.ts alarms on, evaluated on the same
 * inputs, the embedded-metric-format records the functions print (lambdas/core/alerts.ts ALERT_METRICS) and the
 * dead-letter queues' depth. An alarm that fires writes an alert record to <dataDir>/alerts.jsonl and to the local
 * cloud's log (a JSON line on stderr, level ALERT), where SNS would notify the operators on AWS; `ota alerts` lists
 * the records (GET /local/alerts).
 *
 * Like CloudWatch, a threshold alarm raises once when it goes into ALARM and again only after it returned to OK:
 * periods are fixed windows of periodSeconds from the start. A halted campaign raises one alert per campaign halt (each halt is
 * an event the operator must act on); dead letters raise one alert per rise of a queue's depth.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import {
  ALERT_METRICS,
  type AlertKind,
  type AlertRecord,
  type AlertThresholds,
  alertThresholdProblem,
  DEFAULT_ALERT_THRESHOLDS,
} from '../lambdas/core/alerts.js';

export interface LocalAlarmsProps {
  /** JSON lines file the alert records are appended to (kept across restarts, like the data directory). */
  readonly file: string;
  readonly thresholds?: Partial<AlertThresholds>;
  /** Where each alert is logged. @default a JSON line on stderr (level ALERT) */
  readonly log?: (record: AlertRecord) => void;
  /** Milliseconds since the epoch. @default Date.now */
  readonly clock?: () => number;
}

interface Period {
  start: number;
  failed: number;
  completed: number;
  rejected: number;
}

export class LocalAlarms {
  readonly thresholds: AlertThresholds;
  private readonly clock: () => number;
  private readonly log: (record: AlertRecord) => void;
  private readonly origin: number;
  private period: Period;
  private failureAlarm = false;
  private rejectionAlarm = false;
  private readonly deadLetterDepth = new Map<string, number>();

  constructor(private readonly props: LocalAlarmsProps) {
    this.thresholds = { ...DEFAULT_ALERT_THRESHOLDS, ...props.thresholds };
    const problem = alertThresholdProblem(this.thresholds);
    if (problem) throw new Error(`Local alarms: ${problem}`);
    this.clock = props.clock ?? Date.now;
    this.origin = this.clock();
    this.log =
      props.log ??
      ((r) => process.stderr.write(`${JSON.stringify({ level: 'ALERT', service: 'local-alarms', ...r })}\n`));
    this.period = this.freshPeriod();
  }

  /** One EMF record a function printed (local/lambda-runtime.ts onMetrics). */
  metrics(fn: string, record: Record<string, unknown>): void {
    const n = (name: string) => {
      const v = record[name];
      return typeof v === 'number' && Number.isFinite(v) ? v : Array.isArray(v) ? v.length : 0;
    };
    const halted = n(ALERT_METRICS.campaignsHalted);
    if (halted > 0) {
      const ids = typeof record.haltedCampaigns === 'string' ? record.haltedCampaigns.split(',') : [];
      for (const campaignId of ids.length > 0 ? ids : ['(unnamed)'])
        this.raise(
          'campaign_halted',
          `Campaign ${campaignId} halted: its failures crossed its policy's limit`,
          {
            campaign_id: campaignId,
            function: fn,
          },
        );
    }
    const p = this.currentPeriod();
    p.failed += n(ALERT_METRICS.updatesFailed);
    p.completed += n(ALERT_METRICS.updatesCompleted);
    p.rejected += n(ALERT_METRICS.ingestRejected);
    this.evaluate(p);
  }

  /** A dead-letter queue's depth as sampled now (the local cloud polls its queues). */
  deadLetters(queue: string, depth: number): void {
    const before = this.deadLetterDepth.get(queue) ?? 0;
    this.deadLetterDepth.set(queue, depth);
    if (depth > before)
      this.raise('dead_letters', `${depth - before} new message(s) in the ${queue} dead-letter queue`, {
        queue,
        depth,
      });
  }

  /** Every alert recorded so far, oldest first (the file's, so earlier runs on the same data directory too). */
  list(): AlertRecord[] {
    if (!existsSync(this.props.file)) return [];
    return readFileSync(this.props.file, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as AlertRecord);
  }

  private evaluate(p: Period): void {
    const t = this.thresholds;
    const outcomes = p.failed + p.completed;
    const percent = outcomes === 0 ? 0 : (p.failed / outcomes) * 100;
    const failing = outcomes >= t.failureRateMinOutcomes && percent >= t.failureRatePercent;
    if (failing && !this.failureAlarm)
      this.raise(
        'failure_rate',
        `${p.failed} of ${outcomes} update outcomes failed (${percent.toFixed(1)}%) in ${t.periodSeconds} s, at or above ${t.failureRatePercent}%`,
        { failed: p.failed, outcomes, percent: Number(percent.toFixed(1)), period_seconds: t.periodSeconds },
      );
    this.failureAlarm ||= failing;
    const flooded = p.rejected > t.ingestRejectionsPerPeriod;
    if (flooded && !this.rejectionAlarm)
      this.raise(
        'ingest_rejections',
        `${p.rejected} vehicle messages refused by ingest in ${t.periodSeconds} s, above ${t.ingestRejectionsPerPeriod}`,
        { rejected: p.rejected, period_seconds: t.periodSeconds },
      );
    this.rejectionAlarm ||= flooded;
  }

  /** The period now; a new one (the alarms back to OK unless it breaches again) once the last has ended. */
  private currentPeriod(): Period {
    if (this.clock() >= this.period.start + this.thresholds.periodSeconds * 1000) {
      this.period = this.freshPeriod();
      this.failureAlarm = false;
      this.rejectionAlarm = false;
    }
    return this.period;
  }

  /**
   * Periods follow each other from the alarms' start (CloudWatch aligns them to the clock; here a run that starts
   * a minute before a boundary would split its first outcomes over two periods).
   */
  private freshPeriod(): Period {
    const ms = this.thresholds.periodSeconds * 1000;
    const start = this.origin + Math.floor((this.clock() - this.origin) / ms) * ms;
    return { start, failed: 0, completed: 0, rejected: 0 };
  }

  private raise(kind: AlertKind, message: string, details: Record<string, unknown>): void {
    const record: AlertRecord = {
      alert_id: randomUUID(),
      kind,
      raised_at: new Date(this.clock()).toISOString(),
      message,
      details,
    };
    appendFileSync(this.props.file, `${JSON.stringify(record)}\n`, { mode: 0o600 });
    this.log(record);
  }
}
