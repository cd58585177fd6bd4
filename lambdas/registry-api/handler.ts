/**
 * Vehicle registry routes: register a vehicle from its CSR, read it, revoke it (kill switch). IAM-authorised on
 * AWS (release-manager and admin roles for the mutations), local accounts on the local cloud; each mutation is
 * recorded in the audit log once answered. The only function with IoT identity rights (create a thing and a
 * certificate, add the thing to the vehicles group, revoke a certificate), kept apart from operator-api so the
 * release and campaign routes hold none of them and carry neither the IoT client nor the CSR checks.
 */

import { IoTClient } from '@aws-sdk/client-iot';
import type { z } from 'zod';
import type { bodies } from '../../protocol/routes.js';
import { clientConfig } from '../adapters/aws-clients.js';
import { IotCertificateIssuer } from '../adapters/certificate-issuer.js';
import { audited, instrumented } from '../adapters/observability.js';
import { counted } from '../adapters/operation-counter.js';
import { logger, metrics, repositories } from '../adapters/runtime.js';
import { traceClient } from '../adapters/tracing.js';
import { AuditService } from '../core/audit.js';
import { ENV, optionalEnv, requireEnv } from '../core/env.js';
import { createRouter, json, type RouteRequest } from '../core/http.js';
import { VehicleRevocationService } from '../core/kill-switch.js';
import type { CertificateIssuer } from '../core/ports.js';
import { systemClock } from '../core/ports.js';
import { VehicleRegistryService } from '../core/vehicles.js';

/**
 * The local cloud's issuer, imported by a specifier esbuild does not resolve (a variable, not a literal), so the
 * Lambda bundle leaves out the local CA and the X.509 issuing library (about 175 KiB) that only the local cloud
 * runs; tsx resolves it at run time there. On AWS the branch is never taken (IOT_THING_GROUP is always set).
 */
const LOCAL_ISSUER_MODULE = '../adapters/local-ca-issuer.js';

async function certificateIssuer(): Promise<CertificateIssuer> {
  const group = optionalEnv(ENV.iotThingGroup);
  if (group) {
    const iot = counted(traceClient(new IoTClient(clientConfig('IOT'))));
    return new IotCertificateIssuer(iot, group, requireEnv(ENV.iotThingType));
  }
  const caDir = requireEnv(ENV.localCaDir);
  const local = (await import(LOCAL_ISSUER_MODULE)) as typeof import('../adapters/local-ca-issuer.js');
  return new local.LocalCaCertificateIssuer(caDir);
}

const issuer = await certificateIssuer();
const updates = repositories.updates();
const registry = new VehicleRegistryService({
  vehicles: repositories.vehicles(),
  updates,
  issuer,
  clock: systemClock,
});
const revocation = new VehicleRevocationService({
  vehicles: repositories.vehicles(),
  updates,
  campaigns: repositories.campaigns(),
  history: repositories.history(),
  clock: systemClock,
  issuer,
});

const audit = new AuditService(repositories.audit(), systemClock);

const route = createRouter(
  'registry-api',
  {
    'POST /vehicles': async ({ body }: RouteRequest<z.infer<typeof bodies.registerVehicle>>) => {
      const registered = await registry.register(body);
      metrics.addMetric('VehiclesRegistered', 'Count', 1);
      return json(201, registered);
    },
    'GET /vehicles/{vin}': async ({ params }: RouteRequest<undefined>) =>
      json(200, await registry.get(params.vin!)),
    'POST /vehicles/{vin}/revoke': async ({
      params,
      body,
    }: RouteRequest<z.infer<typeof bodies.killSwitch>>) => {
      const revoked = await revocation.revokeVehicle(params.vin!, body.reason);
      metrics.addMetric('VehiclesRevoked', 'Count', 1);
      return json(200, revoked);
    },
  },
  logger,
);

export const handler = instrumented(audited(route, audit));
