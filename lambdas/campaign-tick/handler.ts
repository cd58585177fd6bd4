/**
 * The campaign engine's heartbeat: on a schedule (EventBridge Scheduler every minute on AWS, every second on the
 * local cloud), advances every running campaign: paced offers, timeouts, halts and wave changes.
 */
import { IoTDataPlaneClient } from '@aws-sdk/client-iot-data-plane';
import type { Context } from 'aws-lambda';
import { clientConfig } from '../adapters/aws-clients.js';
import { IotOfferPublisher } from '../adapters/iot-offer-publisher.js';
import { instrumented } from '../adapters/observability.js';
import { backendSigner, logger, metrics, repositories, tracer } from '../adapters/runtime.js';
import { CampaignEngine } from '../core/campaigns.js';
import { settings } from '../core/env.js';
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
const engine = new CampaignEngine({
  ...base,
  assignments: new AssignmentIssuer({ vehicles: base.vehicles, signer: backendSigner(), clock: systemClock }),
  publisher: new IotOfferPublisher(
    tracer.captureAWSv3Client(new IoTDataPlaneClient(clientConfig('IOT_DATA_PLANE'))),
  ),
  tickSeconds: settings.campaignTickSeconds(),
  log: logger,
});

export const handler = instrumented(async (_event?: unknown, context?: Context) => {
  const result = await engine.tickAll(context ? () => context.getRemainingTimeInMillis() : undefined);
  metrics.addMetric('OffersSent', 'Count', result.offered);
  metrics.addMetric('VehiclesTimedOut', 'Count', result.timedOut);
  return result;
});
