/** IoT topic rule target: records vehicle progress and status messages. */
import { instrumented, recordOutcome } from '../adapters/observability.js';
import { logger, metrics, repositories } from '../adapters/runtime.js';
import { settings } from '../core/env.js';
import { ingestVehicleMessage, rejectionLogFields } from '../core/ingest.js';
import { systemClock } from '../core/ports.js';
import { VinRateLimiter } from '../core/rate-limit.js';
import { UpdateStatusService } from '../core/vehicle-updates.js';

const vehicles = repositories.vehicles();
const updates = new UpdateStatusService({
  vehicles,
  updates: repositories.updates(),
  clock: systemClock,
});

// One per function instance (see lambdas/core/rate-limit.ts for what that bounds and what it does not).
const limiter = new VinRateLimiter({
  ratePerSecond: settings.ingestVinRatePerSecond(),
  burst: settings.ingestVinBurst(),
});

export const handler = instrumented(async (event: unknown) => {
  const outcome = await ingestVehicleMessage(event, { vehicles, updates, limiter });
  metrics.addMetric(`Message_${outcome.result}`, 'Count', 1);
  if (outcome.result !== 'rejected') recordOutcome(outcome.status, outcome.result === 'applied');
  if (outcome.result === 'rejected') logger.warn('vehicle message rejected', rejectionLogFields(outcome));
  else logger.debug('vehicle message recorded', { ...outcome });
  return outcome;
});
