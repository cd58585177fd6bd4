/**
 * Per-vehicle assignments: the backend's signed statement "this VIN may install this exact release, until this
 * time". The vehicle needs both this and the OEM-signed release manifest, so neither a compromised backend nor a
 * stolen release key alone can make a car install something. The per-vehicle counter only grows, so a replayed
 * (frozen) older assignment is recognisably stale.
 */
import * as z from 'zod';
import { canonicalJson } from './canonical-json.js';
import type { ReleaseManifest } from './manifest.js';
import { VIN_PATTERN } from './schemas.js';
import { keyIdOf, type Signer, sha256Hex, type TrustedKey, verifyEcdsa } from './signatures.js';

export const assignmentSchema = z.strictObject({
  schema: z.literal('ota.assignment/v1'),
  vin: z.string().regex(VIN_PATTERN),
  update_id: z.string().min(1).max(128),
  campaign_id: z.string().max(64).nullable(),
  release_id: z.string().min(1).max(64),
  version: z.string().max(64),
  ecu: z.string().max(32),
  /** SHA-256 of the canonical release manifest: binds this assignment to exactly one manifest. */
  manifest_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  counter: z.number().int().min(1),
  issued_at: z.iso.datetime(),
  expires_at: z.iso.datetime(),
});
export type Assignment = z.infer<typeof assignmentSchema>;

export const signedAssignmentSchema = z.strictObject({
  assignment: assignmentSchema,
  key_id: z.string().regex(/^[0-9a-f]{16}$/),
  signature: z.string().min(16).max(256),
});
export type SignedAssignment = z.infer<typeof signedAssignmentSchema>;

const CONTEXT = 'ota.assignment/v1\n';

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

/** Whether the assignment is signed by one of these (backend) keys: the first thing to know of any assignment. */
export function assignmentSignedBy(signed: SignedAssignment, keys: readonly TrustedKey[]): boolean {
  const key = keys.find((k) => k.keyId === signed.key_id);
  return (
    !!key && verifyEcdsa(key.key, Buffer.from(CONTEXT + canonicalJson(signed.assignment)), signed.signature)
  );
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
