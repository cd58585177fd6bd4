/**
 * One local Lambda instance: runs in a worker thread started by local/lambda-runtime.ts, imports one handler module
 * (its cold start) and then serves one invocation at a time, as a Lambda execution environment does. The parent
 * enforces the timeout by terminating this thread; this side enforces the memory size for what V8's heap limit
 * (resourceLimits) does not see: Buffers and other off-heap memory, which Lambda counts too.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Context } from 'aws-lambda';
import { operationTally } from '../lambdas/adapters/operation-counter.js';
import {
  type InvokeMessage,
  OUT_OF_MEMORY_EXIT,
  type WorkerData,
  type WorkerReply,
} from './lambda-runtime.js';

const data = workerData as WorkerData;
const port = parentPort!;
const limitBytes = data.memoryMb * 1024 * 1024;

function used(): number {
  // heapUsed, external and arrayBuffers are this isolate's; rss would be the whole process.
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

function watchMemory(): NodeJS.Timeout {
  const timer = setInterval(() => {
    if (used() > limitBytes) process.exit(OUT_OF_MEMORY_EXIT);
  }, 20);
  timer.unref();
  return timer;
}

function describe(err: unknown): { name: string; message: string } {
  return err instanceof Error
    ? { name: err.name, message: err.message }
    : { name: 'Error', message: String(err) };
}

type Handler = (event: unknown, context: Context) => Promise<unknown>;

async function load(): Promise<Handler> {
  const mod = (await import(data.entry)) as Record<string, unknown>;
  const handler = mod[data.exportName];
  if (typeof handler !== 'function') throw new Error(`${data.entry} exports no ${data.exportName} function`);
  return handler as Handler;
}

// Every reply carries the AWS operations counted in this thread since the last one, so the parent's tally is
// complete when an invocation's result arrives (an instance stopped at its timeout loses its last invocation's).
const reply = (message: WorkerReply) =>
  port.postMessage({ ...message, operations: operationTally().drain() });

load().then(
  (handler) => {
    port.on('message', async (message: InvokeMessage) => {
      const context: Context = {
        callbackWaitsForEmptyEventLoop: true,
        functionName: `fleet-ota-${data.fn}`,
        functionVersion: '$LATEST',
        invokedFunctionArn: `arn:aws:lambda:us-east-1:000000000000:function:fleet-ota-${data.fn}`,
        memoryLimitInMB: String(data.memoryMb),
        awsRequestId: message.requestId,
        logGroupName: `/aws/lambda/fleet-ota-${data.fn}`,
        logStreamName: 'local',
        getRemainingTimeInMillis: () => Math.max(0, message.deadline - Date.now()),
        done: () => {},
        fail: () => {},
        succeed: () => {},
      };
      const watch = watchMemory();
      try {
        const result = await handler(message.event, context);
        if (used() > limitBytes) process.exit(OUT_OF_MEMORY_EXIT);
        reply({ type: 'result', id: message.id, result });
      } catch (err) {
        reply({ type: 'error', id: message.id, error: describe(err) });
      } finally {
        clearInterval(watch);
      }
    });
    reply({ type: 'ready' });
  },
  (err: unknown) => reply({ type: 'init_error', error: describe(err) }),
);
