/**
 * The local cloud's own secrets, kept in its data folder (0600): the development release key pair, other ECDSA keys
 * it signs with, and the admin token. Nothing here is used on AWS, where KMS holds the keys and operators sign in.
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readIfExists, readPrivateFile, writePrivateFile, writePublicFile } from './files.js';

/** An ECDSA P-256 PKCS#8 key file (0600), made once. */
export function ensureEcKey(path: string): string {
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    writePrivateFile(path, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  } else {
    readPrivateFile(path);
  }
  return path;
}

/** The development release key pair in `dir`, made once: what a fresh `npm start` accepts releases signed with. */
export function devReleaseKey(dir: string) {
  const privateKey = ensureEcKey(join(dir, 'release.key.pem'));
  const publicKey = join(dir, 'release.pub.pem');
  const pem = createPublicKey(readPrivateFile(privateKey)).export({ type: 'spki', format: 'pem' }).toString();
  if (readIfExists(publicKey) !== pem) writePublicFile(publicKey, pem);
  return { pems: [pem], files: { privateKey, publicKey } };
}

/** The PEM as given, or an error saying a release key must be a PEM public key. */
export function checkPublicKey(pem: string): string {
  try {
    createPublicKey(pem);
  } catch (err) {
    throw new Error('releasePublicKeys must be PEM public keys', { cause: err });
  }
  return pem;
}

/** The admin token: as given (16 characters at least), else the one kept in `file`, made once. */
export function adminTokenFrom(
  given: string | undefined,
  file: string,
): { token: string; file: string | undefined } {
  if (given !== undefined) {
    if (given.length < 16) throw new Error('adminToken must be at least 16 characters');
    return { token: given, file: undefined };
  }
  const stored = existsSync(file) ? readPrivateFile(file).trim() : undefined;
  if (stored && stored.length >= 16) return { token: stored, file };
  const token = randomBytes(32).toString('base64url');
  writePrivateFile(file, `${token}\n`);
  return { token, file };
}
