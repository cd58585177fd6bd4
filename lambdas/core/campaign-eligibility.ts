/**
 * Which vehicles a campaign may target, from the registry: the rules campaign preparation applies to every vehicle
 * it scans or reads from a VIN list (campaign-preparation.ts), for a single release and for a bundle.
 */
import { compareVersions } from '../../protocol/versions.js';
import { runsVersion } from './inventory.js';
import type { PreparationRecord, VehicleRecord } from './ports.js';

/** Why a vehicle cannot take the release, or undefined when it can (the rules creation always applied). */
export function exclusionReason(
  v: VehicleRecord,
  manifest: { ecu: string; hardware_ids: readonly string[]; version: string },
): string | undefined {
  const ecu = v.ecus.find((e) => e.ecu === manifest.ecu);
  if (v.revokedAt !== undefined) return 'revoked';
  if (!ecu) return `no_${manifest.ecu}_ecu`;
  if (!manifest.hardware_ids.includes(ecu.hardware_id)) return 'incompatible_hardware';
  if (compareVersions(ecu.version, manifest.version) >= 0) return 'already_at_or_above_version';
  return undefined;
}

/** Why a vehicle cannot take the campaign's release or bundle; undefined when it can. */
export type Eligibility = (v: VehicleRecord) => string | undefined;

/**
 * Why a vehicle cannot take a bundle: an ECU missing or of other hardware, or nothing to do. An upgrade campaign
 * never targets a vehicle one of whose ECUs already runs above its member (the vehicle would refuse the downgrade);
 * a rollback campaign targets exactly those that run something else than the bundle. From the registry's versions,
 * which the vehicles' inventory reports keep current; the vehicle checks for itself before anything is downloaded.
 */
export function bundleExclusionReason(
  v: VehicleRecord,
  members: readonly { ecu: string; hardware_ids: readonly string[]; version: string }[],
  rollback: boolean,
): string | undefined {
  if (v.revokedAt !== undefined) return 'revoked';
  let changes = false;
  for (const m of members) {
    const ecu = v.ecus.find((e) => e.ecu === m.ecu);
    if (!ecu) return `no_${m.ecu}_ecu`;
    if (!m.hardware_ids.includes(ecu.hardware_id)) return 'incompatible_hardware';
    const order = compareVersions(ecu.version, m.version);
    if (order > 0 && !rollback) return 'already_at_or_above_version';
    if (order !== 0) changes = true;
  }
  return changes ? undefined : 'already_at_version';
}

/** Whether a vehicle matches the campaign's target filter (for the ECU the campaign updates). */
export function matchesFilter(
  v: VehicleRecord,
  f: NonNullable<PreparationRecord['source']['filter']>,
  ecu: string,
) {
  const e = v.ecus.find((x) => x.ecu === ecu);
  if (f.model !== undefined && v.model !== f.model) return false;
  if (f.hardware_id !== undefined && e?.hardware_id !== f.hardware_id) return false;
  if (f.current_version !== undefined && e?.version !== f.current_version) return false;
  if (f.runs !== undefined && !runsVersion(v, f.runs.ecu, f.runs.version)) return false;
  return true;
}
