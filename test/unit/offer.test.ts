/** The offer's size does not depend on the image: bounded for the largest manifest the protocol allows. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type SignedAssignment, signAssignment } from '../../protocol/assignment.js';
import { MAX_OFFER_BYTES, offerFor, offerSchema } from '../../protocol/offer.js';
import { MAX_IMAGE_SIZE, releaseManifestSchema, signedManifestSchema } from '../../protocol/schemas.js';
import { MAX_MQTT_PAYLOAD_BYTES } from '../../protocol/topics.js';
import { newReleaseKey } from '../support/fleet.js';

const hex = (c: string) => c.repeat(64);
const maxChunks = 8192;

/** The longest assignment the schema accepts: every string at its maximum length, the longest signature. */
const longest: SignedAssignment = {
  assignment: {
    schema: 'ota.assignment/v1',
    vin: '1HGCM82633A004352',
    update_id: `campaign#${'c'.repeat(119)}`,
    campaign_id: 'c'.repeat(64),
    release_id: `r${'9'.repeat(63)}`,
    version: `1.0.0-${'a'.repeat(58)}`,
    ecu: 'e'.repeat(32),
    manifest_sha256: hex('a'),
    counter: Number.MAX_SAFE_INTEGER,
    issued_at: '2026-11-27T00:00:00.000Z',
    expires_at: '2026-11-28T00:00:00.000Z',
  },
  key_id: 'f'.repeat(16),
  signature: 'A'.repeat(256),
  // An online key's assignment carries its delegation: the longest one too.
  delegation: {
    statement: {
      schema: 'ota.key-delegation/v1',
      scope: `a${'s'.repeat(31)}`,
      key_id: 'f'.repeat(16),
      public_key: 'P'.repeat(200),
      issuer_key_id: 'e'.repeat(16),
      not_before: '2026-11-27T00:00:00.000Z',
      not_after: '2026-11-28T00:00:00.000Z',
    },
    signature: 'A'.repeat(256),
  },
};

describe('offer size', { timeout: 30_000 }, () => {
  it('stays under 10 KB for the largest manifest allowed (16 GiB, the most chunks), where the manifest itself would not fit in an MQTT message', () => {
    const chunkList = (n: number) => Array.from({ length: n }, () => hex('c'));
    assert.ok(releaseManifestSchema.shape.chunks.safeParse(chunkList(maxChunks)).success);
    assert.ok(
      !releaseManifestSchema.shape.chunks.safeParse(chunkList(maxChunks + 1)).success,
      'the most chunks',
    );
    const manifest = signedManifestSchema.parse({
      manifest: {
        schema: 'ota.release-manifest/v1',
        release_id: longest.assignment.release_id,
        ecu: longest.assignment.ecu,
        hardware_ids: Array.from({ length: 32 }, (_, i) => `${i}`.padEnd(64, 'h')),
        version: '1.0.0',
        size: MAX_IMAGE_SIZE,
        sha256: hex('b'),
        chunk_size: MAX_IMAGE_SIZE / maxChunks,
        chunks: Array.from({ length: maxChunks }, () => hex('c')),
        created_at: '2026-11-27T00:00:00.000Z',
      },
      signatures: Array.from({ length: 8 }, () => ({ key_id: 'f'.repeat(16), signature: 'A'.repeat(256) })),
    });
    const offer = offerSchema.parse(offerFor(longest, manifest.manifest.size));
    const bytes = Buffer.byteLength(JSON.stringify(offer));
    assert.ok(bytes < MAX_OFFER_BYTES, `the largest offer is ${bytes} bytes`);
    // About 1.5 KB of assignment and 0.8 KB of delegation at their longest; per-chunk data would be megabytes.
    assert.ok(bytes < 2560, `the largest offer is ${bytes} bytes: it carries no per-chunk data`);
    const withManifest = Buffer.byteLength(JSON.stringify({ ...offer, manifest }));
    assert.ok(withManifest > MAX_MQTT_PAYLOAD_BYTES, `with its manifest it would be ${withManifest} bytes`);
  });

  it('takes every field from the signed assignment, so they cannot disagree with it', async () => {
    const signed = await signAssignment(longest.assignment, newReleaseKey().signer);
    const offer = offerSchema.parse(offerFor(signed, 12345));
    const a = signed.assignment;
    assert.deepEqual(
      [
        offer.update_id,
        offer.campaign_id,
        offer.firmware_version,
        offer.ecu,
        offer.release_id,
        offer.manifest_sha256,
      ],
      [a.update_id, a.campaign_id, a.version, a.ecu, a.release_id, a.manifest_sha256],
    );
    assert.equal(offer.size, 12345);
    assert.equal(offer.manifest, undefined);
    assert.deepEqual(offer.assignment, signed);
  });
});
