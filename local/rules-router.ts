/**
 * Local stand-in for the path that feeds vehicle progress and status messages to the ingest function on AWS: the IoT
 * topic rule, whose SQS action sends each message to the ingest queue, and that queue's event source mapping, which
 * invokes the function with batches (lib/fleet-ingest.ts). The AWS rule is protocol/topics.ts topicRuleSql():
 *
 *   SELECT encode(*, 'base64') AS payload, topic(3) AS vin, topic(4) AS channel, timestamp() AS received_at
 *   FROM 'vehicle/updates/+/+' WHERE topic(4) = 'progress' OR topic(4) = 'status'
 *
 * so each matching message becomes { payload: base64 of the raw bytes, vin, channel, received_at: epoch ms }, the
 * body of one SQS message. As on AWS (INGEST_EVENT_SOURCE, the one source for both):
 *  - the publisher never waits for the function;
 *  - the function gets up to `batchSize` messages per invocation, in SQS's event shape; a batch smaller than that
 *    waits at most `batchWindowMs` for more (Lambda's MaximumBatchingWindowInSeconds), and never while the function
 *    could take a full batch at once;
 *  - a message the function names in batchItemFailures, or every message of an invocation that threw, is received
 *    again after the visibility timeout, and dead-lettered (memory, and optionally a JSON-lines file standing in for
 *    the dead-letter queue) once it has been received `maxReceiveCount` times;
 *  - messages of one vehicle may be handled out of order (SQS standard queues, which the SQS rule action requires),
 *    which the ingest state machine tolerates (sequence numbers, monotonic phases).
 *
 * Fairness: each vehicle has a queue of its own, served round-robin, and holds at most `maxQueuedPerVehicle`
 * events; beyond that its messages are dropped (counted as throttled, not dead-lettered: they are the flood, not
 * a failure; IoT Core caps a connection's publishes per second). One vehicle's flood of 14,000 messages used to
 * fill the single shared queue, so another vehicle's acknowledged status was dead-lettered (issue 18 #8).
 */
import { randomUUID } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import { recordOperation } from '../lambdas/adapters/operation-counter.js';
import { INGEST_EVENT_SOURCE } from '../lambdas/core/functions.js';
import { matchTopicRule, type TopicRuleEvent } from '../protocol/topics.js';

export type { TopicRuleEvent };

/** A message as the broker hands it over (structurally the broker's VehicleMessage). */
export interface RoutedMessage {
  readonly topic: string;
  readonly payload: Buffer;
  /** Broker receive time, epoch ms: becomes received_at. */
  readonly receivedAt: number;
}

/** Where messages come from: the local broker's onVehicleMessage. */
export interface RoutedMessageSource {
  onVehicleMessage(listener: (message: RoutedMessage) => void): () => void;
}

/** One message of an ingest batch, as Lambda's SQS event source delivers it (the fields the handler may read). */
export interface IngestQueueRecord {
  readonly messageId: string;
  readonly receiptHandle: string;
  /** The rule event, JSON. */
  readonly body: string;
  readonly attributes: { readonly ApproximateReceiveCount: string; readonly SentTimestamp: string };
  readonly eventSource: 'aws:sqs';
  readonly eventSourceARN: string;
}

export interface IngestQueueEvent {
  readonly Records: readonly IngestQueueRecord[];
}

export interface DeadLetter {
  readonly event: TopicRuleEvent;
  readonly error: string;
  readonly failedAt: string;
  /** Times the message was received before it was dead-lettered (0: refused before it was queued). */
  readonly receives: number;
}

export interface RulesRouterStats {
  /** Messages the function handled (not named among the batch's failures). */
  readonly delivered: number;
  /** Messages dead-lettered (received maxReceiveCount times without success, or refused with the queue full). */
  readonly failed: number;
  /** Dead letters held in memory. */
  readonly deadLetters: number;
  /** Messages queued, in a running invocation, or waiting to be received again. */
  readonly pending: number;
  /** Events dropped because their vehicle already had maxQueuedPerVehicle waiting. */
  readonly throttled: number;
  /** Invocations of the function (one per batch). */
  readonly invocations: number;
  /** Receives after the first (messages the function failed, delivered again). */
  readonly redelivered: number;
}

export interface RulesRouterProps {
  readonly source: RoutedMessageSource;
  /** The rule's name: Basic Ingest messages to `$aws/rules/<ruleName>/...` reach it too. @default none */
  readonly ruleName?: string;
  /**
   * One invocation of the function with a batch; it answers `{ batchItemFailures: [{ itemIdentifier }] }` for the
   * messages it could not handle (anything else: all handled), or throws (none handled).
   */
  readonly invoke: (event: IngestQueueEvent) => Promise<unknown> | unknown;
  /** Invocations running at once (the event source's maximum concurrency). @default 4 */
  readonly concurrency?: number;
  /** @default INGEST_EVENT_SOURCE.batchSize */
  readonly batchSize?: number;
  /** @default INGEST_EVENT_SOURCE.maxBatchingWindowSeconds in ms */
  readonly batchWindowMs?: number;
  /** @default INGEST_EVENT_SOURCE.maxReceiveCount */
  readonly maxReceiveCount?: number;
  /** How long a failed message stays invisible before it is received again. @default the queue's visibility timeout */
  readonly visibilityTimeoutMs?: number;
  /** Events waiting beyond the running ones; further events are dead-lettered at once. @default 10000 */
  readonly maxQueued?: number;
  /** Events one vehicle may have waiting; its further events are dropped as throttled. @default 1000 */
  readonly maxQueuedPerVehicle?: number;
  /** Appends each dead letter as one JSON line (the local dead-letter queue). @default none */
  readonly deadLetterFile?: string;
  /** Dead letters kept in memory, oldest dropped first. @default 1000 */
  readonly maxDeadLettersInMemory?: number;
  /** @default silent */
  readonly log?: { warn(message: string, extra?: Record<string, unknown>): void };
}

export interface RulesRouter {
  stats(): RulesRouterStats;
  deadLetters(): readonly DeadLetter[];
  /** Resolves once nothing is queued, running or waiting to be received again. */
  idle(): Promise<void>;
  /** Stops taking messages and waits for the ones already taken. */
  stop(): Promise<void>;
}

/** The rule's SELECT and WHERE for one message, or undefined when the rule does not match the topic. */
export function toTopicRuleEvent(message: RoutedMessage, ruleName?: string): TopicRuleEvent | undefined {
  const match = matchTopicRule(message.topic, ruleName);
  if (!match) return undefined;
  return {
    payload: message.payload.toString('base64'),
    vin: match.vin,
    channel: match.channel,
    received_at: message.receivedAt,
  };
}

/** A message in the ingest queue. */
interface Queued {
  readonly id: string;
  readonly event: TopicRuleEvent;
  readonly body: string;
  readonly sentAt: number;
  /** When it became visible (queued, or visible again after a failure). */
  visibleAt: number;
  receives: number;
}

const QUEUE_ARN = 'arn:aws:sqs:local:000000000000:ota-local-vehicle-messages';

export function startRulesRouter(props: RulesRouterProps): RulesRouter {
  const concurrency = Math.max(1, props.concurrency ?? 4);
  const batchSize = Math.max(1, props.batchSize ?? INGEST_EVENT_SOURCE.batchSize);
  const windowMs = Math.max(0, props.batchWindowMs ?? INGEST_EVENT_SOURCE.maxBatchingWindowSeconds * 1000);
  const maxReceives = Math.max(1, props.maxReceiveCount ?? INGEST_EVENT_SOURCE.maxReceiveCount);
  const visibilityMs = props.visibilityTimeoutMs ?? INGEST_EVENT_SOURCE.visibilityTimeoutSeconds * 1000;
  const maxQueued = props.maxQueued ?? 10_000;
  const maxPerVehicle = props.maxQueuedPerVehicle ?? 1000;
  const maxDeadLetters = props.maxDeadLettersInMemory ?? 1000;
  /** Per-VIN queues, and the VINs that have events waiting, in the order they are served. */
  const queues = new Map<string, Queued[]>();
  const turns: string[] = [];
  let queued = 0;
  /** Messages in a running invocation, and messages invisible until they are received again. */
  let inFlight = 0;
  let invisible = 0;
  const dead: DeadLetter[] = [];
  let running = 0;
  let delivered = 0;
  let failed = 0;
  let throttled = 0;
  let invocations = 0;
  let redelivered = 0;
  let windowTimer: NodeJS.Timeout | undefined;
  /** Messages waiting to be received again, by their timer. */
  const retries = new Map<NodeJS.Timeout, Queued>();
  const enqueue = (m: Queued) => {
    let q = queues.get(m.event.vin);
    if (!q) {
      q = [];
      queues.set(m.event.vin, q);
      turns.push(m.event.vin);
    }
    q.push(m);
    queued++;
  };
  /** The next vehicle's oldest message; that vehicle goes to the back of the line. */
  const dequeue = (): Queued | undefined => {
    const vin = turns.shift();
    if (vin === undefined) return undefined;
    const q = queues.get(vin)!;
    const m = q.shift()!;
    queued--;
    if (q.length > 0) turns.push(vin);
    else queues.delete(vin);
    return m;
  };
  /** When the oldest visible message became visible (only asked with fewer than a batch queued). */
  const oldestVisibleAt = (): number => {
    let oldest = Number.POSITIVE_INFINITY;
    for (const q of queues.values()) for (const m of q) oldest = Math.min(oldest, m.visibleAt);
    return oldest;
  };
  let fileWrites: Promise<void> = Promise.resolve();
  let idleWaiters: Array<() => void> = [];

  const deadLetter = (m: Pick<Queued, 'event' | 'receives'>, error: unknown) => {
    failed++;
    const entry: DeadLetter = {
      event: m.event,
      error: error instanceof Error ? error.message : String(error),
      failedAt: new Date().toISOString(),
      receives: m.receives,
    };
    dead.push(entry);
    if (dead.length > maxDeadLetters) dead.shift();
    props.log?.warn('vehicle message dead-lettered', {
      vin: m.event.vin,
      receives: m.receives,
      error: entry.error,
    });
    const file = props.deadLetterFile;
    if (file) {
      fileWrites = fileWrites
        .then(() => appendFile(file, `${JSON.stringify(entry)}\n`))
        .catch((err) => props.log?.warn('dead-letter file write failed', { error: String(err) }));
    }
  };

  const settleIdle = () => {
    if (running > 0 || queued > 0 || invisible > 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    void fileWrites.then(() => {
      for (const resolve of waiters) resolve();
    });
  };

  /** A message the invocation did not handle: received again after the visibility timeout, or dead-lettered. */
  const failedReceive = (m: Queued, error: unknown) => {
    if (m.receives >= maxReceives) {
      deadLetter(m, error);
      return;
    }
    invisible++;
    const timer = setTimeout(() => {
      retries.delete(timer);
      invisible--;
      m.visibleAt = Date.now();
      enqueue(m);
      pump();
    }, visibilityMs);
    timer.unref();
    retries.set(timer, m);
  };

  const run = (batch: Queued[]) => {
    running++;
    invocations++;
    inFlight += batch.length;
    // What the event source mapping does for a batch: one receive, the invocation, one batch delete.
    recordOperation('sqs.op.ReceiveMessage');
    const event: IngestQueueEvent = {
      Records: batch.map((m) => ({
        messageId: m.id,
        receiptHandle: `${m.id}#${m.receives}`,
        body: m.body,
        attributes: { ApproximateReceiveCount: String(m.receives), SentTimestamp: String(m.sentAt) },
        eventSource: 'aws:sqs',
        eventSourceARN: QUEUE_ARN,
      })),
    };
    // The microtask hop keeps a synchronous invoke (or one that throws synchronously) off the publisher's path.
    void Promise.resolve()
      .then(() => props.invoke(event))
      .then(
        (result) => {
          const failures = (result as { batchItemFailures?: { itemIdentifier?: unknown }[] } | undefined)
            ?.batchItemFailures;
          const ids = new Set(Array.isArray(failures) ? failures.map((f) => f?.itemIdentifier) : []);
          let ok = 0;
          for (const m of batch) {
            if (ids.has(m.id)) failedReceive(m, new Error('the function reported the message as failed'));
            else ok++;
          }
          delivered += ok;
          if (ok > 0) recordOperation('sqs.op.DeleteMessageBatch');
        },
        (err: unknown) => {
          for (const m of batch) failedReceive(m, err);
        },
      )
      .finally(() => {
        running--;
        inFlight -= batch.length;
        pump();
        settleIdle();
      });
  };

  const pump = () => {
    while (running < concurrency && queued > 0) {
      if (queued < batchSize && windowMs > 0) {
        // A partial batch waits for more, as long as the window since its oldest message allows.
        const due = oldestVisibleAt() + windowMs;
        const wait = due - Date.now();
        if (wait > 0) {
          if (!windowTimer) {
            windowTimer = setTimeout(() => {
              windowTimer = undefined;
              pump();
            }, wait);
            windowTimer.unref();
          }
          return;
        }
      }
      const batch: Queued[] = [];
      while (batch.length < batchSize && queued > 0) {
        const m = dequeue()!;
        m.receives++;
        if (m.receives > 1) redelivered++;
        batch.push(m);
      }
      run(batch);
    }
  };

  const unsubscribe = props.source.onVehicleMessage((message) => {
    const event = toTopicRuleEvent(message, props.ruleName);
    if (!event) return;
    recordOperation('iot.rule.actions');
    if ((queues.get(event.vin)?.length ?? 0) >= maxPerVehicle) {
      throttled++;
      if (throttled % 1000 === 1)
        props.log?.warn('vehicle floods the rules path; dropping', { vin: event.vin });
      return;
    }
    if (queued >= maxQueued) {
      deadLetter({ event, receives: 0 }, new Error('rules router queue is full'));
      return;
    }
    // The rule's SQS action: one SendMessage per message.
    recordOperation('sqs.op.SendMessage');
    const now = Date.now();
    enqueue({
      id: randomUUID(),
      event,
      body: JSON.stringify(event),
      sentAt: now,
      visibleAt: now,
      receives: 0,
    });
    pump();
  });

  const idle = () =>
    new Promise<void>((resolve) => {
      idleWaiters.push(resolve);
      settleIdle();
    });

  let stopped: Promise<void> | undefined;
  return {
    stats: () => ({
      delivered,
      failed,
      deadLetters: dead.length,
      pending: queued + inFlight + invisible,
      throttled,
      invocations,
      redelivered,
    }),
    deadLetters: () => [...dead],
    idle,
    stop() {
      stopped ??= (async () => {
        unsubscribe();
        // A message waiting to be received again is dead-lettered now: the local queue is in memory and ends here.
        for (const [timer, m] of retries) {
          clearTimeout(timer);
          invisible--;
          deadLetter(m, new Error('the local cloud stopped before the message was received again'));
        }
        retries.clear();
        await idle();
        if (windowTimer) clearTimeout(windowTimer);
      })();
      return stopped;
    },
  };
}
