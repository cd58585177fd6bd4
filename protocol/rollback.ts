/**
 * Rollback authorisations: the only way a vehicle installs a version below what an ECU runs.
 *
 * Version monotonicity stays the vehicle's rule: each ECU's anti-rollback floor is the version it runs, and an
 * offer below it is refused. An operator who must take a fleet back (a bad release that spread) asks the OEM for an
 * authorisation signed by the OEM release key (the offline key, never the backend's) that names the campaign, per
 * ECU the exact `from` version, the exact `to` version and the manifest digest of the `to` release, optionally the
 * VINs, and an expiry. A vehicle admits a downgrade only when every ECU it would lower is named with exactly the
 * version it runs, the version offered and that release's manifest; the floor then moves down to `to`, and only
 * then. The authorisation's id is remembered once used, so after a later upgrade it cannot take the car down again.
 * A compromised backend can still offer an old release, but without the release key it cannot make the vehicle
 * install it.
 */

import { documentSignedBy, signDocument } from './bundle.js';
import { ProtocolError } from './errors.js';
import {
  ecuNameSchema,
  releaseIdSchema,
  sha256Schema,
  signatureSchema,
  VIN_PATTERN,
  versionSchema,
} from './schemas.js';
import type { Signer, TrustedKey } from './signatures.js';
import { compareVersions } from './versions.js';
import * as z from './zod.js';

/** Longest validity of an authorisation: a downgrade licence is for an incident, not a standing permission. */
export const MAX_ROLLBACK_VALIDITY_MS = 30 * 24 * 3600 * 1000;
/** Largest VIN list in one authorisation (keeps it well inside an MQTT offer); fleet-wide ones name none. */
export const MAX_ROLLBACK_VINS = 100;

export const rollbackStepSchema = z.strictObject({
  ecu: ecuNameSchema,
  from_version: versionSchema,
  to_version: versionSchema,
  /** SHA-256 of the canonical release manifest of the `to` release: the exact image allowed. */
  to_manifest_sha256: sha256Schema,
});
export type RollbackStep = z.infer<typeof rollbackStepSchema>;

export const rollbackAuthorisationSchema = z.strictObject({
  schema: z.literal('ota.rollback-authorisation/v1'),
  authorisation_id: releaseIdSchema,
  /** The campaign whose release or bundle is taken back. */
  campaign_id: z.string().check(z.minLength(1), z.maxLength(64)),
  /** The bundle taken back, when the campaign carried one. */
  bundle_id: z.optional(releaseIdSchema),
  /** When present, only these vehicles; absent: any vehicle running exactly the `from` versions. */
  vins: z.optional(
    z.array(z.string().check(z.regex(VIN_PATTERN))).check(z.minLength(1), z.maxLength(MAX_ROLLBACK_VINS)),
  ),
  ecus: z.array(rollbackStepSchema).check(z.minLength(1), z.maxLength(16)),
  issued_at: z.iso.datetime(),
  expires_at: z.iso.datetime(),
});
export type RollbackAuthorisation = z.infer<typeof rollbackAuthorisationSchema>;

export const signedRollbackAuthorisationSchema = z.strictObject({
  authorisation: rollbackAuthorisationSchema,
  signatures: z.array(signatureSchema).check(z.minLength(1), z.maxLength(8)),
});
export type SignedRollbackAuthorisation = z.infer<typeof signedRollbackAuthorisationSchema>;

const CONTEXT = 'ota.rollback-authorisation/v1\n';

/** Refuses an authorisation that contradicts itself (also when signing: the OEM never signs a bad one). */
export function checkRollbackConsistency(a: RollbackAuthorisation): void {
  const bad = (m: string) =>
    new ProtocolError('invalid_rollback_authorisation', `${a.authorisation_id}: ${m}`);
  const ecus = a.ecus.map((s) => s.ecu);
  if (new Set(ecus).size !== ecus.length) throw bad('an ECU is named twice');
  for (const s of a.ecus) {
    if (compareVersions(s.to_version, s.from_version) >= 0) {
      throw bad(`${s.ecu}: ${s.to_version} is not below ${s.from_version}; only downgrades need authorising`);
    }
  }
  const issued = Date.parse(a.issued_at);
  const expires = Date.parse(a.expires_at);
  if (!(expires > issued)) throw bad('expires before it is issued');
  if (expires - issued > MAX_ROLLBACK_VALIDITY_MS) throw bad('valid for more than 30 days');
}

export async function signRollbackAuthorisation(
  authorisation: RollbackAuthorisation,
  signers: readonly Signer[],
): Promise<SignedRollbackAuthorisation> {
  checkRollbackConsistency(authorisation);
  return { authorisation, signatures: await signDocument(CONTEXT, authorisation, signers) };
}

/** One ECU a vehicle would lower. */
export interface Downgrade {
  readonly ecu: string;
  readonly from: string;
  readonly to: string;
  readonly manifestSha256: string;
}

export interface RollbackCheckContext {
  readonly releaseKeys: readonly TrustedKey[];
  readonly vin: string;
  readonly now: Date;
  /** The campaign the offer takes back (a rollback campaign names it): an authorisation for another does not apply. */
  readonly campaignId: string | null;
  /** Authorisation ids this vehicle has already used. */
  readonly used: readonly string[];
}

/**
 * Admits `downgrades` under `input`, or throws a ProtocolError whose code says why: rollback_unauthorised (none
 * given), rollback_authorisation_invalid, _signature, _expired, _vin, _campaign, _used, _versions. Answers the
 * authorisation so the caller can record its id as used once the downgrade is committed.
 */
export function admitDowngrades(
  downgrades: readonly Downgrade[],
  input: unknown,
  ctx: RollbackCheckContext,
): RollbackAuthorisation | undefined {
  if (downgrades.length === 0) return undefined;
  const names = downgrades.map((d) => `${d.ecu} ${d.from} -> ${d.to}`).join(', ');
  const fail = (code: string, message: string) => new ProtocolError(`rollback_${code}`, message);
  if (input === undefined || input === null) {
    throw fail('unauthorised', `downgrade (${names}) offered without a rollback authorisation`);
  }
  const a = verifySignedRollbackAuthorisation(input, ctx.releaseKeys, ctx.now).authorisation;
  if (Date.parse(a.issued_at) > ctx.now.getTime() + 5 * 60_000) {
    throw fail(
      'authorisation_invalid',
      `rollback authorisation ${a.authorisation_id} is issued in the future`,
    );
  }
  if (a.vins && !a.vins.includes(ctx.vin)) {
    throw fail(
      'authorisation_vin',
      `rollback authorisation ${a.authorisation_id} does not name this vehicle`,
    );
  }
  if (a.campaign_id !== ctx.campaignId) {
    throw fail(
      'authorisation_campaign',
      `rollback authorisation ${a.authorisation_id} is for campaign ${a.campaign_id}`,
    );
  }
  if (ctx.used.includes(a.authorisation_id)) {
    throw fail(
      'authorisation_used',
      `rollback authorisation ${a.authorisation_id} was already used on this vehicle`,
    );
  }
  for (const d of downgrades) {
    const step = a.ecus.find((s) => s.ecu === d.ecu);
    if (
      !step ||
      step.from_version !== d.from ||
      step.to_version !== d.to ||
      step.to_manifest_sha256 !== d.manifestSha256
    ) {
      throw fail(
        'authorisation_versions',
        `rollback authorisation ${a.authorisation_id} does not name ${d.ecu} ${d.from} -> ${d.to} with this release`,
      );
    }
  }
  return a;
}

/**
 * Parses and checks an authorisation on its own (schema, consistency, a trusted release key's signature, not
 * expired): what the backend checks before it stores a rollback campaign, and the first half of admitDowngrades.
 */
export function verifySignedRollbackAuthorisation(
  input: unknown,
  releaseKeys: readonly TrustedKey[],
  now: Date,
): SignedRollbackAuthorisation {
  const parsed = signedRollbackAuthorisationSchema.safeParse(input);
  if (!parsed.success) {
    throw new ProtocolError(
      'rollback_authorisation_invalid',
      `not a rollback authorisation: ${parsed.error.issues[0]?.message ?? ''}`,
    );
  }
  const a = parsed.data.authorisation;
  try {
    checkRollbackConsistency(a);
  } catch (err) {
    throw new ProtocolError('rollback_authorisation_invalid', (err as Error).message);
  }
  if (!documentSignedBy(CONTEXT, a, parsed.data, releaseKeys)) {
    throw new ProtocolError(
      'rollback_authorisation_signature',
      `rollback authorisation ${a.authorisation_id} is not signed by a trusted release key`,
    );
  }
  if (Date.parse(a.expires_at) <= now.getTime()) {
    throw new ProtocolError(
      'rollback_authorisation_expired',
      `rollback authorisation ${a.authorisation_id} expired at ${a.expires_at}`,
    );
  }
  return parsed.data;
}
