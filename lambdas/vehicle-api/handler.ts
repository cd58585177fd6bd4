/** Vehicle update routes: every request carries a bearer token scoped to the VIN in its path. */
import type { z } from 'zod';
import type { bundleRequestSchema } from '../../protocol/bundle-api.js';
import type { FirmwareRedirect, StatusAnswer } from '../../protocol/responses.js';
import type { bodies } from '../../protocol/routes.js';
import { instrumented, recordOutcome } from '../adapters/observability.js';
import {
  backendSigner,
  backendVerificationKeys,
  freshnessService,
  logger,
  metrics,
  objectPresigner,
  repositories,
  settings,
  tokenSigner,
} from '../adapters/runtime.js';
import { bundleAnswer } from '../core/bundles.js';
import { assignmentSigning } from '../core/env.js';
import { createRouter, header, json, type RouteRequest } from '../core/http.js';
import { InventoryService } from '../core/inventory.js';
import { systemClock } from '../core/ports.js';
import { authorizeVehicleRequest } from '../core/vehicle-auth.js';
import { FirmwareOfferService, UpdateStatusService } from '../core/vehicle-updates.js';

const vehicles = repositories.vehicles();
// The backend key certifies this instance's assignment key (offers below, once per instance); tokens are verified
// against the token key's public key alone.
const signer = backendSigner();
const tokenKeys = backendVerificationKeys(tokenSigner());
const statusDeps = {
  vehicles,
  updates: repositories.updates(),
  clock: systemClock,
  campaigns: repositories.campaigns(),
};
const statuses = new UpdateStatusService(statusDeps);
const offers = new FirmwareOfferService({
  ...statusDeps,
  releases: repositories.releases(),
  objects: objectPresigner(),
  signer,
  assignmentSigning: assignmentSigning(),
  presignTtlSeconds: settings.presignTtlSeconds(),
});

const bundleDeps = {
  bundles: repositories.bundles(),
  releases: repositories.releases(),
  updates: repositories.updates(),
  campaigns: repositories.campaigns(),
  objects: objectPresigner(),
  presignTtlSeconds: settings.presignTtlSeconds(),
};

const freshness = freshnessService(signer);
const inventories = new InventoryService({ vehicles, clock: systemClock });

const ratePerMinute = settings.vehicleRatePerMinute();

function authorizeRequest(req: RouteRequest<unknown>, reserveCounter = false) {
  return authorizeVehicleRequest(
    header(req.event, 'authorization'),
    req.params.vin!,
    { tokenKeys, vehicles, clock: systemClock, ratePerMinute },
    reserveCounter,
  );
}

async function authorize(req: RouteRequest<unknown>) {
  return (await authorizeRequest(req)).vehicle;
}

/** A firmware request answers an assignment: its counter is taken by the rate window's write. */
async function firmware(req: RouteRequest<unknown>, version: string, mode: 'initiate' | 'download') {
  const { vehicle, counter } = await authorizeRequest(req, true);
  const offer = await offers.requestFirmware(vehicle, version, mode, counter);
  metrics.addMetric('DownloadUrlsIssued', 'Count', 1);
  return offer;
}

type FirmwareBody = RouteRequest<z.infer<typeof bodies.firmwareRequest>>;

const route = createRouter(
  'vehicle-api',
  {
    'GET /updates/{vin}': async (req: RouteRequest<undefined>) =>
      json(200, await statuses.list(await authorize(req))),
    'POST /updates/{vin}/initiate': async (req: FirmwareBody) =>
      json(200, await firmware(req, req.body.firmware_version, 'initiate')),
    'POST /updates/{vin}/download': async (req: FirmwareBody) =>
      json(200, await firmware(req, req.body.firmware_version, 'download')),
    'GET /updates/{vin}/firmware/{version}': async (req: RouteRequest<undefined>) => {
      const offer = await firmware(req, req.params.version!, 'download');
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
    'POST /updates/{vin}/bundle': async (req: RouteRequest<z.infer<typeof bundleRequestSchema>>) => {
      // Asked with an assignment (a polling vehicle): its counter is taken by the rate window's write, as /download's.
      const { vehicle, counter } = await authorizeRequest(req, req.body.assignment === true);
      const answer = await bundleAnswer(
        bundleDeps,
        vehicle,
        req.body.bundle_id,
        req.body.assignment
          ? (update, target) => offers.assignTarget(vehicle, update, target, counter)
          : undefined,
      );
      metrics.addMetric('DownloadUrlsIssued', 'Count', answer.members.length);
      return json(200, answer);
    },
    'POST /updates/{vin}/inventory': async (req: RouteRequest<z.infer<typeof bodies.inventory>>) =>
      json(200, await inventories.report(await authorize(req), req.body)),
  },
  logger,
);

export const handler = instrumented(route);
