/** IoT topic rule target: records vehicle progress and status messages. */
import type { Context } from 'aws-lambda';
import { logger, metrics, repositories } from '../adapters/runtime.js';
import { ingestVehicleMessage, rejectionLogFields } from '../core/ingest.js';
import { systemClock } from '../core/ports.js';
import { UpdateStatusService } from '../core/vehicle-updates.js';

const vehicles = repositories.vehicles();
const updates = new UpdateStatusService({
  vehicles,
  updates: repositories.updates(),
  history: repositories.history(),
  clock: systemClock,
  campaigns: repositories.campaigns(),
});

export async function handler(event: unknown, context?: Context) {
  if (context) logger.addContext(context);
  try {
    const outcome = await ingestVehicleMessage(event, { vehicles, updates });
    metrics.addMetric(`Message_${outcome.result}`, 'Count', 1);
    if (outcome.result === 'rejected') logger.warn('vehicle message rejected', rejectionLogFields(outcome));
    else logger.debug('vehicle message recorded', { ...outcome });
    return outcome;
  } finally {
    if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
  }
}
