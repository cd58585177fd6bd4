/**
 * The wire contract of bundles (protocol/bundle.ts) between the backend, the operator and the vehicle.
 *
 * - An operator stores an OEM-signed bundle with POST /bundles (its members must be published releases, each the
 *   exact manifest the bundle names); a campaign then targets `bundle_id` instead of `release_id`.
 * - The offer of a bundle is an ordinary offer whose signed assignment binds the bundle (ecu BUNDLE_ASSIGNMENT_ECU,
 *   release_id the bundle id, manifest_sha256 the bundle digest): it stays small whatever the member count.
 * - The vehicle asks POST /updates/{vin}/bundle for the signed bundle, every member's signed manifest with a
 *   short-lived download URL and, for a rollback campaign, the OEM-signed rollback authorisation. It checks all of
 *   it itself (vehicle/bundle-install.ts): the backend's answer is material to verify, never trusted.
 * - An offer may carry the same material inline (`bundle`), as a single-release offer may carry its manifest;
 *   the vehicle checks it exactly the same way.
 */
import { signedAssignmentSchema } from './assignment.js';
import { signedBundleSchema } from './bundle.js';
import { signedRollbackAuthorisationSchema } from './rollback.js';
import { ecuNameSchema, releaseIdSchema, signedManifestSchema } from './schemas.js';
import * as z from './zod.js';

/** A rollback campaign's licence: the campaign it takes back and the OEM-signed authorisation. */
export const rollbackOfferSchema = z.strictObject({
  /** The campaign whose release or bundle is taken back (the authorisation's campaign_id). */
  campaign_id: z.string().check(z.minLength(1), z.maxLength(64)),
  authorisation: signedRollbackAuthorisationSchema,
});
export type RollbackOffer = z.infer<typeof rollbackOfferSchema>;

/** What a vehicle needs besides download URLs; inline in an offer or in the /bundle answer. */
export const bundleMaterialSchema = z.strictObject({
  bundle: z.unknown(),
  manifests: z.array(signedManifestSchema).check(z.maxLength(16)),
  /** Present for rollback campaigns; a vehicle still refuses any downgrade it does not verifiably license. */
  rollback: z.optional(z.unknown()),
});
export type BundleMaterial = z.infer<typeof bundleMaterialSchema>;

export const bundleRequestSchema = z.strictObject({
  bundle_id: releaseIdSchema,
  /**
   * Also sign an assignment of the bundle for this vehicle (`assignment` in the answer): a vehicle that learnt of
   * the bundle by polling (GET /updates/{vin}) never received its offer. Costs a counter write; omitted otherwise.
   */
  assignment: z.optional(z.boolean()),
});

export const bundleAnswerSchema = z.object({
  update_id: z.string(),
  campaign_id: z.nullable(z.string()),
  bundle: signedBundleSchema,
  members: z.array(
    z.object({
      ecu: ecuNameSchema,
      release_id: z.string(),
      manifest: signedManifestSchema,
      download_url: z.url({ protocol: /^https$/ }),
      expires_in: z.number(),
    }),
  ),
  rollback: z.nullable(rollbackOfferSchema),
  /** When asked for: the bundle's assignment, freshly signed (the offer a polling vehicle never received). */
  assignment: z.optional(signedAssignmentSchema),
});
export type BundleAnswer = z.infer<typeof bundleAnswerSchema>;

/** GET /bundles/{bundleId} and POST /bundles. */
export const bundleViewSchema = z.object({
  bundle_id: z.string(),
  version: z.string(),
  members: z.array(
    z.object({ ecu: z.string(), release_id: z.string(), version: z.string(), size: z.number() }),
  ),
  install_order: z.array(z.string()),
  digest: z.string(),
  created_at: z.string(),
  signed_bundle: signedBundleSchema,
});
export type BundleView = z.infer<typeof bundleViewSchema>;
