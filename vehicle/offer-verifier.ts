/**
 * Decides, before a single byte is downloaded, whether this vehicle may install an offer. Pure: everything it
 * needs (trust anchors, VIN, clock reading, last accepted counter, ECU inventory) is passed in.
 *
 * An offer is accepted only when all hold:
 * - the release manifest is consistent and signed by a trusted OEM release key (stolen backend key alone: no);
 * - the assignment is signed by a trusted backend key, names this VIN, has not expired, carries a counter above
 *   the last one accepted (freeze/replay) and binds exactly this manifest (mix-and-match);
 * - the offer's own fields agree with the signed documents;
 * - the ECU exists here and its hardware id is one the manifest was built for (wrong software);
 * - the version is above the installed one (rollback).
 */
import { checkAssignment } from '../protocol/assignment.js';
import { ProtocolError } from '../protocol/errors.js';
import { checkManifestConsistency, verifyManifestSignatures } from '../protocol/manifest.js';
import { offerSchema, type UpdateOffer } from '../protocol/offer.js';
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
  | { readonly ok: true; readonly offer: UpdateOffer }
  | {
      readonly ok: false;
      readonly reason: RejectReason;
      readonly message: string;
      readonly offer?: UpdateOffer;
    };

export function verifyOffer(raw: unknown, ctx: OfferCheckContext): OfferVerdict {
  const parsed = offerSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      ok: false,
      reason: 'invalid_offer',
      message: `offer is malformed: ${issue ? `${issue.path.join('.') || 'offer'}: ${issue.message}` : 'unknown'}`,
    };
  }
  const offer = parsed.data;
  const reject = (reason: RejectReason, message: string): OfferVerdict => ({
    ok: false,
    reason,
    message,
    offer,
  });
  const m = offer.manifest.manifest;
  const a = offer.assignment.assignment;

  try {
    checkManifestConsistency(m);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return reject('manifest_inconsistent', err.message);
  }
  if (!verifyManifestSignatures(offer.manifest, ctx.trust.releaseKeys)) {
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
    switch (check.reason) {
      case 'bad_signature':
        return reject('assignment_signature', 'the assignment is not signed by a trusted backend key');
      case 'wrong_vin':
        return reject('wrong_vin', `the assignment is for ${a.vin}, not this vehicle`);
      case 'expired':
        return reject('expired', `the assignment expired at ${a.expires_at}`);
      case 'stale_counter':
        return reject(
          'stale_counter',
          `assignment counter ${a.counter} is not above ${ctx.lastCounter} (replayed or stale offer)`,
        );
      case 'manifest_mismatch':
        return reject('manifest_mismatch', 'the assignment is for another manifest');
    }
  }
  const mismatches = [
    offer.firmware_version !== m.version && 'firmware_version',
    offer.ecu !== m.ecu && 'ecu',
    offer.size !== m.size && 'size',
    offer.update_id !== a.update_id && 'update_id',
    (offer.campaign_id ?? null) !== a.campaign_id && 'campaign_id',
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
  return { ok: true, offer };
}
