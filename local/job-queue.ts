/**
 * Local stand-in for the background jobs queue (SQS with a dead-letter queue on AWS) and its event source mapping
 * to the jobs-worker function, so the local cloud runs the same worker code the same way:
 *  - SendMessage over HTTPS in SQS's JSON protocol (x-amz-target AmazonSQS.SendMessage), SigV4 verified, 256 KiB
 *    message limit, so the functions' real SqsJobQueue adapter talks to it unchanged;
 *  - one message per invocation, hidden for the visibility timeout while it runs, deleted when the handler
 *    answers without a batch item failure, otherwise visible again after the visibility timeout; after
 *    maxReceiveCount receives it goes to the dead-letter file instead;
 *  - the handler runs in a worker thread (job-thread.ts) with the function's timeout enforced from the end of its
 *    init phase: an invocation still running at its deadline is stopped (the thread is terminated, the next
 *    invocation cold-starts), not left running, and its message is redelivered after the visibility timeout.
 * Messages are kept in memory: a restart of the local cloud loses queued jobs (publish or cancel again re-sends).
 */
import { createHash, randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import {
  type OperationDelta,
  operationTally,
  recordOperation,
} from '../lambdas/adapters/operation-counter.js';
import { FUNCTION_SETTINGS } from '../lambdas/core/functions.js';
import { type MetricsSink, splitMetrics } from './lambda-runtime.js';
import { closeServer, listen } from './listen.js';
import { parseAuthorization, SigV4Error, verifySigV4 } from './sigv4.js';

export interface LocalJobQueueProps {
  readonly port: number;
  readonly key: string;
  readonly cert: string;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  readonly region: string;
  /** The jobs-worker function's timeout (AWS: 15 minutes). @default FUNCTION_SETTINGS['jobs-worker'] */
  readonly timeoutMs?: number;
  /** @default timeoutMs + 60 s (AWS: at least the function timeout) */
  readonly visibilityTimeoutMs?: number;
  /** Receives before a message goes to the dead-letter file. @default 5 */
  readonly maxReceiveCount?: number;
  readonly deadLetterFile: string;
  /** @default JSON lines on stderr */
  readonly log?: (level: 'WARN' | 'ERROR', message: string, extra: Record<string, unknown>) => void;
  /** The EMF records the jobs-worker prints (lambda-runtime.ts onMetrics). @default output not inspected */
  readonly onMetrics?: MetricsSink;
}

export interface JobQueueStats {
  sent: number;
  invocations: number;
  /** Invocations stopped at the timeout or by crash(). */
  stopped: number;
  failed: number;
  deadLettered: number;
}

export interface LocalJobQueue {
  readonly url: string;
  readonly queueUrl: string;
  readonly stats: Readonly<JobQueueStats>;
  /**
   * Fault injection: stops the invocation in flight now, as a crash would (the sandbox is terminated; its message
   * is redelivered after the visibility timeout). False when none was running.
   */
  crash(): boolean;
  /** Resolves once no message is queued or in flight. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

interface Message {
  readonly id: string;
  readonly body: string;
  receives: number;
  visibleAt: number;
}

const MAX_MESSAGE_BYTES = 256 * 1024;

export async function startLocalJobQueue(props: LocalJobQueueProps): Promise<LocalJobQueue> {
  const timeoutMs = props.timeoutMs ?? FUNCTION_SETTINGS['jobs-worker'].timeoutSeconds * 1000;
  const visibilityMs = props.visibilityTimeoutMs ?? timeoutMs + 60_000;
  const maxReceives = props.maxReceiveCount ?? 5;
  const log =
    props.log ??
    ((level, message, extra) => process.stderr.write(`${JSON.stringify({ level, message, ...extra })}\n`));
  const messages: Message[] = [];
  const stats: JobQueueStats = { sent: 0, invocations: 0, stopped: 0, failed: 0, deadLettered: 0 };
  let crashCurrent: (() => void) | undefined;
  let stopped = false;
  let inFlight = false;
  let wake: (() => void) | undefined;
  let queueUrl = '';

  const server = createServer({ key: props.key, cert: props.cert, minVersion: 'TLSv1.2' }, (req, res) => {
    handle(req, res).catch((err: Error & { statusCode?: number }) =>
      answer(res, err.statusCode ?? 400, { __type: 'InvalidParameterValue', message: err.message }),
    );
  });
  async function handle(req: IncomingMessage, res: ServerResponse) {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    try {
      verifySigV4(
        req,
        parseAuthorization(req),
        {
          rawPath: q < 0 ? url : url.slice(0, q),
          query: new Map(new URLSearchParams(q < 0 ? '' : url.slice(q + 1))),
          body,
        },
        { credentials: props.credentials, region: props.region, service: 'sqs' },
      );
    } catch (err) {
      if (!(err instanceof SigV4Error)) throw err;
      return answer(res, 403, { __type: 'InvalidClientTokenId', message: err.message });
    }
    if (req.method !== 'POST' || req.headers['x-amz-target'] !== 'AmazonSQS.SendMessage') {
      return answer(res, 400, { __type: 'UnsupportedOperation', message: 'Only SendMessage is emulated' });
    }
    const input = JSON.parse(body.toString('utf8')) as { QueueUrl?: string; MessageBody?: string };
    if (input.QueueUrl !== queueUrl) {
      return answer(res, 400, { __type: 'QueueDoesNotExist', message: 'The specified queue does not exist' });
    }
    if (typeof input.MessageBody !== 'string' || Buffer.byteLength(input.MessageBody) > MAX_MESSAGE_BYTES) {
      return answer(res, 400, {
        __type: 'InvalidParameterValue',
        message: 'MessageBody missing or over 256 KiB',
      });
    }
    const id = randomUUID();
    messages.push({ id, body: input.MessageBody, receives: 0, visibleAt: Date.now() });
    stats.sent++;
    wake?.();
    answer(res, 200, {
      MessageId: id,
      MD5OfMessageBody: createHash('md5').update(input.MessageBody).digest('hex'),
    });
  }
  await listen(server, props.port);
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  queueUrl = `${url}/000000000000/fleet-ota-jobs`;

  let worker: Worker | undefined;
  let seq = 0;
  function sandbox(): Worker {
    if (!worker) {
      // Loader hooks (tsx) are per thread and not inherited: register them in the thread, then load the sandbox.
      const entry = new URL('./job-thread.ts', import.meta.url).href;
      const tsx = import.meta.resolve('tsx/esm/api');
      worker = new Worker(
        `import(${JSON.stringify(tsx)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`,
        { eval: true, stdout: props.onMetrics !== undefined },
      );
      if (props.onMetrics) splitMetrics(worker, 'jobs-worker', props.onMetrics);
      worker.unref();
    }
    return worker;
  }
  function kill() {
    const w = worker;
    worker = undefined;
    void w?.terminate();
  }

  /** One invocation: true when the handler succeeded for the message. */
  function invoke(m: Message): Promise<boolean> {
    const id = ++seq;
    const event = {
      Records: [
        {
          messageId: m.id,
          receiptHandle: `${m.id}#${m.receives}`,
          body: m.body,
          attributes: { ApproximateReceiveCount: String(m.receives) },
          eventSource: 'aws:sqs',
          eventSourceARN: `arn:aws:sqs:${props.region}:000000000000:fleet-ota-jobs`,
        },
      ],
    };
    const w = sandbox();
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        crashCurrent = undefined;
        clearTimeout(timer);
        w.off('message', onMessage);
        w.off('error', onError);
        resolve(ok);
      };
      const stop = (why: string) => {
        stats.stopped++;
        log('WARN', `jobs-worker invocation stopped: ${why}`, { messageId: m.id, timeoutMs });
        kill();
        done(false);
      };
      // Lambda's init phase may take 10 s and does not count against the timeout, which starts with the handler.
      let timer = setTimeout(() => stop('init timeout'), 10_000 + timeoutMs);
      crashCurrent = () => stop('crash injected');
      const onMessage = (msg: {
        id: number;
        started?: boolean;
        result?: { batchItemFailures?: unknown[] };
        error?: string;
        operations?: OperationDelta;
      }) => {
        if (msg.id !== id) return;
        operationTally().merge(msg.operations, 'jobs-worker');
        if (msg.started) {
          clearTimeout(timer);
          timer = setTimeout(() => stop('timeout'), timeoutMs);
          return;
        }
        if (msg.error !== undefined || (msg.result?.batchItemFailures?.length ?? 0) > 0) {
          stats.failed++;
          log('WARN', 'jobs-worker invocation failed', {
            messageId: m.id,
            error: msg.error ?? 'batch item failure',
          });
          return done(false);
        }
        done(true);
      };
      const onError = (err: Error) => {
        stats.failed++;
        log('ERROR', 'jobs-worker sandbox crashed', { error: err.message });
        kill();
        done(false);
      };
      w.on('message', onMessage);
      w.on('error', onError);
      stats.invocations++;
      // What the SQS event source mapping does for this message: receive it, invoke the function (and delete it on
      // success, below).
      recordOperation('sqs.op.ReceiveMessage');
      recordOperation('lambda.invoke.jobs-worker');
      w.postMessage({ id, event, timeoutMs });
    });
  }

  const loop = (async () => {
    while (!stopped) {
      const now = Date.now();
      const next = messages.find((m) => m.visibleAt <= now);
      if (!next) {
        const soonest = Math.min(...messages.map((m) => m.visibleAt), now + 1000);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, Math.max(10, soonest - now)).unref();
        });
        wake = undefined;
        continue;
      }
      if (next.receives >= maxReceives) {
        messages.splice(messages.indexOf(next), 1);
        stats.deadLettered++;
        appendFileSync(
          props.deadLetterFile,
          `${JSON.stringify({ at: new Date().toISOString(), body: next.body })}\n`,
        );
        log('ERROR', 'job moved to the dead-letter queue', { messageId: next.id, receives: next.receives });
        continue;
      }
      next.receives++;
      next.visibleAt = now + visibilityMs;
      inFlight = true;
      const ok = await invoke(next);
      inFlight = false;
      if (ok) {
        messages.splice(messages.indexOf(next), 1);
        recordOperation('sqs.op.DeleteMessage');
      }
    }
  })();

  return {
    url,
    queueUrl,
    stats,
    crash() {
      if (!crashCurrent) return false;
      crashCurrent();
      return true;
    },
    async idle() {
      while (messages.length > 0 || inFlight) await new Promise((r) => setTimeout(r, 50));
    },
    async stop() {
      stopped = true;
      wake?.();
      kill();
      await closeServer(server);
      await Promise.race([loop, new Promise((r) => setTimeout(r, 2000))]);
    },
  };
}

function answer(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.0',
    'content-length': String(Buffer.byteLength(text)),
    'x-amzn-requestid': randomUUID(),
  });
  res.end(text);
}
