/**
 * Stand-in Lambda handlers that break AWS's limits on purpose, run by the local Lambda runtime in worker threads
 * (test/integration/aws-limits.test.ts): one that never ends, ones that outgrow their memory, one that answers a
 * body of the size asked for, one that reports its context.
 */
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';

/** Appends a byte to the file named in the body every 20 ms, and never returns. */
export async function neverEnds(event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  const { heartbeat } = JSON.parse(event.body ?? '{}') as { heartbeat: string };
  setInterval(() => appendFileSync(heartbeat, '.'), 20);
  return new Promise(() => {});
}

/** Holds 8 MiB Buffers (off V8's heap, counted by Lambda all the same) until it has 512 MiB. */
export async function offHeapHog(): Promise<APIGatewayProxyResult> {
  const held: Buffer[] = [];
  while (held.length < 64) {
    held.push(Buffer.alloc(8 * 1024 * 1024, 1));
    await sleep(5);
  }
  return { statusCode: 200, body: String(held.length) };
}

/** Holds JavaScript arrays until it has about 1 GB. */
export async function heapHog(): Promise<APIGatewayProxyResult> {
  const held: number[][] = [];
  while (held.length < 1000) {
    held.push(Array.from({ length: 125_000 }, (_, i) => i + 0.5));
    if (held.length % 10 === 0) await sleep(1);
  }
  return { statusCode: 200, body: String(held.length) };
}

/** Answers a body of ?bytes= bytes. */
export async function sized(event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  return { statusCode: 200, body: 'x'.repeat(Number(event.queryStringParameters?.bytes ?? 0)) };
}

/** Answers the size of the body it was given, its context and which thread it ran in. */
export async function info(event: APIGatewayProxyEvent, context: Context): Promise<APIGatewayProxyResult> {
  const { threadId } = await import('node:worker_threads');
  return {
    statusCode: 200,
    body: JSON.stringify({
      bodyBytes: Buffer.byteLength(event.body ?? ''),
      memory: context.memoryLimitInMB,
      remainingMs: context.getRemainingTimeInMillis(),
      threadId,
    }),
  };
}
