import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ALL_FUNCTIONS,
  actionsOn,
  allActions,
  envTarget,
  functionEnv,
  functionStatements,
  ingestMessagesQueueId,
  ingestQueueId,
  type OtaFunctionName,
  onlyId,
  otaTemplate,
  outputTarget,
  referencedIds,
  resources,
  SQS_CONSUME_ACTIONS,
} from './fixtures.js';

const template = otaTemplate();
const bucketId = onlyId(template, 'AWS::S3::Bucket', { VersioningConfiguration: { Status: 'Enabled' } });
/** The key that signs assignments, and the one that signs tokens (issue 18 #9: never the same). */
const keyId = outputTarget(template, 'SigningKeyArn');
const tokenKeyId = outputTarget(template, 'TokenSigningKeyArn');
const table = (env: string) => {
  for (const fn of ALL_FUNCTIONS) if (functionEnv(template, fn)[env]) return envTarget(template, fn, env);
  throw new Error(env);
};
const tables = {
  releases: table('TABLE_RELEASES'),
  vehicles: table('TABLE_VEHICLES'),
  updates: table('TABLE_UPDATES'),
  campaigns: table('TABLE_CAMPAIGNS'),
  challenges: table('TABLE_CHALLENGES'),
  freshness: table('TABLE_FRESHNESS'),
  exclusions: table('TABLE_EXCLUSIONS'),
  counters: table('TABLE_COUNTERS'),
  audit: table('TABLE_AUDIT'),
};
type TableName = keyof typeof tables;
/**
 * The exact DynamoDB actions a function holds on each table's own ARN, sorted, without the dynamodb: prefix
 * (issue 18 #9: each function holds what its code calls, never Scan, DeleteItem or BatchWriteItem by default).
 */
function dynamoAccess(fn: OtaFunctionName): Record<TableName, string[]> {
  return Object.fromEntries(
    Object.entries(tables).map(([name, id]) => {
      const onTable = functionStatements(template, fn)
        .filter((s) =>
          s.resources.some((r) => JSON.stringify(r) === JSON.stringify({ 'Fn::GetAtt': [id, 'Arn'] })),
        )
        .flatMap((s) => s.actions);
      return [name, [...new Set(onTable)].map((a) => a.replace(/^dynamodb:/, '')).sort()];
    }),
  ) as Record<TableName, string[]>;
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
const targetLists = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/campaign-targets/*']] };

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

describe('least privilege per function', { timeout: 300_000 }, () => {
  it('auth-api: vehicles GetItem, challenges Put/UpdateItem, signs with the token key only, no S3, no IoT', () => {
    assert.deepEqual(dynamoAccess('auth-api'), {
      releases: [],
      vehicles: ['GetItem'],
      updates: [],
      campaigns: [],
      challenges: ['PutItem', 'UpdateItem'],
      freshness: [],
      exclusions: [],
      counters: [],
      audit: [],
    });
    assert.deepEqual(indexAccess('auth-api'), []);
    assert.deepEqual(actionsOn(template, 'auth-api', tokenKeyId).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(actionsOn(template, 'auth-api', keyId), [], 'no key that signs assignments');
    assert.equal(functionEnv(template, 'auth-api').SIGNING_KEY_ARN, undefined);
    assert.deepEqual(functionEnv(template, 'auth-api').TOKEN_SIGNING_KEY_ARN, {
      'Fn::GetAtt': [tokenKeyId, 'Arn'],
    });
    assert.deepEqual(
      allActions(template, 'auth-api').filter((a) => /^(s3|iot):/.test(a)),
      [],
    );
    assert.equal(functionEnv(template, 'auth-api').FIRMWARE_BUCKET, undefined);
  });

  it('vehicle-api: reads releases and freshness statements, writes vehicle state, moves campaign counts, presigns downloads only, signs assignments', () => {
    assert.deepEqual(dynamoAccess('vehicle-api'), {
      releases: ['GetItem'],
      vehicles: ['GetItem', 'UpdateItem'],
      updates: ['GetItem', 'PutItem', 'Query'],
      // Reads a campaign's status (a cancelling campaign's downloads are refused); counts move in the counter
      // shards, in the update's transaction.
      campaigns: ['GetItem'],
      challenges: [],
      freshness: ['GetItem'],
      exclusions: [],
      counters: ['UpdateItem'],
      audit: [],
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
    // Tokens are verified with the token key's public key; it never signs one.
    assert.deepEqual(actionsOn(template, 'vehicle-api', tokenKeyId), ['kms:GetPublicKey']);
    assert.deepEqual(
      allActions(template, 'vehicle-api').filter((a) => a.startsWith('iot:')),
      [],
    );
  });

  it('operator-api: releases, vehicles, updates and campaigns read/write, exclusions queried, uploads and VIN lists, no signing key, no IoT', () => {
    assert.deepEqual(dynamoAccess('operator-api'), {
      releases: ['GetItem', 'PutItem', 'Scan', 'UpdateItem'],
      // Vehicles are created by registry-api only.
      vehicles: ['GetItem', 'Scan', 'UpdateItem'],
      updates: ['GetItem', 'PutItem', 'Query', 'Scan'],
      campaigns: ['GetItem', 'PutItem', 'Scan', 'UpdateItem'],
      challenges: [],
      freshness: [],
      exclusions: ['Query'],
      counters: ['Query'],
      // The audit log: appended (PutItem with attribute_not_exists, never Update or Delete) and listed (Query).
      audit: ['PutItem', 'Query'],
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
            's3:PutObjectLegalHold',
          ],
          resources: [releaseObjects],
        },
        { actions: ['s3:ListBucket'], resources: [{ 'Fn::GetAtt': [bucketId, 'Arn'] }] },
        // Campaign VIN lists: an inline one written, an upload presigned and read back to check it.
        { actions: ['s3:PutObject', 's3:GetObject', 's3:GetObjectVersion'], resources: [targetLists] },
      ],
    );
    assert.deepEqual(actionsOn(template, 'operator-api', keyId), []);
    assert.deepEqual(actionsOn(template, 'operator-api', tokenKeyId), []);
    assert.deepEqual(
      allActions(template, 'operator-api').filter((a) => a.startsWith('iot:')),
      [],
    );
  });

  it('registry-api: vehicles created, read and flagged; updates withdrawn; campaign counts; audit append-only; no S3, KMS or queue (issue 18 #9)', () => {
    assert.deepEqual(dynamoAccess('registry-api'), {
      releases: [],
      vehicles: ['GetItem', 'PutItem', 'UpdateItem'],
      updates: ['GetItem', 'PutItem', 'Query'],
      campaigns: ['GetItem', 'UpdateItem'],
      challenges: [],
      freshness: [],
      exclusions: [],
      // A revoke's withdrawn campaign update moves its count shard in the same transaction.
      counters: ['UpdateItem'],
      // Its mutations are audited (PutItem only); the log is listed by operator-api's GET /audit.
      audit: ['PutItem'],
    });
    assert.deepEqual(indexAccess('registry-api'), []);
    for (const prefix of ['s3:', 'kms:', 'sqs:']) {
      assert.deepEqual(
        allActions(template, 'registry-api').filter((a) => a.startsWith(prefix)),
        [],
        prefix,
      );
    }
    // Revocation (UpdateCertificate) only here: the revoke route and the undo of a failed registration.
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(allActions(template, fn).includes('iot:UpdateCertificate'), fn === 'registry-api', fn);
    }
  });

  it('audit-refusals: appends to the audit table only (PutItem); nothing else in DynamoDB, no S3, KMS, queue or IoT', () => {
    assert.deepEqual(dynamoAccess('audit-refusals'), {
      releases: [],
      vehicles: [],
      updates: [],
      campaigns: [],
      challenges: [],
      freshness: [],
      exclusions: [],
      counters: [],
      // The refusals API Gateway made, appended on a new event id; it never reads or lists the log.
      audit: ['PutItem'],
    });
    assert.deepEqual(indexAccess('audit-refusals'), []);
    const services = [...new Set(allActions(template, 'audit-refusals').map((a) => a.split(':')[0]))].sort();
    // logs: its own log group, as every function.
    assert.deepEqual(services, ['dynamodb', 'logs', 'xray']);
  });

  it('ingest: vehicles and updates read/write, campaign counts, its queue consumed; no S3, KMS or IoT', () => {
    assert.deepEqual(dynamoAccess('ingest'), {
      releases: [],
      vehicles: ['GetItem', 'UpdateItem'],
      updates: ['GetItem', 'PutItem', 'Query'],
      campaigns: [],
      challenges: [],
      freshness: [],
      exclusions: [],
      counters: ['UpdateItem'],
      audit: [],
    });
    assert.deepEqual(indexAccess('ingest'), []);
    const actions = allActions(template, 'ingest');
    assert.deepEqual(
      actions.filter((a) => /^(s3|kms|iot):/.test(a)),
      [],
    );
    assert.deepEqual(actionsOn(template, 'ingest', bucketId), []);
    assert.deepEqual(actionsOn(template, 'ingest', keyId), []);
    // Beyond its tables, logs and tracing: only consuming the ingest queue (its event source); nothing on the
    // dead-letter queue, which the queue's redrive policy fills, not the function.
    const queueId = ingestMessagesQueueId(template);
    const other = functionStatements(template, 'ingest').filter(
      (s) => !s.actions.every((a) => /^(dynamodb|logs|xray):/.test(a)),
    );
    assert.deepEqual(
      other.map((s) => ({ actions: [...s.actions].sort(), resources: s.resources })),
      [
        {
          actions: SQS_CONSUME_ACTIONS,
          resources: [{ 'Fn::GetAtt': [queueId, 'Arn'] }],
        },
      ],
    );
    assert.deepEqual(actionsOn(template, 'ingest', ingestQueueId(template)), []);
    // Every DynamoDB grant names one of its three tables, never releases, campaigns or a wildcard.
    const dynamoResources = functionStatements(template, 'ingest')
      .filter((s) => s.actions.some((a) => a.startsWith('dynamodb:')))
      .flatMap((s) => s.resources.flatMap(referencedIds));
    assert.deepEqual(
      [...new Set(dynamoResources)].sort(),
      [tables.counters, tables.updates, tables.vehicles].sort(),
    );
  });

  it('jobs-worker: releases, campaigns and updates read/write, vehicles read and locked, exclusions written', () => {
    assert.deepEqual(dynamoAccess('jobs-worker'), {
      releases: ['GetItem', 'UpdateItem'],
      // Campaign preparation: a parallel Scan (filter) or GetItem (VIN list), locks by UpdateItem.
      vehicles: ['GetItem', 'Scan', 'UpdateItem'],
      updates: ['GetItem', 'PutItem', 'Query'],
      // Preparation checkpoints are items of the campaigns table, written by a conditional PutItem.
      campaigns: ['GetItem', 'PutItem', 'UpdateItem'],
      challenges: [],
      freshness: [],
      exclusions: ['PutItem'],
      counters: ['UpdateItem'],
      audit: [],
    });
    // A cancelled campaign's vehicles are paged through byCampaign; releases are read by id.
    assert.deepEqual(indexAccess('jobs-worker'), ['updates/byCampaign']);
  });

  it('jobs-worker: reads, legal-holds and removes release images (no PutObject), reads VIN lists, consumes and continues on its own queue, no KMS or IoT', () => {
    const s3 = functionStatements(template, 'jobs-worker').filter((s) =>
      s.actions.some((a) => a.startsWith('s3:')),
    );
    assert.deepEqual(
      s3.map((s) => ({ actions: s.actions, resources: s.resources })),
      [
        {
          actions: ['s3:GetObject', 's3:GetObjectVersion', 's3:PutObjectLegalHold', 's3:DeleteObject'],
          resources: [releaseObjects],
        },
        { actions: ['s3:ListBucket'], resources: [{ 'Fn::GetAtt': [bucketId, 'Arn'] }] },
        { actions: ['s3:GetObject', 's3:GetObjectVersion'], resources: [targetLists] },
      ],
    );
    const queueId = envTarget(template, 'jobs-worker', 'JOB_QUEUE_URL');
    const sqs = functionStatements(template, 'jobs-worker').filter((s) =>
      s.actions.some((a) => a.startsWith('sqs:')),
    );
    for (const st of sqs)
      assert.deepEqual(st.resources, [{ 'Fn::GetAtt': [queueId, 'Arn'] }], 'its own queue only');
    assert.deepEqual([...new Set(sqs.flatMap((st) => st.actions))].sort(), [
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueAttributes',
      'sqs:GetQueueUrl',
      'sqs:ReceiveMessage',
      'sqs:SendMessage',
    ]);
    assert.deepEqual(
      allActions(template, 'jobs-worker').filter((a) => /^(kms|iot|lambda):/.test(a)),
      [],
    );
  });

  it('operator-api: may only send to the jobs queue (publish and cancel queue their job)', () => {
    const queueId = envTarget(template, 'operator-api', 'JOB_QUEUE_URL');
    assert.equal(queueId, envTarget(template, 'jobs-worker', 'JOB_QUEUE_URL'));
    const sqs = functionStatements(template, 'operator-api').filter((s) =>
      s.actions.some((a) => a.startsWith('sqs:')),
    );
    assert.deepEqual(
      sqs.map((s) => ({ actions: s.actions, resources: s.resources })),
      [
        {
          actions: ['sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'],
          resources: [{ 'Fn::GetAtt': [queueId, 'Arn'] }],
        },
      ],
    );
  });

  it('campaign-tick: campaigns read + UpdateItem, counters summed and pacer state, vehicles unlocked (and scanned by the freshness job), overdue updates through byDeadline, freshness statements', () => {
    assert.deepEqual(dynamoAccess('campaign-tick'), {
      releases: [],
      vehicles: ['Scan', 'UpdateItem'],
      updates: ['PutItem'],
      campaigns: ['GetItem', 'UpdateItem'],
      challenges: [],
      freshness: ['GetItem', 'PutItem'],
      exclusions: [],
      counters: ['GetItem', 'PutItem', 'Query', 'UpdateItem'],
      audit: [],
    });
    // Running campaigns by status; overdue updates by deadline. It never reads a wave (no byCampaign).
    assert.deepEqual(indexAccess('campaign-tick'), ['campaigns/byStatus', 'updates/byDeadline']);
  });

  it('campaign-tick: signs freshness statements with the signing key only (kms:Sign, kms:GetPublicKey), nothing else in KMS', () => {
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

  it('campaign-tick: may only send to the offers queue; no S3, no IoT, nothing beyond tables, key, queue, logs and tracing', () => {
    const actions = allActions(template, 'campaign-tick');
    const queueId = envTarget(template, 'campaign-tick', 'OFFER_QUEUE_URL');
    assert.equal(queueId, envTarget(template, 'offer-worker', 'OFFER_QUEUE_URL'));
    const sqs = functionStatements(template, 'campaign-tick').filter((s) =>
      s.actions.some((a) => a.startsWith('sqs:')),
    );
    assert.deepEqual(
      sqs.map((s) => ({ actions: s.actions, resources: s.resources })),
      [
        {
          actions: ['sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'],
          resources: [{ 'Fn::GetAtt': [queueId, 'Arn'] }],
        },
      ],
    );
    assert.deepEqual(actionsOn(template, 'campaign-tick', bucketId), []);
    assert.equal(functionEnv(template, 'campaign-tick').FIRMWARE_BUCKET, undefined);
    const services = [...new Set(actions.map((a) => a.split(':')[0]))].sort();
    assert.deepEqual(services, ['dynamodb', 'kms', 'logs', 'sqs', 'xray']);
  });

  it('offer-worker: campaigns and releases read, vehicles and updates read/write, counters and pacer state, queued targets through byCampaign', () => {
    assert.deepEqual(dynamoAccess('offer-worker'), {
      releases: ['GetItem'],
      vehicles: ['GetItem', 'UpdateItem'],
      updates: ['GetItem', 'PutItem'],
      campaigns: ['GetItem'],
      challenges: [],
      freshness: [],
      exclusions: [],
      counters: ['GetItem', 'PutItem', 'UpdateItem'],
      audit: [],
    });
    assert.deepEqual(indexAccess('offer-worker'), ['updates/byCampaign']);
  });

  it('offer-worker: consumes and feeds its own queue, signs assignments, publishes only on vehicle issue_details topics; no S3', () => {
    const queueId = envTarget(template, 'offer-worker', 'OFFER_QUEUE_URL');
    const sqs = functionStatements(template, 'offer-worker').filter((s) =>
      s.actions.some((a) => a.startsWith('sqs:')),
    );
    for (const st of sqs)
      assert.deepEqual(st.resources, [{ 'Fn::GetAtt': [queueId, 'Arn'] }], 'its own queue only');
    assert.deepEqual([...new Set(sqs.flatMap((st) => st.actions))].sort(), [
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueAttributes',
      'sqs:GetQueueUrl',
      'sqs:ReceiveMessage',
      'sqs:SendMessage',
    ]);
    const iot = functionStatements(template, 'offer-worker').filter((s) =>
      s.actions.some((a) => a.startsWith('iot:')),
    );
    assert.deepEqual(
      iot.map((s) => ({ actions: s.actions, resources: s.resources, Condition: s.Condition })),
      [{ actions: ['iot:Publish'], resources: [topicArn], Condition: undefined }],
    );
    const lookupId = Object.keys(template.findResources('Custom::IotDataEndpoint'))[0]!;
    assert.deepEqual(functionEnv(template, 'offer-worker').AWS_ENDPOINT_URL_IOT_DATA_PLANE, {
      'Fn::Join': ['', ['https://', { 'Fn::GetAtt': [lookupId, 'endpointAddress'] }]],
    });
    assert.deepEqual(actionsOn(template, 'offer-worker', keyId).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(actionsOn(template, 'offer-worker', bucketId), []);
    const services = [...new Set(allActions(template, 'offer-worker').map((a) => a.split(':')[0]))].sort();
    assert.deepEqual(services, ['dynamodb', 'iot', 'kms', 'logs', 'sqs', 'xray']);
  });

  it('only the offer worker publishes to vehicles', () => {
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(allActions(template, fn).includes('iot:Publish'), fn === 'offer-worker', fn);
      assert.equal(
        functionEnv(template, fn).AWS_ENDPOINT_URL_IOT_DATA_PLANE !== undefined,
        fn === 'offer-worker',
        fn,
      );
    }
  });

  it('grants no function DeleteItem, BatchWriteItem or BatchGetItem, and Scan only to the operator, the freshness job and campaign preparation (issue 18 #9)', () => {
    for (const fn of ALL_FUNCTIONS) {
      const actions = allActions(template, fn);
      for (const never of ['dynamodb:DeleteItem', 'dynamodb:BatchWriteItem', 'dynamodb:BatchGetItem']) {
        assert.ok(!actions.includes(never), `${fn}: ${never}`);
      }
      // The campaign tick also runs the freshness job, which scans the vehicles for its leaves; the jobs worker
      // prepares filter campaigns by a parallel scan of the vehicles.
      assert.equal(
        actions.includes('dynamodb:Scan'),
        fn === 'operator-api' || fn === 'campaign-tick' || fn === 'jobs-worker',
        `${fn}: Scan`,
      );
    }
  });

  it('signs tokens and assignments with different keys; only auth-api signs tokens (issue 18 #9)', () => {
    assert.notEqual(keyId, tokenKeyId);
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(actionsOn(template, fn, tokenKeyId).includes('kms:Sign'), fn === 'auth-api', fn);
      assert.equal(
        actionsOn(template, fn, keyId).includes('kms:Sign'),
        fn === 'vehicle-api' || fn === 'campaign-tick' || fn === 'offer-worker',
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

  it('only the registry function may create certificates', () => {
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(
        allActions(template, fn).includes('iot:CreateCertificateFromCsr'),
        fn === 'registry-api',
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
      assert.equal(
        env.TOKEN_SIGNING_KEY_ARN !== undefined,
        actionsOn(template, fn, tokenKeyId).length > 0,
        `${fn} token key`,
      );
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

  it('kms:Sign on the signing key only for the functions that certify their assignment keys (and the freshness job); the direct switch reaches exactly the assignment signers', () => {
    const signers = ALL_FUNCTIONS.filter((fn) => actionsOn(template, fn, keyId).includes('kms:Sign'));
    // The offer worker signs campaign offers' assignments, vehicle-api a vehicle's own; the tick signs freshness
    // statements only (its offers moved to the offer worker).
    assert.deepEqual(signers.sort(), ['campaign-tick', 'offer-worker', 'vehicle-api']);
    for (const fn of ALL_FUNCTIONS) assert.equal(functionEnv(template, fn).ASSIGNMENT_SIGNING, undefined, fn);
    const direct = otaTemplate({ assignmentSigning: 'direct' });
    const switched = ALL_FUNCTIONS.filter((fn) => functionEnv(direct, fn).ASSIGNMENT_SIGNING === 'direct');
    assert.deepEqual(switched.sort(), ['offer-worker', 'vehicle-api']);
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
