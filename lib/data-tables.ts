import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { TABLES, type TableDefinition } from '../lambdas/core/tables.js';
import { type IBindableFunction, policyOwner } from './bindable.js';
import { acknowledgeWildcardResources } from './nag.js';

export type TableName = TableDefinition['name'];

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
 * bindRead/bindReadWrite set together with the grant.
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

  /** Grants read access (items and the table's own indexes) and sets the table's environment variable. */
  bindRead(fn: IBindableFunction, name: TableName): void {
    this.table(name).grantReadData(fn);
    this.bind(fn, name, 'reads');
  }

  /**
   * Grants item writes only (no reads, no table management) and sets the table's environment variable: for an
   * append-only writer such as the status history.
   */
  bindWrite(fn: IBindableFunction, name: TableName): void {
    this.table(name).grantWriteData(fn);
    this.bind(fn, name, 'writes');
  }

  /** Grants read and write access to items (not table management) and sets the table's environment variable. */
  bindReadWrite(fn: IBindableFunction, name: TableName): void {
    this.table(name).grantReadWriteData(fn);
    this.bind(fn, name, 'reads and writes');
  }

  private bind(fn: IBindableFunction, name: TableName, what: string): void {
    const def = this.definitions.get(name)!;
    const table = this.table(name);
    fn.addEnvironment(def.envVar, table.tableName);
    if (def.indexes.length > 0) {
      acknowledgeWildcardResources(
        policyOwner(fn),
        [`${table.tableArn}/index/*`],
        `The function ${what} the ${name} table and queries its own global secondary indexes ` +
          `(${def.indexes.map((i) => i.indexName).join(', ')}); the wildcard spans index names of this one table.`,
      );
    }
  }
}

function pascal(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}
