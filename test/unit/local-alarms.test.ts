/** The local cloud's alarms (local/alarms.ts): the conditions of lib/operator-alerts.ts on EMF records. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ALERT_METRICS, type AlertRecord } from '../../lambdas/core/alerts.js';
import { LocalAlarms } from '../../local/alarms.js';

const dir = mkdtempSync(join(tmpdir(), 'alarms-'));
after(() => rmSync(dir, { recursive: true, force: true }), { timeout: 10_000 });

let n = 0;
function alarms(now: { t: number }, thresholds = {}) {
  const logged: AlertRecord[] = [];
  const a = new LocalAlarms({
    file: join(dir, `alerts-${++n}.jsonl`),
    thresholds: {
      failureRatePercent: 50,
      failureRateMinOutcomes: 4,
      ingestRejectionsPerPeriod: 2,
      ...thresholds,
    },
    clock: () => now.t,
    log: (r) => logged.push(r),
  });
  return { a, logged };
}
const emf = (metrics: Record<string, number>, extra: Record<string, unknown> = {}) => ({
  _aws: { Timestamp: 0, CloudWatchMetrics: [] },
  ...metrics,
  ...extra,
});

describe('local alarms', { timeout: 30_000 }, () => {
  it('raises one campaign_halted alert per halted campaign named in the record', () => {
    const { a, logged } = alarms({ t: 0 });
    a.metrics('campaign-tick', emf({ OffersSent: 3 }));
    assert.equal(a.list().length, 0);
    a.metrics('campaign-tick', emf({ [ALERT_METRICS.campaignsHalted]: 2 }, { haltedCampaigns: 'c-1,c-2' }));
    const listed = a.list();
    assert.deepEqual(
      listed.map((r) => [r.kind, r.details.campaign_id]),
      [
        ['campaign_halted', 'c-1'],
        ['campaign_halted', 'c-2'],
      ],
    );
    assert.deepEqual(logged, listed, 'each alert is logged as it is written');
  });

  it('judges the failure share only from the minimum number of outcomes, once per period in ALARM', () => {
    const now = { t: 1_000_000 };
    const { a } = alarms(now);
    const failed = emf({ [ALERT_METRICS.updatesFailed]: 1 });
    for (let i = 0; i < 3; i++) a.metrics('ingest', failed);
    assert.equal(a.list().length, 0, '3 failures of 3 outcomes are below the 4 outcomes judged');
    a.metrics('vehicle-api', emf({ [ALERT_METRICS.updatesCompleted]: 1 }));
    assert.deepEqual(
      a.list().map((r) => [r.kind, r.details.failed, r.details.outcomes, r.details.percent]),
      [['failure_rate', 3, 4, 75]],
    );
    a.metrics('ingest', failed);
    assert.equal(a.list().length, 1, 'still in ALARM: not raised again');
    // The next period starts from zero, and raises again only when it breaches again.
    now.t += 300_000;
    for (let i = 0; i < 3; i++) a.metrics('ingest', emf({ [ALERT_METRICS.updatesCompleted]: 1 }));
    for (let i = 0; i < 2; i++) a.metrics('ingest', failed);
    assert.equal(a.list().length, 1, '2 of 5 is below 50%');
    a.metrics('ingest', failed);
    assert.equal(a.list().length, 2, '3 of 6 is at 50%');
  });

  it('raises ingest_rejections above (not at) the configured number', () => {
    const { a } = alarms({ t: 0 });
    const rejected = emf({ [ALERT_METRICS.ingestRejected]: 1 });
    a.metrics('ingest', rejected);
    a.metrics('ingest', rejected);
    assert.equal(a.list().length, 0);
    a.metrics('ingest', rejected);
    assert.deepEqual(
      a.list().map((r) => [r.kind, r.details.rejected]),
      [['ingest_rejections', 3]],
    );
  });

  it('raises dead_letters each time a queue grows, naming the queue and the new messages', () => {
    const { a } = alarms({ t: 0 });
    a.deadLetters('jobs', 0);
    a.deadLetters('jobs', 2);
    a.deadLetters('jobs', 2);
    a.deadLetters('ingest', 1);
    a.deadLetters('jobs', 3);
    assert.deepEqual(
      a.list().map((r) => r.message),
      [
        '2 new message(s) in the jobs dead-letter queue',
        '1 new message(s) in the ingest dead-letter queue',
        '1 new message(s) in the jobs dead-letter queue',
      ],
    );
  });

  it('keeps the records in its file as JSON lines, and refuses thresholds CloudWatch could not use', () => {
    const { a } = alarms({ t: 0 });
    a.deadLetters('jobs', 1);
    const file = readFileSync(join(dir, `alerts-${n}.jsonl`), 'utf8');
    assert.equal(file.trim().split('\n').length, 1);
    assert.equal((JSON.parse(file) as AlertRecord).kind, 'dead_letters');
    assert.throws(() => alarms({ t: 0 }, { periodSeconds: 30 }), /multiple of 60/);
    assert.throws(() => alarms({ t: 0 }, { failureRateMinOutcomes: 0 }), /failureRateMinOutcomes/);
  });
});
