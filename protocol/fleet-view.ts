/**
 * What the console (and the CLI) read besides releases and campaigns: who the caller is, the registered vehicles
 * a page at a time with filters, and a vehicle's status history as a timeline.
 */

import { OPERATOR_ROLES } from './roles.js';
import { plainText } from './text.js';
import * as z from './zod.js';

/** GET /me: the caller as the API sees it (the console shows only the controls this role may use). */
export const principalViewSchema = z.object({
  actor: z.string(),
  role: z.enum([...OPERATOR_ROLES, 'iam', 'unknown']),
});
export type PrincipalView = z.infer<typeof principalViewSchema>;

export const vehicleSummarySchema = z.object({
  vin: z.string(),
  model: z.string(),
  ecus: z.array(z.object({ ecu: z.string(), hardware_id: z.string(), version: z.string() })),
  registered_at: z.string(),
  revoked_at: z.nullable(z.string()),
});
export type VehicleSummary = z.infer<typeof vehicleSummarySchema>;

/**
 * GET /vehicles: one page of the registry (a scan of up to VEHICLE_SCAN_PAGE vehicles), filtered; a page may hold
 * fewer vehicles than it scanned, even none, with a next_token while the registry goes on.
 */
export const vehicleListSchema = z.object({
  vehicles: z.array(vehicleSummarySchema),
  scanned: z.int(),
  next_token: z.nullable(z.string()),
});
export type VehicleList = z.infer<typeof vehicleListSchema>;
export const VEHICLE_SCAN_PAGE = 500;

export const vehicleListQueryShape = {
  model: z.optional(plainText(64).check(z.minLength(1))),
  /** Any ECU at this version. */
  version: z.optional(z.string().check(z.regex(/^\d+\.\d+\.\d+$/))),
  /** VINs starting with this. */
  vin_prefix: z.optional(z.string().check(z.regex(/^[A-HJ-NPR-Z0-9]{1,17}$/))),
} as const;

/** GET /vehicles/{vin}/history: status events, newest first. */
export const vehicleHistorySchema = z.object({
  vin: z.string(),
  events: z.array(
    z.object({
      update_id: z.string(),
      status: z.string(),
      progress: z.nullable(z.number()),
      reason: z.nullable(z.string()),
      source: z.string(),
      applied: z.boolean(),
      at: z.string(),
    }),
  ),
});
export type VehicleHistory = z.infer<typeof vehicleHistorySchema>;
export const HISTORY_LIMITS = { default: 100, max: 500 } as const;

/**
 * GET /fleet/versions: how many vehicles run each version of one ECU, among those a campaign of a release for that
 * ECU would target (not revoked, a compatible hardware id, below the new version, the model when given), counted
 * over one scan page of one parallel-scan segment. The caller (`ota firmware sign --delta-auto`, `ota vehicles
 * versions`) walks the segments' pages and adds them up: no request reads the whole registry.
 */
export const installedVersionsSchema = z.object({
  ecu: z.string(),
  /** Vehicles counted per installed version of the ECU, most first. */
  versions: z.array(z.object({ version: z.string(), vehicles: z.int() })),
  scanned: z.int(),
  next_token: z.nullable(z.string()),
});
export type InstalledVersions = z.infer<typeof installedVersionsSchema>;
/** Parallel scan segments a caller may split the registry into. */
export const MAX_VERSION_SEGMENTS = 16;

export const installedVersionsQueryShape = {
  ecu: plainText(64).check(z.minLength(1)),
  /** Comma-separated compatible hardware ids (the release's); any when absent. */
  hardware_ids: z.optional(
    z.string().check(z.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(,[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,31}$/)),
  ),
  model: z.optional(plainText(64).check(z.minLength(1))),
  /** Only vehicles running a version below this one (the release's: those already at or above it are excluded). */
  below: z.optional(z.string().check(z.regex(/^\d+\.\d+\.\d+$/))),
  segment: z.optional(z.coerce.number().check(z.int(), z.minimum(0), z.maximum(MAX_VERSION_SEGMENTS - 1))),
  segments: z.optional(z.coerce.number().check(z.int(), z.minimum(1), z.maximum(MAX_VERSION_SEGMENTS))),
} as const;
