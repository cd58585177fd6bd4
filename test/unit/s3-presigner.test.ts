/**
 * vehicle-api's presigned download links are made without the S3 client (lambdas/adapters/s3-presigner.ts): they
 * must be the links the SDK's presigner makes, on AWS (virtual-hosted) and on a configured endpoint (path-style),
 * with the object version, and signed the way S3 checks them. The integration tests download through these links
 * from the local S3 emulator, which verifies the signature.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl, S3RequestPresigner } from '@aws-sdk/s3-request-presigner';
import { S3Presigner } from '../../lambdas/adapters/s3-presigner.js';
import { Sha256 } from '../../protocol/sigv4-sha256.js';

const HOOK_TIMEOUT = 5_000;
const credentials = {
  accessKeyId: 'AKIDPRESIGNTEST',
  secretAccessKey: 'presign-secret',
  sessionToken: 'tok',
};
const KEY = 'releases/ecu main/1.2.3 (rc)/image*.bin';

/** The SDK client as clientConfig('S3') configures it. */
const sdkClient = (endpoint?: string) =>
  new S3Client({
    region: 'eu-west-1',
    credentials,
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });

describe('S3Presigner', { timeout: 10_000 }, () => {
  const saved = { ...process.env };
  beforeEach(
    () => {
      Object.assign(process.env, {
        AWS_ACCESS_KEY_ID: credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
        AWS_SESSION_TOKEN: credentials.sessionToken,
      });
      mock.timers.enable({ apis: ['Date'], now: Date.parse('2026-12-04T12:00:00Z') });
    },
    { timeout: HOOK_TIMEOUT },
  );
  afterEach(
    () => {
      mock.timers.reset();
      process.env = { ...saved };
    },
    { timeout: HOOK_TIMEOUT },
  );

  for (const endpoint of [undefined, 'https://127.0.0.1:4569']) {
    it(`makes the SDK's URL ${endpoint ? 'path-style on an endpoint' : 'virtual-hosted on AWS'}`, async () => {
      const ours = new URL(
        await new S3Presigner('fw-bucket', 'eu-west-1', endpoint).presignGet(KEY, 'v42', 900),
      );
      const sdk = new URL(
        await getSignedUrl(
          sdkClient(endpoint),
          new GetObjectCommand({ Bucket: 'fw-bucket', Key: KEY, VersionId: 'v42' }),
          { expiresIn: 900 },
        ),
      );
      assert.equal(ours.origin, sdk.origin);
      assert.equal(ours.pathname, sdk.pathname);
      // The SDK adds x-id=GetObject, which S3 ignores; it is under the signature, so signatures differ by it.
      const params = (u: URL) =>
        Object.fromEntries([...u.searchParams].filter(([k]) => k !== 'x-id' && k !== 'X-Amz-Signature'));
      assert.deepEqual(params(ours), params(sdk));
      assert.equal(ours.searchParams.get('versionId'), 'v42');
      assert.equal(ours.searchParams.get('X-Amz-Content-Sha256'), 'UNSIGNED-PAYLOAD');
      assert.equal(ours.searchParams.get('X-Amz-Expires'), '900');

      // Same request, signed by the SDK's S3 presigner: the signature must be the one in our URL.
      const presigner = new S3RequestPresigner({
        credentials,
        region: 'eu-west-1',
        sha256: Sha256,
      });
      const query = Object.fromEntries([...ours.searchParams].filter(([k]) => k === 'versionId'));
      const signed = await presigner.presign(
        {
          method: 'GET',
          protocol: ours.protocol,
          hostname: ours.hostname,
          ...(ours.port ? { port: Number(ours.port) } : {}),
          path: ours.pathname,
          query,
          headers: { host: ours.host },
        },
        { expiresIn: 900 },
      );
      assert.equal(ours.searchParams.get('X-Amz-Signature'), signed.query?.['X-Amz-Signature']);
    });
  }

  it('signs every version apart and leaves versionId out when there is none', async () => {
    const p = new S3Presigner('fw-bucket', 'eu-west-1');
    const a = new URL(await p.presignGet('k', 'v1', 60));
    const b = new URL(await p.presignGet('k', 'v2', 60));
    const none = new URL(await p.presignGet('k', undefined, 60));
    assert.notEqual(a.searchParams.get('X-Amz-Signature'), b.searchParams.get('X-Amz-Signature'));
    assert.equal(none.searchParams.has('versionId'), false);
  });
});
