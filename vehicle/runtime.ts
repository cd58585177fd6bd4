/**
 * Time, timers and randomness, injectable so retry, expiry and backoff logic runs under a fake clock in tests.
 * An agent never reads Date.now() or Math.random() directly.
 */
import { setTimeout as delay } from 'node:timers/promises';

export interface AgentRuntime {
  /** Epoch milliseconds. */
  now(): number;
  /** Resolves after ms, or rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Uniform in [0, 1). */
  random(): number;
}

export const systemRuntime: AgentRuntime = {
  now: () => Date.now(),
  sleep: async (ms, signal) => {
    await delay(Math.max(0, ms), undefined, signal ? { signal } : undefined);
  },
  random: () => Math.random(),
};

/**
 * Waits for work, for at most ms (its rejection passes through). The timer is cancelled as soon as the work is
 * done: a stop that finished at once must not leave a timer holding the process open for the rest of the ms.
 */
export async function settleWithin(runtime: AgentRuntime, work: Promise<unknown>, ms: number): Promise<void> {
  const timer = new AbortController();
  try {
    await Promise.race([work, runtime.sleep(ms, timer.signal).catch(() => {})]);
  } finally {
    timer.abort();
  }
}

/** The signal's reason as an Error (AbortSignal.reason is any). */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new AbortedError(String(reason ?? 'aborted'));
}

export class AbortedError extends Error {
  constructor(message = 'aborted') {
    super(message);
    this.name = 'AbortedError';
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortReason(signal);
}

export function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.name === 'AbortedError');
}

/** A one-shot wake-up that a loop can wait on: notify() releases the current (or next) waiter. */
export class Wakeup {
  private pending = false;
  private waiter: (() => void) | undefined;

  notify(): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w();
    } else {
      this.pending = true;
    }
  }

  /** Resolves on notify(), after timeoutMs, or when the signal aborts (never rejects). */
  wait(runtime: AgentRuntime, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const local = new AbortController();
      const done = () => {
        this.waiter = undefined;
        local.abort();
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.waiter = done;
      signal.addEventListener('abort', done, { once: true });
      runtime.sleep(timeoutMs, local.signal).then(done, () => {});
    });
  }
}
