import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ALL_FUNCTIONS,
  actionsOn,
  allActions,
  envTarget,
  functionEnv,
  functionStatements,
  ingestQueueId,
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
  for (const fn of ALL_FUNCTIONS) if (functionEnv(template, fn)[env]) return envTarget(template, fn, env);
  throw new Error(env);
};
const tables = {
  releases: table('TABLE_RELEASES'),
  vehicles: table('TABLE_VEHICLES'),
  updates: table('TABLE_UPDATES'),
  history: table('TABLE_HISTORY'),
  campaigns: table('TABLE_CAMPAIGNS'),
  exclusions: table('TABLE_EXCLUSIONS'),
};
type TableName = keyof typeof tables;
/** The exact item action sets of DataTables' bind helpers, written out here independently. */
const READ = [
  'dynamodb:BatchGetItem',
  'dynamodb:ConditionCheckItem',
  'dynamodb:GetItem',
  'dynamodb:Query',
  'dynamodb:Scan',
];
const WRITE = ['dynamodb:BatchWriteItem', 'dynamodb:DeleteItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'];
const UPDATE = ['dynamodb:UpdateItem'];
const LEVELS: Record<string, readonly string[]> = {
  read: READ,
  write: WRITE,
  readwrite: [...READ, ...WRITE],
  update: UPDATE,
  'read+update': [...READ, ...UPDATE],
};
const same = (a: readonly string[], b: readonly string[]) =>
  JSON.stringify([...new Set(a)].sort()) === JSON.stringify([...new Set(b)].sort());

/**
 * What a function may do with each table's items, by the exact action set on the table ARN itself: none, read,
 * write, readwrite, update (UpdateItem alone) or read+update; anything else is reported as its action list.
 */
function dynamoAccess(fn: OtaFunctionName): Record<TableName, string> {
  return Object.fromEntries(
    Object.entries(tables).map(([name, id]) => {
      const onTable = functionStatements(template, fn)
        .filter((s) =>
          s.resources.some((r) => JSON.stringify(r) === JSON.stringify({ 'Fn::GetAtt': [id, 'Arn'] })),
        )
        .flatMap((s) => s.actions);
      if (onTable.length === 0) return [name, 'none'];
      const level = Object.entries(LEVELS).find(([, actions]) => same(onTable, actions));
      return [name, level ? level[0] : [...new Set(onTable)].sort().join(',')];
    }),
  ) as Record<TableName, string>;
}

/**
 * The indexes a function may query, as <table>/<index>, from every DynamoDB grant whose resource is an index ARN.
 * Fails on any other action on an index, or an index wildcard.
 */
function indexAccess(fn: OtaFunctionName): string[] {
  const found: string[] = [];
  for (const s of functionStatements(template, fn)) {
    for (const r of s.resources) {
      const text = JSON.stringify(r);
      if (!text.includes('/index/')) continue;
      assert.deepEqual(s.actions, ['dynamodb:Query'], `${fn}: only Query on an index`);
      const parts = (r as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
      const id = referencedIds(parts[0])[0]!;
      const name = Object.entries(tables).find(([, t]) => t === id)![0];
      const index = String(parts[1]).replace(/^\/index\//, '');
      assert.ok(!index.includes('*'), `${fn}: index wildcard on ${name}`);
      found.push(`${name}/${index}`);
    }
  }
  return found.sort();
}

const releaseObjects = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/releases/*']] };

const topicArn = {
  'Fn::Join': [
    '',
    [
      'arn:',
      { Ref: 'AWS::Partition' },
      ':iot:',
      { Ref: 'AWS::Region' },
      ':',
      { Ref: 'AWS::AccountId' },
      ':topic/vehicle/updates/*/issue_details',
    ],
  ],
};

describe('least privilege per function', () => {
  it('auth-api: vehicles read/write, signs with the key, no S3, no IoT', () => {
    assert.deepEqual(dynamoAccess('auth-api'), {
      releases: 'none',
      vehicles: 'readwrite',
      updates: 'none',
      history: 'none',
      campaigns: 'none',
      exclusions: 'none',
    });
    assert.deepEqual(indexAccess('auth-api'), []);
    assert.deepEqual(actionsOn(template, 'auth-api', keyId).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(
      allActions(template, 'auth-api').filter((a) => /^(s3|iot):/.test(a)),
      [],
    );
    assert.equal(functionEnv(template, 'auth-api').FIRMWARE_BUCKET, undefined);
  });

  it('vehicle-api: reads releases, writes vehicle state, appends history, moves campaign counts, presigns downloads only, signs assignments', () => {
    assert.deepEqual(dynamoAccess('vehicle-api'), {
      releases: 'read',
      vehicles: 'readwrite',
      updates: 'readwrite',
      history: 'write',
      campaigns: 'update',
      exclusions: 'none',
    });
    // Firmware requests look releases up by version; nothing else queries an index.
    assert.deepEqual(indexAccess('vehicle-api'), ['releases/byVersion']);
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

  it('operator-api: releases, vehicles, updates, campaigns and exclusions read/write, history append-only, uploads, no signing key', () => {
    assert.deepEqual(dynamoAccess('operator-api'), {
      releases: 'readwrite',
      vehicles: 'readwrite',
      updates: 'readwrite',
      history: 'write',
      campaigns: 'readwrite',
      exclusions: 'readwrite',
    });
    // Release creation checks the version (byVersion); campaign routes list a wave (byCampaign). Campaigns are
    // listed with a Scan, so byStatus is not granted.
    assert.deepEqual(indexAccess('operator-api'), ['releases/byVersion', 'updates/byCampaign']);
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
    assert.deepEqual(
      allActions(template, 'operator-api').filter((a) => a === 'iot:Publish'),
      [],
    );
  });

  it('ingest: vehicles and updates read/write, history append-only, campaign counts, dead letters; no S3, KMS or IoT', () => {
    assert.deepEqual(dynamoAccess('ingest'), {
      releases: 'none',
      vehicles: 'readwrite',
      updates: 'readwrite',
      history: 'write',
      campaigns: 'update',
      exclusions: 'none',
    });
    assert.deepEqual(indexAccess('ingest'), []);
    const actions = allActions(template, 'ingest');
    assert.deepEqual(
      actions.filter((a) => /^(s3|kms|iot):/.test(a)),
      [],
    );
    assert.deepEqual(actionsOn(template, 'ingest', bucketId), []);
    assert.deepEqual(actionsOn(template, 'ingest', keyId), []);
    // Beyond its tables, logs and tracing: only sending to the dead-letter queue (its on-failure destination).
    const queueId = ingestQueueId(template);
    const other = functionStatements(template, 'ingest').filter(
      (s) => !s.actions.every((a) => /^(dynamodb|logs|xray):/.test(a)),
    );
    assert.deepEqual(
      other.map((s) => ({ actions: s.actions, resources: s.resources })),
      [{ actions: ['sqs:SendMessage'], resources: [{ 'Fn::GetAtt': [queueId, 'Arn'] }] }],
    );
    // Every DynamoDB grant names one of its four tables, never releases or a wildcard.
    const dynamoResources = functionStatements(template, 'ingest')
      .filter((s) => s.actions.some((a) => a.startsWith('dynamodb:')))
      .flatMap((s) => s.resources.flatMap(referencedIds));
    assert.deepEqual(
      [...new Set(dynamoResources)].sort(),
      [tables.campaigns, tables.history, tables.updates, tables.vehicles].sort(),
    );
  });

  it('campaign-tick: campaigns read + UpdateItem, releases read, vehicles and updates read/write, history append-only', () => {
    assert.deepEqual(dynamoAccess('campaign-tick'), {
      releases: 'read',
      vehicles: 'readwrite',
      updates: 'readwrite',
      history: 'write',
      campaigns: 'read+update',
      exclusions: 'none',
    });
    // Running campaigns by status; a wave's vehicles by campaign. Releases are read by id only.
    assert.deepEqual(indexAccess('campaign-tick'), ['campaigns/byStatus', 'updates/byCampaign']);
  });

  it('campaign-tick: signs assignments with the signing key only (kms:Sign, kms:GetPublicKey), nothing else in KMS', () => {
    const kms = functionStatements(template, 'campaign-tick').filter((s) =>
      s.actions.some((a) => a.startsWith('kms:')),
    );
    assert.ok(kms.length > 0);
    for (const s of kms) {
      assert.deepEqual(s.resources, [{ 'Fn::GetAtt': [keyId, 'Arn'] }], 'only the signing key');
    }
    assert.deepEqual(kms.flatMap((s) => s.actions).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(functionEnv(template, 'campaign-tick').SIGNING_KEY_ARN, {
      'Fn::GetAtt': [keyId, 'Arn'],
    });
  });

  it('campaign-tick: publishes only on vehicle issue_details topics, with the data endpoint set', () => {
    const iot = functionStatements(template, 'campaign-tick').filter((s) =>
      s.actions.some((a) => a.startsWith('iot:')),
    );
    assert.deepEqual(
      iot.map((s) => ({ actions: s.actions, resources: s.resources, Condition: s.Condition })),
      [{ actions: ['iot:Publish'], resources: [topicArn], Condition: undefined }],
    );
    const lookupId = Object.keys(template.findResources('Custom::IotDataEndpoint'))[0]!;
    assert.deepEqual(functionEnv(template, 'campaign-tick').AWS_ENDPOINT_URL_IOT_DATA_PLANE, {
      'Fn::Join': ['', ['https://', { 'Fn::GetAtt': [lookupId, 'endpointAddress'] }]],
    });
  });

  it('campaign-tick: no S3, no SQS, no IoT control plane; nothing beyond tables, key, topic, logs and tracing', () => {
    const actions = allActions(template, 'campaign-tick');
    assert.deepEqual(
      actions.filter((a) => /^(s3|sqs|lambda):/.test(a)),
      [],
    );
    assert.deepEqual(actionsOn(template, 'campaign-tick', bucketId), []);
    assert.equal(functionEnv(template, 'campaign-tick').FIRMWARE_BUCKET, undefined);
    const services = [...new Set(actions.map((a) => a.split(':')[0]))].sort();
    assert.deepEqual(services, ['dynamodb', 'iot', 'kms', 'logs', 'xray']);
    assert.deepEqual(
      actions.filter((a) => a.startsWith('iot:')),
      ['iot:Publish'],
    );
  });

  it('only the campaign tick publishes to vehicles', () => {
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(allActions(template, fn).includes('iot:Publish'), fn === 'campaign-tick', fn);
      assert.equal(
        functionEnv(template, fn).AWS_ENDPOINT_URL_IOT_DATA_PLANE !== undefined,
        fn === 'campaign-tick',
        fn,
      );
    }
  });

  it('grants no index wildcard: every index a function may query is named', () => {
    for (const fn of ALL_FUNCTIONS) {
      for (const s of functionStatements(template, fn)) {
        for (const r of s.resources)
          assert.ok(!JSON.stringify(r).includes('/index/*'), `${fn}: ${JSON.stringify(r)}`);
      }
      indexAccess(fn);
    }
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
