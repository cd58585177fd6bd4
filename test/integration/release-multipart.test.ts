/** Large releases are uploaded in parts through presigned part URLs, then completed and verified on publish. */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { https, jsonRequest } from '../support/https.js';

const MiB = 1024 * 1024;
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
const releaseKey = newReleaseKey();

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-multipart-'));
  // Read by the operator function at its cold start, like any Lambda environment variable.
  process.env.MULTIPART_THRESHOLD_BYTES = String(5 * MiB);
  process.env.MULTIPART_PART_BYTES = String(5 * MiB);
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
  });
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

async function uploadParts(parts: { part_number: number; url: string }[], image: Buffer, partSize: number) {
  const done: { part_number: number; etag: string }[] = [];
  for (const p of parts) {
    const body = image.subarray((p.part_number - 1) * partSize, p.part_number * partSize);
    const res = await https(p.url, {
      method: 'PUT',
      body,
      headers: { 'content-length': String(body.length) },
      ca: cloud.caCertPem,
    });
    assert.equal(res.status, 200, `part ${p.part_number}: ${res.raw.toString()}`);
    done.push({ part_number: p.part_number, etag: String(res.headers.etag) });
  }
  return done;
}

it('uploads an image in parts, refuses a corrupted part and an unknown upload, publishes and serves the exact bytes', {
  timeout: 300_000,
}, async () => {
  const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(11 * MiB + 123);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-8.0.0',
    version: '8.0.0',
    signer: releaseKey.signer,
  });
  const created = await operator.call('POST', '/releases', signed);
  assert.equal(created.status, 201, created.raw.toString());
  const upload = created.json.upload;
  assert.equal(upload.method, 'MULTIPART');
  assert.equal(upload.part_size, 5 * MiB);
  assert.equal(upload.parts.length, 3);

  // A corrupted part completes (S3 checks ETags, not content) but publishing streams the object through the
  // manifest digests and refuses it. (s3rver does not check part ETags on completion at all; nothing here relies
  // on that check.)
  const corrupted = Buffer.from(image);
  corrupted.writeUInt8(corrupted.readUInt8(7 * MiB) ^ 0xff, 7 * MiB);
  const badParts = await uploadParts(upload.parts, corrupted, upload.part_size);
  const refused = await operator.call('POST', '/releases/tcu-8.0.0/publish', {
    upload_id: upload.upload_id,
    parts: badParts,
  });
  assert.equal(refused.status, 202, refused.raw.toString());
  assert.equal(refused.json.status, 'verifying', 'verified in the background');
  const failed = await operator.publishAndWait('tcu-8.0.0', {});
  assert.equal(failed.json.status, 'failed', failed.raw.toString());
  assert.match(failed.json.failure_reason, /chunk \d+ differs from the manifest/);

  const retry = await operator.call('POST', '/releases', signed);
  assert.equal(retry.status, 201, 'creating again answers a fresh multipart upload');
  const parts = await uploadParts(retry.json.upload.parts, image, retry.json.upload.part_size);
  const unknownUpload = await operator.call('POST', '/releases/tcu-8.0.0/publish', {
    upload_id: 'no-such-upload',
    parts,
  });
  assert.equal(unknownUpload.status, 400, unknownUpload.raw.toString());
  assert.equal(unknownUpload.json.error.code, 'invalid_upload');

  const published = await operator.publishAndWait('tcu-8.0.0', {
    upload_id: retry.json.upload.upload_id,
    parts,
  });
  assert.equal(published.status, 200, published.raw.toString());
  assert.equal(published.json.status, 'published');

  const vehicle = await TestVehicle.create('1HGCM82633A004352');
  assert.equal((await operator.call('POST', '/vehicles', vehicle.registration())).status, 201);
  const token = await vehicle.token(cloud.endpoints.api, cloud.caCertPem);
  const dl = await jsonRequest(
    cloud.endpoints.api,
    'POST',
    '/updates/1HGCM82633A004352/download',
    cloud.caCertPem,
    { firmware_version: '8.0.0' },
    token,
  );
  assert.equal(dl.status, 200, dl.raw.toString());
  const bytes = await https(dl.json.download_url, { ca: cloud.caCertPem });
  assert.equal(bytes.raw.length, image.length);
  assert.equal(createHash('sha256').update(bytes.raw).digest('hex'), signed.manifest.sha256);
});
