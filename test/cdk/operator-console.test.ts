/**
 * The operator console on AWS: a private bucket read only by CloudFront (origin access control), security headers
 * on every answer, the API forwarded on the same origin without caching, config.json from a CloudFront Function,
 * and the firmware bucket accepting the console's uploads.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { otaTemplate, resources } from './fixtures.js';

const template = otaTemplate();
const all = resources(template);
const distribution = () => {
  const found = Object.values(all).filter((r) => r.Type === 'AWS::CloudFront::Distribution');
  assert.equal(found.length, 1);
  return found[0]!.Properties!.DistributionConfig as Record<string, unknown>;
};

describe('operator console hosting', { timeout: 300_000 }, () => {
  it('keeps the console bucket private: no public access, TLS only, read by CloudFront through OAC only', () => {
    const consoleBucket = Object.entries(all).find(
      ([id, r]) => r.Type === 'AWS::S3::Bucket' && id.startsWith('OperatorConsoleFiles'),
    );
    assert.ok(consoleBucket, 'the console bucket');
    const [bucketId, bucket] = consoleBucket;
    assert.deepEqual(bucket.Properties!.PublicAccessBlockConfiguration, {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    assert.equal(
      Object.values(all).filter((r) => r.Type === 'AWS::CloudFront::OriginAccessControl').length,
      1,
    );
    const policy = Object.values(all).find(
      (r) => r.Type === 'AWS::S3::BucketPolicy' && JSON.stringify(r.Properties!.Bucket).includes(bucketId),
    )!;
    const statements = (policy.Properties!.PolicyDocument as { Statement: Record<string, unknown>[] })
      .Statement;
    const allows = statements.filter((s) => s.Effect === 'Allow');
    assert.equal(allows.length, 1, 'one grant');
    assert.deepEqual(allows[0]!.Principal, { Service: 'cloudfront.amazonaws.com' });
    assert.equal(allows[0]!.Action, 's3:GetObject');
    assert.ok(JSON.stringify(allows[0]!.Condition).includes('AWS:SourceArn'), 'only this distribution');
    assert.ok(
      statements.some(
        (s) => s.Effect === 'Deny' && JSON.stringify(s.Condition).includes('aws:SecureTransport'),
      ),
    );
  });

  it('answers with a strict CSP, no framing, nosniff, no referrer and HSTS', () => {
    template.hasResourceProperties('AWS::CloudFront::ResponseHeadersPolicy', {
      ResponseHeadersPolicyConfig: Match.objectLike({
        SecurityHeadersConfig: Match.objectLike({
          ContentSecurityPolicy: Match.objectLike({ Override: true }),
          FrameOptions: { FrameOption: 'DENY', Override: true },
          ContentTypeOptions: { Override: true },
          ReferrerPolicy: { ReferrerPolicy: 'no-referrer', Override: true },
          StrictTransportSecurity: Match.objectLike({ IncludeSubdomains: true, Override: true }),
        }),
      }),
    });
    const csp = JSON.stringify(
      Object.values(all).find((r) => r.Type === 'AWS::CloudFront::ResponseHeadersPolicy')!.Properties,
    );
    for (const directive of ["script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"]) {
      assert.ok(csp.includes(directive), directive);
    }
  });

  it('forwards the API stage uncached on the same origin, HTTPS only, and serves config.json from a function', () => {
    const d = distribution();
    const behaviors = d.CacheBehaviors as Record<string, unknown>[];
    assert.equal(behaviors.length, 1);
    const stage = Object.values(all).find((r) => r.Type === 'AWS::ApiGateway::Stage')!;
    assert.equal(behaviors[0]!.PathPattern, `/${stage.Properties!.StageName}/*`, "the API's own stage");
    assert.equal(behaviors[0]!.ViewerProtocolPolicy, 'https-only');
    assert.deepEqual(behaviors[0]!.AllowedMethods, [
      'GET',
      'HEAD',
      'OPTIONS',
      'PUT',
      'PATCH',
      'POST',
      'DELETE',
    ]);
    // CachingDisabled and AllViewerExceptHostHeader (managed policies).
    assert.equal(behaviors[0]!.CachePolicyId, '4135ea2d-6df8-44a3-9df3-4b5a84be39ad');
    assert.equal(behaviors[0]!.OriginRequestPolicyId, 'b689b0a8-53d0-40ab-baf2-68738e2966ac');
    const def = d.DefaultCacheBehavior as Record<string, unknown>;
    assert.equal(def.ViewerProtocolPolicy, 'redirect-to-https');
    assert.equal((def.FunctionAssociations as unknown[]).length, 1);
    const fn = Object.values(all).find((r) => r.Type === 'AWS::CloudFront::Function')!;
    const code = JSON.stringify(fn.Properties!.FunctionCode);
    for (const key of ['userPoolId', 'clientId', 'identityPoolId', 'apiHost', '/config.json']) {
      assert.ok(code.includes(key), key);
    }
  });

  it('lets the console upload release images to the firmware bucket from its own origin only', () => {
    const firmware = Object.values(all).find(
      (r) => r.Type === 'AWS::S3::Bucket' && r.Properties!.ObjectLockEnabled === true,
    )!;
    const rules = (firmware.Properties!.CorsConfiguration as { CorsRules: Record<string, unknown>[] })
      .CorsRules;
    assert.equal(rules.length, 1);
    assert.deepEqual(rules[0]!.AllowedMethods, ['PUT']);
    assert.deepEqual(rules[0]!.ExposedHeaders, ['ETag']);
    assert.ok(JSON.stringify(rules[0]!.AllowedOrigins).includes('DomainName'), 'the distribution domain');
  });
});
