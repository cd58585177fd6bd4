/** Signed releases, bundles and rollback authorisations for tests: real keys, real signatures, small images. */
import { generateKeyPairSync } from 'node:crypto';
import { Readable } from 'node:stream';
import { manifestDigest } from '../../protocol/assignment.js';
import {
  type Bundle,
  type BundleConstraint,
  bundleOfManifests,
  type SignedBundle,
  signBundle,
} from '../../protocol/bundle.js';
import {
  digestStream,
  type ReleaseManifest,
  type SignedManifest,
  signManifest,
} from '../../protocol/manifest.js';
import {
  type RollbackAuthorisation,
  type SignedRollbackAuthorisation,
  signRollbackAuthorisation,
} from '../../protocol/rollback.js';
import { KeyFileSigner, type TrustedKey, trustedKeysFromPems } from '../../protocol/signatures.js';

export const CHUNK = 64 * 1024;

export interface TestKey {
  readonly signer: KeyFileSigner;
  readonly publicPem: string;
  readonly trusted: TrustedKey[];
}

export function p256Key(): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  return {
    signer: new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()),
    publicPem,
    trusted: trustedKeysFromPems([publicPem]),
  };
}

/** A deterministic image of `size` bytes for an ECU and version (different versions differ). */
export function imageOf(ecu: string, version: string, size = 100_000): Buffer {
  const seed = Buffer.from(`${ecu}@${version}`);
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = (seed[i % seed.length]! + i * 31) & 0xff;
  return out;
}

export interface TestRelease {
  readonly image: Buffer;
  readonly manifest: ReleaseManifest;
  readonly signed: SignedManifest;
  readonly digest: string;
}

export async function release(
  key: TestKey,
  ecu: string,
  hardwareId: string,
  version: string,
  image: Buffer = imageOf(ecu, version),
): Promise<TestRelease> {
  const d = await digestStream(Readable.from([image]), CHUNK);
  const manifest: ReleaseManifest = {
    schema: 'ota.release-manifest/v1',
    release_id: `${ecu}-${version}`,
    ecu,
    hardware_ids: [hardwareId],
    version,
    size: d.size,
    sha256: d.sha256,
    chunk_size: CHUNK,
    chunks: d.chunks,
    created_at: '2026-12-01T00:00:00.000Z',
  };
  return {
    image,
    manifest,
    signed: await signManifest(manifest, [key.signer]),
    digest: manifestDigest(manifest),
  };
}

export function bundleOf(
  id: string,
  version: string,
  members: readonly TestRelease[],
  constraints: BundleConstraint[] = [],
): Bundle {
  return bundleOfManifests(
    id,
    version,
    members.map((r) => r.manifest),
    constraints,
    '2026-12-01T00:00:00.000Z',
  );
}

export async function signedBundle(
  key: TestKey,
  id: string,
  version: string,
  members: readonly TestRelease[],
  constraints: BundleConstraint[] = [],
): Promise<SignedBundle> {
  return signBundle(bundleOf(id, version, members, constraints), [key.signer]);
}

/** An authorisation taking each `from` release down to its `to` release, valid for an hour from `now`. */
export async function authorisation(
  key: TestKey,
  pairs: readonly { from: TestRelease; to: TestRelease }[],
  opts: { id?: string; campaignId?: string; vins?: string[]; now?: Date; validMs?: number } = {},
): Promise<SignedRollbackAuthorisation> {
  const now = opts.now ?? new Date();
  const a: RollbackAuthorisation = {
    schema: 'ota.rollback-authorisation/v1',
    authorisation_id: opts.id ?? 'rb-1',
    campaign_id: opts.campaignId ?? 'rollback-campaign',
    ...(opts.vins ? { vins: opts.vins } : {}),
    ecus: pairs.map(({ from, to }) => ({
      ecu: from.manifest.ecu,
      from_version: from.manifest.version,
      to_version: to.manifest.version,
      to_manifest_sha256: to.digest,
    })),
    issued_at: new Date(now.getTime() - 60_000).toISOString(),
    expires_at: new Date(now.getTime() + (opts.validMs ?? 3600_000)).toISOString(),
  };
  return signRollbackAuthorisation(a, [key.signer]);
}
