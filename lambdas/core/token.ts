/**
 * Vehicle bearer tokens: short-lived, scoped to one VIN and bound to the device key that proved possession.
 *
 * Signing every token with the backend key would cost one KMS Sign per login (about 280/s for a fleet of
 * 1,000,000 cars polling hourly, near the older 300/s account quota). Instead each function instance makes an
 * ephemeral P-256 key when it first issues a token and has the backend key (KMS on AWS) sign one short-lived
 * delegation for it; tokens are then signed locally with the ephemeral key and carry their delegation, so a
 * verifier checks the chain back to the backend public key and still needs no call to KMS. One KMS Sign per
 * instance per delegation period, whatever the number of logins (see BENCHMARKS.md).
 *
 * Format: "v2.<claims>.<sig>.<delegation>.<delegation sig>", each part base64url:
 *  - claims: JSON {sub, cnf, kid, iat, exp, jti}; kid is the delegated key's id;
 *  - sig: DER ECDSA P-256 by the delegated key over "v2.<claims>.<delegation>.<delegation sig>";
 *  - delegation: JSON {v:1, kid, pub (DER SPKI, base64), iss (backend key id), iat, exp};
 *  - delegation sig: DER ECDSA by the backend key over DELEGATION_CONTEXT + the delegation part, a prefix no other
 *    backend signature (assignments, offers) starts with, so no other signed object can pass for a delegation.
 * Operators rotate by adding the new backend public key to the verifiers' trusted set before switching the signer
 * (tokens and delegations name their key ids); delegated keys rotate on their own every delegation period.
 */
import { generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { VIN_PATTERN } from '../../protocol/schemas.js';
import type { Signer, TrustedKey } from '../../protocol/signatures.js';
import { keyIdOf, p256KeyWithId, verifyEcdsa } from '../../protocol/signatures.js';
import * as z from '../../protocol/zod.js';
import { UnauthorizedError } from './errors.js';
import type { Clock } from './ports.js';

const KEY_ID = /^[0-9a-f]{16}$/;

const claimsSchema = z.strictObject({
  sub: z.string().check(z.regex(VIN_PATTERN)),
  /** Key id of the vehicle's device public key the token is bound to. */
  cnf: z.string().check(z.regex(KEY_ID)),
  /** Key id of the delegated key that signed the token. */
  kid: z.string().check(z.regex(KEY_ID)),
  iat: z.int(),
  exp: z.int(),
  jti: z.string().check(z.regex(/^[A-Za-z0-9_-]{16,64}$/)),
});
export type TokenClaims = z.infer<typeof claimsSchema>;

const delegationSchema = z.strictObject({
  v: z.literal(1),
  kid: z.string().check(z.regex(KEY_ID)),
  pub: z.string().check(z.maxLength(400)),
  /** Key id of the backend key that signed the delegation. */
  iss: z.string().check(z.regex(KEY_ID)),
  iat: z.int(),
  exp: z.int(),
});
export type TokenDelegation = z.infer<typeof delegationSchema>;

export const DELEGATION_CONTEXT = 'ota-token-delegation-v1\n';
const MAX_TOKEN_LENGTH = 2048;
/** Tolerated clock difference between the issuing and the verifying function. */
const CLOCK_SKEW_SECONDS = 30;

export interface TokenSignerOptions {
  /** Seconds a delegation is valid. @default 3600 */
  readonly delegationSeconds?: number;
  /**
   * The longest token this signer issues: a delegation is renewed once it would expire before such a token, so a
   * token never outlives the delegation it carries.
   */
  readonly maxTokenSeconds: number;
}

interface Delegated {
  readonly key: KeyObject;
  readonly kid: string;
  /** "<delegation>.<delegation sig>", base64url. */
  readonly header: string;
  readonly exp: number;
}

/**
 * Signs tokens with an ephemeral key delegated by the backend signer; one per function instance. Concurrent
 * logins during a renewal share the one pending delegation, so a burst costs one backend signature, not one each.
 */
export class DelegatedTokenSigner {
  private current?: Promise<Delegated>;
  private readonly lifetime: number;

  constructor(
    private readonly backend: Signer,
    private readonly clock: Clock,
    private readonly options: TokenSignerOptions,
  ) {
    this.lifetime = options.delegationSeconds ?? 3600;
    if (this.lifetime < options.maxTokenSeconds + 2 * CLOCK_SKEW_SECONDS) {
      throw new Error('delegationSeconds must exceed the token lifetime by at least a minute');
    }
  }

  private nowSeconds(): number {
    return Math.floor(this.clock.now().getTime() / 1000);
  }

  /** The delegated key to sign with now, making and certifying a new one when the current one is too old. */
  private async delegated(): Promise<Delegated> {
    const now = this.nowSeconds();
    const pending = this.current;
    if (pending) {
      const d = await pending.catch(() => undefined);
      if (d && d.exp - this.options.maxTokenSeconds - CLOCK_SKEW_SECONDS > now) return d;
      // Another caller already started the renewal: share it.
      if (this.current !== pending && this.current !== undefined) return this.delegated();
    }
    const next = this.delegate(now);
    this.current = next;
    next.catch(() => {
      if (this.current === next) this.current = undefined;
    });
    return next;
  }

  private async delegate(now: number): Promise<Delegated> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const delegation: TokenDelegation = {
      v: 1,
      kid: keyIdOf(publicKey),
      pub: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      iss: keyIdOf(await this.backend.publicKeyPem()),
      iat: now,
      exp: now + this.lifetime,
    };
    const part = b64(JSON.stringify(delegation));
    const sig = await this.backend.sign(Buffer.from(DELEGATION_CONTEXT + part));
    return {
      key: privateKey,
      kid: delegation.kid,
      header: `${part}.${sig.toString('base64url')}`,
      exp: delegation.exp,
    };
  }

  async issue(input: {
    vin: string;
    deviceKeyId: string;
    nowSeconds: number;
    ttlSeconds: number;
  }): Promise<{ token: string; claims: TokenClaims }> {
    if (input.ttlSeconds > this.options.maxTokenSeconds)
      throw new Error('token lifetime above maxTokenSeconds');
    const d = await this.delegated();
    const claims: TokenClaims = {
      sub: input.vin,
      cnf: input.deviceKeyId,
      kid: d.kid,
      iat: input.nowSeconds,
      exp: Math.min(input.nowSeconds + input.ttlSeconds, d.exp),
      jti: randomBytes(16).toString('base64url'),
    };
    const part = b64(JSON.stringify(claims));
    const signature = sign('sha256', Buffer.from(`v2.${part}.${d.header}`), {
      key: d.key,
      dsaEncoding: 'der',
    });
    return { token: `v2.${part}.${signature.toString('base64url')}.${d.header}`, claims };
  }
}

function b64(text: string): string {
  return Buffer.from(text).toString('base64url');
}

function parseJson<T>(schema: z.ZodMiniType<T>, part: string): T | undefined {
  try {
    return schema.parse(JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
  } catch {
    return undefined;
  }
}

/**
 * Checked delegations by their exact text: a verifier sees the same few delegations for thousands of requests, and
 * re-checking the backend signature and parsing the key each time would be most of a request's CPU. Bounded: a
 * flood of distinct (forged) delegations only evicts, never grows memory.
 */
const verifiedDelegations = new Map<string, { delegation: TokenDelegation; key: KeyObject }>();
const MAX_CACHED_DELEGATIONS = 256;

function checkedDelegation(
  part: string,
  sig: string,
  rootKeys: readonly TrustedKey[],
): { delegation: TokenDelegation; key: KeyObject } | undefined {
  const cacheKey = `${part}.${sig}`;
  const cached = verifiedDelegations.get(cacheKey);
  // The cache is only an optimisation; the issuer must still be trusted now (a root key removed by rotation).
  if (cached) return rootKeys.some((k) => k.keyId === cached.delegation.iss) ? cached : undefined;
  const delegation = parseJson(delegationSchema, part);
  if (!delegation) return undefined;
  const root = rootKeys.find((k) => k.keyId === delegation.iss);
  if (!root) return undefined;
  if (
    !verifyEcdsa(
      root.key,
      Buffer.from(DELEGATION_CONTEXT + part),
      Buffer.from(sig, 'base64url').toString('base64'),
    )
  )
    return undefined;
  const key = p256KeyWithId(delegation.pub, delegation.kid);
  if (!key) return undefined;
  if (verifiedDelegations.size >= MAX_CACHED_DELEGATIONS) {
    verifiedDelegations.delete(verifiedDelegations.keys().next().value!);
  }
  const entry = { delegation, key };
  verifiedDelegations.set(cacheKey, entry);
  return entry;
}

/**
 * Returns the claims of a valid, unexpired token whose delegation chains to one of the trusted backend keys; any
 * defect is a 401 that says no more than needed.
 */
export function verifyToken(token: string, rootKeys: readonly TrustedKey[], nowSeconds: number): TokenClaims {
  const invalid = () => new UnauthorizedError('invalid_token', 'The bearer token is invalid');
  if (token.length > MAX_TOKEN_LENGTH) throw invalid();
  const parts = token.split('.');
  if (parts.length !== 5 || parts[0] !== 'v2') throw invalid();
  const [, payload, sig, delegationPart, delegationSig] = parts as [string, string, string, string, string];
  const claims = parseJson(claimsSchema, payload);
  const chain = claims && checkedDelegation(delegationPart, delegationSig, rootKeys);
  if (
    !claims ||
    !chain ||
    claims.kid !== chain.delegation.kid ||
    !verifyEcdsa(
      chain.key,
      Buffer.from(`v2.${payload}.${delegationPart}.${delegationSig}`),
      Buffer.from(sig, 'base64url').toString('base64'),
    )
  ) {
    throw invalid();
  }
  const d = chain.delegation;
  // A token may not claim more than its delegation allows, nor a delegation be used outside its window.
  if (claims.iat > nowSeconds + CLOCK_SKEW_SECONDS || d.iat > nowSeconds + CLOCK_SKEW_SECONDS)
    throw invalid();
  if (claims.exp > d.exp || claims.iat < d.iat - CLOCK_SKEW_SECONDS) throw invalid();
  if (claims.exp <= nowSeconds) throw new UnauthorizedError('token_expired', 'The bearer token has expired');
  return claims;
}

export function parseBearer(header: string | undefined): string {
  if (!header) throw new UnauthorizedError('missing_token', 'Authorization: Bearer <token> is required');
  const match = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(header.trim());
  if (!match)
    throw new UnauthorizedError('invalid_token', 'The Authorization header must be "Bearer <token>"');
  return match[1]!;
}
