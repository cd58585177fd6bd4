/**
 * The update offer sent to a vehicle on vehicle/updates/{VIN}/issue_details. It carries everything the vehicle
 * needs to decide, before downloading anything, whether it may install: the OEM-signed manifest and the
 * backend-signed assignment. The download URL is not in it: URLs live minutes, offers may wait for days in a
 * persistent session, so the vehicle asks POST /updates/{vin}/download when it is ready.
 */
import * as z from 'zod';
import { signedAssignmentSchema } from './assignment.js';
import { signedManifestSchema } from './schemas.js';

export const offerSchema = z.strictObject({
  type: z.literal('update_offer'),
  campaign_id: z.string().max(64).nullable(),
  update_id: z.string().min(1).max(128),
  firmware_version: z.string().max(64),
  ecu: z.string().max(32),
  size: z.number().int().min(1),
  manifest: signedManifestSchema,
  assignment: signedAssignmentSchema,
});
export type UpdateOffer = z.infer<typeof offerSchema>;
