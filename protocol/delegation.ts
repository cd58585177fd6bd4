/**
 * Key delegation: a statement, signed by a backend key (KMS on AWS), that an online key may sign one kind of
 * backend document (its scope) for a bounded time. A function instance makes an ephemeral P-256 key, has the
 * backend key certify it once, then signs locally: one KMS Sign per instance per delegation period instead of one
 * per vehicle. A verifier holding the backend public key checks the chain statement -> online key -> document and
 * needs nothing else.
 *
 * The statement is signed over DELEGATION_CONTEXT + its canonical JSON: a prefix no other backend signature
 * (assignments, freshness statements, token delegations) starts with, so no other signed object passes for a
 * delegation, and the scope names the one kind of document the key may sign: an assignment verifier refuses a key
 * delegated for anything else. The private key exists only in the memory of the instance that made it: it is
 * never exported, serialised or logged (a `#private` field, and the class prints no key material).
 */
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import { keyIdOf, p256KeyWithId, type Signer, type TrustedKey, verifyEcdsa } from './signatures.js';
import * as z from './zod.js';

export const DELEGATION_CONTEXT = 'ota.key-delegation/v1\n';

/** The longest delegation a verifier accepts: bounds what a key stolen from a function instance is worth. */
export const MAX_DELEGATION_SECONDS = 7 * 86400;

/** Tolerated difference between the clocks of the signing function and of the verifier. */
export const DELEGATION_SKEW_SECONDS = 300;

const KEY_ID = /^[0-9a-f]{16}$/;

export const delegationStatementSchema = z.strictObject({
  schema: z.literal('ota.key-delegation/v1'),
  /** The one kind of document the key may sign, e.g. "assignment". */
  scope: z.string().check(z.regex(/^[a-z][a-z0-9_-]{0,31}$/)),
  key_id: z.string().check(z.regex(KEY_ID)),
  /** DER SPKI of the online P-256 key, base64 (91 bytes). */
  public_key: z.string().check(z.maxLength(200)),
  /** Key id of the backend key that certifies it. */
  issuer_key_id: z.string().check(z.regex(KEY_ID)),
  not_before: z.iso.datetime(),
  not_after: z.iso.datetime(),
});
export type DelegationStatement = z.infer<typeof delegationStatementSchema>;

export const signedDelegationSchema = z.strictObject({
  statement: delegationStatementSchema,
  /** DER ECDSA by the issuer key over DELEGATION_CONTEXT + canonical JSON of the statement, base64. */
  signature: z.string().check(z.minLength(16), z.maxLength(256)),
});
export type SignedDelegation = z.infer<typeof signedDelegationSchema>;

function signingInput(statement: DelegationStatement): Buffer {
  return Buffer.from(DELEGATION_CONTEXT + canonicalJson(statement));
}

/** Signs a delegation statement with the backend key: the one backend (KMS) signature per online key. */
export async function certifyKey(statement: DelegationStatement, issuer: Signer): Promise<SignedDelegation> {
  const signature = await issuer.sign(signingInput(statement));
  return { statement, signature: signature.toString('base64') };
}

/** A delegation checked against the trusted backend keys: its online key and its window, in ms since the epoch. */
export interface DelegatedKey {
  readonly keyId: string;
  readonly key: KeyObject;
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * The online key a delegation certifies for `scope`, when it is signed by one of the trusted backend keys, names
 * that scope, carries a P-256 key matching its key id, and has a window of at most MAX_DELEGATION_SECONDS.
 * Undefined otherwise; never throws on bad input. Whether the window covers a document is the caller's check (the
 * document's own times decide: see assignment.ts).
 */
export function delegatedKey(
  signed: SignedDelegation,
  rootKeys: readonly TrustedKey[],
  scope: string,
): DelegatedKey | undefined {
  const s = signed.statement;
  if (s.scope !== scope) return undefined;
  const root = rootKeys.find((k) => k.keyId === s.issuer_key_id);
  if (!root || !verifyEcdsa(root.key, signingInput(s), signed.signature)) return undefined;
  const notBefore = Date.parse(s.not_before);
  const notAfter = Date.parse(s.not_after);
  if (!(notAfter > notBefore) || notAfter - notBefore > MAX_DELEGATION_SECONDS * 1000) return undefined;
  const key = p256KeyWithId(s.public_key, s.key_id);
  if (!key) return undefined;
  return { keyId: s.key_id, key, notBefore, notAfter };
}

/** What a DelegatedSigner signs with now: the online key's id, its delegation, and a signing function. */
export interface OnlineKey {
  readonly keyId: string;
  readonly delegation: SignedDelegation;
  /** DER ECDSA-SHA256 by the online key. */
  sign(data: Buffer): Buffer;
}

export interface DelegatedSignerOptions {
  readonly scope: string;
  /**
   * The longest validity of a document signed with the key: a delegation is renewed once it would expire before
   * such a document, so no document outlives the delegation that vouches for it.
   */
  readonly maxDocumentSeconds: number;
  /** Seconds a key is used before a new one is made (its delegation lives this plus maxDocumentSeconds). @default 3600 */
  readonly renewSeconds?: number;
  readonly now: () => Date;
}

interface Current {
  readonly online: OnlineKey;
  /** ms: from then on a document of maxDocumentSeconds would outlive the delegation. */
  readonly renewAt: number;
}

/**
 * Signs with an ephemeral key certified by a backend signer; one per function instance. Concurrent signers during
 * a renewal share the one pending certification, so a burst costs one backend signature, not one each; a failed
 * certification is retried by the next caller.
 */
export class DelegatedSigner {
  #current?: Promise<Current>;
  readonly #renewSeconds: number;

  constructor(
    private readonly backend: Signer,
    private readonly options: DelegatedSignerOptions,
  ) {
    this.#renewSeconds = options.renewSeconds ?? 3600;
    const lifetime = this.#renewSeconds + options.maxDocumentSeconds + DELEGATION_SKEW_SECONDS;
    if (this.#renewSeconds <= 0 || lifetime > MAX_DELEGATION_SECONDS) {
      throw new Error(`a delegation must be positive and live at most ${MAX_DELEGATION_SECONDS} s`);
    }
  }

  /** The online key to sign with now, making and certifying a new one when the current one is too old. */
  async onlineKey(): Promise<OnlineKey> {
    const pending = this.#current;
    if (pending) {
      const c = await pending.catch(() => undefined);
      if (c && c.renewAt > this.options.now().getTime()) return c.online;
      // Another caller already started the renewal: share it.
      if (this.#current !== pending && this.#current !== undefined) return this.onlineKey();
    }
    const next = this.#certify();
    this.#current = next;
    next.catch(() => {
      if (this.#current === next) this.#current = undefined;
    });
    return (await next).online;
  }

  async #certify(): Promise<Current> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const now = this.options.now().getTime();
    // Backdated by the skew so a verifier whose clock is a little behind still sees the key as valid.
    const notBefore = now - DELEGATION_SKEW_SECONDS * 1000;
    const renewAt = now + this.#renewSeconds * 1000;
    const notAfter = renewAt + this.options.maxDocumentSeconds * 1000;
    const delegation = await certifyKey(
      {
        schema: 'ota.key-delegation/v1',
        scope: this.options.scope,
        key_id: keyIdOf(publicKey),
        public_key: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
        issuer_key_id: keyIdOf(await this.backend.publicKeyPem()),
        not_before: new Date(notBefore).toISOString(),
        not_after: new Date(notAfter).toISOString(),
      },
      this.backend,
    );
    return {
      online: {
        keyId: delegation.statement.key_id,
        delegation,
        sign: (data) => sign('sha256', data, { key: privateKey, dsaEncoding: 'der' }),
      },
      renewAt,
    };
  }
}
