/**
 * The local stand-in for an EventBridge Scheduler schedule: runs a job every period, one run at a time, the next
 * one a period after the previous finished. A failed run is logged and the schedule goes on, as on AWS.
 */
import type { GatewayLogger } from './gateway.js';

export interface LocalSchedule {
  /** Stops the schedule and waits for the run in progress. */
  stop(): Promise<void>;
}

export function startLocalSchedule(
  name: string,
  periodMs: number,
  run: () => Promise<unknown>,
  logger: GatewayLogger | undefined,
): LocalSchedule {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const loop = () => {
    timer = setTimeout(() => {
      running = Promise.resolve()
        .then(run)
        .then(
          () => undefined,
          (err: unknown) => {
            const extra = { error: err instanceof Error ? err.message : String(err) };
            if (logger) logger.error(`${name} failed`, extra);
            else
              process.stderr.write(
                `${JSON.stringify({ level: 'ERROR', message: `${name} failed`, ...extra })}\n`,
              );
          },
        )
        .finally(() => {
          if (!stopped) loop();
        });
    }, periodMs);
  };
  loop();
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
