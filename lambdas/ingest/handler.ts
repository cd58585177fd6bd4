/** IoT topic rule target: records vehicle progress and status messages. */
import type { Context } from 'aws-lambda';
import { logger, metrics, repositories } from '../adapters/runtime.js';
import { ENV, intEnv } from '../core/env.js';
import { ingestVehicleMessage } from '../core/ingest.js';
import { systemClock } from '../core/ports.js';
import { VinRateLimiter } from '../core/rate-limit.js';
import { UpdateStatusService } from '../core/vehicle-updates.js';

const vehicles = repositories.vehicles();
const updates = new UpdateStatusService({
  vehicles,
  updates: repositories.updates(),
  history: repositories.history(),
  clock: systemClock,
  campaigns: repositories.campaigns(),
});

// One per function instance (see lambdas/core/rate-limit.ts for what that bounds and what it does not).
const limiter = new VinRateLimiter({
  ratePerSecond: intEnv(ENV.ingestVinRatePerSecond, 5),
  burst: intEnv(ENV.ingestVinBurst, 200),
});

export async function handler(event: unknown, context?: Context) {
  if (context) logger.addContext(context);
  try {
    const outcome = await ingestVehicleMessage(event, { vehicles, updates, limiter });
    metrics.addMetric(`Message_${outcome.result}`, 'Count', 1);
    if (outcome.result === 'rejected') logger.warn('vehicle message rejected', { ...outcome });
    else logger.debug('vehicle message recorded', { ...outcome });
    return outcome;
  } finally {
    if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
  }
}
