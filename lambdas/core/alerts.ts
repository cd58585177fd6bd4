/**
 * What raises an operator alert. The functions emit these metrics (CloudWatch embedded metric format through the
 * observability wrapper); on AWS, CloudWatch alarms on them notify the stack's SNS topic (lib/operator-alerts.ts);
 * on the local cloud, local/alarms.ts evaluates the same records with the same thresholds and writes alert records.
 * Dead-letter queues raise alerts from the queues' own depth, not from a metric the functions emit.
 */
import type { UpdateStatus } from '../../protocol/schemas.js';
import { FAILURE_STATUSES } from './update-state.js';

export const ALERT_METRICS = {
  /** campaign-tick: campaigns the tick halted for failures (metadata haltedCampaigns: their ids). */
  campaignsHalted: 'CampaignsHalted',
  /** vehicle-api and ingest: an update's failure outcome recorded. */
  updatesFailed: 'UpdatesFailed',
  /** vehicle-api and ingest: an update's success recorded. */
  updatesCompleted: 'UpdatesCompleted',
  /** ingest: a vehicle message refused (malformed, unknown VIN, over its rate). */
  ingestRejected: 'Message_rejected',
} as const;

export type AlertKind = 'campaign_halted' | 'failure_rate' | 'dead_letters' | 'ingest_rejections';

/** One alert as the local cloud records it and `GET /local/alerts` lists it. */
export interface AlertRecord {
  readonly alert_id: string;
  readonly kind: AlertKind;
  readonly raised_at: string;
  readonly message: string;
  readonly details: Record<string, unknown>;
}

export interface AlertThresholds {
  /** Failure share of the outcomes recorded in one period, in percent, at or above which the alarm fires. */
  readonly failureRatePercent: number;
  /** Outcomes a period needs before its failure share is judged (one failure of two is no trend). */
  readonly failureRateMinOutcomes: number;
  /** Vehicle messages ingest may refuse in one period before the alarm fires. */
  readonly ingestRejectionsPerPeriod: number;
  /** The alarms' evaluation period, seconds (a CloudWatch period: a multiple of 60). */
  readonly periodSeconds: number;
}

export const DEFAULT_ALERT_THRESHOLDS: AlertThresholds = {
  failureRatePercent: 20,
  failureRateMinOutcomes: 10,
  ingestRejectionsPerPeriod: 100,
  periodSeconds: 300,
};

/** The failure-rate problem of a threshold set, if any (the stack and the local cloud refuse it). */
export function alertThresholdProblem(t: AlertThresholds): string | undefined {
  if (!(t.failureRatePercent > 0 && t.failureRatePercent <= 100))
    return `failureRatePercent must be above 0 and at most 100, got ${t.failureRatePercent}`;
  if (!Number.isInteger(t.failureRateMinOutcomes) || t.failureRateMinOutcomes < 1)
    return `failureRateMinOutcomes must be a whole number of at least 1, got ${t.failureRateMinOutcomes}`;
  if (!Number.isInteger(t.ingestRejectionsPerPeriod) || t.ingestRejectionsPerPeriod < 0)
    return `ingestRejectionsPerPeriod must be a whole number of at least 0, got ${t.ingestRejectionsPerPeriod}`;
  if (!Number.isInteger(t.periodSeconds) || t.periodSeconds < 60 || t.periodSeconds % 60 !== 0)
    return `periodSeconds must be a multiple of 60, got ${t.periodSeconds}`;
  return undefined;
}

/** The outcome metric a recorded status counts toward, if it is an outcome. */
export function outcomeMetric(status: string): string | undefined {
  if (status === 'completed') return ALERT_METRICS.updatesCompleted;
  // A backend-decided cancellation is neither: the operator chose it.
  if (FAILURE_STATUSES.has(status as UpdateStatus)) return ALERT_METRICS.updatesFailed;
  return undefined;
}
