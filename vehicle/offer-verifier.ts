/**
 * Decides, before a single byte is downloaded, whether this vehicle may install an offer. Pure: everything it
 * needs (trust anchors, VIN, clock reading, last accepted counter, ECU inventory) is passed in.
 *
 * In two steps, because an offer names its manifest by digest and the vehicle fetches it over HTTPS: the offer's
 * assignment first (verifyOfferHeader: nothing is fetched for an offer that is not genuinely for this vehicle),
 * then the offer with its manifest (verifyOffer, which repeats the first step). A rejection is `authentic` only
 * when the assignment is signed by a trusted backend key for this VIN: only then may it be reported against the
 * update the assignment names. Anyone who can publish on the offer topic can write an offer; a forged one must not
 * end the genuine update it names.
 *
 * An offer is accepted only when all hold:
 * - the release manifest is consistent and signed by a trusted OEM release key (stolen backend key alone: no);
 * - the assignment is signed by a trusted backend key, or by an online key a trusted backend key delegated for
 *   scope "assignment" with the assignment inside the delegation's window (protocol/assignment.ts), names this VIN,
 *   has not expired, carries a counter above the last one accepted (freeze/replay) and binds exactly this manifest
 *   (mix-and-match);
 * - the offer's own fields agree with the signed documents;
 * - the ECU exists here and its hardware id is one the manifest was built for (wrong software);
 * - the version is above the installed one (rollback).
 */
import {
  type Assignment,
  assignmentSignedBy,
  checkAssignment,
  signedAssignmentSchema,
} from '../protocol/assignment.js';
import { ProtocolError } from '../protocol/errors.js';
import { checkManifestConsistency, verifyManifestSignatures } from '../protocol/manifest.js';
import { type FullOffer, offerSchema, type UpdateOffer } from '../protocol/offer.js';
import { compareVersions } from '../protocol/versions.js';
import type { TrustAnchors } from './provisioning.js';

export type RejectReason =
  | 'invalid_offer'
  | 'manifest_inconsistent'
  | 'manifest_signature'
  | 'assignment_signature'
  | 'wrong_vin'
  | 'expired'
  | 'stale_counter'
  | 'manifest_mismatch'
  | 'manifest_unavailable'
  /** A bundle offer whose material the backend does not serve (bundle-runner.ts). */
  | 'bundle_unavailable'
  | 'bundle_unsupported'
  | 'offer_mismatch'
  | 'unknown_ecu'
  | 'hardware_mismatch'
  | 'downgrade'
  | 'already_installed'
  | 'too_large';

export interface OfferCheckContext {
  readonly vin: string;
  readonly now: Date;
  readonly lastCounter: number;
  readonly trust: TrustAnchors;
  /** ECU name -> hardware id and installed version. */
  readonly ecus: Readonly<Record<string, { readonly hardware_id: string; readonly version: string }>>;
  /** Largest image this vehicle accepts. @default 16 GiB */
  readonly maxImageBytes?: number;
}

export type OfferVerdict =
  | { readonly ok: true; readonly offer: FullOffer }
  | {
      readonly ok: false;
      readonly reason: RejectReason;
      readonly message: string;
      readonly offer?: UpdateOffer;
      /** The assignment is signed by a trusted backend key and names this VIN (its ids may be reported). */
      readonly authentic: boolean;
    };

export type Rejection = Extract<OfferVerdict, { ok: false }>;

/** Makes the rejections of one offer; `authentic`: its assignment is genuinely for this vehicle. */
export function rejecter(offer: UpdateOffer, authentic: boolean) {
  return (reason: RejectReason, message: string): Rejection => ({
    ok: false,
    reason,
    message,
    offer,
    authentic,
  });
}

/** The assignment in a payload (even a malformed offer), if it is signed by a trusted backend key for this VIN. */
export function authenticAssignment(
  raw: unknown,
  ctx: Pick<OfferCheckContext, 'vin' | 'trust'>,
): Assignment | undefined {
  const parsed = signedAssignmentSchema.safeParse((raw as { assignment?: unknown } | null)?.assignment);
  if (!parsed.success || !assignmentSignedBy(parsed.data, ctx.trust.backendKeys)) return undefined;
  return parsed.data.assignment.vin === ctx.vin ? parsed.data.assignment : undefined;
}

/**
 * The checks that need no manifest: the assignment (signature, VIN, expiry, counter) and the offer's fields
 * against it, including the manifest digest and release it names. Undefined when they all pass.
 */
export function verifyOfferHeader(offer: UpdateOffer, ctx: OfferCheckContext): Rejection | undefined {
  const a = offer.assignment.assignment;
  const authentic = assignmentSignedBy(offer.assignment, ctx.trust.backendKeys) && a.vin === ctx.vin;
  const reject = rejecter(offer, authentic);
  if (!assignmentSignedBy(offer.assignment, ctx.trust.backendKeys)) {
    return reject('assignment_signature', 'the assignment does not chain to a trusted backend key');
  }
  if (a.vin !== ctx.vin) return reject('wrong_vin', `the assignment is for ${a.vin}, not this vehicle`);
  if (Date.parse(a.expires_at) <= ctx.now.getTime()) {
    return reject('expired', `the assignment expired at ${a.expires_at}`);
  }
  if (a.counter <= ctx.lastCounter) {
    return reject(
      'stale_counter',
      `assignment counter ${a.counter} is not above ${ctx.lastCounter} (replayed or stale offer)`,
    );
  }
  const mismatches = [
    offer.firmware_version !== a.version && 'firmware_version',
    offer.ecu !== a.ecu && 'ecu',
    offer.update_id !== a.update_id && 'update_id',
    (offer.campaign_id ?? null) !== a.campaign_id && 'campaign_id',
    offer.release_id !== undefined && offer.release_id !== a.release_id && 'release_id',
    offer.manifest_sha256 !== undefined && offer.manifest_sha256 !== a.manifest_sha256 && 'manifest_sha256',
  ].filter((x): x is string => typeof x === 'string');
  if (mismatches.length > 0) {
    return reject(
      'offer_mismatch',
      `offer fields disagree with the signed assignment: ${mismatches.join(', ')}`,
    );
  }
  return undefined;
}

export function verifyOffer(raw: unknown, ctx: OfferCheckContext): OfferVerdict {
  const parsed = offerSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      ok: false,
      reason: 'invalid_offer',
      message: `offer is malformed: ${issue ? `${issue.path.join('.') || 'offer'}: ${issue.message}` : 'unknown'}`,
      authentic: authenticAssignment(raw, ctx) !== undefined,
    };
  }
  const offer = parsed.data;
  const header = verifyOfferHeader(offer, ctx);
  if (header) return header;
  // Past the header, the assignment is genuine and for this vehicle: every rejection below is attributable.
  const reject = rejecter(offer, true);
  if (!offer.manifest) return reject('invalid_offer', 'the offer has no manifest');
  const full: FullOffer = { ...offer, manifest: offer.manifest };
  const m = full.manifest.manifest;
  const a = offer.assignment.assignment;

  try {
    checkManifestConsistency(m);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return reject('manifest_inconsistent', err.message);
  }
  if (!verifyManifestSignatures(full.manifest, ctx.trust.releaseKeys)) {
    return reject('manifest_signature', 'the release manifest is not signed by a trusted release key');
  }
  const check = checkAssignment(offer.assignment, {
    keys: ctx.trust.backendKeys,
    vin: ctx.vin,
    now: ctx.now,
    lastCounter: ctx.lastCounter,
    manifest: m,
  });
  if (!check.ok) {
    // The header passed, so only the binding to this manifest can fail here.
    return reject('manifest_mismatch', `the assignment is for another manifest (${check.reason})`);
  }
  const mismatches = [
    offer.firmware_version !== m.version && 'firmware_version',
    offer.ecu !== m.ecu && 'ecu',
    offer.size !== m.size && 'size',
    a.version !== m.version && 'assignment.version',
    a.ecu !== m.ecu && 'assignment.ecu',
  ].filter((x): x is string => typeof x === 'string');
  if (mismatches.length > 0) {
    return reject(
      'offer_mismatch',
      `offer fields disagree with the signed documents: ${mismatches.join(', ')}`,
    );
  }
  const ecu = ctx.ecus[m.ecu];
  if (!ecu) return reject('unknown_ecu', `this vehicle has no ECU ${m.ecu}`);
  if (!m.hardware_ids.includes(ecu.hardware_id)) {
    return reject(
      'hardware_mismatch',
      `${m.ecu} hardware ${ecu.hardware_id} is not among ${m.hardware_ids.join(', ')}`,
    );
  }
  const order = compareVersions(m.version, ecu.version);
  if (order < 0) return reject('downgrade', `${m.version} is older than the installed ${ecu.version}`);
  if (order === 0) return reject('already_installed', `${m.version} is already installed on ${m.ecu}`);
  if (m.size > (ctx.maxImageBytes ?? 16 * 1024 ** 3)) {
    return reject('too_large', `image of ${m.size} bytes exceeds this vehicle's limit`);
  }
  return { ok: true, offer: full };
}
