/**
 * The update offer sent to a vehicle on vehicle/updates/{VIN}/issue_details. It carries what the vehicle needs to
 * decide whether the offer is genuine and meant for it (the backend-signed assignment) and small descriptive
 * fields; the OEM-signed manifest, with one digest per chunk, is NOT in it: a 16 GiB image at 64 KiB chunks has
 * 262,144 of them, far beyond IoT Core's 128 KB message limit. The offer names the manifest by the SHA-256 of its
 * canonical form (the same digest the signed assignment binds), and the vehicle fetches the signed manifest over
 * HTTPS (POST /updates/{vin}/download answers it) and checks it against the assignment's digest before using it.
 * So an offer stays under MAX_OFFER_BYTES whatever the image size.
 *
 * `manifest` is still accepted in an offer (an offer built from a /download answer, or from an older backend); it
 * must then be the manifest the assignment binds, like a fetched one. The download URL is never in it: URLs live
 * minutes, offers may wait for days in a persistent session, so the vehicle asks /download when it is ready.
 */

import { type SignedAssignment, signedAssignmentSchema } from './assignment.js';
import { bundleMaterialSchema } from './bundle-api.js';
import type { SignedManifest } from './manifest.js';
import { releaseIdSchema, sha256Schema, signedManifestSchema } from './schemas.js';
import * as z from './zod.js';

export const offerSchema = z
  .strictObject({
    type: z.literal('update_offer'),
    campaign_id: z.nullable(z.string().check(z.maxLength(64))),
    update_id: z.string().check(z.minLength(1), z.maxLength(128)),
    firmware_version: z.string().check(z.maxLength(64)),
    ecu: z.string().check(z.maxLength(32)),
    size: z.int().check(z.minimum(1)),
    // release_id and manifest_sha256 are always sent by this backend. They are optional so that an offer of an
    // earlier backend (which embedded `manifest` and had neither) still parses; either way the vehicle goes by the
    // digest in the signed assignment, which these must equal when present.
    release_id: z.optional(releaseIdSchema),
    /** SHA-256 of the canonical release manifest; equal to the signed assignment's manifest_sha256. */
    manifest_sha256: z.optional(sha256Schema),
    manifest: z.optional(signedManifestSchema),
    /**
     * A bundle offer (assignment ecu BUNDLE_ASSIGNMENT_ECU) may carry its material inline (protocol/bundle-api.ts);
     * the backend's offers do not (the vehicle fetches it, POST /updates/{vin}/bundle). Checked the same either way.
     */
    bundle: z.optional(bundleMaterialSchema),
    assignment: signedAssignmentSchema,
  })
  .check(
    z.refine((o) => o.manifest !== undefined || o.manifest_sha256 !== undefined, {
      message: 'an offer names its manifest (manifest_sha256) or carries it (manifest)',
    }),
  );
export type UpdateOffer = z.infer<typeof offerSchema>;

/** An offer together with the signed manifest it names: what the vehicle works from once it has the manifest. */
export type FullOffer = UpdateOffer & { readonly manifest: SignedManifest };

/** Largest offer the backend publishes (well under IoT Core's 128 KB message limit). */
export const MAX_OFFER_BYTES = 10 * 1024;

/**
 * The offer of a signed assignment: its fields are the assignment's own (so they cannot disagree with it), plus the
 * image size. Its length does not depend on the number of chunks.
 */
export function offerFor(assignment: SignedAssignment, size: number): UpdateOffer {
  const a = assignment.assignment;
  return {
    type: 'update_offer',
    campaign_id: a.campaign_id,
    update_id: a.update_id,
    firmware_version: a.version,
    ecu: a.ecu,
    size,
    release_id: a.release_id,
    manifest_sha256: a.manifest_sha256,
    assignment,
  };
}
