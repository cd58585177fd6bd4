/**
 * Local stand-in for an SQS queue (with a dead-letter queue on AWS) and its event source mapping to a function, so
 * the local cloud runs the same worker code the same way. Two run: the background jobs queue (jobs-worker) and the
 * campaign offers queue (offer-worker, lambdas/core/offer-pacing.ts).
 *  - SendMessage and SendMessageBatch over HTTPS in SQS's JSON protocol (x-amz-target AmazonSQS.*), SigV4
 *    verified, 256 KiB message limit, DelaySeconds 0-900, so the functions' real SQS adapters talk to it unchanged;
 *  - up to batchSize messages per invocation and up to maxConcurrency invocations at once, each message hidden for
 *    the visibility timeout while it runs, deleted unless the handler names it in batchItemFailures (or fails),
 *    otherwise visible again after the visibility timeout; after maxReceiveCount receives it goes to the
 *    dead-letter file instead;
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
  /** The queue's name (its URL's last part). @default fleet-ota-jobs */
  readonly name?: string;
  /**
   * Runs one invocation of the consuming function; @default the jobs-worker in this queue's own worker thread. The
   * offers queue passes an invocation of the local Lambda runtime, which enforces the function's limits itself.
   */
  readonly deliver?: (event: unknown) => Promise<unknown>;
  /** Messages per invocation (the event source's batch size). @default 1 */
  readonly batchSize?: number;
  /** Invocations at once (the event source's maximum concurrency). @default 1 */
  readonly maxConcurrency?: number;
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
  /** heapUsedBytes answered by the function's invocations (the latest 10,000), where it answers one. */
  heapSamples: number[];
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
  inFlight?: boolean;
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
  const stats: JobQueueStats = {
    sent: 0,
    invocations: 0,
    stopped: 0,
    failed: 0,
    deadLettered: 0,
    heapSamples: [],
  };
  const name = props.name ?? 'fleet-ota-jobs';
  const batchSize = props.batchSize ?? 1;
  const maxConcurrency = props.maxConcurrency ?? 1;
  let crashCurrent: (() => void) | undefined;
  let stopped = false;
  let inFlight = 0;
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
    const target = req.headers['x-amz-target'];
    if (
      req.method !== 'POST' ||
      (target !== 'AmazonSQS.SendMessage' && target !== 'AmazonSQS.SendMessageBatch')
    ) {
      return answer(res, 400, {
        __type: 'UnsupportedOperation',
        message: 'Only SendMessage and SendMessageBatch are emulated',
      });
    }
    const input = JSON.parse(body.toString('utf8')) as {
      QueueUrl?: string;
      MessageBody?: string;
      DelaySeconds?: number;
      Entries?: { Id?: string; MessageBody?: string; DelaySeconds?: number }[];
    };
    if (input.QueueUrl !== queueUrl) {
      return answer(res, 400, { __type: 'QueueDoesNotExist', message: 'The specified queue does not exist' });
    }
    const entries = target === 'AmazonSQS.SendMessage' ? [{ Id: '', ...input }] : (input.Entries ?? []);
    if (entries.length === 0 || entries.length > 10) {
      return answer(res, 400, { __type: 'InvalidParameterValue', message: 'A batch holds 1-10 entries' });
    }
    for (const e of entries) {
      const delay = e.DelaySeconds ?? 0;
      if (typeof e.MessageBody !== 'string' || Buffer.byteLength(e.MessageBody) > MAX_MESSAGE_BYTES) {
        return answer(res, 400, {
          __type: 'InvalidParameterValue',
          message: 'MessageBody missing or over 256 KiB',
        });
      }
      if (!Number.isInteger(delay) || delay < 0 || delay > 900) {
        return answer(res, 400, { __type: 'InvalidParameterValue', message: 'DelaySeconds must be 0-900' });
      }
    }
    const sent = entries.map((e) => {
      const id = randomUUID();
      const text = e.MessageBody!;
      messages.push({ id, body: text, receives: 0, visibleAt: Date.now() + (e.DelaySeconds ?? 0) * 1000 });
      stats.sent++;
      return { Id: e.Id, MessageId: id, MD5OfMessageBody: createHash('md5').update(text).digest('hex') };
    });
    wake?.();
    if (target === 'AmazonSQS.SendMessage') {
      const { Id: _id, ...one } = sent[0]!;
      return answer(res, 200, one);
    }
    answer(res, 200, { Successful: sent, Failed: [] });
  }
  await listen(server, props.port);
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  queueUrl = `${url}/000000000000/${name}`;

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

  /** The SQS event of a batch, as Lambda's event source mapping sends it. */
  function eventOf(batch: readonly Message[]) {
    return {
      Records: batch.map((m) => ({
        messageId: m.id,
        receiptHandle: `${m.id}#${m.receives}`,
        body: m.body,
        attributes: { ApproximateReceiveCount: String(m.receives) },
        eventSource: 'aws:sqs',
        eventSourceARN: `arn:aws:sqs:${props.region}:000000000000:${name}`,
      })),
    };
  }

  /** One invocation of the function given by `deliver`: the ids of the messages that succeeded. */
  async function deliverBatch(batch: readonly Message[]): Promise<Set<string>> {
    stats.invocations++;
    try {
      const result = (await props.deliver!(eventOf(batch))) as
        | { batchItemFailures?: { itemIdentifier: string }[]; heapUsedBytes?: number }
        | undefined;
      if (typeof result?.heapUsedBytes === 'number') {
        stats.heapSamples.push(result.heapUsedBytes);
        if (stats.heapSamples.length > 10_000) stats.heapSamples.shift();
      }
      const failed = new Set((result?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
      if (failed.size > 0) stats.failed++;
      return new Set(batch.map((m) => m.id).filter((i) => !failed.has(i)));
    } catch (err) {
      stats.failed++;
      log('WARN', `${name} invocation failed`, { error: err instanceof Error ? err.message : String(err) });
      return new Set();
    }
  }

  /** One invocation in this queue's jobs-worker thread: true when the handler succeeded for the message. */
  function invoke(m: Message): Promise<boolean> {
    const id = ++seq;
    const event = eventOf([m]);
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
      // The event source mapping invokes the function (its receive and delete are counted in run()); with
      // `deliver`, the local Lambda runtime counts the invocation itself.
      recordOperation('lambda.invoke.jobs-worker');
      w.postMessage({ id, event, timeoutMs });
    });
  }

  async function run(batch: Message[]): Promise<void> {
    // What the SQS event source mapping does for a batch: one receive, the invocation, one (batch) delete of the
    // messages that succeeded.
    recordOperation('sqs.op.ReceiveMessage');
    const ok = props.deliver
      ? await deliverBatch(batch)
      : new Set((await invoke(batch[0]!)) ? [batch[0]!.id] : []);
    for (const m of batch) {
      m.inFlight = false;
      if (ok.has(m.id)) messages.splice(messages.indexOf(m), 1);
    }
    if (ok.size > 0) recordOperation('sqs.op.DeleteMessage');
  }

  const loop = (async () => {
    while (!stopped) {
      const now = Date.now();
      const visible =
        inFlight < maxConcurrency ? messages.filter((m) => !m.inFlight && m.visibleAt <= now) : [];
      const dead = visible.filter((m) => m.receives >= maxReceives);
      for (const m of dead) {
        messages.splice(messages.indexOf(m), 1);
        stats.deadLettered++;
        appendFileSync(
          props.deadLetterFile,
          `${JSON.stringify({ at: new Date().toISOString(), body: m.body })}\n`,
        );
        log('ERROR', `message moved to the dead-letter queue of ${name}`, {
          messageId: m.id,
          receives: m.receives,
        });
      }
      const batch = visible.filter((m) => m.receives < maxReceives).slice(0, batchSize);
      if (batch.length === 0) {
        const pending = messages.filter((m) => !m.inFlight).map((m) => m.visibleAt);
        const soonest = Math.min(...pending, now + 1000);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, Math.max(10, soonest - now)).unref();
        });
        wake = undefined;
        continue;
      }
      for (const m of batch) {
        m.receives++;
        m.visibleAt = now + visibilityMs;
        m.inFlight = true;
      }
      inFlight++;
      void run(batch).finally(() => {
        inFlight--;
        wake?.();
      });
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
      while (messages.length > 0 || inFlight > 0) await new Promise((r) => setTimeout(r, 50));
    },
    async stop() {
      stopped = true;
      wake?.();
      kill();
      await closeServer(server);
      // At most 2 s for the loop to notice; the timer is cleared once it has, so it keeps no process alive.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([loop, new Promise((r) => (timer = setTimeout(r, 2000)))]);
      clearTimeout(timer);
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
