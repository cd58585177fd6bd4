/**
 * The local cloud's storage made as the stack makes it on AWS: the firmware bucket on an external endpoint, and the
 * tables from the same TABLES definition, checked against it when they already exist.
 */
import {
  type AttributeDefinition,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  type KeySchemaElement,
  ResourceNotFoundException,
  type TableDescription,
} from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { TABLES, type TableDefinition } from '../lambdas/core/tables.js';
import { trustingAgent } from '../protocol/tls-trust.js';
import { FIRMWARE_BUCKET, LOCAL_REGION } from './storage-emulators.js';

/** Creates the firmware bucket on an external endpoint (LocalStack) when it is not there yet. */
export async function ensureBucket(
  endpoint: string,
  caPem: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
) {
  const client = new S3Client({
    endpoint,
    region: LOCAL_REGION,
    credentials,
    forcePathStyle: true,
    requestHandler: { httpsAgent: trustingAgent(caPem) },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: FIRMWARE_BUCKET })).catch(async () => {
      await client.send(new CreateBucketCommand({ Bucket: FIRMWARE_BUCKET }));
    });
  } finally {
    client.destroy();
  }
}

/**
 * Creates the tables from TABLES when absent, and refuses to run on tables whose keys or indexes differ (an
 * older data folder). dynalite has no UpdateTimeToLive, so TTL is not configured locally: history never expires.
 */
export async function ensureTables(
  endpoint: string,
  caPem: string,
  names: Record<TableDefinition['name'], string>,
  credentials: { accessKeyId: string; secretAccessKey: string },
) {
  const client = new DynamoDBClient({
    endpoint,
    region: LOCAL_REGION,
    credentials,
    requestHandler: { httpsAgent: trustingAgent(caPem) },
  });
  try {
    for (const table of TABLES) {
      const TableName = names[table.name];
      let existing = await describe(client, TableName);
      if (!existing) {
        const keys = (pk: string, sk?: string): KeySchemaElement[] => [
          { AttributeName: pk, KeyType: 'HASH' },
          ...(sk ? [{ AttributeName: sk, KeyType: 'RANGE' as const }] : []),
        ];
        const attributes = new Set([
          table.partitionKey,
          table.sortKey,
          ...table.indexes.flatMap((i) => [i.partitionKey, i.sortKey]),
        ]);
        await client.send(
          new CreateTableCommand({
            TableName,
            BillingMode: 'PAY_PER_REQUEST',
            KeySchema: keys(table.partitionKey, table.sortKey),
            AttributeDefinitions: [...attributes]
              .filter((a): a is string => a !== undefined)
              .map((AttributeName): AttributeDefinition => ({ AttributeName, AttributeType: 'S' })),
            ...(table.indexes.length
              ? {
                  GlobalSecondaryIndexes: table.indexes.map((i) => ({
                    IndexName: i.indexName,
                    KeySchema: keys(i.partitionKey, i.sortKey),
                    Projection: { ProjectionType: 'ALL' },
                  })),
                }
              : {}),
          }),
        );
        existing = await describe(client, TableName);
        for (let i = 0; existing?.TableStatus !== 'ACTIVE' && i < 100; i++) {
          await new Promise((r) => setTimeout(r, 20));
          existing = await describe(client, TableName);
        }
      }
      if (!existing || !matches(table, existing)) {
        throw new Error(
          `Table ${TableName} in the local data folder does not match lambdas/core/tables.ts; delete the data folder's ` +
            'dynamodb directory to recreate it',
        );
      }
    }
  } finally {
    client.destroy();
  }
}

async function describe(client: DynamoDBClient, TableName: string): Promise<TableDescription | undefined> {
  try {
    return (await client.send(new DescribeTableCommand({ TableName }))).Table;
  } catch (err) {
    if (err instanceof ResourceNotFoundException) return undefined;
    throw err;
  }
}

function matches(table: TableDefinition, actual: TableDescription): boolean {
  const key = (schema: KeySchemaElement[] | undefined) =>
    JSON.stringify([
      schema?.find((k) => k.KeyType === 'HASH')?.AttributeName,
      schema?.find((k) => k.KeyType === 'RANGE')?.AttributeName,
    ]);
  if (key(actual.KeySchema) !== JSON.stringify([table.partitionKey, table.sortKey])) return false;
  const indexes = actual.GlobalSecondaryIndexes ?? [];
  if (indexes.length !== table.indexes.length) return false;
  return table.indexes.every((want) => {
    const got = indexes.find((i) => i.IndexName === want.indexName);
    return got !== undefined && key(got.KeySchema) === JSON.stringify([want.partitionKey, want.sortKey]);
  });
}
