import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { FirmwareStorage } from '../../lib/firmware-storage.js';
import { newStack, onlyId, otaTemplate, resources } from './fixtures.js';

const template = otaTemplate();
const firmwareId = onlyId(template, 'AWS::S3::Bucket', { VersioningConfiguration: { Status: 'Enabled' } });
const logsId = Object.keys(template.findResources('AWS::S3::Bucket')).find((id) => id !== firmwareId)!;

function bucketPolicyStatements(t: Template, bucketId: string): Record<string, unknown>[] {
  const policies = Object.values(
    t.findResources('AWS::S3::BucketPolicy', {
      Properties: { Bucket: { Ref: bucketId } },
    }),
  );
  assert.equal(policies.length, 1, `one bucket policy for ${bucketId}`);
  return (policies[0]!.Properties.PolicyDocument as { Statement: Record<string, unknown>[] }).Statement;
}

describe('FirmwareStorage', { timeout: 300_000 }, () => {
  it('creates exactly two buckets: firmware and its access log bucket (the third is the operator console)', () => {
    template.resourceCountIs('AWS::S3::Bucket', 3);
    assert.equal(
      Object.keys(template.findResources('AWS::S3::Bucket')).filter((id) => id.startsWith('FirmwareStorage'))
        .length,
      2,
    );
    assert.ok(logsId);
  });

  for (const [name, id] of [
    ['firmware', firmwareId],
    ['access log', logsId],
  ] as const) {
    it(`blocks all public access and disables ACLs on the ${name} bucket`, () => {
      const props = resources(template)[id]!.Properties!;
      assert.deepEqual(props.PublicAccessBlockConfiguration, {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      assert.deepEqual(props.OwnershipControls, { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
      assert.equal(props.AccessControl, undefined, 'no ACL');
    });

    it(`encrypts the ${name} bucket at rest (SSE-S3)`, () => {
      assert.deepEqual(resources(template)[id]!.Properties!.BucketEncryption, {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      });
    });

    it(`denies every non-TLS and pre-TLS-1.2 request to the ${name} bucket and its objects`, () => {
      const statements = bucketPolicyStatements(template, id);
      const scope = [
        { 'Fn::GetAtt': [id, 'Arn'] },
        { 'Fn::Join': ['', [{ 'Fn::GetAtt': [id, 'Arn'] }, '/*']] },
      ];
      assert.ok(
        statements.some(
          (s) =>
            s.Effect === 'Deny' &&
            s.Action === 's3:*' &&
            JSON.stringify(s.Principal) === JSON.stringify({ AWS: '*' }) &&
            JSON.stringify(s.Condition) === JSON.stringify({ Bool: { 'aws:SecureTransport': 'false' } }) &&
            JSON.stringify(s.Resource) === JSON.stringify(scope),
        ),
        'aws:SecureTransport deny',
      );
      assert.ok(
        statements.some(
          (s) =>
            s.Effect === 'Deny' &&
            s.Action === 's3:*' &&
            JSON.stringify(s.Condition) === JSON.stringify({ NumericLessThan: { 's3:TlsVersion': 1.2 } }),
        ),
        's3:TlsVersion deny',
      );
    });

    it(`retains the ${name} bucket by default`, () => {
      const r = resources(template)[id]!;
      assert.equal(r.DeletionPolicy, 'Retain');
      assert.equal(r.UpdateReplacePolicy, 'Retain');
    });
  }

  it('versions the firmware bucket', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      LoggingConfiguration: Match.anyValue(),
    });
  });

  it('enables Object Lock on the firmware bucket, so a published version can be held (issue 18 #5)', () => {
    assert.equal(resources(template)[firmwareId]!.Properties!.ObjectLockEnabled, true);
    // No default retention: only the published version of each release is held, by its legal hold.
    assert.equal(resources(template)[firmwareId]!.Properties!.ObjectLockConfiguration, undefined);
  });

  it('denies everyone deleting release versions, bypassing retention and lifting a legal hold (issue 18 #5)', () => {
    const releases = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [firmwareId, 'Arn'] }, '/releases/*']] };
    const denies = bucketPolicyStatements(template, firmwareId).filter(
      (s) =>
        s.Effect === 'Deny' && JSON.stringify(s.Principal) === JSON.stringify({ AWS: '*' }) && !s.Condition,
    );
    assert.deepEqual(
      denies.map((s) => [s.Action, s.Resource]),
      [[['s3:DeleteObjectVersion', 's3:BypassGovernanceRetention'], releases]],
    );
    const holds = bucketPolicyStatements(template, firmwareId).filter(
      (s) => s.Effect === 'Deny' && s.Action === 's3:PutObjectLegalHold',
    );
    assert.deepEqual(
      holds.map((s) => [s.Principal, s.Resource, s.Condition]),
      [[{ AWS: '*' }, releases, { StringNotEquals: { 's3:object-lock-legal-hold': 'ON' } }]],
    );
  });

  it('sends firmware bucket access logs to the log bucket, delivered by bucket policy scoped to the source', () => {
    assert.deepEqual(resources(template)[firmwareId]!.Properties!.LoggingConfiguration, {
      DestinationBucketName: { Ref: logsId },
      LogFilePrefix: 'firmware/',
    });
    // One delivery grant per logged bucket (firmware, and the operator console's bucket), each scoped to its source.
    const delivery = bucketPolicyStatements(template, logsId).filter(
      (s) =>
        JSON.stringify(s.Principal) === JSON.stringify({ Service: 'logging.s3.amazonaws.com' }) &&
        JSON.stringify(s.Condition).includes(firmwareId),
    );
    assert.equal(delivery.length, 1);
    assert.equal(delivery[0]!.Action, 's3:PutObject');
    assert.deepEqual(delivery[0]!.Condition, {
      ArnLike: { 'aws:SourceArn': { 'Fn::GetAtt': [firmwareId, 'Arn'] } },
      StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
    });
  });

  it('has no bucket policy statement that allows anything to anyone', () => {
    for (const id of [firmwareId, logsId]) {
      for (const s of bucketPolicyStatements(template, id)) {
        if (s.Effect === 'Allow') assert.notDeepEqual(s.Principal, { AWS: '*' });
      }
    }
  });

  it('expires noncurrent firmware versions and campaign VIN lists, and aborts incomplete multipart uploads', () => {
    const rules = (
      resources(template)[firmwareId]!.Properties!.LifecycleConfiguration as { Rules: unknown[] }
    ).Rules;
    assert.deepEqual(rules, [
      {
        Id: 'expire-noncurrent-versions',
        Status: 'Enabled',
        NoncurrentVersionExpiration: { NoncurrentDays: 30 },
        ExpiredObjectDeleteMarker: true,
      },
      // Campaign VIN lists are only read while their campaign is prepared.
      {
        Id: 'expire-campaign-target-lists',
        Status: 'Enabled',
        Prefix: 'campaign-targets/',
        ExpirationInDays: 30,
      },
      {
        Id: 'abort-incomplete-uploads',
        Status: 'Enabled',
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
      },
    ]);
  });

  it('expires access logs', () => {
    const rules = (resources(template)[logsId]!.Properties!.LifecycleConfiguration as { Rules: unknown[] })
      .Rules;
    assert.deepEqual(rules[0], { Id: 'expire-access-logs', Status: 'Enabled', ExpirationInDays: 365 });
  });

  it('takes the noncurrent version retention from its props', () => {
    const stack = newStack();
    new FirmwareStorage(stack, 'S', { noncurrentVersionRetentionDays: 7, accessLogRetentionDays: 30 });
    const t = Template.fromStack(stack);
    t.hasResourceProperties('AWS::S3::Bucket', {
      LifecycleConfiguration: {
        Rules: Match.arrayWith([Match.objectLike({ NoncurrentVersionExpiration: { NoncurrentDays: 7 } })]),
      },
    });
    t.hasResourceProperties('AWS::S3::Bucket', {
      LifecycleConfiguration: { Rules: Match.arrayWith([Match.objectLike({ ExpirationInDays: 30 })]) },
    });
  });

  it('rejects a retention that is not a positive whole number of days', () => {
    assert.throws(
      () => new FirmwareStorage(newStack(), 'S', { noncurrentVersionRetentionDays: 0 }),
      /positive whole number/,
    );
  });

  it('has no auto-delete custom resource unless in dev mode', () => {
    template.resourceCountIs('Custom::S3AutoDeleteObjects', 0);
  });

  it('deletes both buckets with their objects in dev mode', () => {
    const dev = otaTemplate({ devMode: true });
    for (const bucket of Object.values(dev.findResources('AWS::S3::Bucket'))) {
      assert.equal(bucket.DeletionPolicy, 'Delete');
    }
    // Firmware, its access logs, and the operator console's bucket.
    dev.resourceCountIs('Custom::S3AutoDeleteObjects', 3);
  });
});
