import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { TABLES, type TableDefinition } from '../lambdas/core/tables.js';
import type { IBindableFunction } from './bindable.js';

export type TableName = TableDefinition['name'];

/** Item reads. No stream actions (the tables have no streams) and no table metadata (the code never asks). */
const READ_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:BatchGetItem',
  'dynamodb:Query',
  'dynamodb:Scan',
  'dynamodb:ConditionCheckItem',
];
/** Item writes. */
const WRITE_ACTIONS = [
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:DeleteItem',
  'dynamodb:BatchWriteItem',
];
/** Key actions for reading items of a table under a customer managed key (those aws-dynamodb grants). */
const KEY_READ_ACTIONS = ['kms:Decrypt', 'kms:DescribeKey'];
/** Key actions for writing items of a table under a customer managed key (those aws-dynamodb grants). */
const KEY_WRITE_ACTIONS = ['kms:Encrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*'];

/** The item-level DynamoDB actions a grant may name (no table management, no streams). */
export type ItemAction =
  | 'GetItem'
  | 'BatchGetItem'
  | 'Query'
  | 'Scan'
  | 'ConditionCheckItem'
  | 'PutItem'
  | 'UpdateItem'
  | 'DeleteItem'
  | 'BatchWriteItem';
const ITEM_WRITES: ReadonlySet<ItemAction> = new Set([
  'PutItem',
  'UpdateItem',
  'DeleteItem',
  'BatchWriteItem',
]);

export interface BindOptions {
  /**
   * Global secondary indexes of the table the function queries. Each gets dynamodb:Query on that index's ARN.
   * @default [] - the function may not query any index
   */
  readonly indexes?: readonly string[];
}

export interface DataTablesProps {
  /**
   * The data model to create, one table per entry.
   * @default TABLES (lambdas/core/tables.ts), shared with the functions and the local cloud
   */
  readonly definitions?: readonly TableDefinition[];
  /**
   * Customer managed KMS key for every table. Worth it when the organisation must be able to revoke access to the
   * data by disabling a key it controls, or audit key policy changes; it costs a key and KMS requests.
   * @default - encrypted with the AWS managed key (aws/dynamodb)
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * Delete the tables (and their data) when they leave the stack, and turn deletion protection off
   * (development stacks only).
   * @default false - tables are retained and deletion protection is on
   */
  readonly destroyOnRemoval?: boolean;
}

/**
 * One DynamoDB table per entry of the shared data model: on-demand capacity, point-in-time recovery, encryption at
 * rest with a KMS key, string keys, the definition's GSIs (all attributes projected) and TTL attribute, deletion
 * protection and RETAIN by default.
 *
 * Encryption defaults to the AWS managed key (aws/dynamodb) rather than the AWS owned key: data is still encrypted
 * under KMS with key use visible in CloudTrail, without a key policy to manage. Pass encryptionKey for a customer
 * managed key; the bind helpers then grant the matching kms permissions automatically.
 *
 * Physical table names are generated; functions learn them from the definition's environment variable, which
 * the bindX helpers set together with the grant. Grants name the table and, only where asked for, individual
 * indexes: a function that never queries an index gets no access to it.
 */
export class DataTables extends Construct {
  readonly tables: ReadonlyMap<TableName, dynamodb.Table>;
  private readonly definitions: ReadonlyMap<TableName, TableDefinition>;

  constructor(scope: Construct, id: string, props: DataTablesProps = {}) {
    super(scope, id);
    const definitions = props.definitions ?? TABLES;
    const destroy = props.destroyOnRemoval ?? false;
    const tables = new Map<TableName, dynamodb.Table>();
    const defs = new Map<TableName, TableDefinition>();
    for (const def of definitions) {
      if (defs.has(def.name)) throw new Error(`DataTables: table ${def.name} is defined twice`);
      const table = new dynamodb.Table(this, pascal(def.name), {
        partitionKey: { name: def.partitionKey, type: dynamodb.AttributeType.STRING },
        sortKey: def.sortKey ? { name: def.sortKey, type: dynamodb.AttributeType.STRING } : undefined,
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        ...(props.encryptionKey
          ? { encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED, encryptionKey: props.encryptionKey }
          : { encryption: dynamodb.TableEncryption.AWS_MANAGED }),
        timeToLiveAttribute: def.ttlAttribute,
        deletionProtection: !destroy,
        removalPolicy: destroy ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
      });
      for (const index of def.indexes) {
        table.addGlobalSecondaryIndex({
          indexName: index.indexName,
          partitionKey: { name: index.partitionKey, type: dynamodb.AttributeType.STRING },
          sortKey: index.sortKey ? { name: index.sortKey, type: dynamodb.AttributeType.STRING } : undefined,
          projectionType: dynamodb.ProjectionType.ALL,
        });
      }
      tables.set(def.name, table);
      defs.set(def.name, def);
    }
    this.tables = tables;
    this.definitions = defs;
  }

  /** The table of a logical name; throws for a name the data model does not define. */
  table(name: TableName): dynamodb.Table {
    const table = this.tables.get(name);
    if (!table) throw new Error(`DataTables: no table named ${name}`);
    return table;
  }

  /**
   * Grants item reads (GetItem, BatchGetItem, Query and Scan on the table, ConditionCheckItem) and sets the table's
   * environment variable. The table's GSIs are not included unless named in options.indexes.
   */
  bindRead(fn: IBindableFunction, name: TableName, options: BindOptions = {}): void {
    this.grantItems(fn, name, READ_ACTIONS, KEY_READ_ACTIONS, options.indexes ?? []);
  }

  /**
   * Grants dynamodb:UpdateItem alone and sets the table's environment variable: for a function that only applies
   * atomic updates to items it never reads, creates or deletes (e.g. ADD on a campaign's counts).
   */
  bindUpdateItem(fn: IBindableFunction, name: TableName): void {
    this.grantItems(fn, name, ['dynamodb:UpdateItem'], [...KEY_READ_ACTIONS, ...KEY_WRITE_ACTIONS], []);
  }

  /**
   * Grants item reads and writes (not table management) and sets the table's environment variable. The table's
   * GSIs are not included unless named in options.indexes.
   */
  bindReadWrite(fn: IBindableFunction, name: TableName, options: BindOptions = {}): void {
    this.grantItems(
      fn,
      name,
      [...READ_ACTIONS, ...WRITE_ACTIONS],
      [...KEY_READ_ACTIONS, ...KEY_WRITE_ACTIONS],
      options.indexes ?? [],
    );
  }

  /**
   * Grants exactly the item actions named, on the table ARN alone (an empty list grants nothing on the table
   * itself, e.g. a function that only queries an index), plus dynamodb:Query on each index in options.indexes,
   * and sets the table's environment variable. The broad helpers above grant Scan, DeleteItem and BatchWriteItem to
   * whoever reads or writes; this one lets each function hold only what its code calls.
   */
  bindItems(
    fn: IBindableFunction,
    name: TableName,
    actions: readonly ItemAction[],
    options: BindOptions = {},
  ): void {
    const writes = actions.some((a) => ITEM_WRITES.has(a));
    this.grantItems(
      fn,
      name,
      [...new Set(actions)].map((a) => `dynamodb:${a}`),
      writes ? [...KEY_READ_ACTIONS, ...KEY_WRITE_ACTIONS] : KEY_READ_ACTIONS,
      options.indexes ?? [],
    );
  }

  /**
   * The one place grants are made. Item actions go on the table ARN alone; each requested index gets
   * dynamodb:Query on its own ARN (never table/index/*), so no grant needs a wildcard and a function cannot query
   * an index it was not meant to. With a customer managed key, the key actions the item actions need are granted
   * on that key.
   */
  private grantItems(
    fn: IBindableFunction,
    name: TableName,
    actions: readonly string[],
    keyActions: readonly string[],
    indexes: readonly string[],
  ): void {
    const def = this.definitions.get(name);
    const table = this.table(name);
    if (!def) throw new Error(`DataTables: no table named ${name}`);
    for (const index of indexes) {
      if (!def.indexes.some((i) => i.indexName === index)) {
        throw new Error(`DataTables: table ${name} has no index ${index}`);
      }
    }
    if (actions.length > 0) {
      iam.Grant.addToPrincipal({ grantee: fn, actions: [...actions], resourceArns: [table.tableArn] });
    }
    if (indexes.length > 0) {
      iam.Grant.addToPrincipal({
        grantee: fn,
        actions: ['dynamodb:Query'],
        resourceArns: [...new Set(indexes)].map((i) => `${table.tableArn}/index/${i}`),
      });
    }
    table.encryptionKey?.grant(fn, ...keyActions);
    fn.addEnvironment(def.envVar, table.tableName);
  }
}

function pascal(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}
