/**
 * A campaign offer whose publish fails (IoT Data Plane unavailable) must not leave the update invisible: it stays
 * offered, so the vehicle sees it when it polls, and it is published again at the next tick, without spending the
 * vehicle's retry budget. Runs the campaign engine over the local cloud's DynamoDB emulator and vehicle API; the
 * fault is injected at the publisher (the only part replaced), and the local cloud's own tick is off.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import {
  DynamoCampaignRepository,
  DynamoHistoryRepository,
  DynamoReleaseRepository,
  DynamoUpdateRepository,
  DynamoVehicleRepository,
  documentClient,
} from '../../lambdas/adapters/dynamo-repositories.js';
import { CampaignEngine } from '../../lambdas/core/campaigns.js';
import { systemClock } from '../../lambdas/core/ports.js';
import { AssignmentIssuer } from '../../lambdas/core/vehicle-updates.js';
import { startLocalCloud } from '../../local/cloud.js';
import { MAX_OFFER_BYTES, type UpdateOffer } from '../../protocol/offer.js';
import { KeyFileSigner } from '../../protocol/signatures.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';

const VIN = '1HGCM82633A400001';
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let operator: Operator;
let car: TestVehicle;
const releaseKey = newReleaseKey();

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-offer-publish-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 0,
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(200 * 1024);
  const signed = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(signed, image)).published?.status, 200);
  car = await TestVehicle.create(VIN);
  const reg = await operator.call('POST', '/vehicles', car.registration());
  assert.equal(reg.status, 201, reg.raw.toString());
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('a failed offer publish', { timeout: 60_000 }, () => {
  it('keeps the update offered and visible to polling, and publishes it again at the next tick', async () => {
    const created = await operator.createCampaign({
      campaign_id: 'publish-fails',
      name: 'publish fails',
      release_id: 'tcu-2.0.0',
      targets: { vins: [VIN] },
      policy: { waves: [100], skip_canary: true, retry_budget: 0 },
    });
    assert.equal(created.json.status, 'created', created.raw.toString());
    assert.equal((await operator.call('POST', '/campaigns/publish-fails/start', {})).status, 200);

    const db = documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
    const base = {
      campaigns: new DynamoCampaignRepository(db, cloud.tables.campaigns),
      releases: new DynamoReleaseRepository(db, cloud.tables.releases),
      vehicles: new DynamoVehicleRepository(db, cloud.tables.vehicles),
      updates: new DynamoUpdateRepository(db, cloud.tables.updates),
      history: new DynamoHistoryRepository(db, cloud.tables.history, 1),
      clock: systemClock,
    };
    const published: UpdateOffer[] = [];
    let failing = true;
    const warnings: string[] = [];
    const engine = new CampaignEngine({
      ...base,
      assignments: new AssignmentIssuer({
        vehicles: base.vehicles,
        signer: new KeyFileSigner(readFileSync(cloud.signingKeyFile, 'utf8')),
        clock: systemClock,
      }),
      publisher: {
        publish: async (_vin, offer) => {
          if (failing) throw new Error('ServiceUnavailableException: the Data Plane is unavailable');
          published.push(offer);
        },
      },
      tickSeconds: 1,
      log: { warn: (message) => void warnings.push(message) },
    });

    const vehicleView = async () => {
      const res = await operator.call('GET', '/campaigns/publish-fails/vehicles?wave=0');
      assert.equal(res.status, 200, res.raw.toString());
      return res.json.vehicles[0] as { status: string; attempt: number };
    };
    const token = await car.token(cloud.endpoints.api, cloud.caCertPem);
    const poll = async () => {
      const res = await jsonRequest(
        cloud.endpoints.api,
        'GET',
        `/updates/${VIN}`,
        cloud.caCertPem,
        undefined,
        token,
      );
      assert.equal(res.status, 200, res.raw.toString());
      return res.json.pending as { update_id: string; firmware_version: string }[];
    };

    // Twice unavailable: more than the retry budget (0) would allow if a failed publish counted as an attempt.
    for (let i = 0; i < 2; i++) {
      assert.equal((await engine.tick('publish-fails')).offered, 0);
      const v = await vehicleView();
      assert.equal(v.status, 'offered', 'still offered, not taken back to scheduled');
      assert.equal(v.attempt, 0, 'a failed publish spends no attempt');
      assert.deepEqual(
        (await poll()).map((u) => [u.update_id, u.firmware_version]),
        [['campaign#publish-fails', '2.0.0']],
        'a polling vehicle sees the update',
      );
    }
    assert.equal(warnings.filter((w) => w === 'offer publish failed; will retry').length, 2);

    failing = false;
    assert.equal((await engine.tick('publish-fails')).offered, 1, 'published again at the next tick');
    assert.equal(published.length, 1);
    assert.equal(published[0]?.update_id, 'campaign#publish-fails');
    assert.ok(Buffer.byteLength(JSON.stringify(published[0])) < MAX_OFFER_BYTES);
    const v = await vehicleView();
    assert.equal(v.status, 'offered');
    assert.equal(v.attempt, 1);
    assert.equal((await operator.call('GET', '/campaigns/publish-fails')).json.status, 'running');
  });
});
