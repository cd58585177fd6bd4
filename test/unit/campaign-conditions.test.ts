import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeMetric } from '../../lambdas/core/alerts.js';
import { DEFAULT_POLICY, evaluateWave, waveSettled } from '../../lambdas/core/campaign-policy.js';
import { applyReport } from '../../lambdas/core/update-state.js';
import { assignmentSchema } from '../../protocol/assignment.js';
import {
  campaignConditionsSchema,
  conditionsForOffer,
  conditionsProblems,
  inWindow,
  localMinutes,
  minutesUntilWindow,
} from '../../protocol/conditions.js';
import { driverMessage } from '../../vehicle/head-unit.js';

const t0 = new Date('2026-12-04T12:00:00Z');

describe('campaign conditions', { timeout: 60_000 }, () => {
  it('refuses combinations that cannot work as meant', () => {
    const parse = (c: unknown) => campaignConditionsSchema.parse(c);
    assert.deepEqual(conditionsProblems(parse({ consent: { deadline_seconds: 3600 } })), []);
    assert.match(
      conditionsProblems(parse({ consent: { deadline_seconds: 3600, max_postponements: 2 } }))[0]!,
      /needs postpone_seconds/,
    );
    assert.match(
      conditionsProblems(parse({ consent: { deadline_seconds: 3600, postpone_seconds: 60 } }))[0]!,
      /allows no postponement/,
    );
    assert.match(
      conditionsProblems(
        parse({ consent: { deadline_seconds: 600, max_postponements: 2, postpone_seconds: 300 } }),
      )[0]!,
      /do not fit before the deadline/,
    );
    assert.match(
      conditionsProblems(parse({ maintenance_window: { start: '03:00', end: '03:00' } }))[0]!,
      /empty window/,
    );
    assert.match(conditionsProblems(parse({}))[0]!, /empty/);
    assert.throws(() => parse({ maintenance_window: { start: '24:00', end: '01:00' } }));
    assert.throws(() => parse({ network: 'wifi' }));
  });

  it('turns relative consent into an absolute signed deadline, and nothing into nothing', () => {
    const signed = conditionsForOffer(
      campaignConditionsSchema.parse({
        consent: { deadline_seconds: 7200, max_postponements: 1, postpone_seconds: 600 },
        network: 'unmetered',
      }),
      t0,
    );
    assert.deepEqual(signed, {
      network: 'unmetered',
      consent: { deadline: '2026-12-04T14:00:00.000Z', max_postponements: 1, postpone_seconds: 600 },
    });
    assert.equal(conditionsForOffer(undefined, t0), undefined);
  });

  it('an absolute consent deadline: the earlier of it and the relative one, checked against the clock', () => {
    const at = (iso: string, seconds?: number) =>
      conditionsForOffer(
        campaignConditionsSchema.parse({
          consent: { deadline_at: iso, ...(seconds ? { deadline_seconds: seconds } : {}) },
        }),
        t0,
      )?.consent?.deadline;
    // t0 is 12:00 UTC.
    assert.equal(at('2026-12-04T13:00:00Z'), '2026-12-04T13:00:00.000Z');
    assert.equal(at('2026-12-04T13:00:00Z', 600), '2026-12-04T12:10:00.000Z', 'the relative one comes first');
    assert.equal(at('2026-12-04T13:00:00Z', 7200), '2026-12-04T13:00:00.000Z', 'the date comes first');
    // A car offered after the date gets a deadline already passed: it ends expired, it is never asked forever.
    assert.equal(at('2026-12-04T11:00:00Z'), '2026-12-04T11:00:00.000Z');
    const problems = (c: unknown) => conditionsProblems(campaignConditionsSchema.parse(c), t0);
    assert.deepEqual(problems({ consent: { deadline_at: '2026-12-05T12:00:00Z' } }), []);
    assert.match(problems({ consent: { deadline_at: '2026-12-04T11:00:00Z' } })[0]!, /not in the future/);
    assert.match(
      problems({ consent: { deadline_at: '2027-06-01T00:00:00Z' } })[0]!,
      /more than 30 days away/,
    );
    assert.match(
      problems({ consent: { max_postponements: 0 } })[0]!,
      /needs deadline_seconds .* or deadline_at/,
    );
    assert.throws(() => campaignConditionsSchema.parse({ consent: { deadline_at: 'next friday' } }));
  });

  it('signs conditions only when set: an assignment without them parses as before, an unknown key does not', () => {
    const base = {
      schema: 'ota.assignment/v1',
      vin: '1HGCM82633A004352',
      update_id: 'campaign#c1',
      campaign_id: 'c1',
      release_id: 'tcu-2.0.0',
      version: '2.0.0',
      ecu: 'tcu',
      manifest_sha256: 'a'.repeat(64),
      counter: 3,
      issued_at: t0.toISOString(),
      expires_at: t0.toISOString(),
    };
    assert.ok(assignmentSchema.safeParse(base).success);
    assert.ok(assignmentSchema.safeParse({ ...base, conditions: { network: 'unmetered' } }).success);
    assert.ok(!assignmentSchema.safeParse({ ...base, conditions: { consent: true } }).success);
  });

  it('judges the maintenance window in the vehicle local time, across midnight', () => {
    const night = { start: '22:00', end: '05:00' };
    assert.ok(inWindow(23 * 60, night));
    assert.ok(inWindow(4 * 60 + 59, night));
    assert.ok(!inWindow(5 * 60, night));
    assert.ok(!inWindow(12 * 60, night));
    assert.equal(minutesUntilWindow(12 * 60, night), 600);
    assert.equal(minutesUntilWindow(23 * 60, night), 0);
    // 12:00 UTC is 13:00 in Berlin (CET) and 07:00 in New York (EST).
    assert.equal(localMinutes(t0.getTime(), 'UTC'), 12 * 60);
    assert.equal(localMinutes(t0.getTime(), 'Europe/Berlin'), 13 * 60);
    assert.equal(localMinutes(t0.getTime(), 'America/New_York'), 7 * 60);
  });
});

describe('consent statuses in the update state machine and the campaign policy', { timeout: 60_000 }, () => {
  const at = (status: Parameters<typeof applyReport>[0]['status']) => ({
    status,
    progress: 0,
    lastSequence: 4,
  });

  it('lets asking and postponed alternate, moves on to downloading, and ends with declined or expired', () => {
    assert.equal(applyReport(at('offered'), { status: 'awaiting_consent', sequence: 5 }).applied, true);
    assert.equal(applyReport(at('awaiting_consent'), { status: 'postponed', sequence: 5 }).applied, true);
    assert.equal(applyReport(at('postponed'), { status: 'awaiting_consent', sequence: 5 }).applied, true);
    // A stale question (older sequence) does not undo a later postponement.
    assert.equal(applyReport(at('postponed'), { status: 'awaiting_consent', sequence: 3 }).applied, false);
    assert.equal(applyReport(at('awaiting_consent'), { status: 'downloading', sequence: 5 }).applied, true);
    assert.equal(applyReport(at('downloading'), { status: 'awaiting_consent', sequence: 5 }).applied, false);
    assert.equal(applyReport(at('postponed'), { status: 'declined', sequence: 5 }).applied, true);
    assert.equal(applyReport(at('declined'), { status: 'awaiting_consent', sequence: 6 }).applied, false);
    // Expired by the backend, then the car reports an install after all: what it runs is recorded.
    assert.equal(applyReport(at('expired'), { status: 'completed', sequence: 6 }).applied, true);
  });

  it('never counts declines or expiries as failures, nor lets them halt a wave', () => {
    const policy = { ...DEFAULT_POLICY, haltFailureCount: 1, haltMinOutcomes: 1, advanceSuccessPercent: 90 };
    const started = new Date(t0.getTime() - 1000);
    assert.deepEqual(evaluateWave({ completed: 2, declined: 5, expired: 3 }, policy, started, t0), {
      action: 'advance',
    });
    assert.deepEqual(evaluateWave({ declined: 4 }, policy, started, t0), { action: 'advance' });
    assert.deepEqual(evaluateWave({ awaiting_consent: 3, completed: 1 }, policy, started, t0), {
      action: 'wait',
    });
    assert.equal(evaluateWave({ completed: 1, failed: 1, declined: 3 }, policy, started, t0).action, 'halt');
    assert.ok(waveSettled({ completed: 1, declined: 1, expired: 1 }));
    // Nor in the failure-rate alarm's metric (operator alerts).
    assert.equal(outcomeMetric('declined'), undefined);
    assert.equal(outcomeMetric('expired'), undefined);
    assert.equal(outcomeMetric('awaiting_consent'), undefined);
    assert.ok(!waveSettled({ completed: 1, postponed: 1 }));
  });

  it('tells the driver what happened in plain words', () => {
    assert.equal(
      driverMessage({ status: 'completed', firmware_version: '3.0.1' }, '3.0.1'),
      'Update 3.0.1 installed',
    );
    assert.equal(
      driverMessage({ status: 'verification_failed', firmware_version: '3.0.1' }, '2.4.0'),
      'Update failed: the download was damaged; your car still runs 2.4.0; retry?',
    );
    assert.match(
      driverMessage({ status: 'expired', firmware_version: '3.0.1' }, '2.4.0'),
      /not accepted in time/,
    );
  });
});
