/**
 * KMS off the per-vehicle path, counted on the local cloud: every Sign the functions make with the backend key and
 * the token key is counted where it is made (lambdas/adapters/signers.ts CountingSigner, summed over every function
 * instance by cloud.operationCounts()). Campaigns offer N vehicles: at most 0.01 Sign per offer. Then each vehicle logs in and asks
 * /initiate and /download, as an agent does: the Signs stay at one per signing function instance (an online key's
 * delegation, renewed hourly), not one per answer or login, so they do not grow with the fleet (at 1,000,000
 * vehicles a few hundred instance-hours are a few hundred Signs; BENCHMARKS.md). One vehicle receives its offer
 * over mutual-TLS MQTT and checks the chain back to the backend public key.
 */
import assert from 'node:assert/strict';
import { createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoVehicleRepository } from '../../lambdas/adapters/dynamo-vehicles.js';
import { diffOperations } from '../../lambdas/adapters/operation-counter.js';
import { FUNCTION_SETTINGS } from '../../lambdas/core/functions.js';
import { startLocalCloud } from '../../local/cloud.js';
import { checkAssignment } from '../../protocol/assignment.js';
import { offerSchema } from '../../protocol/offer.js';
import { keyIdOf, trustedKeysFromPems } from '../../protocol/signatures.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { VehicleConnection } from '../support/mqtt-clients.js';

/** Vehicles, in campaigns of 100 (a campaign is created in one synchronous request today). */
const N = 200;
const PER_CAMPAIGN = 100;
const releaseKey = newReleaseKey();
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let operator: Operator;
let dataDir: string;
let manifest: Awaited<ReturnType<typeof signedRelease>>;
const vehicles: TestVehicle[] = [];
let firstCertificate: string;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 120_000 };

const vinOf = (i: number) => `KMSCT${String(i).padStart(12, '0')}`;
const modelOf = (i: number) => `KmsCount${Math.floor(i / PER_CAMPAIGN)}`;

/** Runs fn over items with `width` in flight. */
async function inParallel<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-kms-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 1000,
    // Freshness statements are signed per period (12 an hour at the default 300 s), not per vehicle: here one is
    // published on demand, so the count below shows it and the per-vehicle path apart.
    freshnessPeriodMs: 0,
    throttle: { ratePerSecond: 10000, burst: 10000 },
    // Creating a 100-target campaign synchronously can take longer than 10 s on a loaded 2-core machine.
    functionSettings: { 'operator-api': { ...FUNCTION_SETTINGS['operator-api'], timeoutSeconds: 29 } },
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  const image = randomBytes(64 * 1024);
  manifest = await signedRelease(image, {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  assert.equal((await operator.publish(manifest, image)).published?.status, 200);
  for (let i = 0; i < N; i++) vehicles.push(await TestVehicle.create(vinOf(i)));
  // The first vehicle is registered (it gets a certificate and listens over MQTT); the others are seeded straight
  // into the table with their device keys, which is all a login needs, to keep the set-up short.
  const first = vehicles[0]!;
  const reg = await operator.call('POST', '/vehicles', { ...first.registration(), model: modelOf(0) });
  assert.equal(reg.status, 201, reg.raw.toString());
  firstCertificate = reg.json.certificate_pem;
  const repo = new DynamoVehicleRepository(
    documentClient(new DynamoDBClient(clientConfig('DYNAMODB'))),
    cloud.tables.vehicles,
  );
  await inParallel(vehicles.slice(1), 8, async (v) => {
    const publicKeyPem = createPublicKey(v.keyPem).export({ type: 'spki', format: 'pem' }).toString();
    await repo.create({
      vin: v.vin,
      model: modelOf(vehicles.indexOf(v)),
      ecus: [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }],
      certificatePem: '',
      certificateId: `seeded-${v.vin}`,
      publicKeyPem,
      deviceKeyId: keyIdOf(publicKeyPem),
      registeredAt: new Date().toISOString(),
    });
  });
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('KMS Signs per vehicle', { timeout: 600_000 }, () => {
  it(`${N} offers cost at most 0.01 KMS Sign per vehicle; logins and answers one per instance, not per vehicle`, async () => {
    const backendKeys = trustedKeysFromPems([
      createPublicKey(readFileSync(cloud.signingKeyFile, 'utf8'))
        .export({ type: 'spki', format: 'pem' })
        .toString(),
    ]);
    const start = cloud.operationCounts();
    // The first vehicle listens for its offer over mutual-TLS MQTT, as a car does.
    const first = vehicles[0]!;
    const listener = await VehicleConnection.connect({
      url: cloud.endpoints.mqtt,
      caPem: cloud.caCertPem,
      clientId: first.vin,
      identity: { keyPem: first.keyPem, certPem: firstCertificate },
    });
    await listener.client.subscribeAsync(`vehicle/updates/${first.vin}/issue_details`, { qos: 1 });

    // 1. Campaigns offer every vehicle.
    const campaigns = Array.from({ length: N / PER_CAMPAIGN }, (_, k) => `kms-count-${k}`);
    for (const [k, id] of campaigns.entries()) {
      const created = await operator.call('POST', '/campaigns', {
        release_id: 'tcu-2.0.0',
        campaign_id: id,
        name: `KMS count ${k}`,
        targets: { filter: { model: `KmsCount${k}` } },
        policy: { waves: [100], skip_canary: true, notify_per_second: 1000 },
      });
      assert.ok([201, 202].includes(created.status), created.raw.toString());
    }
    for (const id of campaigns) {
      // Targets may be written in the background (status "preparing") before the campaign can start.
      while ((await operator.call('GET', `/campaigns/${id}`)).json.status === 'preparing') await sleep(250);
      const started = await operator.call('POST', `/campaigns/${id}/start`, {});
      assert.equal(started.status, 200, started.raw.toString());
    }
    const deadline = Date.now() + 300_000;
    for (const id of campaigns) {
      for (;;) {
        const c = (await operator.call('GET', `/campaigns/${id}`)).json;
        if (c.counts?.offered === PER_CAMPAIGN) break;
        assert.ok(Date.now() < deadline, `${id}: offers not all sent: ${JSON.stringify(c)}`);
        await sleep(250);
      }
    }

    for (let i = 0; i < 100 && listener.messages.length === 0; i++) await sleep(50);
    const offer = offerSchema.parse(JSON.parse(listener.messages[0]!.payload.toString()));
    assert.ok(offer.assignment.delegation, 'the offer carries its delegation');
    assert.deepEqual(
      checkAssignment(offer.assignment, {
        keys: backendKeys,
        vin: first.vin,
        now: new Date(),
        lastCounter: 0,
        manifest: manifest.manifest,
      }),
      { ok: true },
    );
    await listener.client.endAsync();

    // 2. Every vehicle logs in and asks /initiate then /download, two at a time (N direct KMS Signs would be 3N).
    const counters = new Set<string>();
    await inParallel(vehicles, 2, async (v) => {
      const token = await v.token(cloud.endpoints.api, cloud.caCertPem);
      for (const route of ['initiate', 'download']) {
        const res = await jsonRequest(
          cloud.endpoints.api,
          'POST',
          `/updates/${v.vin}/${route}`,
          cloud.caCertPem,
          { firmware_version: '2.0.0' },
          token,
        );
        assert.equal(res.status, 200, `${v.vin} ${route}: ${res.raw.toString()}`);
        assert.equal(typeof res.json.download_url, 'string');
        const check = checkAssignment(res.json.assignment, {
          keys: backendKeys,
          vin: v.vin,
          now: new Date(),
          lastCounter: 0,
          manifest: manifest.manifest,
        });
        assert.deepEqual(check, { ok: true }, `${v.vin} ${route}`);
        counters.add(`${v.vin}/${res.json.assignment.assignment.counter}`);
      }
    });
    // Counted per function (each invocation's tally reaches the parent when it answers): the offer worker signs
    // offers, vehicle-api answers, auth-api tokens, the tick freshness statements, so the phases cannot blur.
    const signs = diffOperations(cloud.operationCounts(), start);
    const signsBy = (fn: string) => signs[`lambda.fn.${fn}.kmsSigns`] ?? 0;
    const stats = cloud.lambdas.stats();
    const report = {
      vehicles: N,
      offerSigns: signsBy('offer-worker'),
      answerSigns: signsBy('vehicle-api'),
      tokenSigns: signsBy('auth-api'),
      byKey: { backend: signs['kms.sign.backend'] ?? 0, token: signs['kms.sign.token'] ?? 0 },
      coldStarts: Object.fromEntries(Object.entries(stats).map(([fn, s]) => [fn, s.coldStarts])),
    };
    console.log(`KMS Signs: ${JSON.stringify(report)}`);

    // 3. One freshness statement: the count moves by exactly its one Sign, so the counting sees the tick's Signs.
    await cloud.publishFreshness();
    const freshness = diffOperations(cloud.operationCounts(), start);
    assert.equal((freshness['lambda.fn.campaign-tick.kmsSigns'] ?? 0) - signsBy('campaign-tick'), 1);

    // At most one Sign per signing instance (its online key's delegation): none per offer, answer or login.
    assert.ok(report.offerSigns >= 1 && report.offerSigns <= stats['offer-worker']!.coldStarts);
    assert.ok(report.answerSigns >= 1 && report.answerSigns <= stats['vehicle-api']!.coldStarts);
    assert.ok(report.tokenSigns >= 1 && report.tokenSigns <= stats['auth-api']!.coldStarts);
    assert.equal(report.byKey.backend, report.offerSigns + report.answerSigns);
    assert.equal(report.byKey.token, report.tokenSigns);
    // 3 assignments per vehicle (offer, /initiate, /download) and a login, none with a KMS Sign of its own.
    assert.equal(counters.size, 2 * N, 'every answer carried its own assignment');
    assert.ok(report.offerSigns / N <= 0.01, `${report.offerSigns} KMS Signs for ${N} offers`);
  });
});
