/**
 * Campaign conditions (issue 16): what the driver and the vehicle's situation must allow before an update is
 * downloaded or installed. The operator sets them in a campaign's policy (`policy.conditions`, relative times);
 * the backend turns them into `UpdateConditions` (absolute consent deadline) when it offers the update, and signs
 * them INSIDE the per-vehicle assignment, so a backend message altered on its way (or an offer replayed without
 * them) cannot drop the driver's consent: the signature would not verify.
 *
 * Compatibility: the assignment schema is strict, and `conditions` is sent only when a campaign sets some. An
 * agent older than this field refuses such an assignment (unknown key) and so never installs it: an agent that
 * cannot ask the driver must not install an update that needs the driver's consent (fail closed). Campaigns
 * without conditions send exactly the assignment of before, which every agent accepts.
 *
 * The maintenance window is in the VEHICLE's local time: the vehicle knows its time zone (its clock and zone come
 * from the head unit), the backend does not know where a car is. A window may wrap midnight (22:00-05:00).
 */

import { plainText } from './text.js';
import * as z from './zod.js';

/** HH:MM, 24 hours. */
const clockTime = z.string().check(z.regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (24 h)'));

export const NETWORK_POLICIES = ['any', 'unmetered'] as const;
export type NetworkPolicy = (typeof NETWORK_POLICIES)[number];

const windowSchema = z.strictObject({ start: clockTime, end: clockTime });

/** Longest consent wait an operator may set (the backend keeps the update in flight meanwhile). */
export const MAX_CONSENT_SECONDS = 30 * 86400;
export const MAX_POSTPONEMENTS = 10;

/** The conditions that read the same in the operator's request and in the signed assignment. */
const sharedConditions = {
  maintenance_window: z.optional(windowSchema),
  /** Networks the download may use. @default any */
  network: z.optional(z.enum(NETWORK_POLICIES)),
  /** Shown to the driver with the pending update. */
  release_notes: z.optional(plainText(1000)),
  /** Shown to the driver: how long the install keeps the car unavailable. */
  install_minutes: z.optional(z.int().check(z.minimum(1), z.maximum(24 * 60))),
};

const postponeSeconds = z.int().check(z.minimum(1), z.maximum(7 * 86400));

/** What an operator writes in `policy.conditions` (POST /campaigns). */
export const campaignConditionsSchema = z.strictObject({
  consent: z.optional(
    z.strictObject({
      /** Seconds after the offer by which the driver must have accepted; afterwards the update ends `expired`. */
      deadline_seconds: z.optional(z.int().check(z.minimum(60), z.maximum(MAX_CONSENT_SECONDS))),
      /**
       * A date by which every driver must have accepted, however late the car was offered (a recall's date, the
       * end of a season); with deadline_seconds too, whichever comes first. At least one of the two.
       */
      deadline_at: z.optional(z.iso.datetime()),
      /** How many times the driver may postpone (0: accept or decline only). */
      max_postponements: z._default(z.int().check(z.minimum(0), z.maximum(MAX_POSTPONEMENTS)), 0),
      /** How long a postponement lasts before the driver is asked again. */
      postpone_seconds: z.optional(postponeSeconds),
    }),
  ),
  ...sharedConditions,
});
export type CampaignConditions = z.infer<typeof campaignConditionsSchema>;

/** The signed form, inside the assignment (protocol/assignment.ts): the consent deadline is absolute. */
export const updateConditionsSchema = z.strictObject({
  consent: z.optional(
    z.strictObject({
      deadline: z.iso.datetime(),
      max_postponements: z.int().check(z.minimum(0), z.maximum(MAX_POSTPONEMENTS)),
      postpone_seconds: z.optional(postponeSeconds),
    }),
  ),
  ...sharedConditions,
});
export type UpdateConditions = z.infer<typeof updateConditionsSchema>;

/**
 * Combinations that parse but cannot work as meant: a clear 400 each. Empty when the conditions are consistent.
 */
export function conditionsProblems(c: CampaignConditions, now?: Date): string[] {
  const problems: string[] = [];
  const consent = c.consent;
  if (consent && consent.deadline_seconds === undefined && consent.deadline_at === undefined) {
    problems.push(
      'conditions.consent: needs deadline_seconds (after each offer) or deadline_at (a date), or both',
    );
  }
  if (consent?.deadline_at !== undefined && now) {
    const left = (Date.parse(consent.deadline_at) - now.getTime()) / 1000;
    if (left <= 60)
      problems.push(`conditions.consent.deadline_at ${consent.deadline_at} is not in the future`);
    else if (left > MAX_CONSENT_SECONDS) {
      problems.push(
        `conditions.consent.deadline_at ${consent.deadline_at} is more than ${MAX_CONSENT_SECONDS / 86400} days away`,
      );
    }
  }
  if (consent && consent.max_postponements > 0 && consent.postpone_seconds === undefined) {
    problems.push(
      'conditions.consent: max_postponements needs postpone_seconds (how long a postponement lasts)',
    );
  }
  if (consent && consent.max_postponements === 0 && consent.postpone_seconds !== undefined) {
    problems.push('conditions.consent: postpone_seconds without max_postponements allows no postponement');
  }
  if (consent?.postpone_seconds !== undefined && consent.max_postponements > 0 && consent.deadline_seconds) {
    const total = consent.postpone_seconds * consent.max_postponements;
    if (total >= consent.deadline_seconds) {
      problems.push(
        `conditions.consent: ${consent.max_postponements} postponements of ${consent.postpone_seconds} s (${total} s) do not fit before the deadline (${consent.deadline_seconds} s)`,
      );
    }
  }
  if (c.maintenance_window && c.maintenance_window.start === c.maintenance_window.end) {
    problems.push('conditions.maintenance_window: start and end are equal (an empty window never opens)');
  }
  if (Object.keys(c).length === 0) problems.push('conditions: empty; omit it for no conditions');
  return problems;
}

/**
 * When the driver's consent to an offer sent at `offeredAt` runs out: deadline_seconds after it or deadline_at,
 * whichever comes first (a car offered after deadline_at gets a deadline already passed, and ends `expired`).
 */
export function consentDeadline(consent: NonNullable<CampaignConditions['consent']>, offeredAt: Date): Date {
  const after =
    consent.deadline_seconds !== undefined ? offeredAt.getTime() + consent.deadline_seconds * 1000 : Infinity;
  const at = consent.deadline_at !== undefined ? Date.parse(consent.deadline_at) : Infinity;
  return new Date(Math.min(after, at));
}

/** The signed conditions of one offer sent at `offeredAt`; undefined when the campaign sets none. */
export function conditionsForOffer(
  c: CampaignConditions | undefined,
  offeredAt: Date,
): UpdateConditions | undefined {
  if (!c || Object.keys(c).length === 0) return undefined;
  const { consent, ...rest } = c;
  return {
    ...rest,
    ...(consent
      ? {
          consent: {
            deadline: consentDeadline(consent, offeredAt).toISOString(),
            max_postponements: consent.max_postponements,
            ...(consent.postpone_seconds !== undefined ? { postpone_seconds: consent.postpone_seconds } : {}),
          },
        }
      : {}),
  };
}

/** Minutes since local midnight at `at` in an IANA time zone (the vehicle's own zone). */
export function localMinutes(at: number, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(new Date(at));
  const hour = Number(parts.find((p) => p.type === 'hour')?.value ?? 0);
  const minute = Number(parts.find((p) => p.type === 'minute')?.value ?? 0);
  return hour * 60 + minute;
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** Whether local time `minutes` lies in [start, end); a window with end before start wraps midnight. */
export function inWindow(minutes: number, window: { start: string; end: string }): boolean {
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  return start < end ? minutes >= start && minutes < end : minutes >= start || minutes < end;
}

/** Minutes from local time `minutes` until the window next opens (0 when open). */
export function minutesUntilWindow(minutes: number, window: { start: string; end: string }): number {
  if (inWindow(minutes, window)) return 0;
  return (minutesOf(window.start) - minutes + 1440) % 1440;
}
