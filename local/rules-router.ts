/**
 * Local stand-in for the IoT topic rule that feeds vehicle progress and status messages to the ingest function.
 * The AWS rule is protocol/topics.ts topicRuleSql():
 *
 *   SELECT encode(*, 'base64') AS payload, topic(3) AS vin, topic(4) AS channel, timestamp() AS received_at
 *   FROM 'vehicle/updates/+/+' WHERE topic(4) = 'progress' OR topic(4) = 'status'
 *
 * so each matching message becomes { payload: base64 of the raw bytes, vin, channel, received_at: epoch ms }.
 * Like the rule, invocation is asynchronous (the publisher never waits for it) and a failed invocation goes to
 * the error action: here a dead-letter list, and optionally a JSON-lines file standing in for the SQS queue.
 * Concurrency is bounded; messages of one vehicle may be processed out of order, as on AWS, which the ingest
 * state machine tolerates (sequence numbers, monotonic phases).
 *
 * Fairness: each vehicle has a queue of its own, served round-robin, and holds at most `maxQueuedPerVehicle`
 * events; beyond that its messages are dropped (counted as throttled, not dead-lettered: they are the flood, not
 * a failure). One vehicle's flood of 14,000 messages used to fill the single shared queue, so another vehicle's
 * acknowledged status was dead-lettered (issue 18 #8).
 */
import { appendFile } from 'node:fs/promises';
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

export interface DeadLetter {
  readonly event: TopicRuleEvent;
  readonly error: string;
  readonly failedAt: string;
}

export interface RulesRouterStats {
  /** Events the invoked function accepted (returned without throwing). */
  readonly delivered: number;
  /** Events that failed (invoke threw, or the queue was full); each one is a dead letter. */
  readonly failed: number;
  /** Dead letters held in memory. */
  readonly deadLetters: number;
  /** Events queued or running now. */
  readonly pending: number;
  /** Events dropped because their vehicle already had maxQueuedPerVehicle waiting. */
  readonly throttled: number;
}

export interface RulesRouterProps {
  readonly source: RoutedMessageSource;
  /** The rule's name: Basic Ingest messages to `$aws/rules/<ruleName>/...` reach it too. @default none */
  readonly ruleName?: string;
  /** The rule's action, e.g. the ingest handler. */
  readonly invoke: (event: TopicRuleEvent) => Promise<unknown> | unknown;
  /** Invocations running at once. @default 4 */
  readonly concurrency?: number;
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
  /** Resolves once nothing is queued or running. */
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

export function startRulesRouter(props: RulesRouterProps): RulesRouter {
  const concurrency = Math.max(1, props.concurrency ?? 4);
  const maxQueued = props.maxQueued ?? 10_000;
  const maxPerVehicle = props.maxQueuedPerVehicle ?? 1000;
  const maxDeadLetters = props.maxDeadLettersInMemory ?? 1000;
  /** Per-VIN queues, and the VINs that have events waiting, in the order they are served. */
  const queues = new Map<string, TopicRuleEvent[]>();
  const turns: string[] = [];
  let queued = 0;
  const dead: DeadLetter[] = [];
  let running = 0;
  let delivered = 0;
  let failed = 0;
  let throttled = 0;
  const enqueue = (event: TopicRuleEvent) => {
    let q = queues.get(event.vin);
    if (!q) {
      q = [];
      queues.set(event.vin, q);
      turns.push(event.vin);
    }
    q.push(event);
    queued++;
  };
  /** The next vehicle's oldest event; that vehicle goes to the back of the line. */
  const dequeue = (): TopicRuleEvent | undefined => {
    const vin = turns.shift();
    if (vin === undefined) return undefined;
    const q = queues.get(vin)!;
    const event = q.shift()!;
    queued--;
    if (q.length > 0) turns.push(vin);
    else queues.delete(vin);
    return event;
  };
  let fileWrites: Promise<void> = Promise.resolve();
  let idleWaiters: Array<() => void> = [];

  const deadLetter = (event: TopicRuleEvent, error: unknown) => {
    failed++;
    const entry: DeadLetter = {
      event,
      error: error instanceof Error ? error.message : String(error),
      failedAt: new Date().toISOString(),
    };
    dead.push(entry);
    if (dead.length > maxDeadLetters) dead.shift();
    props.log?.warn('topic rule action failed; event dead-lettered', { vin: event.vin, error: entry.error });
    const file = props.deadLetterFile;
    if (file) {
      fileWrites = fileWrites
        .then(() => appendFile(file, `${JSON.stringify(entry)}\n`))
        .catch((err) => props.log?.warn('dead-letter file write failed', { error: String(err) }));
    }
  };

  const settleIdle = () => {
    if (running > 0 || queued > 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    void fileWrites.then(() => {
      for (const resolve of waiters) resolve();
    });
  };

  const pump = () => {
    while (running < concurrency && queued > 0) {
      const event = dequeue()!;
      running++;
      // The microtask hop keeps a synchronous invoke (or one that throws synchronously) off the publisher's path.
      void Promise.resolve()
        .then(() => props.invoke(event))
        .then(
          () => {
            delivered++;
          },
          (err: unknown) => deadLetter(event, err),
        )
        .finally(() => {
          running--;
          pump();
          settleIdle();
        });
    }
  };

  const unsubscribe = props.source.onVehicleMessage((message) => {
    const event = toTopicRuleEvent(message, props.ruleName);
    if (!event) return;
    if ((queues.get(event.vin)?.length ?? 0) >= maxPerVehicle) {
      throttled++;
      if (throttled % 1000 === 1)
        props.log?.warn('vehicle floods the rules path; dropping', { vin: event.vin });
      return;
    }
    if (queued >= maxQueued) {
      deadLetter(event, new Error('rules router queue is full'));
      return;
    }
    enqueue(event);
    pump();
  });

  const idle = () =>
    new Promise<void>((resolve) => {
      idleWaiters.push(resolve);
      settleIdle();
    });

  let stopped: Promise<void> | undefined;
  return {
    stats: () => ({ delivered, failed, deadLetters: dead.length, pending: running + queued, throttled }),
    deadLetters: () => [...dead],
    idle,
    stop() {
      stopped ??= (async () => {
        unsubscribe();
        await idle();
      })();
      return stopped;
    },
  };
}
