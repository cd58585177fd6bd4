/**
 * Human-readable views of API answers, pure. The answer types are the protocol's response schemas, the ones the
 * backend's views are typed by and the OpenAPI document describes, so a field renamed in the API breaks the build
 * here rather than printing blanks.
 */

import type {
  CampaignVehicles,
  CampaignView,
  ReleaseSummary,
  ReleaseView,
  VehicleView,
} from '../protocol/operator-responses.js';
import type { UpdateView } from '../protocol/responses.js';
import { UPDATE_STATUSES } from '../protocol/schemas.js';
import { escapeUnsafe } from '../protocol/text.js';
import { formatBytes } from './progress.js';

export type { CampaignView, ReleaseSummary, ReleaseView, UpdateView, VehicleView };
export type CampaignVehiclesView = CampaignVehicles;

/**
 * Text for a terminal: every control character (ESC, CSI, BEL, DEL, C1), bidi override and lone surrogate is shown
 * as a visible escape (`\x1b`), line breaks kept. Strings from the API (a vehicle's `reason`, names) pass through
 * here before they are printed, so a stored escape sequence can never clear the screen or fake a line.
 */
export function terminalText(text: string): string {
  return text.split('\n').map(escapeUnsafe).join('\n');
}

/** JSON for a terminal: JSON.stringify escapes C0 controls but leaves DEL, C1 and bidi characters raw. */
export function terminalJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(
    /[\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string[] {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

function keyValues(rows: readonly (readonly [string, string])[]): string[] {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
}

const orNone = (v: string | null | undefined) => (v === null || v === undefined || v === '' ? '-' : v);

export function releaseRows(releases: readonly ReleaseSummary[]): string[] {
  if (releases.length === 0) return ['no releases'];
  return table(
    ['RELEASE', 'ECU', 'VERSION', 'SIZE', 'STATUS', 'CREATED'],
    releases.map((r) => [r.release_id, r.ecu, r.version, formatBytes(r.size), r.status, r.created_at]),
  );
}

export function renderRelease(r: ReleaseView): string[] {
  const m = r.manifest.manifest;
  return keyValues([
    ['release', r.release_id],
    ['status', r.status],
    ['ecu', r.ecu],
    ['version', r.version],
    ['hardware ids', r.hardware_ids.join(', ')],
    ['size', `${formatBytes(r.size)} (${r.size} bytes)`],
    ['sha256', r.sha256],
    ['chunks', `${m.chunks.length} x ${formatBytes(m.chunk_size)}`],
    ['signed by', r.manifest.signatures.map((s) => s.key_id).join(', ')],
    ['created', r.created_at],
    ['published', orNone(r.published_at)],
  ]);
}

export function renderVehicle(v: VehicleView): string[] {
  const lines = keyValues([
    ['vin', v.vin],
    ['model', v.model],
    ['registered', v.registered_at],
    ['certificate', v.certificate_id],
    ['active update', orNone(v.active_update_id)],
  ]);
  // The inventory the vehicle reported (with image digests) when it has reported one, else the registration's.
  const reported = v.inventory;
  lines.push(
    '',
    ...(reported
      ? [
          `inventory reported ${reported.reported_at} (sequence ${reported.sequence})`,
          ...table(
            ['ECU', 'HARDWARE', 'VERSION', 'SHA-256'],
            reported.ecus.map((e) => [e.ecu, e.hardware_id, e.version, e.sha256.slice(0, 16)]),
          ),
        ]
      : [
          'inventory not reported yet (as registered)',
          ...table(
            ['ECU', 'HARDWARE', 'VERSION'],
            v.ecus.map((e) => [e.ecu, e.hardware_id, e.version]),
          ),
        ]),
  );
  lines.push(
    '',
    ...(v.updates.length === 0
      ? ['no updates']
      : table(
          ['UPDATE', 'RELEASE', 'VERSION', 'STATUS', 'PROGRESS', 'UPDATED'],
          v.updates.map((u) => [
            u.update_id,
            u.release_id,
            u.firmware_version,
            u.status,
            `${u.progress}%`,
            u.updated_at ?? '',
          ]),
        )),
  );
  return lines;
}

/** Waves are numbered from 0, as in the API and `campaigns vehicles --wave`. */
function waveText(c: CampaignView): string {
  return `${c.current_wave} (of 0-${c.waves.length - 1})`;
}

/** Statuses in their lifecycle order, keeping only those that appear. */
function statusesIn(countSets: readonly Record<string, number>[]): string[] {
  const seen = new Set(countSets.flatMap((c) => Object.keys(c)));
  const known: readonly string[] = UPDATE_STATUSES;
  return [...known.filter((s) => seen.has(s)), ...[...seen].filter((s) => !known.includes(s)).sort()];
}

export function countsText(counts: Record<string, number>): string {
  const statuses = statusesIn([counts]);
  return statuses.length === 0 ? 'none' : statuses.map((s) => `${s} ${counts[s]}`).join(', ');
}

/** A campaign's status with a wave x state matrix; `current` marks the wave being rolled out. */
const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** Bytes the campaign's downloads fetched against the images they delivered (issue 13). */
export function transferText(t: CampaignView['transfer']): string {
  const pct = t.bytes_image > 0 ? ` (${((t.bytes_saved * 100) / t.bytes_image).toFixed(1)}%)` : '';
  return (
    `${t.downloads} download(s): fetched ${MB(t.bytes_fetched)} for ${MB(t.bytes_image)} of images, ` +
    `saved ${MB(t.bytes_saved)}${pct}, ${MB(t.bytes_reused)} rebuilt from installed images`
  );
}

/** Where the campaign waits for its drivers (consent conditions): never counted as failures. */
function driverText(counts: Record<string, number>): string | undefined {
  const parts = (['awaiting_consent', 'postponed', 'declined', 'expired'] as const)
    .filter((s) => counts[s])
    .map((s) => `${s.replace('_', ' ')} ${counts[s]}`);
  return parts.length ? `${parts.join(', ')} (not failures)` : undefined;
}

export function renderCampaign(c: CampaignView): string[] {
  const drivers = driverText(c.counts);
  const lines = keyValues([
    ['campaign', `${c.campaign_id} (${c.name})`],
    ['release', `${c.release_id} (${c.ecu} ${c.version})`],
    ['status', c.status],
    ...(c.halt_reason ? ([['halt reason', c.halt_reason]] as const) : []),
    ['wave', waveText(c)],
    ...(c.preparation && c.preparation.state !== 'finished'
      ? ([['preparation', preparationText(c.preparation)]] as const)
      : []),
    ...(c.preparation?.failure_reason ? ([['failure', c.preparation.failure_reason]] as const) : []),
    ['targets', `${c.target_count}${c.excluded.count ? ` (${c.excluded.count} excluded)` : ''}`],
    ['totals', countsText(c.counts)],
    ...(drivers ? ([['drivers', drivers]] as const) : []),
    ...(c.transfer.downloads > 0 ? ([['transfer', transferText(c.transfer)]] as const) : []),
    ['updated', c.updated_at],
  ]);
  const statuses = statusesIn(c.waves.map((w) => w.counts));
  lines.push(
    '',
    ...table(
      ['WAVE', 'SIZE', ...statuses.map((s) => s.toUpperCase()), 'OK', 'FAILED', 'STARTED'],
      c.waves.map((w) => [
        `${w.wave}${w.wave === c.current_wave && c.status !== 'completed' ? '*' : ''}`,
        w.size,
        ...statuses.map((s) => w.counts[s] ?? 0),
        w.succeeded,
        w.failed,
        orNone(w.started_at),
      ]),
    ),
  );
  if (c.excluded.count) {
    lines.push(
      '',
      'excluded:',
      ...Object.entries(c.excluded.by_reason).map(([reason, n]) => `  ${reason}  ${n}`),
      `  (the VINs: ota campaigns excluded ${c.campaign_id})`,
    );
  }
  return lines;
}

/** A preparation's progress in words: where it is, and its counts so far. */
export function preparationText(p: NonNullable<CampaignView['preparation']>): string {
  if (p.state === 'awaiting_targets')
    return `waiting for the VIN list upload (until ${p.upload_expires_at ?? '?'}), then POST /campaigns/<id>/targets`;
  const counts = `${p.targeted} targeted, ${p.excluded} excluded, ${p.scanned} read`;
  return `${p.state === 'running' ? 'preparing' : 'prepared'}: ${counts} (${p.segments.done}/${p.segments.total} segments done)`;
}

/** One line per change for logs: time, status, wave, totals and halt reason. */
export function campaignLine(c: CampaignView, at: Date): string {
  const time = at.toISOString().slice(11, 19);
  const halt = c.halt_reason ? `; halt reason: ${c.halt_reason}` : '';
  return `${time} ${c.campaign_id} ${c.status} wave ${waveText(c)}: ${countsText(c.counts)}${halt}`;
}

export function campaignRows(campaigns: readonly CampaignView[]): string[] {
  if (campaigns.length === 0) return ['no campaigns'];
  return table(
    ['CAMPAIGN', 'NAME', 'RELEASE', 'STATUS', 'WAVE', 'TARGETS', 'CREATED'],
    campaigns.map((c) => [
      c.campaign_id,
      c.name,
      c.release_id,
      c.status,
      waveText(c),
      c.target_count,
      c.created_at,
    ]),
  );
}

export function campaignVehicleRows(v: CampaignVehiclesView): string[] {
  if (v.vehicles.length === 0) return [`no vehicles in wave ${v.wave}`];
  return table(
    ['VIN', 'STATUS', 'PROGRESS', 'ATTEMPT', 'REASON', 'UPDATED'],
    v.vehicles.map((x) => [x.vin, x.status, `${x.progress}%`, x.attempt, orNone(x.reason), x.updated_at]),
  );
}
