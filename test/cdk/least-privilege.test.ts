import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FUNCTIONS } from '../../lambdas/core/api-schema.js';
import {
  ALL_FUNCTIONS,
  actionsOn,
  allActions,
  envTarget,
  functionEnv,
  functionStatements,
  type OtaFunctionName,
  onlyId,
  otaTemplate,
  referencedIds,
  resources,
} from './fixtures.js';

const template = otaTemplate();
const bucketId = onlyId(template, 'AWS::S3::Bucket', { VersioningConfiguration: { Status: 'Enabled' } });
const keyId = onlyId(template, 'AWS::KMS::Key');
const table = (env: string) => {
  for (const fn of FUNCTIONS) if (functionEnv(template, fn)[env]) return envTarget(template, fn, env);
  throw new Error(env);
};
const tables = {
  releases: table('TABLE_RELEASES'),
  vehicles: table('TABLE_VEHICLES'),
  updates: table('TABLE_UPDATES'),
  history: table('TABLE_HISTORY'),
};
const WRITES = ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem'];
const READS = ['dynamodb:GetItem', 'dynamodb:Query'];

function dynamoAccess(fn: OtaFunctionName): Record<string, 'none' | 'read' | 'write' | 'readwrite'> {
  return Object.fromEntries(
    Object.entries(tables).map(([name, id]) => {
      const actions = actionsOn(template, fn, id);
      const writes = WRITES.some((w) => actions.includes(w));
      const reads = READS.some((r) => actions.includes(r));
      const access = writes ? (reads ? 'readwrite' : 'write') : reads ? 'read' : 'none';
      return [name, access];
    }),
  );
}

const releaseObjects = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/releases/*']] };

describe('least privilege per function', () => {
  it('auth-api: vehicles read/write, signs with the key, no S3, no IoT', () => {
    assert.deepEqual(dynamoAccess('auth-api'), {
      releases: 'none',
      vehicles: 'readwrite',
      updates: 'none',
      history: 'none',
    });
    assert.deepEqual(actionsOn(template, 'auth-api', keyId).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(
      allActions(template, 'auth-api').filter((a) => /^(s3|iot):/.test(a)),
      [],
    );
    assert.equal(functionEnv(template, 'auth-api').FIRMWARE_BUCKET, undefined);
  });

  it('vehicle-api: reads releases, writes vehicle state, presigns downloads only, signs assignments', () => {
    assert.deepEqual(dynamoAccess('vehicle-api'), {
      releases: 'read',
      vehicles: 'readwrite',
      updates: 'readwrite',
      history: 'readwrite',
    });
    const s3 = functionStatements(template, 'vehicle-api').filter((s) =>
      s.actions.some((a) => a.startsWith('s3:')),
    );
    assert.deepEqual(
      s3.map((s) => ({ actions: s.actions, resources: s.resources })),
      [{ actions: ['s3:GetObject', 's3:GetObjectVersion'], resources: [releaseObjects] }],
    );
    for (const forbidden of ['s3:PutObject', 's3:DeleteObject', 's3:ListBucket']) {
      assert.ok(!allActions(template, 'vehicle-api').includes(forbidden), forbidden);
    }
    assert.deepEqual(actionsOn(template, 'vehicle-api', keyId).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(
      allActions(template, 'vehicle-api').filter((a) => a.startsWith('iot:')),
      [],
    );
  });

  it('operator-api: releases and vehicles read/write, updates and history read-only, uploads, no signing key', () => {
    assert.deepEqual(dynamoAccess('operator-api'), {
      releases: 'readwrite',
      vehicles: 'readwrite',
      updates: 'read',
      history: 'read',
    });
    const s3 = functionStatements(template, 'operator-api').filter((s) =>
      s.actions.some((a) => a.startsWith('s3:')),
    );
    assert.deepEqual(
      s3.map((s) => ({ actions: s.actions, resources: s.resources })),
      [
        {
          actions: [
            's3:PutObject',
            's3:AbortMultipartUpload',
            's3:ListMultipartUploadParts',
            's3:GetObject',
            's3:GetObjectVersion',
            's3:DeleteObject',
          ],
          resources: [releaseObjects],
        },
        { actions: ['s3:ListBucket'], resources: [{ 'Fn::GetAtt': [bucketId, 'Arn'] }] },
      ],
    );
    assert.deepEqual(actionsOn(template, 'operator-api', keyId), []);
  });

  it('ingest: vehicles and updates read/write, history append-only, dead letters; no S3, KMS or IoT', () => {
    assert.deepEqual(dynamoAccess('ingest'), {
      releases: 'none',
      vehicles: 'readwrite',
      updates: 'readwrite',
      history: 'write',
    });
    const actions = allActions(template, 'ingest');
    assert.deepEqual(
      actions.filter((a) => /^(s3|kms|iot):/.test(a)),
      [],
    );
    assert.deepEqual(actionsOn(template, 'ingest', bucketId), []);
    assert.deepEqual(actionsOn(template, 'ingest', keyId), []);
    // Beyond its tables, logs and tracing: only sending to the dead-letter queue (its on-failure destination).
    const queueId = onlyId(template, 'AWS::SQS::Queue');
    const other = functionStatements(template, 'ingest').filter(
      (s) => !s.actions.every((a) => /^(dynamodb|logs|xray):/.test(a)),
    );
    assert.deepEqual(
      other.map((s) => ({ actions: s.actions, resources: s.resources })),
      [{ actions: ['sqs:SendMessage'], resources: [{ 'Fn::GetAtt': [queueId, 'Arn'] }] }],
    );
    // Every DynamoDB grant names one of its three tables, never releases or a wildcard.
    const dynamoResources = functionStatements(template, 'ingest')
      .filter((s) => s.actions.some((a) => a.startsWith('dynamodb:')))
      .flatMap((s) => s.resources.flatMap(referencedIds));
    assert.deepEqual(
      [...new Set(dynamoResources)].sort(),
      [tables.history, tables.updates, tables.vehicles].sort(),
    );
  });

  it('only the operator function may create certificates', () => {
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(
        allActions(template, fn).includes('iot:CreateCertificateFromCsr'),
        fn === 'operator-api',
        fn,
      );
    }
  });

  it('sets an environment variable exactly where the matching permission was granted', () => {
    for (const fn of ALL_FUNCTIONS) {
      const env = functionEnv(template, fn);
      for (const [name, id] of Object.entries(tables)) {
        const granted = actionsOn(template, fn, id).length > 0;
        assert.equal(env[`TABLE_${name.toUpperCase()}`] !== undefined, granted, `${fn} ${name}`);
      }
      assert.equal(
        env.FIRMWARE_BUCKET !== undefined,
        actionsOn(template, fn, bucketId).length > 0,
        `${fn} bucket`,
      );
      assert.equal(env.SIGNING_KEY_ARN !== undefined, actionsOn(template, fn, keyId).length > 0, `${fn} key`);
    }
  });

  it('grants no wildcard action and no "*" resource except where no resource-level permission exists', () => {
    for (const fn of ALL_FUNCTIONS) {
      for (const s of functionStatements(template, fn)) {
        for (const a of s.actions) assert.ok(!a.includes('*'), `${fn}: wildcard action ${a}`);
        if (s.resources.includes('*')) {
          const allowed = [
            'xray:PutTraceSegments',
            'xray:PutTelemetryRecords',
            'iot:CreateCertificateFromCsr',
          ];
          assert.ok(
            s.actions.every((a) => allowed.includes(a)),
            `${fn}: "*" for ${s.actions.join(',')}`,
          );
        }
      }
    }
  });

  it('uses no AWS managed policy except the API Gateway logging role', () => {
    const withManaged = Object.entries(resources(template)).filter(
      ([, r]) => r.Type === 'AWS::IAM::Role' && r.Properties!.ManagedPolicyArns !== undefined,
    );
    assert.equal(withManaged.length, 1);
    assert.ok(
      JSON.stringify(withManaged[0]![1].Properties!.ManagedPolicyArns).includes(
        'AmazonAPIGatewayPushToCloudWatchLogs',
      ),
    );
    const account = Object.values(template.findResources('AWS::ApiGateway::Account'))[0]!;
    assert.deepEqual(referencedIds(account.Properties.CloudWatchRoleArn), [withManaged[0]![0]]);
  });

  it('lets only Lambda assume the function roles', () => {
    for (const fn of ALL_FUNCTIONS) {
      const roleId = referencedIds(
        resources(template)[
          Object.keys(
            template.findResources('AWS::Lambda::Function', {
              Properties: { Description: `Fleet OTA ${fn}` },
            }),
          )[0]!
        ]!.Properties!.Role,
      )[0]!;
      assert.deepEqual(resources(template)[roleId]!.Properties!.AssumeRolePolicyDocument, {
        Version: '2012-10-17',
        Statement: [
          { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
        ],
      });
    }
  });
});
