import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { canonicalJson } from '../../protocol/canonical-json.js';
import {
  checkManifestConsistency,
  compareDigest,
  digestStream,
  ImageHasher,
  type ReleaseManifest,
  signManifest,
  verifyManifestSignatures,
} from '../../protocol/manifest.js';
import { signedManifestSchema } from '../../protocol/schemas.js';
import { KeyFileSigner, sha256Hex, trustedKeysFromPems } from '../../protocol/signatures.js';

function p256() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    signer: new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

const CHUNK = 64 * 1024;

async function manifestFor(image: Buffer): Promise<ReleaseManifest> {
  const d = await digestStream(Readable.from([image]), CHUNK);
  return {
    schema: 'ota.release-manifest/v1',
    release_id: 'bcm-3.0.1',
    ecu: 'bcm',
    hardware_ids: ['BCM-A'],
    version: '3.0.1',
    size: d.size,
    sha256: d.sha256,
    chunk_size: CHUNK,
    chunks: d.chunks,
    created_at: '2026-11-27T00:00:00.000Z',
  };
}

describe('canonical JSON', { timeout: 60_000 }, () => {
  it('sorts keys at every depth and drops undefined', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [1, { z: 0, y: 'x' }], c: undefined } }),
      '{"a":{"d":[1,{"y":"x","z":0}]},"b":1}',
    );
  });
  it('refuses non-finite numbers', () => {
    assert.throws(() => canonicalJson({ a: Number.NaN }), TypeError);
  });
});

describe('image digests', { timeout: 60_000 }, () => {
  it('chunks at exact boundaries however the input is split', () => {
    const image = Buffer.alloc(CHUNK * 2 + 10, 7);
    const h = new ImageHasher(CHUNK);
    for (let i = 0; i < image.length; i += 1000) h.update(image.subarray(i, i + 1000));
    const d = h.digest();
    assert.equal(d.size, image.length);
    assert.equal(d.sha256, sha256Hex(image));
    assert.deepEqual(d.chunks, [
      sha256Hex(image.subarray(0, CHUNK)),
      sha256Hex(image.subarray(CHUNK, 2 * CHUNK)),
      sha256Hex(image.subarray(2 * CHUNK)),
    ]);
  });

  it('names the first differing chunk', async () => {
    const image = Buffer.alloc(CHUNK * 3, 1);
    const m = await manifestFor(image);
    image[CHUNK + 5] = 2;
    const problems = compareDigest(m, await digestStream(Readable.from([image]), CHUNK));
    assert.equal(problems.length, 2);
    assert.match(problems[1]!, /first at chunk 1/);
  });
});

describe('manifest signatures', { timeout: 60_000 }, () => {
  it('verifies with a trusted key and survives a JSON round trip', async () => {
    const oem = p256();
    const signed = await signManifest(await manifestFor(Buffer.from('firmware')), [oem.signer]);
    const reparsed = signedManifestSchema.parse(JSON.parse(JSON.stringify(signed)));
    assert.equal(verifyManifestSignatures(reparsed, trustedKeysFromPems([oem.publicPem])), true);
  });

  it('refuses an untrusted key, a changed field and a signature moved to another key id', async () => {
    const oem = p256();
    const attacker = p256();
    const manifest = await manifestFor(Buffer.from('firmware'));
    const trusted = trustedKeysFromPems([oem.publicPem]);
    const byAttacker = await signManifest(manifest, [attacker.signer]);
    assert.equal(verifyManifestSignatures(byAttacker, trusted), false);

    const signed = await signManifest(manifest, [oem.signer]);
    const tampered = { ...signed, manifest: { ...signed.manifest, version: '9.9.9' } };
    assert.equal(verifyManifestSignatures(tampered, trusted), false);

    const relabelled = {
      ...byAttacker,
      signatures: [{ key_id: signed.signatures[0]!.key_id, signature: byAttacker.signatures[0]!.signature }],
    };
    assert.equal(verifyManifestSignatures(relabelled, trusted), false);
  });

  it('accepts any one trusted key of a rotated set', async () => {
    const oldKey = p256();
    const newKey = p256();
    const signed = await signManifest(await manifestFor(Buffer.from('x')), [newKey.signer]);
    assert.equal(
      verifyManifestSignatures(signed, trustedKeysFromPems([oldKey.publicPem, newKey.publicPem])),
      true,
    );
  });

  it('trust stores refuse keys other than P-256', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .publicKey.export({ type: 'spki', format: 'pem' })
      .toString();
    assert.throws(() => trustedKeysFromPems([rsa]), /P-256/);
  });

  it('refuses a manifest whose chunk list contradicts its size', async () => {
    const m = await manifestFor(Buffer.alloc(CHUNK + 1));
    assert.doesNotThrow(() => checkManifestConsistency(m));
    assert.throws(() => checkManifestConsistency({ ...m, chunks: m.chunks.slice(0, 1) }), /chunks/);
  });
});
