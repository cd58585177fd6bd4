/**
 * The vehicle's software inventory: per ECU its hardware id, the version it runs and that image's SHA-256, as the
 * vehicle itself reports it (POST /updates/{vin}/inventory) after registration and after every install. The backend
 * keeps the latest on the vehicle item, shows it to operators and targets campaigns by it. Reports carry the
 * vehicle's report sequence number, so an older report arriving late never overwrites a newer one.
 */

import { ecuNameSchema, hardwareIdSchema, sha256Schema, versionSchema } from './schemas.js';
import * as z from './zod.js';

/** At most this many ECUs per vehicle (as at registration): bounds the item (64 x ~200 bytes, far below 400 KB). */
export const MAX_INVENTORY_ECUS = 64;

export const inventoryEcuSchema = z.strictObject({
  ecu: ecuNameSchema,
  hardware_id: hardwareIdSchema,
  version: versionSchema,
  sha256: sha256Schema,
});
export type InventoryEcu = z.infer<typeof inventoryEcuSchema>;

export const inventoryReportSchema = z.strictObject({
  sequence: z.int().check(z.minimum(0), z.maximum(Number.MAX_SAFE_INTEGER)),
  ecus: z.array(inventoryEcuSchema).check(z.minLength(1), z.maxLength(MAX_INVENTORY_ECUS)),
});
export type InventoryReport = z.infer<typeof inventoryReportSchema>;

/** POST /updates/{vin}/inventory: applied is false when a newer report was already stored. */
export const inventoryAnswerSchema = z.object({
  vin: z.string(),
  sequence: z.int(),
  applied: z.boolean(),
});
export type InventoryAnswer = z.infer<typeof inventoryAnswerSchema>;

/** The stored inventory, as GET /vehicles/{vin} shows it. */
export const inventoryViewSchema = z.object({
  ecus: z.array(
    z.object({ ecu: z.string(), hardware_id: z.string(), version: z.string(), sha256: z.string() }),
  ),
  sequence: z.int(),
  reported_at: z.string(),
});
export type InventoryView = z.infer<typeof inventoryViewSchema>;

/**
 * A campaign target pattern for a version: exact ("2.1.0"), or with x wildcards ("2.x", "2.1.x"), matching every
 * version whose leading numbers are those (pre-releases included).
 */
export const versionPatternSchema = z.union([
  versionSchema,
  z
    .string()
    .check(
      z.regex(
        /^(0|[1-9]\d{0,8})(\.(0|[1-9]\d{0,8}))?\.x$/,
        'must be a version or a pattern such as 2.x or 2.1.x',
      ),
    ),
]);

export function versionMatches(pattern: string, version: string): boolean {
  if (!pattern.includes('x')) return pattern === version;
  const want = pattern.split('.').filter((p) => p !== 'x');
  const have = version.split('-')[0]!.split('.');
  return want.every((p, i) => have[i] === p);
}
