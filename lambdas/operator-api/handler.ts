/**
 * Operator routes: releases (with the release kill switch), campaigns, the fleet's read-only views and the audit
 * log. IAM-authorised on AWS (one IAM role per operator role), local accounts on the local cloud. Every mutation is
 * recorded in the audit log once answered. The vehicle registry's mutations and their IoT rights live in
 * registry-api; its listings here only read tables.
 */

import type { z } from 'zod';
import { HISTORY_LIMITS } from '../../protocol/fleet-view.js';
import { type bodies, PAGE_LIMITS } from '../../protocol/routes.js';
import { audited, instrumented } from '../adapters/observability.js';
import {
  jobQueue,
  logger,
  metrics,
  objectStore,
  releaseKeys,
  repositories,
  settings,
} from '../adapters/runtime.js';
import { type AuditFilter, AuditService } from '../core/audit.js';
import { BundleService } from '../core/bundles.js';
import { CampaignService, type CreateCampaignInput } from '../core/campaigns.js';
import { FleetView, type VehicleFilter, type VersionFilter, whoIs } from '../core/fleet-view.js';
import { createRouter, json, type RouteRequest } from '../core/http.js';
import { KillSwitchService } from '../core/kill-switch.js';
import { systemClock } from '../core/ports.js';
import { ReleaseService } from '../core/releases.js';
import { UpdateHistoryReader } from '../core/update-history.js';

const updates = repositories.updates();
const jobs = jobQueue();
const releases = new ReleaseService({
  jobs,
  releases: repositories.releases(),
  objects: objectStore(),
  clock: systemClock,
  trustedReleaseKeys: releaseKeys(),
  multipartThreshold: settings.multipartThresholdBytes(),
  partSize: settings.multipartPartBytes(),
});

/** A listing's query, validated against the route's schema (protocol/routes.ts queries.page). */
type PageQuery = { limit?: number; next_token?: string; wave?: number };
const pageOf = (q: PageQuery) => [q.limit ?? PAGE_LIMITS.default, q.next_token] as const;

const campaigns = new CampaignService({
  campaigns: repositories.campaigns(),
  counters: repositories.counters(),
  exclusions: repositories.exclusions(),
  releases: repositories.releases(),
  vehicles: repositories.vehicles(),
  updates,
  clock: systemClock,
  jobs,
  objects: objectStore(),
  preparation: repositories.preparation(),
  bundles: repositories.bundles(),
  trustedReleaseKeys: releaseKeys(),
});

const bundles = new BundleService({
  bundles: repositories.bundles(),
  releases: repositories.releases(),
  clock: systemClock,
  trustedReleaseKeys: releaseKeys(),
});

const audit = new AuditService(repositories.audit(), systemClock);
const fleet = new FleetView({
  vehicles: repositories.vehicles(),
  history: new UpdateHistoryReader(repositories.updates()),
});

const killSwitch = new KillSwitchService({
  releases: repositories.releases(),
  bundles: repositories.bundles(),
  vehicles: repositories.vehicles(),
  updates,
  campaigns: repositories.campaigns(),
  clock: systemClock,
  campaignService: campaigns,
});

const campaignAction =
  (action: 'start' | 'pause' | 'resume' | 'cancel') =>
  async ({ params }: RouteRequest<unknown>) => {
    const result = await campaigns.act(params.campaignId!, action);
    metrics.addMetric(`Campaign_${action}`, 'Count', 1);
    // 202: the withdrawal goes on in the background; GET /campaigns/{id} says when it is cancelled.
    return json(result.status === 'cancelling' ? 202 : 200, result);
  };

const route = createRouter(
  'operator-api',
  {
    'POST /releases': async ({ body }: RouteRequest<z.infer<typeof bodies.createRelease>>) => {
      const created = await releases.create(body);
      return json(201, created);
    },
    'GET /releases': async ({ query }: RouteRequest<undefined>) =>
      json(200, await releases.list(...pageOf(query))),
    'GET /releases/{releaseId}': async ({ params }: RouteRequest<undefined>) =>
      json(200, await releases.get(params.releaseId!)),
    'POST /releases/{releaseId}/publish': async ({
      params,
      body,
    }: RouteRequest<z.infer<typeof bodies.publishRelease>>) => {
      const { accepted, release } = await releases.publish(params.releaseId!, body);
      if (accepted) metrics.addMetric('ReleaseVerificationsStarted', 'Count', 1);
      // 202: verification runs in the background; GET /releases/{id} shows its progress and outcome.
      return json(accepted ? 202 : 200, release);
    },
    'POST /releases/{releaseId}/withdraw': async ({
      params,
      body,
    }: RouteRequest<z.infer<typeof bodies.killSwitch>>) => {
      const withdrawn = await killSwitch.withdrawRelease(params.releaseId!, body.reason);
      metrics.addMetric('ReleasesWithdrawn', 'Count', 1);
      return json(200, withdrawn);
    },
    'POST /bundles': async ({ body }: RouteRequest<unknown>) => json(201, await bundles.create(body)),
    'GET /bundles/{bundleId}': async ({ params }: RouteRequest<undefined>) =>
      json(200, await bundles.get(params.bundleId!)),
    'GET /me': async ({ event }: RouteRequest<undefined>) => json(200, whoIs(event)),
    'GET /vehicles': async ({ query }: RouteRequest<undefined>) => {
      const { next_token, ...filter } = query as VehicleFilter & { next_token?: string };
      return json(200, await fleet.vehicles(filter, next_token));
    },
    'GET /fleet/versions': async ({ query }: RouteRequest<undefined>) => {
      const { next_token, ...filter } = query as VersionFilter & { next_token?: string };
      return json(200, await fleet.installedVersions(filter, next_token));
    },
    'GET /vehicles/{vin}/history': async ({ params, query }: RouteRequest<undefined>) =>
      json(200, await fleet.history(params.vin!, query.limit ?? HISTORY_LIMITS.default)),
    'POST /campaigns': async ({ body }: RouteRequest<CreateCampaignInput>) =>
      json(202, await campaigns.create(body)),
    'POST /campaigns/{campaignId}/targets': async ({ params }: RouteRequest<undefined>) =>
      json(202, await campaigns.completeTargets(params.campaignId!)),
    'GET /campaigns': async ({ query }: RouteRequest<undefined>) =>
      json(200, await campaigns.list(...pageOf(query))),
    'GET /campaigns/{campaignId}': async ({ params }: RouteRequest<undefined>) =>
      json(200, await campaigns.get(params.campaignId!)),
    'GET /campaigns/{campaignId}/vehicles': async ({ params, query }: RouteRequest<undefined>) =>
      json(200, await campaigns.vehicles(params.campaignId!, query.wave ?? 0, ...pageOf(query))),
    'GET /campaigns/{campaignId}/excluded': async ({ params, query }: RouteRequest<undefined>) =>
      json(200, await campaigns.excluded(params.campaignId!, ...pageOf(query))),
    'GET /audit': async ({ query }: RouteRequest<undefined>) => {
      const { limit, next_token, ...filter } = query as PageQuery & AuditFilter;
      const page = await audit.list(filter, ...pageOf({ limit, next_token }));
      return json(200, { entries: page.items, next_token: page.token ?? null });
    },
    'POST /campaigns/{campaignId}/start': campaignAction('start'),
    'POST /campaigns/{campaignId}/pause': campaignAction('pause'),
    'POST /campaigns/{campaignId}/resume': campaignAction('resume'),
    'POST /campaigns/{campaignId}/cancel': campaignAction('cancel'),
  },
  logger,
);

export const handler = instrumented(audited(route, audit));
