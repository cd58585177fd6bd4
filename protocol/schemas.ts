/**
 * The vocabulary of the wire protocol: identifiers, versions, digests, the signed release manifest and the update
 * statuses. Routes (routes.ts) and topics (topics.ts) build their payloads from these, so a VIN or a version means
 * the same over HTTPS and MQTT, on the backend and on the vehicle.
 */

import { plainText, storableNumber } from './text.js';
import * as z from './zod.js';

/** 17 characters, digits and capital letters without I, O and Q (ISO 3779). */
export const VIN_PATTERN = /^[A-HJ-NPR-Z0-9]{17}$/;
export const vinSchema = z
  .string()
  .check(z.regex(VIN_PATTERN, 'must be 17 characters: digits and letters except I, O, Q'));

/** Semantic version; pre-release tags allowed. */
export const VERSION_PATTERN =
  /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(-[0-9A-Za-z][0-9A-Za-z.-]{0,31})?$/;
export const versionSchema = z
  .string()
  .check(z.maxLength(64), z.regex(VERSION_PATTERN, 'must be a semantic version such as 3.0.1'));

export const RELEASE_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const releaseIdSchema = z
  .string()
  .check(
    z.regex(RELEASE_ID_PATTERN, 'must be 1-64 characters: lowercase letters, digits, dot, dash, underscore'),
  );

export const ecuNameSchema = z
  .string()
  .check(z.regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'must be 1-32 lowercase letters, digits, - or _'));
export const hardwareIdSchema = z
  .string()
  .check(z.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 letters, digits, . _ -'));
export const sha256Schema = z
  .string()
  .check(z.regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters'));

export const MAX_IMAGE_SIZE = 16 * 1024 ** 3;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 64 * 1024 ** 2;
/** Largest frame window (compression.window): what a vehicle holds to decode, beside one batch of frames. */
export const MAX_FRAME_WINDOW = 8 * 1024 ** 2;

export const releaseManifestSchema = z.strictObject({
  schema: z.literal('ota.release-manifest/v1'),
  release_id: releaseIdSchema,
  ecu: ecuNameSchema,
  hardware_ids: z.array(hardwareIdSchema).check(z.minLength(1), z.maxLength(32)),
  version: versionSchema,
  size: z.int().check(z.minimum(1), z.maximum(MAX_IMAGE_SIZE)),
  sha256: sha256Schema,
  chunk_size: z.int().check(z.minimum(MIN_CHUNK_SIZE), z.maximum(MAX_CHUNK_SIZE)),
  chunks: z.array(sha256Schema).check(z.minLength(1), z.maxLength(8192)),
  created_at: z.iso.datetime(),
  /**
   * Present when the stored object is zstd frames and a frame table (protocol/frames.ts) rather than the raw image:
   * the table's place in the object and its digest, signed with the rest. Agents before this field refuse such a
   * manifest (strict schema), so a fleet switches to compressed releases once it runs an agent that reads them.
   */
  compression: z.optional(
    z.strictObject({
      format: z.literal('ota.zstd-frames/v1'),
      object_size: z.int().check(z.minimum(1)),
      table_offset: z.int().check(z.minimum(1)),
      table_size: z.int().check(z.minimum(64)),
      table_sha256: sha256Schema,
      /**
       * Each zstd frame was compressed with up to this many image bytes right before it, within its manifest chunk,
       * as a raw-content dictionary (protocol/frame-window.ts): frames stay Range-addressable (a vehicle builds each
       * chunk in order, so it has those bytes) and compress like one stream. Absent: independent frames.
       */
      window: z.optional(z.int().check(z.minimum(1), z.maximum(MAX_FRAME_WINDOW))),
      /**
       * Precomputed deltas (protocol/delta.ts) appended after the frame table, one per base image the publisher
       * built one from: the image a vehicle must have installed (size and SHA-256), where the delta's bytes are in
       * the object and the SHA-256 of its table. Signed with the rest, so the table is as trusted as the manifest.
       */
      deltas: z.optional(
        z
          .array(
            z.strictObject({
              from_version: versionSchema,
              base_size: z.int().check(z.minimum(1), z.maximum(MAX_IMAGE_SIZE)),
              base_sha256: sha256Schema,
              offset: z.int().check(z.minimum(1)),
              size: z.int().check(z.minimum(1)),
              table_size: z.int().check(z.minimum(16)),
              table_sha256: sha256Schema,
            }),
          )
          .check(z.maxLength(16)),
      ),
    }),
  ),
});

export const signatureSchema = z.strictObject({
  key_id: z.string().check(z.regex(/^[0-9a-f]{16}$/)),
  signature: z
    .string()
    .check(z.minLength(16), z.maxLength(256), z.regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64')),
});

export const signedManifestSchema = z.strictObject({
  manifest: releaseManifestSchema,
  signatures: z.array(signatureSchema).check(z.minLength(1), z.maxLength(8)),
});

export const UPDATE_STATUSES = [
  'scheduled',
  'offered',
  // Driver consent (campaign conditions, protocol/conditions.ts): asked, postponed, refused, not given in time.
  'awaiting_consent',
  'postponed',
  'initiated',
  'downloading',
  'downloaded',
  'verifying',
  'installing',
  'completed',
  'failed',
  'verification_failed',
  'rolled_back',
  'rejected',
  'cancelled',
  'timed_out',
  'declined',
  'expired',
] as const;
export type UpdateStatus = (typeof UPDATE_STATUSES)[number];

/** What a vehicle may report; offered, initiated, cancelled and timed_out are set by the backend only. */
export const VEHICLE_STATUSES = [
  'awaiting_consent',
  'postponed',
  'downloading',
  'downloaded',
  'verifying',
  'installing',
  'completed',
  'failed',
  'verification_failed',
  'rolled_back',
  'rejected',
  'declined',
  'expired',
] as const satisfies readonly UpdateStatus[];

/** Largest reason text a vehicle may send. */
export const MAX_REASON_LENGTH = 500;

/**
 * A status report, the same over HTTPS (POST /updates/{vin}/status) and MQTT (vehicle/updates/{VIN}/progress and
 * .../status). Minimal payloads ({"status"} or {"progress", "status"}) are valid: they are attributed to the
 * vehicle's active update.
 */
export const statusReportSchema = z.strictObject({
  status: z.enum(VEHICLE_STATUSES),
  firmware_version: z.optional(versionSchema),
  campaign_id: z.optional(plainText(64)),
  sequence: z.optional(z.int().check(z.minimum(0), z.maximum(Number.MAX_SAFE_INTEGER))),
  // Every number must be one DynamoDB holds: 5e-324 is within 0-100 but would be refused by the store (500).
  progress: z.optional(storableNumber().check(z.minimum(0), z.maximum(100))),
  reason: z.optional(plainText(MAX_REASON_LENGTH)),
  /**
   * How the image was obtained (with the outcome report, once per update): bytes fetched from the network
   * (tables, frames, delta, re-fetches), image bytes rebuilt locally (chunk reuse, delta), and the image size.
   * The campaign sums them (bytes saved across the fleet = image bytes - fetched).
   */
  bytes_fetched: z.optional(z.int().check(z.minimum(0), z.maximum(Number.MAX_SAFE_INTEGER))),
  bytes_reused: z.optional(z.int().check(z.minimum(0), z.maximum(MAX_IMAGE_SIZE))),
  bytes_image: z.optional(z.int().check(z.minimum(1), z.maximum(MAX_IMAGE_SIZE))),
  /**
   * The counter of the assignment the vehicle acts on. When given, it must be that of the update's current offer
   * or a later assignment of it; a report about an earlier offer is refused (409).
   */
  assignment_counter: z.optional(z.int().check(z.minimum(1), z.maximum(Number.MAX_SAFE_INTEGER))),
});
export type StatusReport = z.infer<typeof statusReportSchema>;
