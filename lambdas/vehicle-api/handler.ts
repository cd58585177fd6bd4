/** Vehicle update routes: every request carries a bearer token scoped to the VIN in its path. */
import type { z } from 'zod';
import type { FirmwareRedirect, StatusAnswer } from '../../protocol/responses.js';
import type { bodies } from '../../protocol/routes.js';
import { instrumented, recordOutcome } from '../adapters/observability.js';
import {
  backendSigner,
  backendVerificationKeys,
  freshnessService,
  logger,
  metrics,
  objectStore,
  repositories,
  settings,
  tokenSigner,
} from '../adapters/runtime.js';
import { assignmentSigning } from '../core/env.js';
import { createRouter, header, json, type RouteRequest } from '../core/http.js';
import { systemClock } from '../core/ports.js';
import { authorizeVehicle } from '../core/vehicle-auth.js';
import { FirmwareOfferService, UpdateStatusService } from '../core/vehicle-updates.js';

const vehicles = repositories.vehicles();
// The backend key certifies this instance's assignment key (offers below, once per instance); tokens are verified
// against the token key's public key alone.
const signer = backendSigner();
const tokenKeys = backendVerificationKeys(tokenSigner());
const statusDeps = {
  vehicles,
  updates: repositories.updates(),
  history: repositories.history(),
  clock: systemClock,
  campaigns: repositories.campaigns(),
};
const statuses = new UpdateStatusService(statusDeps);
const offers = new FirmwareOfferService({
  ...statusDeps,
  releases: repositories.releases(),
  objects: objectStore(),
  signer,
  assignmentSigning: assignmentSigning(),
  presignTtlSeconds: settings.presignTtlSeconds(),
});

const freshness = freshnessService(signer);

const ratePerMinute = settings.vehicleRatePerMinute();

function authorize(req: RouteRequest<unknown>) {
  return authorizeVehicle(header(req.event, 'authorization'), req.params.vin!, {
    tokenKeys,
    vehicles,
    clock: systemClock,
    ratePerMinute,
  });
}

type FirmwareBody = RouteRequest<z.infer<typeof bodies.firmwareRequest>>;

const route = createRouter(
  'vehicle-api',
  {
    'GET /updates/{vin}': async (req: RouteRequest<undefined>) =>
      json(200, await statuses.list(await authorize(req))),
    'POST /updates/{vin}/initiate': async (req: FirmwareBody) => {
      const offer = await offers.requestFirmware(await authorize(req), req.body.firmware_version, 'initiate');
      metrics.addMetric('DownloadUrlsIssued', 'Count', 1);
      return json(200, offer);
    },
    'POST /updates/{vin}/download': async (req: FirmwareBody) => {
      const offer = await offers.requestFirmware(await authorize(req), req.body.firmware_version, 'download');
      metrics.addMetric('DownloadUrlsIssued', 'Count', 1);
      return json(200, offer);
    },
    'GET /updates/{vin}/firmware/{version}': async (req: RouteRequest<undefined>) => {
      const offer = await offers.requestFirmware(await authorize(req), req.params.version!, 'download');
      metrics.addMetric('DownloadUrlsIssued', 'Count', 1);
      return json(
        302,
        { download_url: offer.download_url, expires_at: offer.expires_at } satisfies FirmwareRedirect,
        { location: offer.download_url },
      );
    },
    'POST /updates/{vin}/status': async (req: RouteRequest<z.infer<typeof bodies.status>>) => {
      const vehicle = await authorize(req);
      const { update, applied } = await statuses.reportStatus(vehicle, req.body, 'https');
      metrics.addMetric(applied ? 'StatusApplied' : 'StatusIgnored', 'Count', 1);
      recordOutcome(update.status, applied);
      return json(200, {
        vin: vehicle.vin,
        update_id: update.updateId,
        status: update.status,
        progress: update.progress,
        applied,
      } satisfies StatusAnswer);
    },
    'GET /updates/{vin}/freshness': async (req: RouteRequest<undefined>) =>
      json(200, await freshness.answer(await authorize(req))),
    'POST /updates/{vin}/freshness/alert': async (
      req: RouteRequest<z.infer<typeof bodies.freshnessAlert>>,
    ) => {
      const vehicle = await authorize(req);
      metrics.addMetric('FreshnessAlerts', 'Count', 1);
      logger.warn('vehicle reports a freshness problem', { vin: vehicle.vin, ...req.body });
      return json(202, await freshness.alert(vehicle, req.body));
    },
  },
  logger,
);

export const handler = instrumented(route);
