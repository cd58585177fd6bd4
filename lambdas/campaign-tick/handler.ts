/**
 * The campaign engine's heartbeat: on a schedule (EventBridge Scheduler every minute on AWS, every second on the
 * local cloud), decides every running campaign's next step from its item and counters (campaign-engine.ts): halts,
 * wave changes, timeouts and re-offers of overdue updates, and keeping each campaign's offer pacer going. The
 * offers themselves go out from the offers queue (the offer-worker function).
 *
 * The same function publishes the freshness statement when invoked with {"job":"freshness"} (its own schedule,
 * lib/campaign-schedule.ts): it shares the signer and tables.
 */
import { instrumented } from '../adapters/observability.js';
import {
  backendSigner,
  freshnessService,
  logger,
  metrics,
  offerQueue,
  repositories,
} from '../adapters/runtime.js';
import { ALERT_METRICS } from '../core/alerts.js';
import { CampaignEngine } from '../core/campaign-engine.js';
import { FRESHNESS_JOB } from '../core/freshness.js';
import { systemClock } from '../core/ports.js';

const engine = new CampaignEngine({
  campaigns: repositories.campaigns(),
  counters: repositories.counters(),
  vehicles: repositories.vehicles(),
  updates: repositories.updates(),
  clock: systemClock,
  offers: offerQueue(),
  log: logger,
});

const freshness = freshnessService(backendSigner());

export const handler = instrumented(async (event?: unknown) => {
  if ((event as { job?: unknown } | undefined)?.job === FRESHNESS_JOB.job) {
    const published = await freshness.publish();
    metrics.addMetric('FreshnessVehicles', 'Count', published.leafCount);
    logger.info('freshness statement published', { ...published });
    return published;
  }
  const result = await engine.tickAll();
  metrics.addMetric('OffersRetried', 'Count', result.reoffered);
  metrics.addMetric('VehiclesTimedOut', 'Count', result.timedOut);
  // The halted-campaign alarm's metric (lib/operator-alerts.ts, local/alarms.ts), with the campaigns it names.
  if (result.halted.length > 0) {
    metrics.addMetric(ALERT_METRICS.campaignsHalted, 'Count', result.halted.length);
    metrics.addMetadata('haltedCampaigns', result.halted.join(','));
  }
  return result;
});
