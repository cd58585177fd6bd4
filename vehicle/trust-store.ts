/**
 * Release-key rotation as a signed update (the Uptane/TUF rule: the keys a vehicle trusts change only through an
 * update signed by keys it trusts now).
 *
 * The set of OEM release keys is the image of a pseudo-ECU, `release-keys`: a small JSON document listing PEM public
 * keys, published as a release and rolled out in a campaign like any firmware. Installing it passes every check an
 * image passes: a manifest signed by a release key trusted now, a backend assignment for this VIN, anti-rollback on
 * its version, chunk and whole-image SHA-256, A/B slots, a power-cut-safe switch. Its health check refuses a document
 * that does not parse or names a key that is not ECDSA P-256, so a bad one is rolled back and the old set stays.
 * Once committed, its keys replace the trusted set: a compromised key is revoked by leaving it out, a new one
 * trusted by adding it. A vehicle that does not list the pseudo-ECU keeps the keys it was configured with.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { type TrustedKey, trustedKeysFromPems } from '../lambdas/core/signatures.js';
import type { HealthCheck } from './installer.js';

/** The pseudo-ECU whose image is the trusted release-key set. */
export const TRUST_ECU = 'release-keys';
/** Its hardware id: what release manifests of key sets name. */
export const TRUST_HARDWARE_ID = 'OTA-RELEASE-KEYS';

const trustDocumentSchema = z.strictObject({
  schema: z.literal('ota.release-keys/v1'),
  release_keys: z.array(z.string().max(4096)).min(1).max(16),
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

/** Health check of the release-keys pseudo-ECU: the activated document must parse into usable keys. */
export const trustDocumentHealthCheck: HealthCheck = async ({ location }) => {
  try {
    parseTrustDocument(await readFile(location));
    return true;
  } catch {
    return false;
  }
};

/** Reads the key set the release-keys slot runs, from an installer that can name its active slot's file. */
export async function installedReleaseKeys(installer: unknown): Promise<TrustedKey[] | undefined> {
  const withPath = installer as { activeSlotPath?: () => Promise<string> };
  if (typeof withPath?.activeSlotPath !== 'function') return undefined;
  return parseTrustDocument(await readFile(await withPath.activeSlotPath()));
}
