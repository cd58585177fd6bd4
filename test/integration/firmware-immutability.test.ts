/**
 * Issue 18 #5 attacked on the local cloud: two releases of the same image shared one object key, so an upload to
 * the second overwrote the first's published image and the second's failed publish deleted it (404 for every
 * vehicle); upload URLs stayed valid for an hour, also after publishing.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { https, jsonRequest } from '../support/https.js';

const VIN = '1HGCM82633A004352';
let cloud: LocalCloud;
let dataDir: string;
let operator: Operator;
const releaseKey = newReleaseKey();

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-immutable-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

const put = (url: string, body: Buffer) =>
  https(url, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
    body,
    ca: cloud.caCertPem,
  });

describe('published firmware is immutable (issue 18 #5)', { timeout: 120_000 }, () => {
  it('an upload to a second release of the same bytes and its failed publish leave the first release intact', async () => {
    const image = randomBytes(200_000);
    const a = await signedRelease(image, {
      releaseId: 'tcu-7.0.0',
      version: '7.0.0',
      signer: releaseKey.signer,
    });
    const { created: createdA, published } = await operator.publish(a, image);
    assert.equal(published?.status, 200, published?.raw.toString());
    const urlA = new URL(createdA.json.upload.url);
    assert.match(urlA.pathname, /\/releases\/tcu-7\.0\.0\/[0-9a-f]{64}$/, 'a key of its own');
    // Upload URLs live minutes.
    const lifetime = Date.parse(createdA.json.upload.expires_at) - Date.now();
    assert.ok(lifetime > 0 && lifetime <= 15 * 60 * 1000, `upload URL lives ${lifetime} ms`);

    // Release B: same image digest, another release. Its upload URL names another key.
    const b = await signedRelease(image, {
      releaseId: 'tcu-7.0.1',
      version: '7.0.1',
      signer: releaseKey.signer,
    });
    const createdB = await operator.call('POST', '/releases', b);
    assert.equal(createdB.status, 201, createdB.raw.toString());
    assert.notEqual(new URL(createdB.json.upload.url).pathname, urlA.pathname);
    const garbage = randomBytes(image.length);
    assert.equal((await put(createdB.json.upload.url, garbage)).status, 200);
    // Verification runs in the background (202): B ends failed, and removing its bad upload touches only B's key.
    const failed = await operator.publishAndWait('tcu-7.0.1', {});
    assert.equal(failed.status, 200, failed.raw.toString());
    assert.equal(failed.json.status, 'failed');
    assert.match(failed.json.failure_reason ?? '', /does not match|differs|mismatch/i);

    // A's URL, still unexpired, can no longer replace the published image.
    assert.equal((await put(createdA.json.upload.url, garbage)).status, 403);
    // Nor can anyone delete it, even with the backend's own credentials.
    const s3 = new S3Client({
      endpoint: cloud.endpoints.s3,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { ...cloud.credentials },
      requestHandler: { httpsAgent: new Agent({ ca: cloud.caCertPem }) },
    });
    try {
      await assert.rejects(
        s3.send(
          new DeleteObjectCommand({ Bucket: cloud.bucket, Key: urlA.pathname.replace(/^\/[^/]+\//, '') }),
        ),
        { name: 'AccessDenied' },
      );
    } finally {
      s3.destroy();
    }

    // Every vehicle still gets release A's exact bytes.
    const vehicle = await TestVehicle.create(VIN);
    assert.equal((await operator.call('POST', '/vehicles', vehicle.registration())).status, 201);
    const token = await vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const offer = await jsonRequest(
      cloud.endpoints.api,
      'POST',
      `/updates/${VIN}/initiate`,
      cloud.caCertPem,
      { firmware_version: '7.0.0' },
      token,
    );
    assert.equal(offer.status, 200, offer.raw.toString());
    const download = await https(offer.json.download_url, { ca: cloud.caCertPem });
    assert.equal(download.status, 200);
    assert.ok(download.raw.equals(image), 'the published image is unchanged');
  });
});
