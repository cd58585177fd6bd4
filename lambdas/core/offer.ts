/**
 * The update offer sent to a vehicle on vehicle/updates/{VIN}/issue_details. It carries everything the vehicle
 * needs to decide, before downloading anything, whether it may install: the OEM-signed manifest and the
 * backend-signed assignment. The download URL is not in it: URLs live minutes, offers may wait for days in a
 * persistent session, so the vehicle asks POST /updates/{vin}/download when it is ready.
 */
import { z } from 'zod';
import { signedManifestSchema } from './api-schema.js';
import { signedAssignmentSchema } from './assignment.js';

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

export function issueDetailsTopic(vin: string): string {
  return `vehicle/updates/${vin}/issue_details`;
}

/** Publishes offers to vehicles (IoT Data Plane on AWS and on the local cloud). */
export interface OfferPublisher {
  publish(vin: string, offer: UpdateOffer): Promise<void>;
}
