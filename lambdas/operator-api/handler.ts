/**
 * Operator routes: releases, the vehicle registry, campaigns and the audit log. IAM-authorised on AWS (one IAM role
 * per operator role), local accounts on the local cloud. Every mutation is recorded in the audit log once answered.
 */

import { IoTClient } from '@aws-sdk/client-iot';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import type { z } from 'zod';
import { HISTORY_LIMITS } from '../../protocol/fleet-view.js';
import { type bodies, PAGE_LIMITS } from '../../protocol/routes.js';
import { clientConfig } from '../adapters/aws-clients.js';
import { IotCertificateIssuer, LocalCaCertificateIssuer } from '../adapters/certificate-issuer.js';
import { instrumented } from '../adapters/observability.js';
import {
  jobQueue,
  logger,
  metrics,
  objectStore,
  releaseKeys,
  repositories,
  settings,
  tracer,
} from '../adapters/runtime.js';
import { type AuditFilter, AuditService } from '../core/audit.js';
import { CampaignService, type CreateCampaignInput } from '../core/campaigns.js';
import { ENV, optionalEnv, requireEnv } from '../core/env.js';
import { FleetView, type VehicleFilter, whoIs } from '../core/fleet-view.js';
import { createRouter, json, type RouteRequest } from '../core/http.js';
import { KillSwitchService } from '../core/kill-switch.js';
import type { CertificateIssuer } from '../core/ports.js';
import { systemClock } from '../core/ports.js';
import { ReleaseService } from '../core/releases.js';
import { VehicleRegistryService } from '../core/vehicles.js';

function certificateIssuer(): CertificateIssuer {
  const policy = optionalEnv(ENV.iotPolicyName);
  if (policy) {
    const iot = tracer.captureAWSv3Client(new IoTClient(clientConfig('IOT')));
    return new IotCertificateIssuer(iot, policy, requireEnv(ENV.iotThingType));
  }
  return new LocalCaCertificateIssuer(requireEnv(ENV.localCaDir));
}

const updates = repositories.updates();
const issuer = certificateIssuer();
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
const registry = new VehicleRegistryService({
  vehicles: repositories.vehicles(),
  updates,
  issuer,
  clock: systemClock,
});

/** A listing's query, validated against the route's schema (protocol/routes.ts queries.page). */
type PageQuery = { limit?: number; next_token?: string; wave?: number };
const pageOf = (q: PageQuery) => [q.limit ?? PAGE_LIMITS.default, q.next_token] as const;

const campaigns = new CampaignService({
  campaigns: repositories.campaigns(),
  exclusions: repositories.exclusions(),
  releases: repositories.releases(),
  vehicles: repositories.vehicles(),
  updates,
  history: repositories.history(),
  clock: systemClock,
  jobs,
});

const audit = new AuditService(repositories.audit(), systemClock);
const fleet = new FleetView({ vehicles: repositories.vehicles(), history: repositories.history() });

const killSwitch = new KillSwitchService({
  releases: repositories.releases(),
  vehicles: repositories.vehicles(),
  updates,
  campaigns: repositories.campaigns(),
  history: repositories.history(),
  clock: systemClock,
  issuer,
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
    'POST /vehicles/{vin}/revoke': async ({
      params,
      body,
    }: RouteRequest<z.infer<typeof bodies.killSwitch>>) => {
      const revoked = await killSwitch.revokeVehicle(params.vin!, body.reason);
      metrics.addMetric('VehiclesRevoked', 'Count', 1);
      return json(200, revoked);
    },
    'POST /vehicles': async ({ body }: RouteRequest<z.infer<typeof bodies.registerVehicle>>) => {
      const registered = await registry.register(body);
      metrics.addMetric('VehiclesRegistered', 'Count', 1);
      return json(201, registered);
    },
    'GET /me': async ({ event }: RouteRequest<undefined>) => json(200, whoIs(event)),
    'GET /vehicles': async ({ query }: RouteRequest<undefined>) => {
      const { next_token, ...filter } = query as VehicleFilter & { next_token?: string };
      return json(200, await fleet.vehicles(filter, next_token));
    },
    'GET /vehicles/{vin}/history': async ({ params, query }: RouteRequest<undefined>) =>
      json(200, await fleet.history(params.vin!, query.limit ?? HISTORY_LIMITS.default)),
    'GET /vehicles/{vin}': async ({ params }: RouteRequest<undefined>) =>
      json(200, await registry.get(params.vin!)),
    'POST /campaigns': async ({ body }: RouteRequest<CreateCampaignInput>) =>
      json(201, await campaigns.create(body)),
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

/**
 * Records every mutation with its outcome once the route has answered. A failed audit write does not turn an
 * answered mutation into an error (the caller would retry what already happened): it is logged and counted
 * (AuditWriteFailed) for an alarm instead.
 */
async function audited(event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  const result = await route(event);
  try {
    await audit.record(event, result.statusCode, result.body);
  } catch (err) {
    logger.error('audit write failed', { error: err instanceof Error ? err.message : String(err) });
    metrics.addMetric('AuditWriteFailed', 'Count', 1);
  }
  return result;
}

export const handler = instrumented(audited);
