/**
 * The campaign engine's heartbeat: on a schedule (EventBridge Scheduler every minute on AWS, every second on the
 * local cloud), advances every running campaign: paced offers, timeouts, halts and wave changes.
 *
 * The same function publishes the freshness statement when invoked with {"job":"freshness"} (its own schedule,
 * lib/campaign-schedule.ts): it shares the tick's signer and tables, and its reserved concurrency of 1 keeps the
 * two jobs from overlapping.
 */
import { IoTDataPlaneClient } from '@aws-sdk/client-iot-data-plane';
import type { Context } from 'aws-lambda';
import { clientConfig } from '../adapters/aws-clients.js';
import { IotOfferPublisher } from '../adapters/iot-offer-publisher.js';
import { instrumented } from '../adapters/observability.js';
import { counted } from '../adapters/operation-counter.js';
import { backendSigner, freshnessService, logger, metrics, repositories } from '../adapters/runtime.js';
import { traceClient } from '../adapters/tracing.js';
import { ALERT_METRICS } from '../core/alerts.js';
import { CampaignEngine } from '../core/campaigns.js';
import { assignmentSigning, settings } from '../core/env.js';
import { FRESHNESS_JOB } from '../core/freshness.js';
import { systemClock } from '../core/ports.js';
import { AssignmentIssuer } from '../core/vehicle-updates.js';

const base = {
  campaigns: repositories.campaigns(),
  releases: repositories.releases(),
  vehicles: repositories.vehicles(),
  updates: repositories.updates(),
  history: repositories.history(),
  clock: systemClock,
};
const signer = backendSigner();
const engine = new CampaignEngine({
  ...base,
  // Once per instance: its online key signs every offer's assignment (one KMS Sign per instance per hour).
  assignments: new AssignmentIssuer({
    vehicles: base.vehicles,
    signer,
    clock: systemClock,
    signing: assignmentSigning(),
  }),
  publisher: new IotOfferPublisher(
    counted(traceClient(new IoTDataPlaneClient(clientConfig('IOT_DATA_PLANE')))),
  ),
  tickSeconds: settings.campaignTickSeconds(),
  log: logger,
});

const freshness = freshnessService(signer);

export const handler = instrumented(async (event?: unknown, context?: Context) => {
  if ((event as { job?: unknown } | undefined)?.job === FRESHNESS_JOB.job) {
    const published = await freshness.publish();
    metrics.addMetric('FreshnessVehicles', 'Count', published.leafCount);
    logger.info('freshness statement published', { ...published });
    return published;
  }
  const result = await engine.tickAll(context ? () => context.getRemainingTimeInMillis() : undefined);
  metrics.addMetric('OffersSent', 'Count', result.offered);
  metrics.addMetric('VehiclesTimedOut', 'Count', result.timedOut);
  // The halted-campaign alarm's metric (lib/operator-alerts.ts, local/alarms.ts), with the campaigns it names.
  if (result.halted.length > 0) {
    metrics.addMetric(ALERT_METRICS.campaignsHalted, 'Count', result.halted.length);
    metrics.addMetadata('haltedCampaigns', result.halted.join(','));
  }
  return result;
});
