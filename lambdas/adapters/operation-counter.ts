/**
 * Counts the backend's billable AWS operations where they are made: an SDK v3 middleware on every client the
 * functions build (per service and operation, DynamoDB items per table for batch and transactional calls), the
 * signers (KMS Sign per key, also the local cloud's key-file stand-in, which is no SDK client), and the local
 * cloud's own stand-ins (Lambda invocations, broker connections and messages, queue receives) through record().
 *
 * OTA_OPERATION_COUNTING selects the mode, read once per instance: unset (AWS default) adds no middleware at all,
 * so counting costs nothing when unused; `count` tallies in memory (the local cloud: each worker thread posts its
 * tally to the parent with every invocation result, local/lambda-runtime.ts); `emf` tallies and publishes the
 * tally as CloudWatch metrics (EMF) at the end of each invocation (observability.ts).
 *
 * One tally per thread, kept on globalThis: a module loaded twice in one thread still counts into one place.
 */
import { ENV, optionalEnv } from '../core/env.js';

/** Flat counts: "service.kind.name" -> number. Flat so that a worker's tally crosses postMessage as is. */
export type OperationDelta = Record<string, number>;

export type CountingMode = 'off' | 'count' | 'emf';

export function countingMode(): CountingMode {
  const v = optionalEnv(ENV.operationCounting);
  return v === 'count' || v === 'emf' ? v : 'off';
}

/** A tally of counts that can be drained (to post to a parent), merged (from a worker) and shaped (snapshot). */
export class OperationTally {
  private counts = new Map<string, number>();

  add(key: string, n = 1): void {
    if (n !== 0) this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }

  /**
   * Adds a delta, e.g. a function instance's. With fn, its DynamoDB items, KMS Signs and IoT Publishes are also
   * added up for that function (lambda.fn.<fn>.<what>), so a run shows which function spends what.
   */
  merge(delta: OperationDelta | undefined, fn?: string): void {
    if (!delta) return;
    for (const [k, v] of Object.entries(delta)) {
      if (typeof v !== 'number') continue;
      this.add(k, v);
      if (fn === undefined) continue;
      if (k.startsWith('dynamodb.read.')) this.add(`lambda.fn.${fn}.dynamodbReads`, v);
      else if (k.startsWith('dynamodb.write.')) this.add(`lambda.fn.${fn}.dynamodbWrites`, v);
      else if (k === 'kms.op.Sign') this.add(`lambda.fn.${fn}.kmsSigns`, v);
      else if (k === 'iot.op.Publish') this.add(`lambda.fn.${fn}.iotPublishes`, v);
    }
  }

  /** The counts since the last drain, and a fresh start. */
  drain(): OperationDelta | undefined {
    if (this.counts.size === 0) return undefined;
    const out = Object.fromEntries(this.counts);
    this.counts = new Map();
    return out;
  }

  flat(): OperationDelta {
    return Object.fromEntries(this.counts);
  }

  reset(): void {
    this.counts.clear();
  }

  snapshot(): OperationsSnapshot {
    return shapeOperations(this.flat());
  }
}

const TALLY = Symbol.for('fleet-ota.operation-tally');
/** This thread's tally. */
export function operationTally(): OperationTally {
  const g = globalThis as { [TALLY]?: OperationTally };
  g[TALLY] ??= new OperationTally();
  return g[TALLY];
}

/** Records count operations of the named kind (local stand-ins; SDK calls are counted by the middleware). */
export function recordOperation(key: string, n = 1): void {
  operationTally().add(key, n);
}

export interface TableCounts {
  reads: number;
  writes: number;
}
export interface OperationsSnapshot {
  dynamodb: {
    /** Items read: GetItem 1, BatchGetItem and TransactGetItems one per key, Query and Scan one per page. */
    reads: number;
    /** Items written: Put/Update/DeleteItem 1, BatchWriteItem one per request not returned unprocessed, Transact one per item. */
    writes: number;
    /** Items written inside transactions (they cost twice the write capacity). */
    transactionalWrites: number;
    /** Items Query and Scan returned. */
    itemsReturned: number;
    byOperation: Record<string, number>;
    byTable: Record<string, TableCounts>;
    /** The most-written items by key (UpdateItem/DeleteItem; `count` mode), most first, at most 10. */
    hottestItems: { item: string; writes: number }[];
  };
  kms: { sign: number; byOperation: Record<string, number>; signByKey: Record<string, number> };
  iot: {
    /** IoT Data Plane Publish calls (the backend's offers). */
    publish: number;
    byOperation: Record<string, number>;
    /** MQTT connections accepted by the broker. */
    connects: number;
    /** Messages published by devices over MQTT. */
    inbound: number;
    /** Of those, messages to IoT Basic Ingest topics ($aws/rules/...): no messaging charge on AWS. */
    basicIngest: number;
    /** Messages delivered to subscribed devices. */
    delivered: number;
    /** Topic rule actions run (IoT rule -> ingest). */
    ruleActions: number;
  };
  s3: {
    byOperation: Record<string, number>;
    /** Vehicles' downloads through presigned URLs (local cloud: counted by the S3 front): GETs and body bytes. */
    downloads: { gets: number; bytes: number };
  };
  sqs: { byOperation: Record<string, number> };
  lambda: {
    invocations: Record<string, number>;
    total: number;
    /** What each function's instances spent (local cloud: attributed from each instance's counts). */
    byFunction: Record<
      string,
      Partial<Record<'dynamodbReads' | 'dynamodbWrites' | 'kmsSigns' | 'iotPublishes' | 'ms', number>>
    >;
  };
  apigateway: { requests: number };
}

/** Shapes flat counts into the snapshot form. Unknown keys are kept under their service's byOperation. */
export function shapeOperations(flat: OperationDelta): OperationsSnapshot {
  const s: OperationsSnapshot = {
    dynamodb: {
      reads: 0,
      writes: 0,
      transactionalWrites: 0,
      itemsReturned: 0,
      byOperation: {},
      byTable: {},
      hottestItems: [],
    },
    kms: { sign: 0, byOperation: {}, signByKey: {} },
    iot: {
      publish: 0,
      byOperation: {},
      connects: 0,
      inbound: 0,
      basicIngest: 0,
      delivered: 0,
      ruleActions: 0,
    },
    s3: { byOperation: {}, downloads: { gets: 0, bytes: 0 } },
    sqs: { byOperation: {} },
    lambda: { invocations: {}, total: 0, byFunction: {} },
    apigateway: { requests: 0 },
  };
  const table = (name: string) => {
    s.dynamodb.byTable[name] ??= { reads: 0, writes: 0 };
    return s.dynamodb.byTable[name];
  };
  const items: { item: string; writes: number }[] = [];
  for (const [key, n] of Object.entries(flat)) {
    const [service, kind, ...rest] = key.split('.');
    const name = rest.join('.');
    if (service === 'dynamodb') {
      if (kind === 'op') s.dynamodb.byOperation[name] = n;
      else if (kind === 'read') {
        s.dynamodb.reads += n;
        table(name).reads += n;
      } else if (kind === 'write') {
        s.dynamodb.writes += n;
        table(name).writes += n;
      } else if (kind === 'txwrite') s.dynamodb.transactionalWrites += n;
      else if (kind === 'item') items.push({ item: name, writes: n });
      else if (kind === 'returned') s.dynamodb.itemsReturned += n;
    } else if (service === 'kms') {
      if (kind === 'op') {
        s.kms.byOperation[name] = n;
        if (name === 'Sign') s.kms.sign += n;
      } else if (kind === 'sign') s.kms.signByKey[name] = n;
    } else if (service === 'iot') {
      if (kind === 'op') {
        s.iot.byOperation[name] = n;
        if (name === 'Publish') s.iot.publish += n;
      } else if (kind === 'broker') {
        if (name === 'connect') s.iot.connects += n;
        else if (name === 'inbound') s.iot.inbound += n;
        else if (name === 'basicIngest') s.iot.basicIngest += n;
        else if (name === 'delivered') s.iot.delivered += n;
      } else if (kind === 'rule') s.iot.ruleActions += n;
    } else if (service === 's3' && kind === 'download') {
      if (name === 'GetObject') s.s3.downloads.gets += n;
      else if (name === 'bytes') s.s3.downloads.bytes += n;
    } else if (service === 's3' || service === 'sqs') s[service].byOperation[name] = n;
    else if (service === 'lambda' && kind === 'invoke') {
      s.lambda.invocations[name] = n;
      s.lambda.total += n;
    } else if (service === 'lambda' && kind === 'fn') {
      const at = name.lastIndexOf('.');
      const fn = name.slice(0, at);
      const what = name.slice(at + 1) as keyof OperationsSnapshot['lambda']['byFunction'][string];
      s.lambda.byFunction[fn] ??= {};
      s.lambda.byFunction[fn][what] = n;
    } else if (service === 'apigateway') s.apigateway.requests += n;
  }
  s.dynamodb.hottestItems = items.sort((a, b) => b.writes - a.writes).slice(0, 10);
  return s;
}

/** after - before, for measuring one stretch of a run without resetting the counts under other readers. */
export function diffOperations(after: OperationDelta, before: OperationDelta): OperationDelta {
  const out: OperationDelta = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

// --- the SDK middleware ----------------------------------------------------------------------------------------

const SERVICES: Record<string, string> = {
  DynamoDBClient: 'dynamodb',
  KMSClient: 'kms',
  S3Client: 's3',
  IoTDataPlaneClient: 'iot',
  IoTClient: 'iot',
  SQSClient: 'sqs',
};

type Items = Record<string, unknown[] | { Keys?: unknown[] } | undefined> | undefined;
type Input = {
  TableName?: string;
  Key?: Record<string, unknown>;
  RequestItems?: Items;
  TransactItems?: Record<string, { TableName?: string } | undefined>[];
};

const lengthOf = (v: unknown): number =>
  Array.isArray(v)
    ? v.length
    : Array.isArray((v as { Keys?: unknown[] } | undefined)?.Keys)
      ? (v as { Keys: unknown[] }).Keys.length
      : 0;

/**
 * Writes per existing item (UpdateItem and DeleteItem by key, in count mode only: one counter per item), so a
 * run shows its hottest item, the one a partition's 1,000 writes/s limit applies to. Puts are new items mostly
 * (updates, history, targets) and are left out.
 */
function itemWrite(table: string, key: Record<string, unknown>, tally: OperationTally): void {
  if (countingMode() !== 'count') return;
  const parts = Object.keys(key)
    .sort()
    .map((k) => {
      const v = key[k] as unknown;
      const plain = v && typeof v === 'object' ? Object.values(v as Record<string, unknown>)[0] : v;
      return `${k}=${String(plain)}`;
    });
  tally.add(`dynamodb.item.${table} ${parts.join(',')}`);
}

/** Items a DynamoDB call reads and writes, per table, from its input (the document client's or the low-level). */
function dynamoItems(op: string, input: Input, tally: OperationTally, sign: 1 | -1 = 1): void {
  const t = input.TableName ?? '?';
  switch (op) {
    case 'GetItem':
    case 'Query':
    case 'Scan':
      tally.add(`dynamodb.read.${t}`, sign);
      return;
    case 'PutItem':
    case 'UpdateItem':
    case 'DeleteItem':
      tally.add(`dynamodb.write.${t}`, sign);
      if (op !== 'PutItem' && input.Key) itemWrite(t, input.Key, tally);
      return;
    case 'BatchWriteItem':
      for (const [table, v] of Object.entries(input.RequestItems ?? {}))
        tally.add(`dynamodb.write.${table}`, sign * lengthOf(v));
      return;
    case 'BatchGetItem':
      for (const [table, v] of Object.entries(input.RequestItems ?? {}))
        tally.add(`dynamodb.read.${table}`, sign * lengthOf(v));
      return;
    case 'TransactWriteItems':
      for (const item of input.TransactItems ?? []) {
        for (const [kind, body] of Object.entries(item)) {
          if (!body) continue;
          // A ConditionCheck reads the item; Put, Update and Delete write it.
          const key = kind === 'ConditionCheck' ? 'read' : 'write';
          tally.add(`dynamodb.${key}.${body.TableName ?? '?'}`, sign);
          if (key === 'write') tally.add('dynamodb.txwrite.items', sign);
          const k = (body as { Key?: Record<string, unknown> }).Key;
          if (kind !== 'ConditionCheck' && k) itemWrite(body.TableName ?? '?', k, tally);
        }
      }
      return;
    case 'TransactGetItems':
      for (const item of input.TransactItems ?? []) {
        const body = item.Get;
        if (body) tally.add(`dynamodb.read.${body.TableName ?? '?'}`, sign);
      }
      return;
  }
}

type Stack = {
  add(
    mw: (
      next: (args: unknown) => Promise<unknown>,
      context: { clientName?: string; commandName?: string },
    ) => (args: unknown) => Promise<unknown>,
    options: { step: 'initialize'; name: string; priority?: 'high' | 'low' | 'normal'; override?: boolean },
  ): void;
};

/**
 * Adds the counting middleware to client (a no-op when counting is off) and answers the client. At the initialize
 * step, so a command is counted once however often the SDK retries it; for BatchWriteItem and BatchGetItem the
 * items returned unprocessed are taken off again (the caller's resend counts them when they are written).
 */
export function counted<C extends { middlewareStack: unknown }>(client: C): C {
  if (countingMode() === 'off') return client;
  const stack = client.middlewareStack as Stack;
  stack.add(
    (next, context) => async (args) => {
      const service = SERVICES[context.clientName ?? ''] ?? (context.clientName ?? 'unknown').toLowerCase();
      const op = (context.commandName ?? 'Unknown').replace(/Command$/, '');
      const tally = operationTally();
      const input = ((args as { input?: Input }).input ?? {}) as Input;
      tally.add(`${service}.op.${op}`);
      if (service === 'dynamodb') dynamoItems(op, input, tally);
      const result = (await next(args)) as { output?: Record<string, unknown> };
      if (service === 'dynamodb') {
        const out = result.output ?? {};
        if (op === 'BatchWriteItem')
          dynamoItems(op, { RequestItems: out.UnprocessedItems as Items }, tally, -1);
        if (op === 'BatchGetItem') dynamoItems(op, { RequestItems: out.UnprocessedKeys as Items }, tally, -1);
        if ((op === 'Query' || op === 'Scan') && typeof out.Count === 'number')
          tally.add('dynamodb.returned.items', out.Count);
      }
      return result;
    },
    { step: 'initialize', name: 'otaOperationCounter', priority: 'high', override: true },
  );
  return client;
}
