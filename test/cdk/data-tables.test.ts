import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { TABLES } from '../../lambdas/core/tables.js';
import { DataTables } from '../../lib/data-tables.js';
import { newStack, otaTemplate, resources } from './fixtures.js';

const template = otaTemplate();

/** Finds a table by its environment variable on any function: the env var is the contract with the code. */
function tableByEnv(
  t: Template,
  envVar: string,
): { id: string; props: Record<string, unknown>; raw: Record<string, unknown> } {
  for (const fn of Object.values(t.findResources('AWS::Lambda::Function'))) {
    const ref = (fn.Properties.Environment?.Variables?.[envVar] as { Ref?: string } | undefined)?.Ref;
    if (ref) {
      const raw = resources(t)[ref]!;
      assert.equal(raw.Type, 'AWS::DynamoDB::Table', `${envVar} points at a table`);
      return { id: ref, props: raw.Properties!, raw };
    }
  }
  throw new Error(`no function has ${envVar}`);
}

function inlineFunction(stack: Stack, id: string): lambda.Function {
  return new lambda.Function(stack, id, {
    runtime: lambda.Runtime.NODEJS_24_X,
    handler: 'index.handler',
    code: lambda.Code.fromInline('export const handler = () => {}'),
  });
}

function policyStatements(t: Template): { actions: string[]; resources: unknown[] }[] {
  return Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p) =>
    (p.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[]).map(
      (s) => ({
        actions: [s.Action].flat(),
        resources: [s.Resource].flat(),
      }),
    ),
  );
}

/** One function bound by `bind` on a bare stack: its IAM statements and environment. */
function bound(bind: (data: DataTables, fn: lambda.Function) => void) {
  const stack = newStack();
  const data = new DataTables(stack, 'Data');
  bind(data, inlineFunction(stack, 'Fn'));
  const t = Template.fromStack(stack);
  const variables = Object.values(t.findResources('AWS::Lambda::Function'))[0]!.Properties.Environment
    .Variables as Record<string, { Ref: string }>;
  return { t, statements: policyStatements(t), variables };
}

describe('DataTables', { timeout: 300_000 }, () => {
  it('creates one table per definition in TABLES', () => {
    template.resourceCountIs('AWS::DynamoDB::Table', TABLES.length);
  });

  for (const def of TABLES) {
    describe(`table ${def.name}`, () => {
      const { props, raw } = tableByEnv(template, def.envVar);

      it('has the key schema of its definition, string keys', () => {
        const keys = [{ AttributeName: def.partitionKey, KeyType: 'HASH' }];
        if (def.sortKey) keys.push({ AttributeName: def.sortKey, KeyType: 'RANGE' });
        assert.deepEqual(props.KeySchema, keys);
        for (const a of props.AttributeDefinitions as { AttributeType: string }[])
          assert.equal(a.AttributeType, 'S');
      });

      it('is on-demand, point-in-time recoverable and KMS-encrypted', () => {
        assert.equal(props.BillingMode, 'PAY_PER_REQUEST');
        assert.equal(props.ProvisionedThroughput, undefined);
        assert.deepEqual(props.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
        // SSEEnabled true without a key id is the AWS managed KMS key (aws/dynamodb), not the AWS owned key.
        assert.deepEqual(props.SSESpecification, { SSEEnabled: true });
      });

      it('has exactly the GSIs of its definition', () => {
        const expected = def.indexes.map((i) => ({
          IndexName: i.indexName,
          KeySchema: [
            { AttributeName: i.partitionKey, KeyType: 'HASH' },
            ...(i.sortKey ? [{ AttributeName: i.sortKey, KeyType: 'RANGE' }] : []),
          ],
          Projection: { ProjectionType: 'ALL' },
        }));
        assert.deepEqual(props.GlobalSecondaryIndexes ?? [], expected);
      });

      it(def.ttlAttribute ? `expires items by ${def.ttlAttribute}` : 'has no TTL', () => {
        assert.deepEqual(
          props.TimeToLiveSpecification,
          def.ttlAttribute ? { AttributeName: def.ttlAttribute, Enabled: true } : undefined,
        );
      });

      it('is retained and deletion-protected by default', () => {
        assert.equal(raw.DeletionPolicy, 'Retain');
        assert.equal(props.DeletionProtectionEnabled, true);
      });
    });
  }

  // Written out here rather than derived from TABLES, so a change to the data model has to change this test too.
  it('campaigns: keyed by campaignId, GSI byStatus (status, campaignId), recoverable, encrypted, retained', () => {
    const { props, raw } = tableByEnv(template, 'TABLE_CAMPAIGNS');
    assert.deepEqual(props.KeySchema, [{ AttributeName: 'campaignId', KeyType: 'HASH' }]);
    assert.deepEqual(props.GlobalSecondaryIndexes, [
      {
        IndexName: 'byStatus',
        KeySchema: [
          { AttributeName: 'status', KeyType: 'HASH' },
          { AttributeName: 'campaignId', KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
    ]);
    assert.deepEqual(
      (props.AttributeDefinitions as { AttributeName: string }[]).map((a) => a.AttributeName).sort(),
      ['campaignId', 'status'],
    );
    assert.equal(props.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(props.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.deepEqual(props.SSESpecification, { SSEEnabled: true });
    assert.equal(props.TimeToLiveSpecification, undefined);
    assert.equal(props.DeletionProtectionEnabled, true);
    assert.equal(raw.DeletionPolicy, 'Retain');
  });

  it('freshness: keyed by key, no index, items expire by expiresAt, recoverable, retained', () => {
    const { props, raw } = tableByEnv(template, 'TABLE_FRESHNESS');
    assert.deepEqual(props.KeySchema, [{ AttributeName: 'key', KeyType: 'HASH' }]);
    assert.equal(props.GlobalSecondaryIndexes, undefined);
    assert.deepEqual(props.TimeToLiveSpecification, { AttributeName: 'expiresAt', Enabled: true });
    assert.deepEqual(props.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.equal(raw.DeletionPolicy, 'Retain');
  });

  it('updates: sparse GSIs byCampaign (campaignId, waveKey) and byDeadline (campaignId, deadlineKey) next to its VIN x update key', () => {
    const { props } = tableByEnv(template, 'TABLE_UPDATES');
    assert.deepEqual(props.KeySchema, [
      { AttributeName: 'vin', KeyType: 'HASH' },
      { AttributeName: 'updateId', KeyType: 'RANGE' },
    ]);
    assert.deepEqual(props.GlobalSecondaryIndexes, [
      {
        IndexName: 'byCampaign',
        KeySchema: [
          { AttributeName: 'campaignId', KeyType: 'HASH' },
          { AttributeName: 'waveKey', KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
      {
        IndexName: 'byDeadline',
        KeySchema: [
          { AttributeName: 'campaignId', KeyType: 'HASH' },
          { AttributeName: 'deadlineKey', KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
    ]);
  });

  it('counters: one item per campaign wave shard (key, shard), no index', () => {
    const { props } = tableByEnv(template, 'TABLE_COUNTERS');
    assert.deepEqual(props.KeySchema, [
      { AttributeName: 'key', KeyType: 'HASH' },
      { AttributeName: 'shard', KeyType: 'RANGE' },
    ]);
    assert.equal(props.GlobalSecondaryIndexes, undefined);
  });

  it('deletes tables and lifts deletion protection in dev mode', () => {
    const dev = otaTemplate({ devMode: true });
    for (const t of Object.values(dev.findResources('AWS::DynamoDB::Table'))) {
      assert.equal(t.DeletionPolicy, 'Delete');
      assert.equal(t.Properties.DeletionProtectionEnabled, false);
    }
  });

  it('uses a customer managed key when given one', () => {
    const stack = newStack();
    const key = new kms.Key(stack, 'Key', { enableKeyRotation: true });
    new DataTables(stack, 'Data', { encryptionKey: key });
    const t = Template.fromStack(stack);
    t.allResourcesProperties('AWS::DynamoDB::Table', {
      SSESpecification: {
        SSEEnabled: true,
        SSEType: 'KMS',
        KMSMasterKeyId: { 'Fn::GetAtt': ['Key961B73FD', 'Arn'] },
      },
    });
  });

  it('bindRead sets the env var and grants no write action; bindReadWrite adds item writes only', () => {
    const stack = newStack();
    const data = new DataTables(stack, 'Data');
    const mk = (id: string) =>
      new lambda.Function(stack, id, {
        runtime: lambda.Runtime.NODEJS_24_X,
        handler: 'index.handler',
        code: lambda.Code.fromInline('export const handler = () => {}'),
      });
    const reader = mk('Reader');
    const writer = mk('Writer');
    data.bindRead(reader, 'releases');
    data.bindReadWrite(writer, 'vehicles');
    const t = Template.fromStack(stack);
    const env = (id: string) =>
      (
        Object.values(t.findResources('AWS::Lambda::Function')).find((f) =>
          JSON.stringify(f.Properties.Role).includes(`${id}ServiceRole`),
        )!.Properties.Environment as { Variables: Record<string, unknown> }
      ).Variables;
    assert.deepEqual(Object.keys(env('Reader')), ['TABLE_RELEASES']);
    assert.deepEqual(Object.keys(env('Writer')), ['TABLE_VEHICLES']);
    const target = (id: string, v: string) => resources(t)[(env(id)[v] as { Ref: string }).Ref]!.Properties!;
    assert.deepEqual(target('Reader', 'TABLE_RELEASES').KeySchema, [
      { AttributeName: 'releaseId', KeyType: 'HASH' },
    ]);
    assert.deepEqual(target('Writer', 'TABLE_VEHICLES').KeySchema, [
      { AttributeName: 'vin', KeyType: 'HASH' },
    ]);
    const actions = (id: string) =>
      Object.values(t.findResources('AWS::IAM::Policy'))
        .filter((p) => JSON.stringify(p.Properties.Roles).includes(`${id}ServiceRole`))
        .flatMap((p) =>
          p.Properties.PolicyDocument.Statement.flatMap((s: { Action: string | string[] }) =>
            [s.Action].flat(),
          ),
        );
    const writes = [
      'dynamodb:PutItem',
      'dynamodb:UpdateItem',
      'dynamodb:DeleteItem',
      'dynamodb:BatchWriteItem',
    ];
    for (const w of writes) assert.ok(!actions('Reader').includes(w), `reader must not have ${w}`);
    for (const w of writes) assert.ok(actions('Writer').includes(w), `writer needs ${w}`);
    for (const a of [...actions('Reader'), ...actions('Writer')]) {
      assert.ok(!/^dynamodb:(Create|Delete|Update)Table|\*/.test(a), `no table management: ${a}`);
    }
  });

  it('bindUpdateItem sets the env var and grants dynamodb:UpdateItem alone, on the table alone', () => {
    const { t, statements, variables } = bound((data, fn) => data.bindUpdateItem(fn, 'campaigns'));
    assert.deepEqual(Object.keys(variables), ['TABLE_CAMPAIGNS']);
    const campaignsId = variables.TABLE_CAMPAIGNS!.Ref;
    assert.deepEqual(resources(t)[campaignsId]!.Properties!.KeySchema, [
      { AttributeName: 'campaignId', KeyType: 'HASH' },
    ]);
    assert.deepEqual(statements, [
      { actions: ['dynamodb:UpdateItem'], resources: [{ 'Fn::GetAtt': [campaignsId, 'Arn'] }] },
    ]);
  });

  it('grants dynamodb:Query on exactly the indexes named, never on table/index/*', () => {
    const { statements, variables } = bound((data, fn) => {
      data.bindRead(fn, 'campaigns', { indexes: ['byStatus'] });
      data.bindReadWrite(fn, 'updates');
    });
    const campaigns = { 'Fn::GetAtt': [variables.TABLE_CAMPAIGNS!.Ref, 'Arn'] };
    const updates = { 'Fn::GetAtt': [variables.TABLE_UPDATES!.Ref, 'Arn'] };
    const onIndexes = statements.filter((s) => JSON.stringify(s.resources).includes('/index/'));
    assert.deepEqual(onIndexes, [
      { actions: ['dynamodb:Query'], resources: [{ 'Fn::Join': ['', [campaigns, '/index/byStatus']] }] },
    ]);
    // updates has an index (byCampaign) but none was asked for.
    assert.ok(!JSON.stringify(statements).includes('byCampaign'));
    assert.ok(!JSON.stringify(statements).includes('/index/*'));
    assert.ok(statements.some((s) => JSON.stringify(s.resources) === JSON.stringify([updates])));
  });

  it('rejects an index the table does not have', () => {
    assert.throws(
      () => bound((data, fn) => data.bindRead(fn, 'updates', { indexes: ['byStatus'] })),
      /table updates has no index byStatus/,
    );
  });

  it('grants the customer managed key actions the item actions need', () => {
    const stack = newStack();
    const key = new kms.Key(stack, 'Key', { enableKeyRotation: true });
    const data = new DataTables(stack, 'Data', { encryptionKey: key });
    const fn = inlineFunction(stack, 'Fn');
    data.bindUpdateItem(fn, 'campaigns');
    data.bindRead(fn, 'releases');
    const statements = policyStatements(Template.fromStack(stack));
    const onKey = statements.filter((s) => JSON.stringify(s.resources).includes('Key961B73FD'));
    assert.deepEqual(
      onKey.map((s) => s.actions),
      [
        ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*'],
        ['kms:Decrypt', 'kms:DescribeKey'],
      ],
    );
  });

  it('rejects a name the data model does not define', () => {
    const data = new DataTables(newStack(), 'Data');
    assert.throws(() => data.table('nope' as never), /no table named nope/);
  });
});
