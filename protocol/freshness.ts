/**
 * The freshness statement, an Uptane timestamp-like role: on a schedule the backend signs, once per period for the
 * whole fleet, "at issued_at, statement number `sequence`, the latest offer to each vehicle had this assignment
 * counter", as a Merkle root over one (VIN, counter) leaf per registered vehicle. Each vehicle fetches the
 * statement with the inclusion proof of its own leaf. From it the vehicle learns two things no replayed or
 * withheld message can hide: that time has moved on (signed time, whatever its own clock says), and that an offer
 * exists for it that it never received.
 *
 * Everything here is pure: building the tree (backend) and checking a statement (vehicle) use the same hashing.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import { VIN_PATTERN } from './schemas.js';
import { keyIdOf, type Signer, type TrustedKey, verifyEcdsa } from './signatures.js';
import * as z from './zod.js';

const hex64 = z.string().check(z.regex(/^[0-9a-f]{64}$/));

export const freshnessStatementSchema = z.strictObject({
  schema: z.literal('ota.freshness/v1'),
  /** Grows by one per published statement; a vehicle accepts only a higher one than it holds. */
  sequence: z.int().check(z.minimum(1)),
  issued_at: z.iso.datetime(),
  expires_at: z.iso.datetime(),
  /** Merkle root over the (VIN, latest offer counter) leaves of every registered vehicle. */
  root: hex64,
  leaf_count: z.int().check(z.minimum(0)),
});
export type FreshnessStatement = z.infer<typeof freshnessStatementSchema>;

export const signedFreshnessSchema = z.strictObject({
  statement: freshnessStatementSchema,
  key_id: z.string().check(z.regex(/^[0-9a-f]{16}$/)),
  signature: z.string().check(z.minLength(16), z.maxLength(256)),
});
export type SignedFreshness = z.infer<typeof signedFreshnessSchema>;

export const proofStepSchema = z.strictObject({ side: z.enum(['left', 'right']), hash: hex64 });
export type ProofStep = z.infer<typeof proofStepSchema>;

/** GET /updates/{vin}/freshness: the statement and this vehicle's leaf with its path to the root. */
export const freshnessAnswerSchema = z.object({
  signed: signedFreshnessSchema,
  vin: z.string().check(z.regex(VIN_PATTERN)),
  /** Assignment counter of the latest offer the backend sent this vehicle; 0 when it was never offered one. */
  counter: z.int().check(z.minimum(0)),
  proof: z.array(proofStepSchema).check(z.maxLength(64)),
});
export type FreshnessAnswer = z.infer<typeof freshnessAnswerSchema>;

/** What a vehicle reports when freshness fails (POST /updates/{vin}/freshness/alert). */
/** POST /updates/{vin}/freshness/alert (202): the alert is kept on the vehicle's record. */
export const freshnessAlertAnswerSchema = z.object({ recorded: z.literal(true), at: z.string() });
export type FreshnessAlertAnswer = z.infer<typeof freshnessAlertAnswerSchema>;

export const FRESHNESS_ALERTS = ['withheld_offer', 'no_statement'] as const;
export const freshnessAlertSchema = z.strictObject({
  kind: z.enum(FRESHNESS_ALERTS),
  /** The newest statement the vehicle holds (0: none). */
  sequence: z.int().check(z.minimum(0)),
  detail: z.string().check(z.maxLength(500)),
});
export type FreshnessAlert = z.infer<typeof freshnessAlertSchema>;

const CONTEXT = 'ota.freshness/v1\n';
// Domain separation: a leaf can never be read as an inner node, nor the other way round (second preimages).
// Plain bytes and a precomputed root: nothing is computed when the module loads, so the browser console can load
// the route table (which imports these schemas) without Node's Buffer or crypto (unit test freshness.test.ts).
const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);
/** The root of a bucket without vehicles: SHA-256 of the single byte 0x02. */
export const EMPTY_ROOT = 'dbc1b4c900ffe48d575b5da5c638040125f65db0fe3e24494b76ea986457d986';

export function leafHash(vin: string, counter: number): string {
  return createHash('sha256').update(LEAF).update(canonicalJson({ counter, vin })).digest('hex');
}

export function nodeHash(left: string, right: string): string {
  return createHash('sha256')
    .update(NODE)
    .update(Buffer.from(left, 'hex'))
    .update(Buffer.from(right, 'hex'))
    .digest('hex');
}

/** Each level of the tree, leaves first; an odd last node is carried up unchanged (never paired with itself). */
function levels(hashes: readonly string[]): string[][] {
  const out: string[][] = [hashes.length ? [...hashes] : [EMPTY_ROOT]];
  for (let level = out[0]!; level.length > 1; ) {
    const next: string[] = [];
    for (let i = 0; i < level.length; i += 2) {
      next.push(i + 1 < level.length ? nodeHash(level[i]!, level[i + 1]!) : level[i]!);
    }
    out.push(next);
    level = next;
  }
  return out;
}

export function merkleRoot(hashes: readonly string[]): string {
  const all = levels(hashes);
  return all[all.length - 1]![0]!;
}

/** The path from hashes[index] to the root: the sibling at each level where there is one. */
export function merkleProof(hashes: readonly string[], index: number): ProofStep[] {
  if (index < 0 || index >= hashes.length) throw new RangeError('no such leaf');
  const proof: ProofStep[] = [];
  let i = index;
  for (const level of levels(hashes).slice(0, -1)) {
    const sibling = i ^ 1;
    if (sibling < level.length) proof.push({ side: sibling < i ? 'left' : 'right', hash: level[sibling]! });
    i >>= 1;
  }
  return proof;
}

export function rootFromProof(leaf: string, proof: readonly ProofStep[]): string {
  return proof.reduce(
    (acc, step) => (step.side === 'left' ? nodeHash(step.hash, acc) : nodeHash(acc, step.hash)),
    leaf,
  );
}

/**
 * Vehicles are spread over buckets by a hash of their VIN, and the root is the tree over the bucket roots, so the
 * backend can store and serve one bucket (a few hundred leaves) per request instead of the whole fleet's tree. A
 * vehicle's proof is its path in its bucket followed by its bucket's path: to the vehicle it is one path.
 */
export function bucketOf(vin: string, bucketCount: number): number {
  return createHash('sha256').update(vin).digest().readUInt32BE(0) % bucketCount;
}

export function signingInput(statement: FreshnessStatement): Buffer {
  return Buffer.from(CONTEXT + canonicalJson(statement));
}

export async function signFreshness(statement: FreshnessStatement, signer: Signer): Promise<SignedFreshness> {
  const signature = await signer.sign(signingInput(statement));
  return { statement, key_id: keyIdOf(await signer.publicKeyPem()), signature: signature.toString('base64') };
}

export type FreshnessCheck =
  | { ok: true; statement: FreshnessStatement; counter: number }
  | {
      ok: false;
      reason:
        | 'bad_signature'
        | 'wrong_vin'
        | 'bad_proof'
        | 'stale_sequence'
        | 'same_sequence'
        | 'future_dated'
        | 'expired';
      message: string;
    };

/**
 * What a vehicle checks before believing a statement: a trusted backend signature, its own VIN, its leaf's path to
 * the signed root, a sequence above the newest it holds (an older statement is a replay, the same one is nothing
 * new), not expired and not from the future. "Now" for both is the later of the vehicle's clock and the newest
 * signed time it holds, so a clock set back can neither revive an expired statement nor make the next genuine
 * one look like it comes from the future; a clock set forward makes statements look expired, and the vehicle
 * reports their absence rather than trusting its clock.
 */
export function checkFreshness(
  answer: FreshnessAnswer,
  ctx: {
    readonly keys: readonly TrustedKey[];
    readonly vin: string;
    /** The vehicle's own clock, epoch ms. */
    readonly ownNow: number;
    /** The newest statement accepted before, if any. */
    readonly last?: { readonly sequence: number; readonly issuedAt: number };
    /** How far ahead of "now" a statement's issued_at may be. */
    readonly maxFutureMs: number;
  },
): FreshnessCheck {
  const { signed } = answer;
  const s = signed.statement;
  const key = ctx.keys.find((k) => k.keyId === signed.key_id);
  if (!key || !verifyEcdsa(key.key, signingInput(s), signed.signature)) {
    return { ok: false, reason: 'bad_signature', message: 'not signed by a trusted backend key' };
  }
  if (answer.vin !== ctx.vin) return { ok: false, reason: 'wrong_vin', message: `a proof for ${answer.vin}` };
  if (rootFromProof(leafHash(answer.vin, answer.counter), answer.proof) !== s.root) {
    return { ok: false, reason: 'bad_proof', message: 'the leaf does not lead to the signed root' };
  }
  if (ctx.last && s.sequence < ctx.last.sequence) {
    return {
      ok: false,
      reason: 'stale_sequence',
      message: `statement ${s.sequence} is older than ${ctx.last.sequence}`,
    };
  }
  if (ctx.last && s.sequence === ctx.last.sequence) {
    return { ok: false, reason: 'same_sequence', message: `statement ${s.sequence} is already held` };
  }
  const now = Math.max(ctx.ownNow, ctx.last?.issuedAt ?? Number.NEGATIVE_INFINITY);
  if (Date.parse(s.issued_at) > now + ctx.maxFutureMs) {
    return {
      ok: false,
      reason: 'future_dated',
      message: `issued at ${s.issued_at}, ahead of ${new Date(now).toISOString()}`,
    };
  }
  if (Date.parse(s.expires_at) <= now) {
    return { ok: false, reason: 'expired', message: `expired at ${s.expires_at}` };
  }
  return { ok: true, statement: s, counter: answer.counter };
}
