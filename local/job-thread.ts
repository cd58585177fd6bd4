/**
 * One jobs-worker "sandbox" of the local queue stand-in (job-queue.ts): a worker thread that imports the real
 * lambdas/jobs-worker/handler.ts once (a cold start) and runs one invocation at a time. The parent terminates the
 * thread when an invocation outlives the function's timeout, which stops the handler as Lambda would.
 */
import { parentPort } from 'node:worker_threads';
import { operationTally } from '../lambdas/adapters/operation-counter.js';

type Handler = (event: unknown, context: unknown) => Promise<unknown>;
const handler: Promise<Handler> = import('../lambdas/jobs-worker/handler.js').then(
  (m) => m.handler as Handler,
);

parentPort!.on('message', async (msg: { id: number; event: unknown; timeoutMs: number }) => {
  // As on Lambda, the init phase (the module import of a cold start) does not count against the timeout.
  const run = await handler.catch(() => undefined);
  const deadline = Date.now() + msg.timeoutMs;
  parentPort!.postMessage({ id: msg.id, started: true });
  const context = {
    functionName: 'jobs-worker',
    awsRequestId: `local-${msg.id}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  try {
    if (!run) throw new Error('the jobs-worker handler failed to load');
    const result = await run(msg.event, context);
    parentPort!.postMessage({ id: msg.id, result, operations: operationTally().drain() });
  } catch (err) {
    parentPort!.postMessage({
      id: msg.id,
      error: err instanceof Error ? err.message : String(err),
      operations: operationTally().drain(),
    });
  }
});
