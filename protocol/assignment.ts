/**
 * Per-vehicle assignments: the backend's signed statement "this VIN may install this exact release, until this
 * time". The vehicle needs both this and the OEM-signed release manifest, so neither a compromised backend nor a
 * stolen release key alone can make a car install something. The per-vehicle counter only grows, so a replayed
 * (frozen) older assignment is recognisably stale.
 *
 * Signed one of two ways, both chaining to a trusted backend key:
 * - delegated (the default): by a function instance's online key, the assignment carrying the delegation in which
 *   the backend key (KMS) certified that key for scope "assignment" (protocol/delegation.ts). The assignment must
 *   be issued inside the delegation's window and expire no later than it, so checking the assignment's expiry
 *   checks the delegation's too. One KMS Sign per instance per hour instead of one per vehicle;
 * - direct: by the backend key itself (earlier backends, and ASSIGNMENT_SIGNING=direct for fleets whose agents
 *   predate delegation). Agents accept both.
 */

import { canonicalJson } from './canonical-json.js';
import { updateConditionsSchema } from './conditions.js';
import { type DelegatedSigner, delegatedKey, signedDelegationSchema } from './delegation.js';
import type { ReleaseManifest } from './manifest.js';
import { VIN_PATTERN } from './schemas.js';
import { keyIdOf, type Signer, sha256Hex, type TrustedKey, verifyEcdsa } from './signatures.js';
import * as z from './zod.js';

export const assignmentSchema = z.strictObject({
  schema: z.literal('ota.assignment/v1'),
  vin: z.string().check(z.regex(VIN_PATTERN)),
  update_id: z.string().check(z.minLength(1), z.maxLength(128)),
  campaign_id: z.nullable(z.string().check(z.maxLength(64))),
  release_id: z.string().check(z.minLength(1), z.maxLength(64)),
  version: z.string().check(z.maxLength(64)),
  ecu: z.string().check(z.maxLength(32)),
  /** SHA-256 of the canonical release manifest: binds this assignment to exactly one manifest. */
  manifest_sha256: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
  counter: z.int().check(z.minimum(1)),
  issued_at: z.iso.datetime(),
  expires_at: z.iso.datetime(),
  /**
   * Campaign conditions (driver consent, maintenance window, network), signed with the rest so that no message on
   * the way can drop them. Sent only when the campaign sets some: agents older than this field refuse such an
   * assignment (strict schema), so they never install an update they cannot ask the driver about
   * (protocol/conditions.ts).
   */
  conditions: z.optional(updateConditionsSchema),
});
export type Assignment = z.infer<typeof assignmentSchema>;

export const signedAssignmentSchema = z.strictObject({
  assignment: assignmentSchema,
  /** The signing key: a trusted backend key, or the online key the delegation certifies. */
  key_id: z.string().check(z.regex(/^[0-9a-f]{16}$/)),
  signature: z.string().check(z.minLength(16), z.maxLength(256)),
  /** Present when key_id is an online key: the backend key's certificate of it for scope "assignment". */
  delegation: z.optional(signedDelegationSchema),
});
export type SignedAssignment = z.infer<typeof signedAssignmentSchema>;

const CONTEXT = 'ota.assignment/v1\n';

/** The delegation scope of online keys that sign assignments. */
export const ASSIGNMENT_SCOPE = 'assignment';

export function manifestDigest(manifest: ReleaseManifest): string {
  return sha256Hex(canonicalJson(manifest));
}

export async function signAssignment(assignment: Assignment, signer: Signer): Promise<SignedAssignment> {
  const signature = await signer.sign(Buffer.from(CONTEXT + canonicalJson(assignment)));
  return {
    assignment,
    key_id: keyIdOf(await signer.publicKeyPem()),
    signature: signature.toString('base64'),
  };
}

/** Signs an assignment with an instance's online key (no backend signature unless its delegation is renewed). */
export async function signAssignmentDelegated(
  assignment: Assignment,
  signer: DelegatedSigner,
): Promise<SignedAssignment> {
  const online = await signer.onlineKey();
  return {
    assignment,
    key_id: online.keyId,
    signature: online.sign(Buffer.from(CONTEXT + canonicalJson(assignment))).toString('base64'),
    delegation: online.delegation,
  };
}

/**
 * Whether the assignment chains to one of these (backend) keys: the first thing to know of any assignment. Either
 * the backend key signed it, or an online key did whose delegation a backend key signed for scope "assignment",
 * and the assignment lies inside that delegation's window (issued after it starts, expiring before it ends).
 */
export function assignmentSignedBy(signed: SignedAssignment, keys: readonly TrustedKey[]): boolean {
  const data = Buffer.from(CONTEXT + canonicalJson(signed.assignment));
  if (!signed.delegation) {
    const key = keys.find((k) => k.keyId === signed.key_id);
    return !!key && verifyEcdsa(key.key, data, signed.signature);
  }
  const online = delegatedKey(signed.delegation, keys, ASSIGNMENT_SCOPE);
  if (!online || online.keyId !== signed.key_id) return false;
  const a = signed.assignment;
  const issued = Date.parse(a.issued_at);
  if (!(issued >= online.notBefore && issued <= online.notAfter)) return false;
  if (Date.parse(a.expires_at) > online.notAfter) return false;
  return verifyEcdsa(online.key, data, signed.signature);
}

export type AssignmentCheck =
  | { ok: true }
  | { ok: false; reason: 'bad_signature' | 'wrong_vin' | 'expired' | 'stale_counter' | 'manifest_mismatch' };

/**
 * Everything a vehicle checks about an assignment before acting on it: signature by a trusted backend key, its
 * own VIN, not expired, a counter above the last one it accepted, and the manifest it came with.
 */
export function checkAssignment(
  signed: SignedAssignment,
  ctx: {
    keys: readonly TrustedKey[];
    vin: string;
    now: Date;
    lastCounter: number;
    manifest: ReleaseManifest;
  },
): AssignmentCheck {
  if (!assignmentSignedBy(signed, ctx.keys)) return { ok: false, reason: 'bad_signature' };
  const a = signed.assignment;
  if (a.vin !== ctx.vin) return { ok: false, reason: 'wrong_vin' };
  if (Date.parse(a.expires_at) <= ctx.now.getTime()) return { ok: false, reason: 'expired' };
  if (a.counter <= ctx.lastCounter) return { ok: false, reason: 'stale_counter' };
  if (a.manifest_sha256 !== manifestDigest(ctx.manifest) || a.release_id !== ctx.manifest.release_id) {
    return { ok: false, reason: 'manifest_mismatch' };
  }
  return { ok: true };
}
