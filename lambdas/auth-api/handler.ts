/** Vehicle authentication routes: challenge, and token for a signed challenge. */
import type { z } from 'zod';
import type { bodies } from '../../protocol/routes.js';
import { instrumented } from '../adapters/observability.js';
import { logger, metrics, repositories, settings, tokenSigner } from '../adapters/runtime.js';
import { createRouter, json, type RouteRequest } from '../core/http.js';
import { systemClock } from '../core/ports.js';
import { VehicleAuthService } from '../core/vehicle-auth.js';

const service = new VehicleAuthService({
  vehicles: repositories.vehicles(),
  challenges: repositories.challenges(),
  challengesPerVinPerMinute: settings.challengesPerVinPerMinute(),
  // Tokens only: this unauthenticated function holds no key that signs assignments.
  signer: tokenSigner(),
  clock: systemClock,
  tokenTtlSeconds: settings.tokenTtlSeconds(),
});

const route = createRouter(
  'auth-api',
  {
    'POST /auth/challenge': async ({ body }: RouteRequest<z.infer<typeof bodies.challenge>>) =>
      json(200, await service.createChallenge(body.vin)),
    'POST /auth/token': async ({ body }: RouteRequest<z.infer<typeof bodies.token>>) => {
      const token = await service.exchange(body.vin, body.nonce, body.signature);
      metrics.addMetric('TokensIssued', 'Count', 1);
      return json(200, token);
    },
  },
  logger,
);

export const handler = instrumented(route);
