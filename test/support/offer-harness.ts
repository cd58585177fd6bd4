/**
 * The campaign engine and offer worker built in a test's own process over a local cloud's tables (its DynamoDB
 * emulator and signing key), with the offers queue and the publisher given by the test: for tests that deliver the
 * offers queue's messages themselves, at the moments they choose (the local cloud's own tick off).
 */
import { readFileSync } from 'node:fs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { DynamoCampaignRepository } from '../../lambdas/adapters/dynamo-campaigns.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoCounterRepository } from '../../lambdas/adapters/dynamo-counters.js';
import { DynamoReleaseRepository } from '../../lambdas/adapters/dynamo-releases.js';
import { DynamoUpdateRepository } from '../../lambdas/adapters/dynamo-updates.js';
import { DynamoVehicleRepository } from '../../lambdas/adapters/dynamo-vehicles.js';
import { AssignmentIssuer } from '../../lambdas/core/assignment-issuer.js';
import { CampaignEngine } from '../../lambdas/core/campaign-engine.js';
import { OfferWorker } from '../../lambdas/core/offer-pacing.js';
import { type Clock, type OfferPublisher, type OfferQueue, systemClock } from '../../lambdas/core/ports.js';
import type { startLocalCloud } from '../../local/cloud.js';
import { KeyFileSigner } from '../../protocol/signatures.js';

type Cloud = Awaited<ReturnType<typeof startLocalCloud>>;

export function offerHarness(
  cloud: Cloud,
  props: {
    readonly offers: OfferQueue;
    readonly publisher: OfferPublisher;
    readonly log: { warn(message: string, extra: Record<string, unknown>): void };
    /** @default the system clock */
    readonly clock?: Clock;
  },
) {
  const db = documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
  const base = {
    campaigns: new DynamoCampaignRepository(db, cloud.tables.campaigns),
    counters: new DynamoCounterRepository(db, cloud.tables.counters),
    releases: new DynamoReleaseRepository(db, cloud.tables.releases),
    vehicles: new DynamoVehicleRepository(db, cloud.tables.vehicles),
    updates: new DynamoUpdateRepository(db, cloud.tables.updates, cloud.tables.counters),
    clock: props.clock ?? systemClock,
  };
  const engine = new CampaignEngine({ ...base, offers: props.offers, log: props.log });
  const worker = new OfferWorker({
    ...base,
    offers: props.offers,
    log: props.log,
    assignments: new AssignmentIssuer({
      vehicles: base.vehicles,
      signer: new KeyFileSigner(readFileSync(cloud.signingKeyFile, 'utf8')),
      clock: systemClock,
    }),
    publisher: props.publisher,
  });
  return { db, base, engine, worker };
}
