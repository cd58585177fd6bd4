/**
 * The one wrapper every function's entry point goes through: metrics flushed exactly when the invocation recorded
 * some (never the "No application metrics to publish" warning), the Lambda context on log lines, errors passed on.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

process.env.POWERTOOLS_METRICS_NAMESPACE ??= 'FleetOtaTest';
process.env.POWERTOOLS_SERVICE_NAME ??= 'unit';
const { instrumented } = await import('../../lambdas/adapters/observability.js');
const { logger, metrics } = await import('../../lambdas/adapters/runtime.js');

/** Everything written to stdout, stderr and the console while fn runs. */
async function captured(fn: () => Promise<unknown>): Promise<string> {
  const chunks: string[] = [];
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  const methods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const saved = methods.map((m) => console[m]);
  process.stdout.write = ((c: string | Uint8Array) =>
    chunks.push(String(c)) > 0) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) =>
    chunks.push(String(c)) > 0) as typeof process.stderr.write;
  for (const m of methods) console[m] = (...args: unknown[]) => void chunks.push(args.map(String).join(' '));
  try {
    await fn().catch(() => undefined);
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    methods.forEach((m, i) => {
      console[m] = saved[i]!;
    });
  }
  return chunks.join('\n');
}

const context = {
  functionName: 'vehicle-api',
  functionVersion: '1',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:vehicle-api',
  memoryLimitInMB: '512',
  awsRequestId: 'req-1',
  getRemainingTimeInMillis: () => 10_000,
} as never;

describe('instrumented handlers', { timeout: 30_000 }, () => {
  test('an invocation that records no metric publishes nothing and logs no warning', async () => {
    const handler = instrumented(async () => 'read only');
    const output = await captured(() => handler({}, context));
    assert.doesNotMatch(output, /No application metrics/);
    assert.doesNotMatch(output, /_aws/); // no EMF document
  });

  test('an invocation that records metrics publishes them once, as EMF', async () => {
    const handler = instrumented(async () => {
      metrics.addMetric('DownloadUrlsIssued', 'Count', 1);
      return 'ok';
    });
    const output = await captured(() => handler({}, context));
    assert.match(output, /"DownloadUrlsIssued":1/);
    assert.equal(output.match(/"_aws"/g)?.length, 1);
    assert.equal(metrics.hasStoredMetrics(), false);
  });

  test('metrics are flushed and the error passed on when the handler throws', async () => {
    const handler = instrumented(async () => {
      metrics.addMetric('Refused', 'Count', 1);
      throw new Error('boom');
    });
    let thrown: unknown;
    const output = await captured(() =>
      handler({}, context).catch((e: unknown) => {
        thrown = e;
      }),
    );
    assert.equal((thrown as Error).message, 'boom');
    assert.match(output, /"Refused":1/);
  });

  test('log lines carry the Lambda context', async () => {
    const handler = instrumented(async () => logger.warn('inside'));
    const output = await captured(() => handler({}, context));
    const line = output.split('\n').find((l) => l.includes('"inside"'));
    assert.ok(line, output);
    assert.equal(JSON.parse(line).function_request_id, 'req-1');
  });
});
