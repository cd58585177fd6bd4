/**
 * TransactWriteItems for the local DynamoDB (dynalite has no transactions). The front (storage-emulators.ts) hands
 * the verified request here; it is carried out with dynalite's own single-item calls:
 *  - transactions that share an item run one at a time (a lock per item key, taken in key order), so two never
 *    interleave on an item, while transactions on different items run side by side;
 *  - the writes are applied in order, each with its own condition, each returning the item's previous value;
 *  - when one fails its condition, the ones already applied are put back to their previous values, and the answer
 *    is TransactionCanceledException with a CancellationReasons entry per item, as DynamoDB answers.
 * What it does not give: isolation from plain (non-transactional) writes landing between two of its steps, and
 * atomicity if the process dies mid-way. The backend's only transaction puts the update item (conditional) first
 * and then ADDs to counter shards (unconditional, written by nothing else), so neither gap can count a change that
 * did not happen. ConditionCheck items are refused (nothing uses them).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
type Json = Record<string, unknown>;

interface Reply {
  readonly status: number;
  readonly body: Json;
}

/** Calls dynalite's request handler in-process with one JSON operation and collects its answer. */
function call(inner: readonly Handler[], headers: IncomingMessage['headers'], op: string, input: Json) {
  const text = JSON.stringify(input);
  const req = Object.assign(Readable.from([Buffer.from(text)]), {
    headers: {
      ...headers,
      'x-amz-target': `DynamoDB_20120810.${op}`,
      'content-length': String(Buffer.byteLength(text)),
    },
    method: 'POST',
    url: '/',
  }) as unknown as IncomingMessage;
  return new Promise<Reply>((resolve) => {
    const chunks: Buffer[] = [];
    const res = {
      statusCode: 200,
      setHeader() {},
      getHeader() {
        return undefined;
      },
      removeHeader() {},
      writeHead(status: number) {
        this.statusCode = status;
        return this;
      },
      write(chunk: string | Buffer) {
        chunks.push(Buffer.from(chunk));
        return true;
      },
      end(chunk?: string | Buffer) {
        if (chunk) chunks.push(Buffer.from(chunk));
        const raw = Buffer.concat(chunks).toString('utf8');
        resolve({ status: this.statusCode, body: raw ? (JSON.parse(raw) as Json) : {} });
      },
    };
    for (const h of inner) h(req, res as unknown as ServerResponse);
  });
}

const OPS = { Put: 'PutItem', Update: 'UpdateItem', Delete: 'DeleteItem' } as const;

/** Key attribute names per table (a table's key schema never changes). */
const keySchemas = new Map<string, string[]>();
/** The tail of each item key's queue of transactions. */
const locks = new Map<string, Promise<void>>();

async function keyNames(inner: readonly Handler[], headers: IncomingMessage['headers'], table: string) {
  let names = keySchemas.get(table);
  if (!names) {
    const described = await call(inner, headers, 'DescribeTable', { TableName: table });
    if (described.status !== 200) return described;
    names = (described.body.Table as { KeySchema: { AttributeName: string }[] }).KeySchema.map(
      (k) => k.AttributeName,
    );
    keySchemas.set(table, names);
  }
  return names;
}

/** Runs fn holding the lock of every key (taken in sorted order, so two transactions never wait on each other). */
async function holding<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
  const sorted = [...new Set(keys)].sort();
  const released: (() => void)[] = [];
  for (const k of sorted) {
    const before = locks.get(k) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    const tail = before.then(() => mine);
    locks.set(k, tail);
    released.push(() => {
      release();
      if (locks.get(k) === tail) locks.delete(k);
    });
    await before;
  }
  try {
    return await fn();
  } finally {
    for (const r of released) r();
  }
}

/** Answers one TransactWriteItems request (status and JSON body). */
export async function transactWrite(
  inner: readonly Handler[],
  headers: IncomingMessage['headers'],
  input: { TransactItems?: Json[] },
): Promise<Reply> {
  const items = input.TransactItems ?? [];
  if (items.length === 0 || items.length > 100) {
    return invalid('TransactItems must hold 1-100 items');
  }
  const steps: { op: keyof typeof OPS; params: Json; table: string; key: Json }[] = [];
  for (const item of items) {
    const op = (Object.keys(OPS) as (keyof typeof OPS)[]).find((k) => item[k] !== undefined);
    if (!op || Object.keys(item).length !== 1)
      return invalid('Only Put, Update and Delete items are emulated');
    const params = item[op] as Json;
    const table = params.TableName as string;
    const names = await keyNames(inner, headers, table);
    if (!Array.isArray(names)) return names;
    const source = (op === 'Put' ? params.Item : params.Key) as Json;
    steps.push({ op, params, table, key: Object.fromEntries(names.map((n) => [n, source[n]])) });
  }
  return holding(
    steps.map((s) => JSON.stringify([s.table, s.key])),
    () => apply(inner, headers, steps),
  );
}

async function apply(
  inner: readonly Handler[],
  headers: IncomingMessage['headers'],
  steps: readonly { op: keyof typeof OPS; params: Json; table: string; key: Json }[],
): Promise<Reply> {
  const before: (Json | undefined)[] = [];
  for (const [i, s] of steps.entries()) {
    const { ReturnValuesOnConditionCheckFailure: _r, ...params } = s.params;
    const out = await call(inner, headers, OPS[s.op], { ...params, ReturnValues: 'ALL_OLD' });
    if (out.status === 200) {
      before.push(out.body.Attributes as Json | undefined);
      continue;
    }
    // Undo what was applied, newest first, then answer as DynamoDB does.
    for (let j = i - 1; j >= 0; j--) {
      const old = before[j];
      const t = steps[j]!;
      await call(
        inner,
        headers,
        old ? 'PutItem' : 'DeleteItem',
        old ? { TableName: t.table, Item: old } : { TableName: t.table, Key: t.key },
      );
    }
    const type = String(out.body.__type ?? '');
    if (!type.endsWith('ConditionalCheckFailedException')) return out;
    return {
      status: 400,
      body: {
        __type: 'com.amazonaws.dynamodb.v20120810#TransactionCanceledException',
        message: 'Transaction cancelled, please refer cancellation reasons for specific reasons',
        CancellationReasons: steps.map((_, j) =>
          j === i
            ? { Code: 'ConditionalCheckFailed', Message: 'The conditional request failed' }
            : { Code: 'None' },
        ),
      },
    };
  }
  return { status: 200, body: {} };
}

function invalid(message: string): Reply {
  return { status: 400, body: { __type: 'com.amazon.coral.validate#ValidationException', message } };
}
