/**
 * Bundles: one OEM-signed document that moves several ECUs together. It names each member release by id, version,
 * hardware ids, image digest and the digest of its canonical release manifest, the order they are installed in,
 * and version constraints between ECUs. The vehicle installs a bundle all or nothing (vehicle/bundle-install.ts).
 *
 * What the document defeats (Uptane's terms):
 * - partial bundle: an offer must bring exactly one signed manifest per member; a missing one refuses the whole
 *   bundle before a byte is downloaded (checkBundleMembers);
 * - mix and match: each manifest must be the one the bundle names (canonical digest, release id, ECU, version), so
 *   a member of another bundle or another release of the same ECU is refused;
 * - rollback: a member below what the ECU runs installs only with a rollback authorisation (rollback.ts).
 *
 * A bundle is signed by the OEM release key like a release manifest, over a domain-separated canonical form, so
 * a signature over a manifest can never be taken for one over a bundle and the backend alone cannot make one.
 */

import { assignmentSignedBy, manifestDigest, type SignedAssignment } from './assignment.js';
import { canonicalJson } from './canonical-json.js';
import { ProtocolError } from './errors.js';
import type { ReleaseManifest } from './manifest.js';
import {
  ecuNameSchema,
  hardwareIdSchema,
  MAX_IMAGE_SIZE,
  releaseIdSchema,
  sha256Schema,
  signatureSchema,
  versionSchema,
} from './schemas.js';
import { keyIdOf, type Signer, sha256Hex, type TrustedKey, verifyEcdsa } from './signatures.js';
import { compareVersions } from './versions.js';
import * as z from './zod.js';

export const MAX_BUNDLE_MEMBERS = 16;

/**
 * The ECU name a backend assignment for a bundle carries: its manifest_sha256 is then the bundle's digest and its
 * release_id the bundle id. No real ECU can be called this (ECU names have no '@').
 */
export const BUNDLE_ASSIGNMENT_ECU = '@bundle';

export const bundleMemberSchema = z.strictObject({
  ecu: ecuNameSchema,
  release_id: releaseIdSchema,
  version: versionSchema,
  hardware_ids: z.array(hardwareIdSchema).check(z.minLength(1), z.maxLength(32)),
  /** SHA-256 of the member's canonical release manifest (protocol/assignment.ts manifestDigest). */
  manifest_sha256: sha256Schema,
  /** Whole-image SHA-256 and size, as the manifest states them (shown by tools; checked against the manifest). */
  image_sha256: sha256Schema,
  size: z.int().check(z.minimum(1), z.maximum(MAX_IMAGE_SIZE)),
});
export type BundleMember = z.infer<typeof bundleMemberSchema>;

/**
 * "While `member` runs this bundle's version, `requires` must run a version in [min_version, below_version)".
 * `requires` may be another member (checked on the bundle itself) or an ECU outside the bundle (checked against
 * the vehicle's inventory before anything is downloaded).
 */
export const bundleConstraintSchema = z.strictObject({
  member: ecuNameSchema,
  requires: ecuNameSchema,
  min_version: z.optional(versionSchema),
  below_version: z.optional(versionSchema),
});
export type BundleConstraint = z.infer<typeof bundleConstraintSchema>;

export const bundleSchema = z.strictObject({
  schema: z.literal('ota.bundle/v1'),
  bundle_id: releaseIdSchema,
  version: versionSchema,
  members: z.array(bundleMemberSchema).check(z.minLength(1), z.maxLength(MAX_BUNDLE_MEMBERS)),
  /** Every member's ECU exactly once: the order slots are written and activated in. */
  install_order: z.array(ecuNameSchema).check(z.minLength(1), z.maxLength(MAX_BUNDLE_MEMBERS)),
  constraints: z.array(bundleConstraintSchema).check(z.maxLength(64)),
  created_at: z.iso.datetime(),
});
export type Bundle = z.infer<typeof bundleSchema>;

export const signedBundleSchema = z.strictObject({
  bundle: bundleSchema,
  signatures: z.array(signatureSchema).check(z.minLength(1), z.maxLength(8)),
});
export type SignedBundle = z.infer<typeof signedBundleSchema>;

/** A detached-signature document: the canonical bytes with a domain-separation prefix, signed by release keys. */
export interface SignedDocument {
  readonly signatures: readonly { readonly key_id: string; readonly signature: string }[];
}

export function documentSigningInput(context: string, doc: unknown): Buffer {
  return Buffer.from(context + canonicalJson(doc), 'utf8');
}

export async function signDocument(
  context: string,
  doc: unknown,
  signers: readonly Signer[],
): Promise<{ key_id: string; signature: string }[]> {
  const input = documentSigningInput(context, doc);
  return Promise.all(
    signers.map(async (s) => ({
      key_id: keyIdOf(await s.publicKeyPem()),
      signature: (await s.sign(input)).toString('base64'),
    })),
  );
}

/** True when one signature verifies against a trusted key of the same id; unknown keys are ignored. */
export function documentSignedBy(
  context: string,
  doc: unknown,
  signed: SignedDocument,
  trusted: readonly TrustedKey[],
): boolean {
  const input = documentSigningInput(context, doc);
  return signed.signatures.some((sig) =>
    trusted.some((t) => t.keyId === sig.key_id && verifyEcdsa(t.key, input, sig.signature)),
  );
}

const BUNDLE_CONTEXT = 'ota.bundle/v1\n';

export async function signBundle(bundle: Bundle, signers: readonly Signer[]): Promise<SignedBundle> {
  checkBundleConsistency(bundle);
  return { bundle, signatures: await signDocument(BUNDLE_CONTEXT, bundle, signers) };
}

/**
 * The bundle of these releases, installed in the order given: each member named by its manifest's canonical
 * digest, image digest and size (what `ota bundles sign` and the simulations build before signing).
 */
export function bundleOfManifests(
  id: string,
  version: string,
  manifests: readonly ReleaseManifest[],
  constraints: BundleConstraint[] = [],
  createdAt = new Date().toISOString(),
): Bundle {
  return {
    schema: 'ota.bundle/v1',
    bundle_id: id,
    version,
    members: manifests.map((m) => ({
      ecu: m.ecu,
      release_id: m.release_id,
      version: m.version,
      hardware_ids: m.hardware_ids,
      manifest_sha256: manifestDigest(m),
      image_sha256: m.sha256,
      size: m.size,
    })),
    install_order: manifests.map((m) => m.ecu),
    constraints,
    created_at: createdAt,
  };
}

/** SHA-256 of the canonical bundle: what a backend assignment for the bundle binds. */
export function bundleDigest(bundle: Bundle): string {
  return sha256Hex(canonicalJson(bundle));
}

/** Whether a version lies in a constraint's [min_version, below_version). */
export function satisfies(
  version: string,
  c: Pick<BundleConstraint, 'min_version' | 'below_version'>,
): boolean {
  if (c.min_version !== undefined && compareVersions(version, c.min_version) < 0) return false;
  if (c.below_version !== undefined && compareVersions(version, c.below_version) >= 0) return false;
  return true;
}

function describeRange(c: BundleConstraint): string {
  const parts = [c.min_version && `>= ${c.min_version}`, c.below_version && `< ${c.below_version}`];
  return parts.filter(Boolean).join(' and ') || 'any version';
}

/** A bundle that contradicts itself is refused wherever it is met (creation, signing, the vehicle). */
export function checkBundleConsistency(bundle: Bundle): void {
  const bad = (message: string) =>
    new ProtocolError('invalid_bundle', `bundle ${bundle.bundle_id}: ${message}`);
  const ecus = bundle.members.map((m) => m.ecu);
  if (new Set(ecus).size !== ecus.length) throw bad('two members target the same ECU');
  const order = bundle.install_order;
  if (
    order.length !== ecus.length ||
    new Set(order).size !== order.length ||
    order.some((e) => !ecus.includes(e))
  ) {
    throw bad('install_order must name every member ECU exactly once');
  }
  for (const c of bundle.constraints) {
    if (!ecus.includes(c.member)) throw bad(`constraint on ${c.member}, which is not a member`);
    if (c.member === c.requires) throw bad(`constraint of ${c.member} on itself`);
    if (c.min_version === undefined && c.below_version === undefined) throw bad('constraint without a bound');
    if (c.min_version && c.below_version && compareVersions(c.min_version, c.below_version) >= 0) {
      throw bad(`constraint of ${c.member} on ${c.requires} has an empty range`);
    }
    const required = bundle.members.find((m) => m.ecu === c.requires);
    if (required && !satisfies(required.version, c)) {
      throw bad(
        `${c.member} requires ${c.requires} ${describeRange(c)}, but the bundle carries ${required.version}`,
      );
    }
  }
}

/** Parses and checks a signed bundle: schema, consistency, a trusted OEM release key's signature. */
export function verifySignedBundle(input: unknown, releaseKeys: readonly TrustedKey[]): SignedBundle {
  const parsed = signedBundleSchema.safeParse(input);
  if (!parsed.success) {
    throw new ProtocolError(
      'invalid_bundle',
      `not a signed bundle: ${parsed.error.issues[0]?.message ?? ''}`,
    );
  }
  checkBundleConsistency(parsed.data.bundle);
  if (!documentSignedBy(BUNDLE_CONTEXT, parsed.data.bundle, parsed.data, releaseKeys)) {
    throw new ProtocolError(
      'bundle_signature',
      `bundle ${parsed.data.bundle.bundle_id} is not signed by a trusted release key`,
    );
  }
  return parsed.data;
}

/**
 * The member manifests of an offer, in install order, once they are exactly the bundle's: one per member, each
 * the manifest the bundle names. Throws bundle_incomplete (partial bundle) or bundle_mix_and_match.
 * `manifestDigestOf` is the canonical manifest digest (protocol/assignment.ts manifestDigest).
 */
export function checkBundleMembers(
  bundle: Bundle,
  manifests: readonly ReleaseManifest[],
  manifestDigestOf: (m: ReleaseManifest) => string,
): ReleaseManifest[] {
  const byEcu = new Map<string, ReleaseManifest>();
  for (const m of manifests) {
    const member = bundle.members.find((b) => b.ecu === m.ecu);
    if (!member) {
      throw new ProtocolError(
        'bundle_mix_and_match',
        `release ${m.release_id} for ECU ${m.ecu} is not a member of bundle ${bundle.bundle_id}`,
      );
    }
    if (byEcu.has(m.ecu)) {
      throw new ProtocolError('bundle_mix_and_match', `two releases for ECU ${m.ecu} in one bundle offer`);
    }
    if (
      manifestDigestOf(m) !== member.manifest_sha256 ||
      m.release_id !== member.release_id ||
      m.version !== member.version ||
      m.sha256 !== member.image_sha256 ||
      m.size !== member.size
    ) {
      throw new ProtocolError(
        'bundle_mix_and_match',
        `release ${m.release_id} ${m.version} for ${m.ecu} is not the member bundle ${bundle.bundle_id} names (${member.release_id} ${member.version})`,
      );
    }
    byEcu.set(m.ecu, m);
  }
  const missing = bundle.install_order.filter((e) => !byEcu.has(e));
  if (missing.length > 0) {
    throw new ProtocolError(
      'bundle_incomplete',
      `bundle ${bundle.bundle_id} offer lacks member(s) ${missing.join(', ')}: nothing is installed`,
    );
  }
  return bundle.install_order.map((e) => byEcu.get(e) as ReleaseManifest);
}

/** What the vehicle runs, per ECU. */
export type Inventory = Readonly<
  Record<string, { readonly hardware_id: string; readonly version: string; readonly sha256?: string }>
>;

/** One member's step on this vehicle: install it, or nothing to do (already runs that exact image). */
export interface BundleStep {
  readonly ecu: string;
  readonly from: string;
  readonly to: string;
  readonly unchanged: boolean;
  /** The member is below what the ECU runs: needs a rollback authorisation naming from and to. */
  readonly downgrade: boolean;
}

/**
 * The whole bundle against the vehicle's inventory, before anything is downloaded: every member's ECU exists and
 * has one of its hardware ids, constraints on ECUs outside the bundle hold for what they run. Downgrades are
 * listed, not refused: the caller admits them only with a rollback authorisation (rollback.ts), so the anti-
 * rollback rule lives in one place.
 */
export function planBundle(bundle: Bundle, inventory: Inventory): BundleStep[] {
  for (const c of bundle.constraints) {
    if (bundle.members.some((m) => m.ecu === c.requires)) continue;
    const runs = inventory[c.requires];
    if (!runs || !satisfies(runs.version, c)) {
      throw new ProtocolError(
        'bundle_constraint',
        `${c.member} in bundle ${bundle.bundle_id} requires ${c.requires} ${describeRange(c)}; this vehicle runs ${runs ? runs.version : 'no such ECU'}`,
      );
    }
  }
  return bundle.install_order.map((ecu) => {
    const member = bundle.members.find((m) => m.ecu === ecu) as BundleMember;
    const runs = inventory[ecu];
    if (!runs)
      throw new ProtocolError('bundle_unknown_ecu', `bundle member ${ecu} is not an ECU of this vehicle`);
    if (!member.hardware_ids.includes(runs.hardware_id)) {
      throw new ProtocolError(
        'bundle_hardware_mismatch',
        `bundle member ${ecu} is built for ${member.hardware_ids.join(', ')}, this ECU is ${runs.hardware_id}`,
      );
    }
    const order = compareVersions(member.version, runs.version);
    if (order === 0 && runs.sha256 !== undefined && runs.sha256 !== member.image_sha256) {
      throw new ProtocolError(
        'bundle_version_conflict',
        `bundle member ${ecu} ${member.version} is another image than the ${runs.version} this ECU runs`,
      );
    }
    return { ecu, from: runs.version, to: member.version, unchanged: order === 0, downgrade: order < 0 };
  });
}

/** Why a backend assignment does not authorise this bundle for this vehicle now; undefined when it does. */
export function bundleAssignmentProblem(
  signed: SignedAssignment,
  bundle: Bundle,
  ctx: { keys: readonly TrustedKey[]; vin: string; now: Date; lastCounter: number },
): string | undefined {
  if (!assignmentSignedBy(signed, ctx.keys)) return 'the assignment does not chain to a trusted backend key';
  const a = signed.assignment;
  if (a.vin !== ctx.vin) return `the assignment is for ${a.vin}, not this vehicle`;
  if (Date.parse(a.expires_at) <= ctx.now.getTime()) return `the assignment expired at ${a.expires_at}`;
  if (a.counter <= ctx.lastCounter) return `assignment counter ${a.counter} is not above ${ctx.lastCounter}`;
  if (
    a.ecu !== BUNDLE_ASSIGNMENT_ECU ||
    a.release_id !== bundle.bundle_id ||
    a.manifest_sha256 !== bundleDigest(bundle)
  ) {
    return `the assignment does not bind bundle ${bundle.bundle_id} ${bundle.version}`;
  }
  return undefined;
}
