/**
 * Vehicle bearer tokens: short-lived, scoped to one VIN and bound to the device key that proved possession.
 * Format: "v1.<base64url(claims JSON)>.<base64url(DER ECDSA P-256 signature over 'v1.<claims>')>", signed by the
 * backend key (KMS on AWS) and verified with its public key, so verification needs no call to KMS.
 */
import { randomBytes } from 'node:crypto';
import * as z from 'zod';
import { VIN_PATTERN } from '../../protocol/schemas.js';
import type { Signer, TrustedKey } from '../../protocol/signatures.js';
import { verifyEcdsa } from '../../protocol/signatures.js';
import { UnauthorizedError } from './errors.js';

const claimsSchema = z.strictObject({
  sub: z.string().regex(VIN_PATTERN),
  /** Key id of the vehicle's device public key the token is bound to. */
  cnf: z.string().regex(/^[0-9a-f]{16}$/),
  kid: z.string().regex(/^[0-9a-f]{16}$/),
  iat: z.number().int(),
  exp: z.number().int(),
  jti: z.string().regex(/^[A-Za-z0-9_-]{16,64}$/),
});
export type TokenClaims = z.infer<typeof claimsSchema>;

const MAX_TOKEN_LENGTH = 2048;
/** Tolerated clock difference between the issuing and the verifying function. */
const CLOCK_SKEW_SECONDS = 30;

export async function issueToken(
  signer: Signer,
  signerKeyId: string,
  input: { vin: string; deviceKeyId: string; nowSeconds: number; ttlSeconds: number },
): Promise<{ token: string; claims: TokenClaims }> {
  const claims: TokenClaims = {
    sub: input.vin,
    cnf: input.deviceKeyId,
    kid: signerKeyId,
    iat: input.nowSeconds,
    exp: input.nowSeconds + input.ttlSeconds,
    jti: randomBytes(16).toString('base64url'),
  };
  const signingInput = `v1.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = await signer.sign(Buffer.from(signingInput));
  return { token: `${signingInput}.${signature.toString('base64url')}`, claims };
}

/** Returns the claims of a valid, unexpired token; any defect is a 401 that says no more than needed. */
export function verifyToken(token: string, keys: readonly TrustedKey[], nowSeconds: number): TokenClaims {
  const invalid = () => new UnauthorizedError('invalid_token', 'The bearer token is invalid');
  if (token.length > MAX_TOKEN_LENGTH) throw invalid();
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== 'v1') throw invalid();
  const [, payload, sig] = parts as [string, string, string];
  let claims: TokenClaims;
  try {
    claims = claimsSchema.parse(JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')));
  } catch {
    throw invalid();
  }
  const key = keys.find((k) => k.keyId === claims.kid);
  if (
    !key ||
    !verifyEcdsa(key.key, Buffer.from(`v1.${payload}`), Buffer.from(sig, 'base64url').toString('base64'))
  ) {
    throw invalid();
  }
  if (claims.iat > nowSeconds + CLOCK_SKEW_SECONDS) throw invalid();
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
