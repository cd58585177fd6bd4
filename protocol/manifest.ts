/**
 * Release manifests: one signed document binds a release's version, ECU target, hardware ids, size, whole-image
 * digest and per-chunk digests, so metadata from different releases cannot be mixed and a vehicle can verify
 * each chunk as it arrives.
 */
import { createHash, type Hash } from 'node:crypto';
import type { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { deltaTableSize } from './delta.js';
import { ProtocolError } from './errors.js';
import { maxFrameTableSize } from './frames.js';
import type { releaseManifestSchema, signedManifestSchema } from './schemas.js';
import { keyIdOf, type Signer, type TrustedKey, verifyEcdsa } from './signatures.js';

export type ReleaseManifest = z.infer<typeof releaseManifestSchema>;
export type SignedManifest = z.infer<typeof signedManifestSchema>;

export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
const MANIFEST_CONTEXT = 'ota.release-manifest/v1\n';

/** The exact bytes a release key signs: a domain-separation prefix, then the canonical manifest. */
export function manifestSigningInput(manifest: ReleaseManifest): Buffer {
  return Buffer.from(MANIFEST_CONTEXT + canonicalJson(manifest), 'utf8');
}

export async function signManifest(
  manifest: ReleaseManifest,
  signers: readonly Signer[],
): Promise<SignedManifest> {
  const input = manifestSigningInput(manifest);
  const signatures = await Promise.all(
    signers.map(async (s) => ({
      key_id: keyIdOf(await s.publicKeyPem()),
      signature: (await s.sign(input)).toString('base64'),
    })),
  );
  return { manifest, signatures };
}

/** Size and chunk list must describe the same image; a manifest that contradicts itself is refused. */
export function checkManifestConsistency(manifest: ReleaseManifest): void {
  const expectedChunks = Math.ceil(manifest.size / manifest.chunk_size);
  if (manifest.chunks.length !== expectedChunks) {
    throw new ProtocolError(
      'invalid_manifest',
      `manifest lists ${manifest.chunks.length} chunks but size ${manifest.size} with chunk_size ${manifest.chunk_size} makes ${expectedChunks}`,
    );
  }
  if (new Set(manifest.hardware_ids).size !== manifest.hardware_ids.length) {
    throw new ProtocolError('invalid_manifest', 'manifest hardware_ids has duplicates');
  }
  const c = manifest.compression;
  if (c) {
    // The table closes the object, and may not be larger than one chunk per 64 bytes of image (what a vehicle or
    // the backend is asked to hold in memory; real tables are 36 bytes per 64 KiB).
    // Deltas follow the table, back to back, and end the object.
    let end = c.table_offset + c.table_size;
    for (const d of c.deltas ?? []) {
      if (d.offset !== end || d.table_size > d.size || d.table_size !== deltaTableSize(manifest)) {
        throw new ProtocolError('invalid_manifest', 'manifest deltas are not laid out after the frame table');
      }
      end += d.size;
    }
    if (end !== c.object_size || c.table_size > maxFrameTableSize(manifest)) {
      throw new ProtocolError(
        'invalid_manifest',
        'manifest compression does not describe a frame table at the end',
      );
    }
  }
}

/**
 * True when at least one signature verifies against a trusted key with a matching key id. Signatures from
 * unknown keys are ignored, never trusted.
 */
export function verifyManifestSignatures(signed: SignedManifest, trusted: readonly TrustedKey[]): boolean {
  const input = manifestSigningInput(signed.manifest);
  return signed.signatures.some((sig) =>
    trusted.some((t) => t.keyId === sig.key_id && verifyEcdsa(t.key, input, sig.signature)),
  );
}

export interface ImageDigest {
  readonly size: number;
  readonly sha256: string;
  readonly chunks: string[];
}

/**
 * Streaming digest of an image: whole-image SHA-256 and SHA-256 of each fixed-size chunk, in one pass with
 * memory bounded by one hash state per digest (no buffering of chunk bytes).
 */
export class ImageHasher {
  private readonly whole: Hash = createHash('sha256');
  private chunk: Hash = createHash('sha256');
  private inChunk = 0;
  private total = 0;
  private readonly chunks: string[] = [];

  constructor(private readonly chunkSize: number = DEFAULT_CHUNK_SIZE) {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0)
      throw new RangeError('chunkSize must be a positive integer');
  }

  update(data: Uint8Array): void {
    this.whole.update(data);
    this.total += data.length;
    let offset = 0;
    while (offset < data.length) {
      const take = Math.min(this.chunkSize - this.inChunk, data.length - offset);
      this.chunk.update(data.subarray(offset, offset + take));
      this.inChunk += take;
      offset += take;
      if (this.inChunk === this.chunkSize) {
        this.chunks.push(this.chunk.digest('hex'));
        this.chunk = createHash('sha256');
        this.inChunk = 0;
      }
    }
  }

  digest(): ImageDigest {
    if (this.inChunk > 0) {
      this.chunks.push(this.chunk.digest('hex'));
      this.inChunk = 0;
    }
    return { size: this.total, sha256: this.whole.digest('hex'), chunks: this.chunks };
  }
}

export async function digestStream(
  stream: AsyncIterable<Uint8Array>,
  chunkSize: number,
): Promise<ImageDigest> {
  const hasher = new ImageHasher(chunkSize);
  for await (const data of stream) hasher.update(data);
  return hasher.digest();
}

/** Which of size, whole digest and chunk digests disagree with the manifest; empty when the image matches. */
export function compareDigest(manifest: ReleaseManifest, digest: ImageDigest): string[] {
  const problems: string[] = [];
  if (digest.size !== manifest.size) problems.push(`size is ${digest.size}, manifest says ${manifest.size}`);
  if (digest.sha256 !== manifest.sha256) problems.push('SHA-256 of the image does not match the manifest');
  const badChunk = manifest.chunks.findIndex((c, i) => digest.chunks[i] !== c);
  if (badChunk >= 0 || digest.chunks.length !== manifest.chunks.length) {
    problems.push(
      `chunk digests differ from the manifest (first at chunk ${badChunk >= 0 ? badChunk : manifest.chunks.length})`,
    );
  }
  return problems;
}
