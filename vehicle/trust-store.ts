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
import type { TrustedKey } from '../protocol/signatures.js';
import { parseTrustDocument } from '../protocol/trust-document.js';
import type { HealthCheck } from './installer.js';

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
