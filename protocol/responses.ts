/**
 * What the vehicle routes answer. The backend builds these shapes, the agent validates what it receives with the
 * same schemas, and the OpenAPI document describes them, so an answer has one definition. Clients parse them
 * leniently (unknown fields are dropped, not refused) so the backend can add fields without breaking old cars.
 */

import { signedAssignmentSchema } from './assignment.js';
import { signedManifestSchema } from './schemas.js';
import * as z from './zod.js';

/** Every refused request (4xx) and internal error (500): a stable machine-readable code and a human message. */
export const errorAnswerSchema = z.object({
  error: z.object({ code: z.string(), message: z.string() }),
});
export type ErrorAnswer = z.infer<typeof errorAnswerSchema>;

/** POST /auth/challenge */
export const challengeAnswerSchema = z.object({ nonce: z.string(), expires_at: z.string() });
export type ChallengeAnswer = z.infer<typeof challengeAnswerSchema>;

/** POST /auth/token */
export const tokenAnswerSchema = z.object({
  token: z.string(),
  token_type: z.literal('Bearer'),
  expires_in: z.number().check(z.positive()),
  expires_at: z.string(),
});
export type TokenAnswer = z.infer<typeof tokenAnswerSchema>;

/** POST /updates/{vin}/initiate and /download */
export const downloadAnswerSchema = z.object({
  download_url: z.url({ protocol: /^https$/ }),
  expires_at: z.string(),
  expires_in: z.number(),
  firmware_version: z.string(),
  release_id: z.string(),
  ecu: z.string(),
  size: z.int(),
  sha256: z.string(),
  update_id: z.string(),
  status: z.string(),
  manifest: signedManifestSchema,
  assignment: signedAssignmentSchema,
});
export type DownloadAnswer = z.infer<typeof downloadAnswerSchema>;

export const updateViewSchema = z.object({
  update_id: z.string(),
  release_id: z.string(),
  firmware_version: z.string(),
  ecu: z.string(),
  campaign_id: z.nullish(z.string()),
  status: z.string(),
  progress: z.number(),
  attempt: z.int(),
  reason: z.optional(z.string()),
  /** Not yet in a terminal state: the vehicle should act on it. */
  pending: z.boolean(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type UpdateView = z.infer<typeof updateViewSchema>;

/** GET /updates/{vin}/firmware/{version}: a 302 whose Location is download_url. */
export const firmwareRedirectSchema = z.object({
  download_url: z.url({ protocol: /^https$/ }),
  expires_at: z.string(),
});
export type FirmwareRedirect = z.infer<typeof firmwareRedirectSchema>;

/** GET /updates/{vin} */
export const updateListSchema = z.object({
  vin: z.string(),
  active_update_id: z.nullable(z.string()),
  updates: z.array(updateViewSchema),
  pending: z.array(updateViewSchema),
});
export type UpdateList = z.infer<typeof updateListSchema>;

/** POST /updates/{vin}/status */
export const statusAnswerSchema = z.object({
  vin: z.string(),
  update_id: z.string(),
  status: z.string(),
  progress: z.number(),
  /** False for a duplicate, late or out-of-order report: recorded in the history, state unchanged. */
  applied: z.boolean(),
});
export type StatusAnswer = z.infer<typeof statusAnswerSchema>;
