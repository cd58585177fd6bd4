/**
 * The vehicle's identity and trust anchors, all local files.
 *
 * Identity: on first run the vehicle makes its own ECDSA P-256 key and a CSR with CN = VIN (the key never
 * leaves the car; files are 0600 in a 0700 folder). An operator registers the CSR; the certificate the backend
 * answers is stored next to the key. Trust anchors (OEM release public keys, the backend assignment public key)
 * are provisioned files, never fetched from the backend: a backend that could hand out its own trust anchors
 * would defeat them. Rotating release keys means changing the set of files (local config or a signed update).
 */
import { createPrivateKey, createPublicKey, sign, X509Certificate } from 'node:crypto';
import { chmod, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { challengeSigningInput } from '../protocol/challenge.js';
import { VIN_PATTERN } from '../protocol/schemas.js';
import { type TrustedKey, trustedKeysFromPems } from '../protocol/signatures.js';
import { generateKeyAndCsr } from '../protocol/x509.js';
import { ensureDir, writeFileAtomic } from './atomic-file.js';
import { AgentError } from './errors.js';

export const IDENTITY_FILES = {
  key: 'device.key.pem',
  csr: 'device.csr.pem',
  cert: 'device.cert.pem',
} as const;

export interface DeviceIdentity {
  readonly vin: string;
  readonly dir: string;
  readonly keyPem: string;
  readonly csrPem: string;
  /** Undefined until the vehicle is registered. */
  readonly certPem: string | undefined;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Reads a private file, tightening its mode to 0600 when something loosened it. */
async function readPrivate(path: string): Promise<string | undefined> {
  const text = await readIfExists(path);
  if (text !== undefined && ((await stat(path)).mode & 0o077) !== 0) await chmod(path, 0o600);
  return text;
}

/**
 * Loads the identity in dir, making the key and CSR on first run. Refuses a key that is not P-256 or a
 * certificate that is not for this key and VIN.
 */
export async function ensureIdentity(dir: string, vin: string): Promise<DeviceIdentity> {
  if (!VIN_PATTERN.test(vin)) throw new AgentError('invalid_vin', `not a VIN: ${vin}`);
  await ensureDir(dir);
  let keyPem = await readPrivate(join(dir, IDENTITY_FILES.key));
  let csrPem = await readIfExists(join(dir, IDENTITY_FILES.csr));
  if (keyPem === undefined || csrPem === undefined) {
    const made = await generateKeyAndCsr(vin);
    keyPem = made.privateKeyPem;
    csrPem = made.csrPem;
    await writeFileAtomic(join(dir, IDENTITY_FILES.key), keyPem, 0o600);
    await writeFileAtomic(join(dir, IDENTITY_FILES.csr), csrPem, 0o644);
  }
  const key = createPrivateKey(keyPem);
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new AgentError('invalid_device_key', 'the device key must be an ECDSA P-256 key');
  }
  const certPem = await readIfExists(join(dir, IDENTITY_FILES.cert));
  if (certPem !== undefined) checkCertificate(certPem, keyPem, vin);
  return { vin, dir, keyPem, csrPem, certPem };
}

/** The certificate must carry this VIN as CN and this device's public key. */
export function checkCertificate(certPem: string, keyPem: string, vin: string): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new AgentError('invalid_certificate', 'the device certificate is unreadable', { cause: err });
  }
  const publicFromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  if (!cert.publicKey.export({ type: 'spki', format: 'der' }).equals(publicFromKey)) {
    throw new AgentError('invalid_certificate', 'the device certificate is not for this device key');
  }
  if (!cert.subject.split('\n').includes(`CN=${vin}`)) {
    throw new AgentError('invalid_certificate', `the device certificate is not for ${vin}`);
  }
}

/** Stores the certificate the backend issued, after checking it belongs to this identity. */
export async function saveCertificate(identity: DeviceIdentity, certPem: string): Promise<DeviceIdentity> {
  checkCertificate(certPem, identity.keyPem, identity.vin);
  await writeFileAtomic(join(identity.dir, IDENTITY_FILES.cert), certPem, 0o644);
  return { ...identity, certPem };
}

/** Signs an auth challenge with the device key (DER ECDSA-SHA256, base64), as POST /auth/token expects. */
export function challengeSigner(identity: Pick<DeviceIdentity, 'vin' | 'keyPem'>): (nonce: string) => string {
  const key = createPrivateKey(identity.keyPem);
  return (nonce) =>
    sign('sha256', challengeSigningInput(identity.vin, nonce), { key, dsaEncoding: 'der' }).toString(
      'base64',
    );
}

export interface TrustAnchors {
  /** OEM release keys; a manifest needs a valid signature by one of them. */
  readonly releaseKeys: readonly TrustedKey[];
  /** Backend assignment keys; an assignment needs a valid signature by one of them. */
  readonly backendKeys: readonly TrustedKey[];
}

/** Loads public keys from PEM files (several keys per file allowed). Any unusable key is fatal. */
export async function loadTrustAnchors(files: {
  releaseKeyFiles: readonly string[];
  backendKeyFiles: readonly string[];
}): Promise<TrustAnchors> {
  const load = async (paths: readonly string[], what: string) => {
    if (paths.length === 0)
      throw new AgentError('no_trust_anchor', `at least one ${what} key file is required`);
    const pems: string[] = [];
    for (const path of paths) {
      const text = await readFile(path, 'utf8');
      const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g);
      if (!blocks) throw new AgentError('invalid_trust_anchor', `${path} holds no PEM public key`);
      pems.push(...blocks);
    }
    return trustedKeysFromPems(pems);
  };
  return {
    releaseKeys: await load(files.releaseKeyFiles, 'release'),
    backendKeys: await load(files.backendKeyFiles, 'backend'),
  };
}
