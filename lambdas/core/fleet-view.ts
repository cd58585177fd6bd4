/** Read-only views for operators: who is calling, the registry a page at a time, a vehicle's history. */
import type { APIGatewayProxyEvent } from 'aws-lambda';
import type {
  InstalledVersions,
  PrincipalView,
  VehicleHistory,
  VehicleList,
  VehicleSummary,
} from '../../protocol/fleet-view.js';
import { principalOf } from '../../protocol/roles.js';
import { compareVersions } from '../../protocol/versions.js';
import { BadRequestError, NotFoundError } from './errors.js';
import type { HistoryRepository, VehicleRecord, VehicleRepository } from './ports.js';

export function whoIs(event: Pick<APIGatewayProxyEvent, 'requestContext'>): PrincipalView {
  return principalOf(event.requestContext.identity) ?? { actor: 'unknown', role: 'unknown' };
}

export interface VehicleFilter {
  readonly model?: string;
  readonly version?: string;
  readonly vin_prefix?: string;
}

/** Which vehicles GET /fleet/versions counts: those a campaign of a release for `ecu` would target. */
export interface VersionFilter {
  readonly ecu: string;
  /** Comma-separated compatible hardware ids. */
  readonly hardware_ids?: string;
  readonly model?: string;
  readonly below?: string;
  readonly segment?: number;
  readonly segments?: number;
}

/** The version of `f.ecu` the vehicle runs if a release for it with these filters would target it. */
export function targetedVersion(v: VehicleRecord, f: VersionFilter): string | undefined {
  const e = v.ecus.find((x) => x.ecu === f.ecu);
  if (!e || v.revokedAt !== undefined) return undefined;
  if (f.model !== undefined && v.model !== f.model) return undefined;
  if (f.hardware_ids !== undefined && !f.hardware_ids.split(',').includes(e.hardware_id)) return undefined;
  if (f.below !== undefined && compareVersions(e.version, f.below) >= 0) return undefined;
  return e.version;
}

export function matches(v: VehicleRecord, f: VehicleFilter): boolean {
  return (
    (f.model === undefined || v.model === f.model) &&
    (f.version === undefined || v.ecus.some((e) => e.version === f.version)) &&
    (f.vin_prefix === undefined || v.vin.startsWith(f.vin_prefix))
  );
}

const summary = (v: VehicleRecord): VehicleSummary => ({
  vin: v.vin,
  model: v.model,
  ecus: v.ecus.map((e) => ({ ecu: e.ecu, hardware_id: e.hardware_id, version: e.version })),
  registered_at: v.registeredAt,
  revoked_at: v.revokedAt ?? null,
});

/** The scan cursor is base64url JSON of the registry's key ({vin}); anything else is the caller's mistake. */
function checkedCursor(token: string | undefined): string | undefined {
  if (token === undefined) return undefined;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    key = undefined;
  }
  const k = key as Record<string, unknown> | undefined;
  if (!k || typeof k !== 'object' || Object.keys(k).join() !== 'vin' || typeof k.vin !== 'string') {
    throw new BadRequestError('invalid_next_token', 'next_token is not a token from this listing');
  }
  return token;
}

export class FleetView {
  constructor(private readonly deps: { vehicles: VehicleRepository; history: HistoryRepository }) {}

  async vehicles(filter: VehicleFilter, token?: string): Promise<VehicleList> {
    const page = await this.deps.vehicles.scan(checkedCursor(token));
    return {
      vehicles: page.items.filter((v) => matches(v, filter)).map(summary),
      scanned: page.items.length,
      next_token: page.cursor ?? null,
    };
  }

  /**
   * One scan page of one segment, counted by installed version: a million vehicles is ~2,000 pages, which the
   * caller walks in up to 16 segments at once; no request reads more than one page (1 MB of DynamoDB items).
   */
  async installedVersions(filter: VersionFilter, token?: string): Promise<InstalledVersions> {
    const segments = filter.segments ?? 1;
    const segment = filter.segment ?? 0;
    if (segment >= segments) {
      throw new BadRequestError('invalid_segment', `segment ${segment} is not one of 0..${segments - 1}`);
    }
    const page = await this.deps.vehicles.scanSegment(segment, segments, 500, checkedCursor(token));
    const counts = new Map<string, number>();
    for (const v of page.items) {
      const version = targetedVersion(v, filter);
      if (version !== undefined) counts.set(version, (counts.get(version) ?? 0) + 1);
    }
    return {
      ecu: filter.ecu,
      versions: [...counts]
        .map(([version, vehicles]) => ({ version, vehicles }))
        .sort((a, b) => b.vehicles - a.vehicles || compareVersions(b.version, a.version)),
      scanned: page.items.length,
      next_token: page.cursor ?? null,
    };
  }

  async history(vin: string, limit: number): Promise<VehicleHistory> {
    if (!(await this.deps.vehicles.get(vin))) throw new NotFoundError('unknown_vehicle', `No vehicle ${vin}`);
    const events = await this.deps.history.listForVehicle(vin, limit);
    return {
      vin,
      events: events.map((e) => ({
        update_id: e.updateId,
        status: e.status,
        progress: e.progress ?? null,
        reason: e.reason ?? null,
        source: e.source,
        applied: e.applied,
        at: e.at,
      })),
    };
  }
}
