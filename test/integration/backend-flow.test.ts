/**
 * The backend core end to end over real sockets: local HTTPS gateway -> the real handler modules -> S3 and
 * DynamoDB emulators over TLS, with the real AWS SDK clients in between.
 */
import assert from 'node:assert/strict';
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { S3Client } from '@aws-sdk/client-s3';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { S3ObjectStore } from '../../lambdas/adapters/s3-object-store.js';
import { startLocalCloud } from '../../local/cloud.js';
import { checkAssignment } from '../../protocol/assignment.js';
import { trustedKeysFromPems } from '../../protocol/signatures.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { https, jsonRequest } from '../support/https.js';

const VIN = '1HGCM82633A004352';
const OTHER_VIN = '5YJSA1E26HF000337';
const PRESIGN_TTL = 3;

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let operator: Operator;
let api: string;
let ca: string;
const releaseKey = newReleaseKey();
const image = randomBytes(300 * 1024 + 123);
let vehicle: TestVehicle;
let other: TestVehicle;

const expectError = (
  res: { status: number; json: { error?: { code?: string; message?: string } } },
  status: number,
  code?: string,
) => {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.equal(typeof res.json?.error?.message, 'string');
  if (code) assert.equal(res.json.error?.code, code);
};

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-flow-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    presignTtlSeconds: PRESIGN_TTL,
  });
  api = cloud.endpoints.api;
  ca = cloud.caCertPem;
  operator = new Operator(api, ca, cloud.adminToken);
  vehicle = await TestVehicle.create(VIN);
  other = await TestVehicle.create(OTHER_VIN);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('backend core, end to end', { timeout: 300_000 }, () => {
  it('publishes a signed release, registers a vehicle from a CSR, and the vehicle downloads, verifies and reports', async () => {
    const signed = await signedRelease(image, {
      releaseId: 'tcu-3.0.1',
      version: '3.0.1',
      signer: releaseKey.signer,
    });
    const { created, upload, published } = await operator.publish(signed, image);
    assert.equal(created.status, 201, created.raw.toString());
    assert.equal(created.json.status, 'pending_upload');
    assert.equal(upload?.status, 200);
    assert.equal(published?.status, 200, published?.raw.toString());
    assert.equal(published?.json.status, 'published');

    const reg = await operator.call('POST', '/vehicles', vehicle.registration());
    assert.equal(reg.status, 201, reg.raw.toString());
    assert.match(reg.json.certificate_pem, /BEGIN CERTIFICATE/);
    assert.equal((await operator.call('POST', '/vehicles', other.registration())).status, 201);

    const token = await vehicle.token(api, ca);
    const dl = await jsonRequest(
      api,
      'POST',
      `/updates/${VIN}/download`,
      ca,
      { firmware_version: '3.0.1' },
      token,
    );
    assert.equal(dl.status, 200, dl.raw.toString());
    assert.match(dl.json.download_url, /^https:\/\/127\.0\.0\.1:\d+\//);
    assert.equal(dl.json.manifest.manifest.sha256, signed.manifest.sha256);
    assert.equal(dl.json.manifest.signatures[0].signature, signed.signatures[0]!.signature);

    const backendKeys = trustedKeysFromPems([
      createPublicKey(readFileSync(process.env.LOCAL_SIGNING_KEY_FILE!, 'utf8'))
        .export({ type: 'spki', format: 'pem' })
        .toString(),
    ]);
    const check = checkAssignment(dl.json.assignment, {
      keys: backendKeys,
      vin: VIN,
      now: new Date(),
      lastCounter: 0,
      manifest: dl.json.manifest.manifest,
    });
    assert.deepEqual(
      check,
      { ok: true },
      'the offer carries a backend-signed assignment for this VIN and manifest',
    );

    const bytes = await https(dl.json.download_url, { ca });
    assert.equal(bytes.status, 200);
    assert.equal(createHash('sha256').update(bytes.raw).digest('hex'), dl.json.manifest.manifest.sha256);

    for (const status of [
      { status: 'downloading', progress: 50 },
      { status: 'installing', progress: 10 },
      { status: 'completed' },
    ]) {
      const res = await jsonRequest(api, 'POST', `/updates/${VIN}/status`, ca, status, token);
      assert.equal(res.status, 200, res.raw.toString());
      assert.equal(res.json.applied, true);
    }

    const listed = await jsonRequest(api, 'GET', `/updates/${VIN}`, ca, undefined, token);
    assert.equal(listed.status, 200);
    assert.equal(listed.json.updates[0].status, 'completed');
    assert.equal(listed.json.updates[0].progress, 100);
    assert.deepEqual(listed.json.pending, []);

    const seen = await operator.call('GET', `/vehicles/${VIN}`);
    assert.equal(seen.json.ecus[0].version, '3.0.1', 'the ECU inventory records the installed version');
    assert.equal(seen.json.updates[0].status, 'completed');
  });

  it('never moves a state backwards: a late progress after completed changes nothing', async () => {
    const token = await vehicle.token(api, ca);
    const late = await jsonRequest(
      api,
      'POST',
      `/updates/${VIN}/status`,
      ca,
      { status: 'downloading', progress: 80 },
      token,
    );
    assert.equal(late.status, 200);
    assert.equal(late.json.applied, false);
    assert.equal(late.json.status, 'completed');
    const again = await jsonRequest(
      api,
      'POST',
      `/updates/${VIN}/status`,
      ca,
      { status: 'completed' },
      token,
    );
    assert.equal(again.json.applied, false, 'a duplicate completed is a no-op');
  });

  it('redirects GET /updates/{vin}/firmware/{version} to a working presigned URL', async () => {
    const token = await vehicle.token(api, ca);
    const res = await jsonRequest(api, 'GET', `/updates/${VIN}/firmware/3.0.1`, ca, undefined, token);
    assert.equal(res.status, 302);
    const location = res.headers.location as string;
    const bytes = await https(location, { ca });
    assert.equal(bytes.status, 200);
    assert.ok(bytes.raw.equals(image));
  });

  it('presigned URLs expire and cannot be altered', async () => {
    const token = await other.token(api, ca);
    const dl = await jsonRequest(
      api,
      'POST',
      `/updates/${OTHER_VIN}/initiate`,
      ca,
      { firmware_version: '3.0.1' },
      token,
    );
    assert.equal(dl.status, 200, dl.raw.toString());
    assert.equal(dl.json.expires_in, PRESIGN_TTL);
    const url = new URL(dl.json.download_url);
    url.pathname = url.pathname.replace(/[0-9a-f]{64}$/, '0'.repeat(64));
    assert.equal(
      (await https(url.toString(), { ca })).status,
      403,
      'another object under the same signature',
    );
    await sleep((PRESIGN_TTL + 1.5) * 1000);
    assert.equal((await https(dl.json.download_url, { ca })).status, 403, 'expired URL');
  });
});

describe('vehicle authentication', { timeout: 300_000 }, () => {
  it('a challenge is single-use and must be signed by the registered device key', async () => {
    const c1 = await jsonRequest(api, 'POST', '/auth/challenge', ca, { vin: VIN });
    assert.equal(c1.status, 200);
    const forged = await jsonRequest(api, 'POST', '/auth/token', ca, {
      vin: VIN,
      nonce: c1.json.nonce,
      signature: other.signChallenge(c1.json.nonce),
    });
    expectError(forged, 401, 'invalid_challenge');
    const burnt = await jsonRequest(api, 'POST', '/auth/token', ca, {
      vin: VIN,
      nonce: c1.json.nonce,
      signature: vehicle.signChallenge(c1.json.nonce),
    });
    expectError(burnt, 401, 'invalid_challenge');

    const c2 = await jsonRequest(api, 'POST', '/auth/challenge', ca, { vin: VIN });
    const body = { vin: VIN, nonce: c2.json.nonce, signature: vehicle.signChallenge(c2.json.nonce) };
    assert.equal((await jsonRequest(api, 'POST', '/auth/token', ca, body)).status, 200);
    expectError(await jsonRequest(api, 'POST', '/auth/token', ca, body), 401, 'invalid_challenge');
  });

  it('unknown VINs get a challenge that can never be redeemed', async () => {
    const unknown = await TestVehicle.create('WVWZZZ1JZXW000001');
    const c = await jsonRequest(api, 'POST', '/auth/challenge', ca, { vin: unknown.vin });
    assert.equal(c.status, 200);
    const res = await jsonRequest(api, 'POST', '/auth/token', ca, {
      vin: unknown.vin,
      nonce: c.json.nonce,
      signature: unknown.signChallenge(c.json.nonce),
    });
    expectError(res, 401);
  });

  it('refuses missing, malformed and forged tokens with 401', async () => {
    const path = `/updates/${VIN}`;
    expectError(await jsonRequest(api, 'GET', path, ca), 401, 'missing_token');
    expectError(await jsonRequest(api, 'GET', path, ca, undefined, 'not a token'), 401);
    const token = await vehicle.token(api, ca);
    const [v, payload, ...signatureAndDelegation] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
    claims.exp += 3600;
    const forged = [
      v,
      Buffer.from(JSON.stringify(claims)).toString('base64url'),
      ...signatureAndDelegation,
    ].join('.');
    expectError(await jsonRequest(api, 'GET', path, ca, undefined, forged), 401, 'invalid_token');
  });

  it('a token for one VIN never reads or writes another VIN (403)', async () => {
    const token = await vehicle.token(api, ca);
    const otherPaths: [string, string, unknown][] = [
      ['GET', `/updates/${OTHER_VIN}`, undefined],
      ['POST', `/updates/${OTHER_VIN}/initiate`, { firmware_version: '3.0.1' }],
      ['POST', `/updates/${OTHER_VIN}/download`, { firmware_version: '3.0.1' }],
      ['GET', `/updates/${OTHER_VIN}/firmware/3.0.1`, undefined],
      ['POST', `/updates/${OTHER_VIN}/status`, { status: 'failed' }],
    ];
    for (const [method, path, body] of otherPaths) {
      expectError(await jsonRequest(api, method, path, ca, body, token), 403, 'forbidden');
    }
    const theirs = await operator.call('GET', `/vehicles/${OTHER_VIN}`);
    assert.notEqual(theirs.json.updates[0]?.status, 'failed', 'the other vehicle state is untouched');
  });

  it('vehicle tokens do not open operator routes', async () => {
    const token = await vehicle.token(api, ca);
    expectError(await jsonRequest(api, 'GET', '/releases', ca, undefined, token), 401);
    expectError(await jsonRequest(api, 'GET', '/releases', ca), 401);
  });
});

describe('bad input', { timeout: 300_000 }, () => {
  it('answers 400 with a JSON error for malformed JSON, unknown fields, wrong types and bad VINs', async () => {
    const token = await vehicle.token(api, ca);
    const dl = `/updates/${VIN}/download`;
    expectError(
      await jsonRequest(api, 'POST', dl, ca, '{"firmware_version": ', token),
      400,
      'malformed_json',
    );
    expectError(
      await jsonRequest(api, 'POST', dl, ca, { firmware_version: '3.0.1', debug: true }, token),
      400,
      'unknown_field',
    );
    expectError(
      await jsonRequest(api, 'POST', dl, ca, { firmware_version: 3 }, token),
      400,
      'invalid_request',
    );
    expectError(
      await jsonRequest(api, 'POST', `/updates/${VIN}/status`, ca, { status: 'hacked' }, token),
      400,
      'invalid_request',
    );
    expectError(
      await jsonRequest(
        api,
        'POST',
        `/updates/${VIN}/status`,
        ca,
        { status: 'downloading', progress: 101 },
        token,
      ),
      400,
    );
    expectError(
      await jsonRequest(api, 'POST', '/updates/SHORTVIN/download', ca, { firmware_version: '3.0.1' }, token),
      400,
      'invalid_vin',
    );
    expectError(
      await operator.call('POST', '/vehicles', { ...vehicle.registration(), vin: 'IIIIIIIIIIIIIIIII' }),
      400,
    );
  });

  it('answers 404 for unknown versions, vehicles, releases and routes', async () => {
    const token = await vehicle.token(api, ca);
    expectError(
      await jsonRequest(api, 'POST', `/updates/${VIN}/download`, ca, { firmware_version: '9.9.9' }, token),
      404,
      'unknown_version',
    );
    expectError(await operator.call('GET', '/vehicles/WVWZZZ1JZXW000009'), 404, 'unknown_vehicle');
    expectError(await operator.call('GET', '/releases/nope'), 404, 'unknown_release');
    expectError(await jsonRequest(api, 'GET', '/no/such/route', ca), 404);
  });

  it('answers 413 for oversized bodies', async () => {
    const token = await vehicle.token(api, ca);
    const huge = JSON.stringify({ status: 'failed', reason: 'x'.repeat(64 * 1024) });
    expectError(await jsonRequest(api, 'POST', `/updates/${VIN}/status`, ca, huge, token), 413);
  });

  it('answers 409 for duplicates, conflicts and downgrades', async () => {
    expectError(await operator.call('POST', '/vehicles', vehicle.registration()), 409, 'vehicle_exists');
    const signed = await signedRelease(image, {
      releaseId: 'tcu-3.0.1',
      version: '3.0.1',
      signer: releaseKey.signer,
    });
    expectError(await operator.call('POST', '/releases', signed), 409, 'release_exists');
    const older = Buffer.from('older firmware');
    const oldSigned = await signedRelease(older, {
      releaseId: 'tcu-2.0.0',
      version: '2.0.0',
      signer: releaseKey.signer,
    });
    const { published } = await operator.publish(oldSigned, older);
    assert.equal(published?.status, 200);
    const token = await vehicle.token(api, ca);
    expectError(
      await jsonRequest(api, 'POST', `/updates/${VIN}/initiate`, ca, { firmware_version: '2.0.0' }, token),
      409,
      'downgrade_refused',
    );
    expectError(
      await jsonRequest(api, 'POST', `/updates/${VIN}/initiate`, ca, { firmware_version: '3.0.1' }, token),
      409,
      'already_installed',
    );
  });

  it('refuses a CSR whose subject is not the VIN, and a tampered CSR', async () => {
    const mismatched = await TestVehicle.create('WVWZZZ1JZXW000002');
    expectError(
      await operator.call('POST', '/vehicles', { ...mismatched.registration(), vin: 'WVWZZZ1JZXW000003' }),
      400,
      'csr_subject_mismatch',
    );
    // Flip the last byte of the DER: part of the CSR's self-signature.
    const der = Buffer.from(mismatched.csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    der.writeUInt8(der.readUInt8(der.length - 1) ^ 0x01, der.length - 1);
    const garbled = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    expectError(
      await operator.call('POST', '/vehicles', { ...mismatched.registration(), csr: garbled }),
      400,
      'invalid_csr',
    );
  });
});

describe('release integrity', { timeout: 300_000 }, () => {
  it('refuses a manifest not signed by a trusted release key', async () => {
    const rogue = newReleaseKey();
    const signed = await signedRelease(Buffer.from('rogue'), {
      releaseId: 'tcu-4.0.0',
      version: '4.0.0',
      signer: rogue.signer,
    });
    expectError(await operator.call('POST', '/releases', signed), 400, 'invalid_signature');
    const genuine = await signedRelease(Buffer.from('genuine'), {
      releaseId: 'tcu-4.0.0',
      version: '4.0.0',
      signer: releaseKey.signer,
    });
    const tampered = { ...genuine, manifest: { ...genuine.manifest, hardware_ids: ['OTHER-HW'] } };
    expectError(await operator.call('POST', '/releases', tampered), 400, 'invalid_signature');
  });

  it('refuses to publish an upload whose bytes differ from the manifest, and removes them', async () => {
    const real = randomBytes(200 * 1024);
    const signed = await signedRelease(real, {
      releaseId: 'tcu-5.0.0',
      version: '5.0.0',
      signer: releaseKey.signer,
    });
    const evil = Buffer.from(real);
    evil.writeUInt8(evil.readUInt8(150 * 1024) ^ 0xff, 150 * 1024);
    const { published } = await operator.publish(signed, evil);
    assert.equal(published?.json.status, 'failed', 'the background verification marks it failed');
    assert.match(published!.json.failure_reason, /chunk 2/);
    const again = await operator.call('POST', '/releases/tcu-5.0.0/publish', {});
    expectError(again, 409, 'verification_failed');
    assert.match(again.json.error.message, /chunk 2/);
    const objects = new S3ObjectStore(new S3Client(clientConfig('S3')), cloud.bucket);
    assert.equal(
      await objects.head(`releases/${signed.manifest.sha256}`),
      undefined,
      'the mismatching bytes were removed',
    );
    const token = await vehicle.token(api, ca);
    expectError(
      await jsonRequest(api, 'POST', `/updates/${VIN}/download`, ca, { firmware_version: '5.0.0' }, token),
      404,
      'unknown_version',
    );

    // Retrying the create answers a fresh URL; the genuine bytes then publish.
    const retry = await operator.publish(signed, real);
    assert.equal(retry.created.status, 201);
    assert.equal(retry.published?.status, 200, retry.published?.raw.toString());
  });

  it('the presigned upload URL only takes the manifest size', async () => {
    const real = randomBytes(10 * 1024);
    const signed = await signedRelease(real, {
      releaseId: 'tcu-6.0.0',
      version: '6.0.0',
      signer: releaseKey.signer,
    });
    const created = await operator.call('POST', '/releases', signed);
    const longer = Buffer.concat([real, Buffer.from('extra')]);
    const put = await https(created.json.upload.url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(longer.length) },
      body: longer,
      ca,
    });
    assert.equal(put.status, 403);
  });

  it('refuses a release for hardware the vehicle does not have', async () => {
    const img = Buffer.from('bcm firmware');
    const signed = await signedRelease(img, {
      releaseId: 'bcm-7.0.0',
      version: '7.0.0',
      ecu: 'bcm',
      hardwareIds: ['BCM-HW-9'],
      signer: releaseKey.signer,
    });
    assert.equal((await operator.publish(signed, img)).published?.status, 200);
    const token = await vehicle.token(api, ca);
    expectError(
      await jsonRequest(api, 'POST', `/updates/${VIN}/download`, ca, { firmware_version: '7.0.0' }, token),
      404,
      'no_compatible_release',
    );
  });
});
