/**
 * What the operator routes answer (releases, vehicle registry, campaigns). The backend's views are typed by these
 * schemas, the CLI renders their types and the OpenAPI document describes them, so a field renamed or dropped on
 * one side breaks the build or the conformance test instead of printing blanks.
 */
import { campaignConditionsSchema } from './conditions.js';
import { inventoryViewSchema } from './inventory.js';
import { updateViewSchema } from './responses.js';
import { signedManifestSchema, UPDATE_STATUSES } from './schemas.js';
import * as z from './zod.js';

/** A release as stored: pending_upload until its image is uploaded and verified, then published; withdrawn for good by the kill switch. */
export const releaseViewSchema = z.object({
  release_id: z.string(),
  version: z.string(),
  ecu: z.string(),
  hardware_ids: z.array(z.string()),
  size: z.int(),
  sha256: z.string(),
  status: z.enum(['pending_upload', 'verifying', 'published', 'failed', 'withdrawn']),
  /** Progress of the background verification job (status verifying), or where it stopped (failed). */
  verification: z.nullable(z.object({ bytes_verified: z.int(), size: z.int(), started_at: z.string() })),
  failure_reason: z.nullable(z.string()),
  created_at: z.string(),
  published_at: z.nullable(z.string()),
  withdrawn_at: z.nullable(z.string()),
  manifest: signedManifestSchema,
});
export type ReleaseView = z.infer<typeof releaseViewSchema>;

/** Where to upload a release's image: one presigned PUT, or presigned parts of a multipart upload. */
export const uploadTargetSchema = z.discriminatedUnion('method', [
  z.object({ method: z.literal('PUT'), url: z.string(), expires_at: z.string() }),
  z.object({
    method: z.literal('MULTIPART'),
    upload_id: z.string(),
    part_size: z.int(),
    parts: z.array(z.object({ part_number: z.int(), url: z.string() })),
    expires_at: z.string(),
  }),
]);
export type UploadTargetView = z.infer<typeof uploadTargetSchema>;

/** POST /releases (201) */
export const releaseCreatedSchema = z.extend(releaseViewSchema, { upload: uploadTargetSchema });
export type ReleaseCreated = z.infer<typeof releaseCreatedSchema>;

/** A release as listings show it: without its manifest (thousands of chunk digests); GET one for it. */
export const releaseSummarySchema = z.omit(releaseViewSchema, { manifest: true });
export type ReleaseSummary = z.infer<typeof releaseSummarySchema>;

/** The opaque token of the next page; null on the last page. */
const nextTokenAnswer = z.nullable(z.string());

/** GET /releases, a page at a time */
export const releaseListSchema = z.object({
  releases: z.array(releaseSummarySchema),
  next_token: nextTokenAnswer,
});
export type ReleaseList = z.infer<typeof releaseListSchema>;

/** POST /vehicles (201): the device certificate issued for the vehicle's CSR. */
export const vehicleRegisteredSchema = z.object({
  vin: z.string(),
  model: z.string(),
  certificate_pem: z.string(),
  certificate_id: z.string(),
  registered_at: z.string(),
});
export type VehicleRegistered = z.infer<typeof vehicleRegisteredSchema>;

/** GET /vehicles/{vin} */
export const vehicleViewSchema = z.object({
  vin: z.string(),
  model: z.string(),
  ecus: z.array(z.object({ ecu: z.string(), hardware_id: z.string(), version: z.string() })),
  certificate_id: z.string(),
  registered_at: z.string(),
  active_update_id: z.nullable(z.string()),
  revoked_at: z.nullable(z.string()),
  /** The last withheld offer or freshness silence the vehicle reported. */
  freshness_alert: z.nullable(
    z.object({ kind: z.string(), sequence: z.int(), detail: z.string(), at: z.string() }),
  ),
  /** What the vehicle last reported it runs (null until its first inventory report). */
  inventory: z.nullable(inventoryViewSchema),
  updates: z.array(updateViewSchema),
});
export type VehicleView = z.infer<typeof vehicleViewSchema>;

/** POST /releases/{releaseId}/withdraw: the release, now withdrawn, and what the withdraw ended. */
export const releaseWithdrawnSchema = z.extend(releaseViewSchema, {
  campaigns_cancelled: z.int(),
  updates_withdrawn: z.int(),
});
export type ReleaseWithdrawn = z.infer<typeof releaseWithdrawnSchema>;

/** POST /vehicles/{vin}/revoke */
export const vehicleRevokedSchema = z.object({
  vin: z.string(),
  certificate_id: z.string(),
  revoked_at: z.string(),
  reason: z.string(),
  updates_withdrawn: z.int(),
});
export type VehicleRevoked = z.infer<typeof vehicleRevokedSchema>;

/** Vehicles per update state (only states with at least one vehicle appear). */
const countsSchema = z.record(z.string(), z.int());

/**
 * The rollout policy in effect, defaults filled in. It is echoed as stored, in camelCase (the request's policy
 * is snake_case); changing that would change the route's answer, so it is described as it is.
 */
export const rolloutPolicyViewSchema = z.object({
  waves: z.array(z.number()),
  advanceSuccessPercent: z.number(),
  soakSeconds: z.number(),
  haltFailureCount: z.optional(z.number()),
  haltFailurePercent: z.optional(z.number()),
  haltMinOutcomes: z.number(),
  vehicleTimeoutSeconds: z.number(),
  retryBudget: z.number(),
  notifyPerSecond: z.number(),
  /** Present (true) when the operator allowed a first wave above the canary share. */
  skipCanary: z.optional(z.boolean()),
  /** The campaign's conditions as the operator set them (protocol/conditions.ts), when any. */
  conditions: z.optional(campaignConditionsSchema),
});

export const CAMPAIGN_STATUSES = [
  'preparing',
  'failed',
  'created',
  'running',
  'paused',
  'halted',
  'cancelling',
  'cancelled',
  'completed',
] as const;

/** GET /campaigns/{id}, every campaign action, and POST /campaigns (with the upload target). */
export const campaignViewSchema = z.object({
  campaign_id: z.string(),
  name: z.string(),
  /** The release offered, or the bundle's id for a bundle campaign (then ecu is "@bundle"). */
  release_id: z.string(),
  /** Set on a bundle campaign: the bundle installed all or nothing. */
  bundle_id: z.optional(z.nullable(z.string())),
  /** Set on a rollback campaign: the campaign it takes back. */
  rollback_of: z.optional(z.nullable(z.string())),
  version: z.string(),
  ecu: z.string(),
  status: z.enum(CAMPAIGN_STATUSES),
  halt_reason: z.nullable(z.string()),
  /** While cancelling: the wave being withdrawn (the counts show how many are cancelled so far). */
  cancel: z.nullable(z.object({ wave: z.int(), started_at: z.string() })),
  current_wave: z.int(),
  target_count: z.int(),
  /** How many targets were excluded, per reason; GET /campaigns/{id}/excluded lists them a page at a time. */
  excluded: z.object({ count: z.int(), by_reason: z.record(z.string(), z.int()) }),
  counts: countsSchema,
  /**
   * What the campaign's downloads cost, summed from the vehicles' 'verifying' reports (issue 13): downloads
   * reported, bytes fetched, image bytes rebuilt locally, image bytes delivered, and bytes saved against the raw
   * image (delivered - fetched).
   */
  transfer: z.object({
    downloads: z.int(),
    bytes_fetched: z.int(),
    bytes_reused: z.int(),
    bytes_image: z.int(),
    bytes_saved: z.int(),
  }),
  waves: z.array(
    z.object({
      wave: z.int(),
      size: z.int(),
      started_at: z.nullable(z.string()),
      counts: countsSchema,
      succeeded: z.int(),
      failed: z.int(),
    }),
  ),
  policy: rolloutPolicyViewSchema,
  /**
   * How the targets are written (null on campaigns created before this was asynchronous): awaiting_targets (an
   * uploaded VIN list is expected), running (counts so far, summed over the segments' checkpoints), finished.
   */
  preparation: z.nullable(
    z.object({
      state: z.enum(['awaiting_targets', 'running', 'finished']),
      segments: z.object({ total: z.int(), done: z.int() }),
      scanned: z.int(),
      targeted: z.int(),
      excluded: z.int(),
      duplicates: z.int(),
      invalid: z.int(),
      /** status failed: why (`no_targets: ...`, `unreachable_halt: ...`). */
      failure_reason: z.nullable(z.string()),
      upload_expires_at: z.nullable(z.string()),
      started_at: z.string(),
      finished_at: z.nullable(z.string()),
    }),
  ),
  created_at: z.string(),
  updated_at: z.string(),
});
export type CampaignView = z.infer<typeof campaignViewSchema>;

/** POST /campaigns (202): with targets.vin_list, where to PUT the list (exactly the declared size). */
export const campaignCreatedSchema = z.extend(campaignViewSchema, {
  upload: z.optional(
    z.object({
      method: z.literal('PUT'),
      url: z.string(),
      /** Send them with the PUT: the URL is signed for this type and length. */
      headers: z.object({ 'content-type': z.string(), 'content-length': z.string() }),
      expires_at: z.string(),
    }),
  ),
});
export type CampaignCreated = z.infer<typeof campaignCreatedSchema>;

/** GET /campaigns, a page at a time */
export const campaignListSchema = z.object({
  campaigns: z.array(campaignViewSchema),
  next_token: nextTokenAnswer,
});
export type CampaignList = z.infer<typeof campaignListSchema>;

/** GET /campaigns/{id}/vehicles?wave=N, a page at a time */
export const campaignVehiclesSchema = z.object({
  campaign_id: z.string(),
  wave: z.int(),
  next_token: nextTokenAnswer,
  vehicles: z.array(
    z.object({
      vin: z.string(),
      status: z.enum(UPDATE_STATUSES),
      progress: z.number(),
      attempt: z.int(),
      reason: z.nullable(z.string()),
      offered_at: z.nullable(z.string()),
      deadline: z.nullable(z.string()),
      updated_at: z.string(),
    }),
  ),
});
export type CampaignVehicles = z.infer<typeof campaignVehiclesSchema>;

/** GET /campaigns/{id}/excluded, a page at a time (VIN order) */
export const campaignExcludedSchema = z.object({
  campaign_id: z.string(),
  excluded: z.array(z.object({ vin: z.string(), reason: z.string() })),
  next_token: nextTokenAnswer,
});
export type CampaignExcluded = z.infer<typeof campaignExcludedSchema>;
