/** The login challenge: what a vehicle signs with its device key to prove possession for POST /auth/token. */

/** The bytes a vehicle signs with its device key to answer a challenge. */
export function challengeSigningInput(vin: string, nonce: string): Buffer {
  return Buffer.from(`ota-auth-v1\n${vin}\n${nonce}`, 'utf8');
}
