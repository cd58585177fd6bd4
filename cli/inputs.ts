/**
 * Turning flags into API bodies, pure: ECU specs, wave lists, VIN files, byte sizes, and the campaign create
 * body, checked against the same zod schemas the API validates with so a mistake is reported against the flag
 * that caused it, before any request is made.
 */

import { createCampaignSchema } from '../protocol/routes.js';
import {
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  releaseIdSchema,
  VIN_PATTERN,
  versionSchema,
  vinSchema,
} from '../protocol/schemas.js';
import type * as z from '../protocol/zod.js';
import {
  booleanOption,
  type NumberRule,
  numberOption,
  type OptionValues,
  parseNumber,
  requireString,
  stringList,
  stringOption,
  UsageError,
} from './args.js';
import { conditionsFromFlags } from './conditions-flags.js';

export interface EcuSpec {
  readonly ecu: string;
  readonly hardware_id: string;
  readonly version: string;
}

/** `tcu:TCU-HW-1:1.0.0` -> { ecu, hardware_id, version }. */
export function parseEcuSpec(raw: string): EcuSpec {
  const parts = raw.split(':');
  if (parts.length !== 3 || parts.some((p) => p.trim() === '')) {
    throw new UsageError(`--ecu must be name:hardware_id:version, e.g. tcu:TCU-HW-1:1.0.0 (got '${raw}')`);
  }
  const [ecu, hardware_id, version] = parts.map((p) => p.trim()) as [string, string, string];
  checkWith(versionSchema, version, `--ecu ${raw}: version`);
  return { ecu, hardware_id, version };
}

/** `1,10,50,100` -> [1, 10, 50, 100]: cumulative percentages, strictly increasing, ending at 100. */
export function parseWaves(raw: string): number[] {
  const waves = raw
    .split(',')
    .map((w) => parseNumber(w.trim(), '--waves entries', { min: 0, max: 100, exclusiveMin: true }));
  if (waves.some((w, i) => i > 0 && w <= waves[i - 1]!)) {
    throw new UsageError(
      `--waves must be strictly increasing cumulative percentages, e.g. 1,10,50,100 (got '${raw}')`,
    );
  }
  if (waves.at(-1) !== 100) throw new UsageError(`--waves must end at 100 (got '${raw}')`);
  return waves;
}

/** VINs from a file: one or more per line, separated by commas or white space; '#' starts a comment. */
export function parseVinList(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*/, ''))
    .flatMap((line) => line.split(/[\s,]+/))
    .filter((v) => v !== '')
    .map((v) => v.toUpperCase());
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** `4MiB`, `64k`, `65536` -> bytes. */
export function parseByteSize(raw: string, label: string): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(raw.trim());
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new UsageError(`${label} must be a size such as 4MiB, 64KiB or 65536 (got '${raw}')`);
  return Number(m[1]) * unit;
}

export function parseChunkSize(raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = parseByteSize(raw, '--chunk-size');
  if (n < MIN_CHUNK_SIZE || n > MAX_CHUNK_SIZE) {
    throw new UsageError(`--chunk-size must be between 64KiB and 64MiB (got '${raw}')`);
  }
  return n;
}

function checkWith<T>(schema: z.ZodMiniType<T>, value: unknown, label: string): T {
  const r = schema.safeParse(value);
  if (!r.success)
    throw new UsageError(`${label} ${r.error.issues[0]?.message ?? 'is invalid'} (got '${String(value)}')`);
  return r.data;
}

export function checkReleaseId(value: string, label = '--release-id'): string {
  return checkWith(releaseIdSchema, value, label);
}

export function checkVersion(value: string, label = '--version'): string {
  return checkWith(versionSchema, value, label);
}

export function checkVin(value: string, label = 'VIN'): string {
  return checkWith(vinSchema, value, label);
}

export type CampaignBody = z.infer<typeof createCampaignSchema>;

/** Flag name for each policy field of the create body, so schema problems name the flag. */
const POLICY_FLAGS = {
  waves: 'waves',
  advance_success_percent: 'advance-success-percent',
  soak_seconds: 'soak-seconds',
  halt_failure_percent: 'halt-failure-percent',
  halt_failure_count: 'halt-failure-count',
  halt_min_outcomes: 'halt-min-outcomes',
  vehicle_timeout_seconds: 'vehicle-timeout-seconds',
  retry_budget: 'retry-budget',
  notify_per_second: 'notify-per-second',
} as const;

const POLICY_RULES: Record<keyof typeof POLICY_FLAGS, NumberRule> = {
  waves: {},
  advance_success_percent: { min: 0, max: 100 },
  soak_seconds: { integer: true, min: 0, max: 30 * 86400 },
  halt_failure_percent: { min: 0, max: 100, exclusiveMin: true },
  halt_failure_count: { integer: true, min: 1 },
  halt_min_outcomes: { integer: true, min: 1 },
  vehicle_timeout_seconds: { integer: true, min: 1, max: 30 * 86400 },
  retry_budget: { integer: true, min: 0, max: 10 },
  notify_per_second: { integer: true, min: 1, max: 10000 },
};

const FIELD_FLAGS: Record<string, string> = {
  name: 'name',
  release_id: 'release-id',
  campaign_id: 'campaign-id',
  'targets.vins': 'vin',
  'targets.filter.model': 'model',
  'targets.filter.hardware_id': 'hardware-id',
  'targets.filter.current_version': 'current-version',
  'targets.filter.runs': 'runs',
  ...Object.fromEntries(Object.entries(POLICY_FLAGS).map(([k, flag]) => [`policy.${k}`, flag])),
};

/**
 * The POST /campaigns body from the flags of `campaigns create`; `vinsFromFile` are the VINs read from
 * --vins-file (the caller reads the file). Throws UsageError naming the flag at fault.
 */
/** Above this many VINs a list goes through a presigned upload instead of the request body. */
export const INLINE_VINS = 10_000;

/** The targeted VINs, from --vin and the file, each once. */
export function campaignVins(values: OptionValues, vinsFromFile: readonly string[] = []): string[] {
  return [...new Set([...stringList(values, 'vin').map((v) => v.trim().toUpperCase()), ...vinsFromFile])];
}

/** The VIN list as uploaded (one VIN a line) when there are too many for the request body. */
export function vinListUpload(vins: readonly string[]): Buffer | undefined {
  return vins.length > INLINE_VINS ? Buffer.from(`${vins.join('\n')}\n`) : undefined;
}

/** `--runs bcm=2.x` -> { ecu: 'bcm', version: '2.x' }. */
function runsFilter(raw: string | undefined): { ecu: string; version: string } | undefined {
  if (raw === undefined) return undefined;
  const m = /^([^=]+)=(.+)$/.exec(raw.trim());
  if (!m) throw new UsageError(`--runs must be ecu=version, e.g. bcm=2.x (got '${raw}')`);
  return { ecu: m[1]!.trim(), version: m[2]!.trim() };
}

/** What a campaign offers: --release-id, or --bundle-id (installed all or nothing); exactly one. */
function campaignSubject(values: OptionValues): { release_id: string } | { bundle_id: string } {
  const release = stringOption(values, 'release-id');
  const bundle = stringOption(values, 'bundle-id');
  if ((release === undefined) === (bundle === undefined)) {
    throw new UsageError('choose what to roll out: --release-id or --bundle-id');
  }
  return release !== undefined ? { release_id: release } : { bundle_id: bundle! };
}

export function campaignBody(values: OptionValues, vinsFromFile: readonly string[] = []): CampaignBody {
  const vins = campaignVins(values, vinsFromFile);
  const upload = vinListUpload(vins);
  if (upload) {
    const bad = vins.find((v) => !VIN_PATTERN.test(v));
    if (bad !== undefined)
      throw new UsageError(`VIN '${bad}' is not a VIN (17 characters: digits and letters except I, O, Q)`);
  }
  const filter = {
    model: stringOption(values, 'model'),
    hardware_id: stringOption(values, 'hardware-id'),
    current_version: stringOption(values, 'current-version'),
    runs: runsFilter(stringOption(values, 'runs')),
  };
  const hasFilter = Object.values(filter).some((v) => v !== undefined);
  const all = booleanOption(values, 'all');
  if (all && (vins.length > 0 || hasFilter)) {
    throw new UsageError(
      '--all targets every vehicle: it cannot be combined with --vin, --vins-file or a filter',
    );
  }
  if (vins.length === 0 && !hasFilter && !all) {
    throw new UsageError(
      'choose the targets: --vin, --vins-file, a filter (--model, --hardware-id, --current-version) or --all',
    );
  }
  const policy: Record<string, unknown> = {};
  if (booleanOption(values, 'skip-canary')) policy.skip_canary = true;
  const conditions = conditionsFromFlags(values);
  if (conditions) policy.conditions = conditions;
  for (const [field, flag] of Object.entries(POLICY_FLAGS) as [keyof typeof POLICY_FLAGS, string][]) {
    if (field === 'waves') {
      const raw = stringOption(values, flag);
      if (raw !== undefined) policy.waves = parseWaves(raw);
    } else {
      const n = numberOption(values, flag, POLICY_RULES[field]);
      if (n !== undefined) policy[field] = n;
    }
  }
  const body = {
    ...(stringOption(values, 'campaign-id') !== undefined
      ? { campaign_id: stringOption(values, 'campaign-id') }
      : {}),
    name: requireString(values, 'name'),
    ...campaignSubject(values),
    targets: {
      ...(all ? { all: true as const } : {}),
      ...(upload ? { vin_list: { size: upload.length } } : vins.length ? { vins } : {}),
      ...(hasFilter
        ? { filter: Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== undefined)) }
        : {}),
    },
    ...(Object.keys(policy).length ? { policy } : {}),
  };
  const r = createCampaignSchema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = issue.path.filter((p) => typeof p === 'string').join('.');
    const index = issue.path.find((p) => typeof p === 'number');
    const flag = FIELD_FLAGS[path];
    const what =
      path === 'targets.vins' && index !== undefined
        ? `VIN '${vins[index] ?? ''}'`
        : flag
          ? `--${flag}`
          : path || 'the campaign';
    throw new UsageError(`${what}: ${issue.message}`);
  }
  return r.data;
}
