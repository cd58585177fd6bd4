/**
 * The request side of the HTTP API's contract: the schemas of the route bodies and query strings (with their
 * limits) that ROUTES (routes.ts) names, and that handlers, the CLI, the console and the OpenAPI document use through
 * it.
 */

import { auditFilterShape } from './audit.js';
import { rollbackOfferSchema } from './bundle-api.js';
import { campaignConditionsSchema } from './conditions.js';
import { HISTORY_LIMITS, installedVersionsQueryShape, vehicleListQueryShape } from './fleet-view.js';
import { freshnessAlertSchema } from './freshness.js';
import { inventoryReportSchema, versionPatternSchema } from './inventory.js';
import { VIN_LIST_LIMITS } from './limits.js';
import {
  ecuNameSchema,
  hardwareIdSchema,
  releaseIdSchema,
  signedManifestSchema,
  statusReportSchema,
  versionSchema,
  vinSchema,
} from './schemas.js';
import { plainText } from './text.js';
import * as z from './zod.js';

export const bodies = {
  challenge: z.strictObject({ vin: vinSchema }),
  token: z.strictObject({
    vin: vinSchema,
    nonce: z.string().check(z.regex(/^[A-Za-z0-9_-]{32,64}$/)),
    signature: z
      .string()
      .check(z.minLength(16), z.maxLength(256), z.regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64')),
  }),
  firmwareRequest: z.strictObject({ firmware_version: versionSchema }),
  status: statusReportSchema,
  freshnessAlert: freshnessAlertSchema,
  inventory: inventoryReportSchema,
  createRelease: signedManifestSchema,
  publishRelease: z.strictObject({
    upload_id: z.optional(plainText(1024).check(z.minLength(1))),
    parts: z.optional(
      z
        .array(
          z.strictObject({
            part_number: z.int().check(z.minimum(1), z.maximum(10000)),
            etag: plainText(256).check(z.minLength(1)),
          }),
        )
        .check(z.maxLength(10000)),
    ),
  }),
  campaignAction: z.strictObject({}),
  /** Kill switches: an optional reason, printable ASCII only (it is stored and shown to operators). */
  killSwitch: z.strictObject({
    reason: z.optional(
      z.string().check(z.regex(/^[\x20-\x7e]{1,200}$/, 'must be 1-200 printable ASCII characters')),
    ),
  }),
  registerVehicle: z.strictObject({
    vin: vinSchema,
    model: z.string().check(z.regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/)),
    ecus: z
      .array(z.strictObject({ ecu: ecuNameSchema, hardware_id: hardwareIdSchema, version: versionSchema }))
      .check(z.minLength(1), z.maxLength(64)),
    csr: z.string().check(z.minLength(100), z.maxLength(8192)),
  }),
} as const;

export const campaignIdSchema = z
  .string()
  .check(z.regex(/^[a-z0-9][a-z0-9-]{2,63}$/, 'must be 3-64 lowercase letters, digits or -'));

const createCampaignSchema = z
  .strictObject({
    campaign_id: z.optional(campaignIdSchema),
    name: plainText(128).check(z.minLength(1)),
    /** The release offered; or, instead, `bundle_id`: a stored bundle (POST /bundles) installed all or nothing. */
    release_id: z.optional(releaseIdSchema),
    bundle_id: z.optional(releaseIdSchema),
    /**
     * A rollback campaign: takes campaign `campaign_id` back to the bundle named here, with the OEM-signed rollback
     * authorisation every vehicle checks before it lowers any ECU (protocol/rollback.ts).
     */
    rollback: z.optional(rollbackOfferSchema),
    targets: z
      .strictObject({
        vins: z.optional(z.array(vinSchema).check(z.maxLength(10000))),
        filter: z.optional(
          z.strictObject({
            model: z.optional(plainText(64)),
            hardware_id: z.optional(plainText(64)),
            current_version: z.optional(versionSchema),
            /** Vehicles whose (reported) inventory has this ECU at a matching version: {ecu: "bcm", version: "2.x"}. */
            runs: z.optional(z.strictObject({ ecu: ecuNameSchema, version: versionPatternSchema })),
          }),
        ),
        /** Every registered vehicle: required instead of an empty filter, so the whole fleet is never a typo. */
        all: z.optional(z.literal(true)),
        /**
         * A VIN list too large for the request (up to VIN_LIST_LIMITS): the answer carries a presigned PUT for a
         * file of exactly `size` bytes; POST /campaigns/{id}/targets then says the upload is complete.
         */
        vin_list: z.optional(
          z.strictObject({
            size: z
              .int()
              .check(
                z.minimum(17),
                z.maximum(
                  VIN_LIST_LIMITS.bytes,
                  `a VIN list may have at most ${VIN_LIST_LIMITS.bytes} bytes`,
                ),
              ),
          }),
        ),
      })
      .check(
        z.refine(
          (t) => t.vins !== undefined || t.filter !== undefined || t.all === true || t.vin_list !== undefined,
          'targets needs vins, a filter, all or vin_list',
        ),
      ),
    policy: z.optional(
      z.strictObject({
        waves: z.optional(
          z.array(z.number().check(z.gt(0), z.maximum(100))).check(z.minLength(1), z.maxLength(20)),
        ),
        /** Allows a first wave above CANARY_MAX_PERCENT (e.g. one 100% wave for a handful of test vehicles). */
        skip_canary: z.optional(z.literal(true)),
        advance_success_percent: z.optional(z.number().check(z.minimum(0), z.maximum(100))),
        soak_seconds: z.optional(z.int().check(z.minimum(0), z.maximum(30 * 86400))),
        halt_failure_count: z.optional(z.int().check(z.minimum(1))),
        halt_failure_percent: z.optional(z.number().check(z.gt(0), z.maximum(100))),
        halt_min_outcomes: z.optional(z.int().check(z.minimum(1))),
        vehicle_timeout_seconds: z.optional(z.int().check(z.minimum(1), z.maximum(30 * 86400))),
        retry_budget: z.optional(z.int().check(z.minimum(0), z.maximum(10))),
        notify_per_second: z.optional(z.int().check(z.minimum(1), z.maximum(10000))),
        /** Driver consent, maintenance window, download network (protocol/conditions.ts). Default: none. */
        conditions: z.optional(campaignConditionsSchema),
      }),
    ),
  })
  .check(
    z.refine((c) => (c.release_id === undefined) !== (c.bundle_id === undefined), {
      message: 'a campaign names either release_id or bundle_id',
    }),
  );

export { createCampaignSchema };

/**
 * Every listing is paginated: `limit` items at most (bounded, so no page nears Lambda's 6 MB response), and an
 * opaque `next_token` from the previous page's answer to continue; a page answers `next_token: null` when it is
 * the last. Tokens are only meaningful to the listing that made them; anything else is refused with 400.
 */
export const PAGE_LIMITS = { default: 100, max: 1000 } as const;
export const nextTokenSchema = z
  .string()
  .check(
    z.minLength(1),
    z.maxLength(2048),
    z.regex(/^[A-Za-z0-9_-]+$/, 'must be a token from a previous page'),
  );
const pageQuery = {
  limit: z.optional(z.coerce.number().check(z.int(), z.minimum(1), z.maximum(PAGE_LIMITS.max))),
  next_token: z.optional(nextTokenSchema),
};
export const queries = {
  page: z.strictObject(pageQuery),
  wavePage: z.strictObject({
    ...pageQuery,
    wave: z.optional(z.coerce.number().check(z.int(), z.minimum(0), z.maximum(19))),
  }),
  audit: z.strictObject({ ...pageQuery, ...auditFilterShape }),
  vehicles: z.strictObject({ next_token: z.optional(nextTokenSchema), ...vehicleListQueryShape }),
  versions: z.strictObject({ next_token: z.optional(nextTokenSchema), ...installedVersionsQueryShape }),
  history: z.strictObject({
    limit: z.optional(z.coerce.number().check(z.int(), z.minimum(1), z.maximum(HISTORY_LIMITS.max))),
  }),
} as const;
