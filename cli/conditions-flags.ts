/**
 * `ota campaigns create` flags for campaign conditions (protocol/conditions.ts): driver consent, maintenance
 * window, download network, what the driver is shown. The request schema and the backend check the values
 * (a clear 400 for combinations that cannot work); this only maps flags to the body.
 */
import type { CampaignConditions } from '../protocol/conditions.js';
import { numberOption, type OptionValues, stringOption, UsageError } from './args.js';

export const CONDITION_FLAGS = {
  'consent-deadline': {
    type: 'string',
    placeholder: '<s>',
    description:
      'require driver consent within this many seconds of the offer (else the update ends expired)',
  },
  'consent-deadline-at': {
    type: 'string',
    placeholder: '<date>',
    description:
      'require driver consent by this date (ISO 8601, e.g. 2026-12-24T00:00:00Z); with --consent-deadline, the earlier',
  },
  'max-postponements': {
    type: 'string',
    placeholder: '<n>',
    description: 'with a consent deadline: how often the driver may postpone',
  },
  'postpone-seconds': {
    type: 'string',
    placeholder: '<s>',
    description: 'with --max-postponements: how long a postponement lasts',
  },
  'maintenance-window': {
    type: 'string',
    placeholder: '<HH:MM-HH:MM>',
    description: "install only in this window of the vehicle's local time (may wrap midnight)",
  },
  network: { type: 'string', placeholder: '<any|unmetered>', description: 'networks the download may use' },
  'release-notes': { type: 'string', placeholder: '<text>', description: 'shown to the driver' },
  'install-minutes': {
    type: 'string',
    placeholder: '<n>',
    description: 'shown to the driver: how long the install takes',
  },
} as const;

export function conditionsFromFlags(values: OptionValues): Record<string, unknown> | undefined {
  const c: Record<string, unknown> = {};
  const deadline = numberOption(values, 'consent-deadline');
  const deadlineAt = stringOption(values, 'consent-deadline-at');
  const max = numberOption(values, 'max-postponements');
  const postpone = numberOption(values, 'postpone-seconds');
  if (deadline !== undefined || deadlineAt !== undefined) {
    c.consent = {
      ...(deadline !== undefined ? { deadline_seconds: deadline } : {}),
      ...(deadlineAt !== undefined ? { deadline_at: deadlineAt } : {}),
      ...(max !== undefined ? { max_postponements: max } : {}),
      ...(postpone !== undefined ? { postpone_seconds: postpone } : {}),
    };
  } else if (max !== undefined || postpone !== undefined) {
    throw new UsageError(
      '--max-postponements and --postpone-seconds need --consent-deadline or --consent-deadline-at',
    );
  }
  const window = stringOption(values, 'maintenance-window');
  if (window !== undefined) {
    const [start, end] = window.split('-');
    c.maintenance_window = { start, end };
  }
  const network = stringOption(values, 'network');
  if (network !== undefined) c.network = network;
  const notes = stringOption(values, 'release-notes');
  if (notes !== undefined) c.release_notes = notes;
  const minutes = numberOption(values, 'install-minutes');
  if (minutes !== undefined) c.install_minutes = minutes;
  return Object.keys(c).length ? (c as CampaignConditions) : undefined;
}
