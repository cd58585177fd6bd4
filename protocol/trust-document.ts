/**
 * The trusted release-key set as a document: the image of the `release-keys` pseudo-ECU. The operator CLI writes
 * it (`ota keys set`), it is published and signed like firmware, and the vehicle agent parses and installs it
 * (vehicle/trust-store.ts) to rotate the keys it trusts.
 */

import { type TrustedKey, trustedKeysFromPems } from './signatures.js';
import * as z from './zod.js';

/** The pseudo-ECU whose image is the trusted release-key set. */
export const TRUST_ECU = 'release-keys';
/** Its hardware id: what release manifests of key sets name. */
export const TRUST_HARDWARE_ID = 'OTA-RELEASE-KEYS';

const trustDocumentSchema = z.strictObject({
  schema: z.literal('ota.release-keys/v1'),
  release_keys: z.array(z.string().check(z.maxLength(4096))).check(z.minLength(1), z.maxLength(16)),
});

/**
 * The document for a set of PEM public keys (a new set to publish), each normalised to SPKI PEM. A private key is
 * refused: Node would derive its public half, but the document is published.
 */
export function trustDocument(pems: readonly string[]): Buffer {
  if (pems.some((p) => /PRIVATE KEY/.test(p))) {
    throw new Error('a private key was given: a key set lists public keys only');
  }
  return trustDocumentOf(trustedKeysFromPems(pems)); // refuses anything but P-256 keys before it is published
}

/** The document for keys already trusted (the factory set: the agent's configured release keys). */
export function trustDocumentOf(keys: readonly TrustedKey[]): Buffer {
  const spki = keys.map((k) => k.key.export({ type: 'spki', format: 'pem' }).toString());
  return Buffer.from(`${JSON.stringify({ schema: 'ota.release-keys/v1', release_keys: spki }, null, 2)}\n`);
}

/** The keys a document names. Throws on anything that is not a valid document of P-256 public keys. */
export function parseTrustDocument(bytes: Buffer): TrustedKey[] {
  const doc = trustDocumentSchema.parse(JSON.parse(bytes.toString('utf8')));
  return trustedKeysFromPems(doc.release_keys);
}
