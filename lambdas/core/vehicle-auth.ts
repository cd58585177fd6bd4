/**
 * Vehicle authentication: a vehicle proves possession of its registered device key by signing a single-use,
 * short-lived challenge, and receives a bearer token scoped to its VIN and bound to that key.
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { challengeSigningInput } from '../../protocol/challenge.js';
import type { ChallengeAnswer, TokenAnswer } from '../../protocol/responses.js';
import { type Signer, type TrustedKey, verifyEcdsa } from '../../protocol/signatures.js';
import { DEFAULTS } from './env.js';
import { ForbiddenError, TooManyRequestsError, UnauthorizedError } from './errors.js';
import type { ChallengeRepository, Clock, VehicleRecord, VehicleRepository } from './ports.js';
import { DelegatedTokenSigner, parseBearer, verifyToken } from './token.js';

export interface VehicleAuthDeps {
  readonly vehicles: VehicleRepository;
  readonly challenges: ChallengeRepository;
  /** @default DEFAULTS.challengesPerVinPerMinute */
  readonly challengesPerVinPerMinute?: number;
  /** The backend's token key tokens chain to (KMS on AWS); it signs one delegation per instance period, not tokens. */
  readonly signer: Signer;
  /** Seconds a token delegation is valid (token.ts). @default 3600 */
  readonly delegationSeconds?: number;
  readonly clock: Clock;
  readonly tokenTtlSeconds: number;
  /** @default 120 */
  readonly challengeTtlSeconds?: number;
}

export class VehicleAuthService {
  private readonly tokens: DelegatedTokenSigner;

  constructor(private readonly deps: VehicleAuthDeps) {
    this.tokens = new DelegatedTokenSigner(deps.signer, deps.clock, {
      maxTokenSeconds: deps.tokenTtlSeconds,
      delegationSeconds: deps.delegationSeconds ?? Math.max(3600, deps.tokenTtlSeconds * 4),
    });
  }

  /**
   * Every challenge is stored on its own and stays valid until it is spent or expires, so issuing one (anyone
   * may, for any VIN) never displaces the challenge a vehicle is answering. Unknown VINs are treated exactly like
   * known ones (counted, stored, answered), so the endpoint does not reveal which VINs are registered; their
   * challenges can never be redeemed.
   */
  async createChallenge(vin: string): Promise<ChallengeAnswer> {
    const now = this.nowSeconds();
    const expiresAt = now + (this.deps.challengeTtlSeconds ?? 120);
    const limit = this.deps.challengesPerVinPerMinute ?? DEFAULTS.challengesPerVinPerMinute;
    const minute = Math.floor(now / 60);
    // The counter outlives its window by a minute, then TTL removes it.
    const nonce = makeNonce(minute);
    if (!(await this.deps.challenges.issue(vin, minute, limit, nonce, expiresAt))) {
      throw new TooManyRequestsError(
        'rate_limited',
        `At most ${limit} challenges a minute for one vehicle; retry in a minute`,
      );
    }
    return { nonce, expires_at: new Date(expiresAt * 1000).toISOString() };
  }

  async exchange(vin: string, nonce: string, signatureB64: string): Promise<TokenAnswer> {
    const refused = () =>
      new UnauthorizedError('invalid_challenge', 'The challenge answer is invalid or expired');
    // Consume first: a challenge is spent by any attempt, right or wrong, so it cannot be brute-forced.
    const minute = nonceWindow(nonce);
    if (minute === undefined || !(await this.deps.challenges.consume(vin, minute, nonce, this.nowSeconds())))
      throw refused();
    const vehicle = await this.deps.vehicles.get(vin);
    // A revoked vehicle proves nothing by its key any more: no token (kill switch).
    if (!vehicle || vehicle.revokedAt !== undefined) throw refused();
    const key = createPublicKey(vehicle.publicKeyPem);
    if (!verifyEcdsa(key, challengeSigningInput(vin, nonce), signatureB64)) throw refused();
    const { token, claims } = await this.tokens.issue({
      vin,
      deviceKeyId: vehicle.deviceKeyId,
      nowSeconds: this.nowSeconds(),
      ttlSeconds: this.deps.tokenTtlSeconds,
    });
    return {
      token,
      token_type: 'Bearer',
      expires_in: claims.exp - claims.iat,
      expires_at: new Date(claims.exp * 1000).toISOString(),
    };
  }

  private nowSeconds(): number {
    return Math.floor(this.deps.clock.now().getTime() / 1000);
  }
}

/**
 * A challenge nonce: 32 bytes, base64url (43 characters, as always), the first 4 the minute it was issued in, so
 * the answer finds the window item that holds it; the other 28 random (224 bits). Clients treat it as opaque.
 */
function makeNonce(minute: number): string {
  const bytes = randomBytes(32);
  bytes.writeUInt32BE(minute >>> 0, 0);
  return bytes.toString('base64url');
}

function nonceWindow(nonce: string): number | undefined {
  const bytes = Buffer.from(nonce, 'base64url');
  if (bytes.length !== 32 || bytes.toString('base64url') !== nonce) return undefined;
  return bytes.readUInt32BE(0);
}

/**
 * Checks a vehicle request: a valid token (401), for the VIN in the path (403), of a registered vehicle whose
 * current device key is the one the token was bound to (401, so re-registering a vehicle revokes old tokens) and
 * that an operator has not revoked (401).
 */
export async function authorizeVehicle(
  authorization: string | undefined,
  pathVin: string,
  deps: VehicleAuthorizationDeps,
): Promise<VehicleRecord> {
  return (await authorizeVehicleRequest(authorization, pathVin, deps)).vehicle;
}

export interface VehicleAuthorizationDeps {
  tokenKeys: () => Promise<readonly TrustedKey[]>;
  vehicles: VehicleRepository;
  clock: Clock;
  /** Requests one vehicle may make per minute; the rest answer 429 and change nothing. */
  ratePerMinute: number;
}

/**
 * authorizeVehicle, and with reserveCounter the vehicle's next assignment counter taken by the same write as the
 * rate window (a request answering an assignment: download, initiate), so that request costs one vehicle write.
 * A counter taken for a request that then fails is never used: counters only need to grow, gaps are harmless.
 */
export async function authorizeVehicleRequest(
  authorization: string | undefined,
  pathVin: string,
  deps: VehicleAuthorizationDeps,
  reserveCounter = false,
): Promise<{ vehicle: VehicleRecord; counter?: number }> {
  const token = parseBearer(authorization);
  const claims = verifyToken(token, await deps.tokenKeys(), Math.floor(deps.clock.now().getTime() / 1000));
  if (claims.sub !== pathVin) {
    throw new ForbiddenError('forbidden', 'This token is not valid for that vehicle', {
      context: { tokenVin: claims.sub, pathVin },
    });
  }
  const minute = Math.floor(deps.clock.now().getTime() / 60000);
  const taken = await deps.vehicles.takeRateToken(pathVin, minute, deps.ratePerMinute, reserveCounter);
  if (!taken) {
    throw new TooManyRequestsError(
      'rate_limited',
      `At most ${deps.ratePerMinute} requests a minute per vehicle`,
    );
  }
  const { vehicle } = taken;
  if (vehicle.deviceKeyId !== claims.cnf) {
    throw new UnauthorizedError('invalid_token', 'The bearer token is invalid');
  }
  // Tokens issued before a revoke are still unexpired and correctly signed: the registry flag decides.
  if (vehicle.revokedAt !== undefined) {
    throw new UnauthorizedError('vehicle_revoked', 'This vehicle has been revoked');
  }
  return taken;
}
