/**
 * A campaign offer whose publish fails (IoT Data Plane unavailable) must not leave the update invisible: it stays
 * offered, so the vehicle sees it when it polls, and it is offered again from the next tick, without spending the
 * vehicle's retry budget. Runs the campaign engine and the offer worker over the local cloud's DynamoDB emulator and
 * vehicle API; the fault is injected at the publisher, the offers queue is a list this test delivers from, and the
 * local cloud's own tick is off.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { OfferMessage } from '../../lambdas/core/ports.js';
import { startLocalCloud } from '../../local/cloud.js';
import { MAX_OFFER_BYTES, type UpdateOffer } from '../../protocol/offer.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { offerHarness } from '../support/offer-harness.js';

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

    const queued: OfferMessage[] = [];
    const offers = {
      send: async (ms: readonly { message: OfferMessage }[]) => void queued.push(...ms.map((m) => m.message)),
    };
    const published: UpdateOffer[] = [];
    let failing = true;
    const warnings: string[] = [];
    const log = { warn: (message: string) => void warnings.push(message) };
    const { engine, worker } = offerHarness(cloud, {
      offers,
      log,
      publisher: {
        publish: async (_vin: string, offer: UpdateOffer) => {
          if (failing) throw new Error('ServiceUnavailableException: the Data Plane is unavailable');
          published.push(offer);
        },
      },
    });
    /** A tick, then every message it (and the messages after it) queued, delivered: how many offers went out. */
    const tick = async () => {
      await new Promise((r) => setTimeout(r, 5));
      await engine.tick('publish-fails');
      let offered = 0;
      while (queued.length > 0) if ((await worker.handle(queued.shift()!)) === 'offered') offered++;
      return offered;
    };

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
      assert.equal(await tick(), 0);
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
    assert.equal(await tick(), 1, 'published again from the next tick');
    assert.equal(published.length, 1);
    assert.equal(published[0]?.update_id, 'campaign#publish-fails');
    assert.ok(Buffer.byteLength(JSON.stringify(published[0])) < MAX_OFFER_BYTES);
    const v = await vehicleView();
    assert.equal(v.status, 'offered');
    assert.equal(v.attempt, 1);
    assert.equal((await operator.call('GET', '/campaigns/publish-fails')).json.status, 'running');
  });
});
