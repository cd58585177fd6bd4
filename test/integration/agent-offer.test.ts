/**
 * Offers as campaigns send them, end to end on a private local cloud (real broker over mutual TLS, IoT Data Plane
 * shim, API gateway, DynamoDB and S3 emulators, the real agent):
 * - an offer names the signed manifest by digest, so it stays under 10 KB for a release of 2,000 chunks, whose
 *   manifest alone no longer fits in an MQTT message; the agent fetches the manifest over HTTPS and installs it;
 * - forged offers naming a real campaign's update (assignment by an unknown key, by a known key id with a wrong
 *   signature, genuine but for another VIN, malformed) are refused without a word about that update: it stays
 *   intact, the genuine offer installs and the campaign completes instead of halting.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Assignment, manifestDigest, signAssignment } from '../../protocol/assignment.js';
import { MAX_OFFER_BYTES, offerFor } from '../../protocol/offer.js';
import { keyIdOf } from '../../protocol/signatures.js';
import { MAX_MQTT_PAYLOAD_BYTES } from '../../protocol/topics.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  readAgentState,
  registerAgentVehicle,
  startAgent,
  startAgentCloud,
} from '../support/agent-cloud.js';
import { newReleaseKey, TEST_CHUNK } from '../support/fleet.js';

let ac: AgentCloud;
let v3: PublishedRelease;
/** Every offer the broker carried: topic and payload. */
const offers: { topic: string; payload: Buffer }[] = [];
const rogue = newReleaseKey();

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud();
  ac.cloud.broker.aedes.on('publish', (packet) => {
    if (packet.topic.endsWith('/issue_details')) {
      offers.push({ topic: packet.topic, payload: Buffer.from(packet.payload) });
    }
  });
  v3 = await publishRelease(ac, { version: '3.0.0', size: 300 * 1024 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

// biome-ignore lint/suspicious/noExplicitAny: the campaign view is JSON read back from the API
async function campaignView(id: string): Promise<any> {
  const res = await ac.operator.call('GET', `/campaigns/${id}`);
  assert.equal(res.status, 200, res.raw.toString());
  return res.json;
}

async function startCampaign(id: string, releaseId: string, vins: string[], start = true): Promise<void> {
  const created = await ac.operator.createCampaign({
    campaign_id: id,
    name: id,
    release_id: releaseId,
    targets: { vins },
    // Any failure or rejection halts it at once: a rejection forged into it would show.
    policy: {
      waves: [100],
      skip_canary: true,
      advance_success_percent: 100,
      halt_failure_count: 1,
      halt_min_outcomes: 1,
    },
  });
  assert.equal(created.json.status, 'created', created.raw.toString());
  if (start) assert.equal((await ac.operator.call('POST', `/campaigns/${id}/start`, {})).status, 200);
}

async function untilCampaign(id: string, status: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let c = await campaignView(id);
  while (c.status !== status && Date.now() < deadline) {
    await sleep(200);
    c = await campaignView(id);
  }
  assert.equal(c.status, status, JSON.stringify(c));
}

async function campaignVehicle(id: string, vin: string) {
  const res = await ac.operator.call('GET', `/campaigns/${id}/vehicles?wave=0`);
  assert.equal(res.status, 200, res.raw.toString());
  return (res.json.vehicles as { vin: string; status: string }[]).find((v) => v.vin === vin);
}

describe('offers: small whatever the image, and forged ones end nothing', { timeout: 300_000 }, () => {
  it('offers a release of 2,000 chunks in under 10 KB; the agent fetches the manifest over HTTPS and installs it', async () => {
    const chunks = 2000;
    const big = await publishRelease(ac, {
      version: '4.0.0',
      image: randomBytes(chunks * TEST_CHUNK - 1000),
    });
    assert.equal(big.signed.manifest.chunks.length, chunks);
    // What an offer carrying the manifest would weigh: more than an MQTT message may (IoT Core: 128 KB).
    assert.ok(JSON.stringify(big.signed).length > MAX_MQTT_PAYLOAD_BYTES, 'the manifest alone is too large');

    const vin = '1HGCM82633A300001';
    const dir = await registerAgentVehicle(ac, vin);
    const vehicle = await startAgent(ac, vin, dir);
    await vehicle.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT');
    await startCampaign('big-image', 'tcu-4.0.0', [vin]);

    const outcome = await vehicle.events.outcome('4.0.0', 240_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(outcome.update_id, 'campaign#big-image');
    await vehicle.agent.whenIdle();
    assertVehicleRuns(dir, '4.0.0', big.image);

    const sent = offers.filter((o) => o.topic === `vehicle/updates/${vin}/issue_details`);
    assert.equal(sent.length, 1, 'one offer, delivered the first time');
    const bytes = sent[0]!.payload.length;
    assert.ok(bytes < MAX_OFFER_BYTES, `the offer is ${bytes} bytes`);
    const offer = JSON.parse(sent[0]!.payload.toString());
    assert.equal(offer.manifest, undefined, 'no manifest in the offer');
    assert.equal(offer.manifest_sha256, manifestDigest(big.signed.manifest));
    await untilCampaign('big-image', 'completed', 20_000);
    assert.equal(backendUpdate(await backendVehicle(ac, vin), '4.0.0')?.status, 'completed');
    await vehicle.close();
  });

  it('refuses forged offers naming a real campaign update without reporting on it; the genuine one installs', async () => {
    const vin = '1HGCM82633A300002';
    const otherVin = '1HGCM82633A300003';
    const dir = await registerAgentVehicle(ac, vin);
    const vehicle = await startAgent(ac, vin, dir);
    await vehicle.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT');
    // Created, not started: the update exists (scheduled) and its id is guessable from the campaign's.
    await startCampaign('forged-target', 'tcu-3.0.0', [vin], false);

    const now = Date.now();
    const claimed: Assignment = {
      schema: 'ota.assignment/v1',
      vin,
      update_id: 'campaign#forged-target',
      campaign_id: 'forged-target',
      release_id: 'tcu-3.0.0',
      version: '3.0.0',
      ecu: 'tcu',
      manifest_sha256: manifestDigest(v3.signed.manifest),
      counter: 1_000_000,
      issued_at: new Date(now - 60_000).toISOString(),
      expires_at: new Date(now + 3_600_000).toISOString(),
    };
    const byRogue = await signAssignment(claimed, rogue.signer);
    const backendKeyId = keyIdOf(await ac.backendSigner.publicKeyPem());
    const forgedOffers: unknown[] = [
      offerFor(byRogue, v3.image.length),
      // The backend's key id over the rogue's signature.
      offerFor({ ...byRogue, key_id: backendKeyId }, v3.image.length),
      // A genuine backend signature, for another car.
      offerFor(await signAssignment({ ...claimed, vin: otherVin }, ac.backendSigner), v3.image.length),
      // Malformed, naming the version, under the rogue's assignment.
      { ...offerFor(byRogue, v3.image.length), size: 0 },
      // Old style, with the signed manifest itself: still refused for its assignment.
      { ...offerFor(byRogue, v3.image.length), manifest: v3.signed },
    ];
    const seen = vehicle.events.events.length;
    for (const o of forgedOffers) await publishOffer(ac, vin, o);
    await vehicle.events.waitFor(
      () =>
        vehicle.events.events.slice(seen).filter((e) => e.type === 'refused').length === forgedOffers.length,
      20_000,
      'every forged offer refused',
    );
    await vehicle.agent.whenIdle();
    await ac.cloud.rules.idle();
    const afterForged = vehicle.events.events.slice(seen);
    assert.deepEqual(
      afterForged.filter((e) => e.type !== 'refused' && e.type !== 'offer'),
      [],
      'no fetch, no download, no outcome',
    );
    assert.equal(readAgentState(dir).last_counter, 0, 'no forged counter accepted');
    // A campaign not started yet has given its targets no wave, so the vehicle's own view shows the update.
    assert.equal(
      backendUpdate(await backendVehicle(ac, vin), '3.0.0')?.status,
      'scheduled',
      'the update is intact',
    );
    assert.equal((await campaignView('forged-target')).status, 'created');

    // The genuine campaign offer then installs, and the campaign completes (nothing halted it).
    assert.equal((await ac.operator.call('POST', '/campaigns/forged-target/start', {})).status, 200);
    const outcome = await vehicle.events.outcome('3.0.0', 60_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(outcome.update_id, 'campaign#forged-target');
    await vehicle.agent.whenIdle();
    assertVehicleRuns(dir, '3.0.0', v3.image);
    await untilCampaign('forged-target', 'completed', 20_000);
    assert.equal((await campaignVehicle('forged-target', vin))?.status, 'completed');
    const backend = await backendVehicle(ac, vin);
    assert.equal(backend.ecus[0]?.version, '3.0.0');
    await vehicle.close();
  });
});
