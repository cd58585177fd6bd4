/**
 * Issue 18 #4, the kill switches, attacked over real sockets on the local cloud: after its campaign is cancelled a
 * vehicle (also one of a later wave) asked for the release directly and got a validly signed assignment; no route
 * withdrew a release; none revoked a vehicle, whose certificate and tokens stayed valid.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DelegatedTokenSigner } from '../../lambdas/core/token.js';
import { type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import { KeyFileSigner, keyIdOf } from '../../protocol/signatures.js';
import { vehicleTopic } from '../../protocol/topics.js';
import { generateKeyAndCsr, issueClientCertificate } from '../../protocol/x509.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { VehicleConnection } from '../support/mqtt-clients.js';

let cloud: LocalCloud;
let dataDir: string;
let operator: Operator;
const releaseKey = newReleaseKey();
const cars = new Map<string, { vehicle: TestVehicle; certPem: string }>();

const vin = (group: string, i: number) => `KSWT${group}${String(i).padStart(12, '0')}`;

async function register(v: string) {
  const vehicle = await TestVehicle.create(v);
  const reg = await operator.call('POST', '/vehicles', vehicle.registration());
  assert.equal(reg.status, 201, reg.raw.toString());
  cars.set(v, { vehicle, certPem: reg.json.certificate_pem });
}

async function publishRelease(releaseId: string, version: string) {
  const image = randomBytes(40_000);
  const signed = await signedRelease(image, { releaseId, version, signer: releaseKey.signer });
  const { published } = await operator.publish(signed, image);
  assert.equal(published?.status, 200, published?.raw.toString());
}

async function asVehicle(v: string, method: string, path: string, body?: unknown, token?: string) {
  const bearer = token ?? (await cars.get(v)!.vehicle.token(cloud.endpoints.api, cloud.caCertPem));
  return jsonRequest(cloud.endpoints.api, method, path, cloud.caCertPem, body, bearer);
}

async function campaignUntil(
  id: string,
  predicate: (c: { status: string; counts: Record<string, number> }) => boolean,
) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const c = await operator.call('GET', `/campaigns/${id}`);
    if (predicate(c.json)) return c.json;
    if (Date.now() > deadline) assert.fail(`campaign ${id}: ${JSON.stringify(c.json.counts)}`);
    await sleep(100);
  }
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-kill-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 200,
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('campaign cancel (issue 18 #4)', { timeout: 120_000 }, () => {
  it('leaves no way to a signed assignment for the cancelled release, in the offered wave or a later one', async () => {
    await publishRelease('tcu-4.0.0', '4.0.0');
    const group = [vin('A', 0), vin('A', 1), vin('A', 2)];
    for (const v of group) await register(v);
    const created = await operator.createCampaign({
      campaign_id: 'to-cancel',
      name: 'cancelled rollout',
      release_id: 'tcu-4.0.0',
      targets: { vins: group },
      policy: { waves: [1, 100] },
    });
    assert.equal(created.json.status, 'created', created.raw.toString());
    // Before its wave, a car cannot jump the staged rollout by asking for the release itself.
    const early = await asVehicle(group[0]!, 'POST', `/updates/${group[0]}/initiate`, {
      firmware_version: '4.0.0',
    });
    assert.equal(early.status, 409, early.raw.toString());
    assert.equal(early.json.error.code, 'not_yet_offered');

    assert.equal((await operator.call('POST', '/campaigns/to-cancel/start', {})).status, 200);
    await campaignUntil('to-cancel', (c) => (c.counts.offered ?? 0) === 1);
    // 202: the offers are withdrawn by the background job (campaign-cancel.ts); the campaign then is cancelled.
    assert.equal((await operator.call('POST', '/campaigns/to-cancel/cancel', {})).status, 202);
    await campaignUntil('to-cancel', (c) => c.status === 'cancelled');

    const waves = await Promise.all(
      [0, 1].map(
        async (w) => (await operator.call('GET', `/campaigns/to-cancel/vehicles?wave=${w}`)).json.vehicles,
      ),
    );
    // Wave 1 never started, so it lists nobody (targets get their wave when it starts, CAMPAIGN12.md); its two
    // vehicles' targets were withdrawn by the cancel's pass over the targets without a wave, and are refused below.
    assert.deepEqual(
      waves.map((vs: { status: string }[]) => vs.map((v) => v.status)),
      [['cancelled'], []],
    );
    for (const v of group) {
      for (const route of ['initiate', 'download']) {
        const res = await asVehicle(v, 'POST', `/updates/${v}/${route}`, { firmware_version: '4.0.0' });
        assert.equal(res.status, 409, `${v} ${route}: ${res.raw.toString()}`);
        assert.equal(res.json.error.code, 'campaign_cancelled');
        assert.equal(res.json.assignment, undefined);
      }
    }
  });
});

describe('POST /releases/{id}/withdraw (issue 18 #4)', { timeout: 120_000 }, () => {
  it('stops offers and downloads, withdraws open updates and cancels the release campaigns', async () => {
    await publishRelease('tcu-5.0.0', '5.0.0');
    const direct = vin('B', 0);
    const inCampaign = [vin('B', 1), vin('B', 2)];
    for (const v of [direct, ...inCampaign]) await register(v);
    const started = await asVehicle(direct, 'POST', `/updates/${direct}/initiate`, {
      firmware_version: '5.0.0',
    });
    assert.equal(started.status, 200, started.raw.toString());
    assert.ok(started.json.assignment, 'before the withdraw the release is answered');
    const created = await operator.createCampaign({
      campaign_id: 'of-withdrawn',
      name: 'to be killed',
      release_id: 'tcu-5.0.0',
      targets: { vins: inCampaign },
      policy: { waves: [1, 100] },
    });
    assert.equal(created.json.status, 'created', created.raw.toString());
    await operator.call('POST', '/campaigns/of-withdrawn/start', {});
    await campaignUntil('of-withdrawn', (c) => (c.counts.offered ?? 0) >= 1);

    const withdrawn = await operator.call('POST', '/releases/tcu-5.0.0/withdraw', { reason: 'bricks TCU' });
    assert.equal(withdrawn.status, 200, withdrawn.raw.toString());
    assert.equal(withdrawn.json.status, 'withdrawn');
    assert.equal(withdrawn.json.campaigns_cancelled, 1);
    assert.equal(withdrawn.json.updates_withdrawn, 1, 'the direct update');
    // The withdraw cancels the campaign; its offers are withdrawn in the background.
    assert.ok(
      ['cancelling', 'cancelled'].includes(
        (await operator.call('GET', '/campaigns/of-withdrawn')).json.status,
      ),
    );
    await campaignUntil('of-withdrawn', (c) => c.status === 'cancelled');

    for (const v of [direct, ...inCampaign]) {
      for (const route of ['initiate', 'download']) {
        const res = await asVehicle(v, 'POST', `/updates/${v}/${route}`, { firmware_version: '5.0.0' });
        assert.equal(res.status, 410, `${v} ${route}: ${res.raw.toString()}`);
        assert.equal(res.json.error.code, 'release_withdrawn');
      }
      // What the agent asks before installing: the update is cancelled, so it stands down.
      const listed = await asVehicle(v, 'GET', `/updates/${v}`);
      assert.deepEqual(
        listed.json.updates.map((u: { status: string }) => u.status),
        ['cancelled'],
        v,
      );
    }
    const again = await operator.call('POST', '/campaigns', {
      name: 'retry',
      release_id: 'tcu-5.0.0',
      targets: { vins: [direct] },
    });
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'release_not_published');
    // Idempotent: a second withdraw finds nothing left open.
    const twice = await operator.call('POST', '/releases/tcu-5.0.0/withdraw', {});
    assert.equal(twice.status, 200);
    assert.equal(twice.json.updates_withdrawn, 0);
    assert.equal((await operator.call('POST', '/releases/nope-1/withdraw', {})).status, 404);
    const bad = await operator.call('POST', '/releases/tcu-5.0.0/withdraw', { reason: '\u001b[2J' });
    assert.equal(bad.status, 400);
  });
});

describe('POST /vehicles/{vin}/revoke (issue 18 #4)', { timeout: 120_000 }, () => {
  it('refuses its certificate on MQTT, its tokens and logins, and its messages in ingest', async () => {
    await publishRelease('tcu-6.0.0', '6.0.0');
    const stolen = vin('C', 0);
    const bystander = vin('C', 1);
    await register(stolen);
    await register(bystander);
    const token = await cars.get(stolen)!.vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const started = await asVehicle(
      stolen,
      'POST',
      `/updates/${stolen}/initiate`,
      { firmware_version: '6.0.0' },
      token,
    );
    assert.equal(started.status, 200);
    const connect = (v: string) =>
      VehicleConnection.connect({
        url: cloud.endpoints.mqtt,
        caPem: cloud.caCertPem,
        clientId: v,
        identity: { keyPem: cars.get(v)!.vehicle.keyPem, certPem: cars.get(v)!.certPem },
      });
    const live = await connect(stolen);
    const other = await connect(bystander);

    const revoked = await operator.call('POST', `/vehicles/${stolen}/revoke`, { reason: 'stolen' });
    assert.equal(revoked.status, 200, revoked.raw.toString());
    assert.equal(revoked.json.updates_withdrawn, 1);
    assert.equal(
      (await operator.call('GET', `/vehicles/${stolen}`)).json.revoked_at,
      revoked.json.revoked_at,
    );

    // The token issued before the revoke is still unexpired and correctly signed: refused all the same.
    const withOld = await asVehicle(stolen, 'GET', `/updates/${stolen}`, undefined, token);
    assert.equal(withOld.status, 401);
    assert.equal(withOld.json.error.code, 'vehicle_revoked');
    await assert.rejects(
      cars.get(stolen)!.vehicle.token(cloud.endpoints.api, cloud.caCertPem),
      /token refused: 401/,
    );

    // The live connection is cut at its next publish; a new one is refused at CONNECT.
    live.client.publish(
      vehicleTopic(stolen, 'status'),
      JSON.stringify({ status: 'downloading', sequence: 1 }),
      {
        qos: 1,
      },
    );
    assert.ok(await live.waitForClose(5000), 'the revoked certificate was disconnected');
    await assert.rejects(connect(stolen), /Not authorized|connection closed|refused/i);
    // The bystander is untouched.
    assert.equal(other.closed, false);
    await other.end();

    // Ingest refuses the vehicle's messages even if one reaches it (IoT may deliver one in flight).
    const { handler } = (await import('../../lambdas/ingest/handler.js')) as {
      handler: (e: unknown) => Promise<{ result: string; code?: string }>;
    };
    const outcome = await handler({
      payload: Buffer.from(JSON.stringify({ status: 'completed', sequence: 9 })).toString('base64'),
      vin: stolen,
      channel: 'status',
      received_at: Date.now(),
    });
    assert.deepEqual([outcome.result, outcome.code], ['rejected', 'vehicle_revoked']);
    const after = await operator.call('GET', `/vehicles/${stolen}`);
    assert.equal(after.json.ecus[0].version, '1.0.0', 'nothing it sent was applied');
    assert.deepEqual(
      after.json.updates.map((u: { status: string }) => u.status),
      ['cancelled'],
    );
    assert.equal((await operator.call('POST', `/vehicles/${vin('Z', 9)}/revoke`, {})).status, 404);
    // A later campaign leaves it out, with the reason.
    const campaign = await operator.createCampaign({
      name: 'after revoke',
      release_id: 'tcu-6.0.0',
      targets: { vins: [stolen, bystander] },
    });
    assert.equal(campaign.json.status, 'created', campaign.raw.toString());
    assert.deepEqual(campaign.json.excluded, { count: 1, by_reason: { revoked: 1 } });
    const excluded = await operator.call('GET', `/campaigns/${campaign.json.campaign_id}/excluded`);
    assert.deepEqual(excluded.json.excluded, [{ vin: stolen, reason: 'revoked' }]);
  });
});

describe('separate token key (issue 18 #9)', { timeout: 60_000 }, () => {
  it('a token signed with the assignment key is refused; the token key signs no assignment', async () => {
    const v = vin('D', 0);
    await register(v);
    const assignmentKey = KeyFileSigner.fromFile(cloud.signingKeyFile);
    // A token chained to the assignment key (a delegation it signed) instead of the token key.
    const forger = new DelegatedTokenSigner(
      assignmentKey,
      { now: () => new Date() },
      { maxTokenSeconds: 900 },
    );
    const forged = await forger.issue({
      vin: v,
      deviceKeyId: keyIdOf(
        createPublicKey(createPrivateKey(cars.get(v)!.vehicle.keyPem))
          .export({ type: 'spki', format: 'pem' })
          .toString(),
      ),
      nowSeconds: Math.floor(Date.now() / 1000),
      ttlSeconds: 300,
    });
    const refused = await asVehicle(v, 'GET', `/updates/${v}`, undefined, forged.token);
    assert.equal(refused.status, 401);
    assert.equal(refused.json.error.code, 'invalid_token');
    // A genuine token verifies, and its key is not the one vehicles trust for assignments.
    const genuine = await cars.get(v)!.vehicle.token(cloud.endpoints.api, cloud.caCertPem);
    const claims = JSON.parse(Buffer.from(genuine.split('.')[1]!, 'base64url').toString('utf8'));
    assert.notEqual(claims.kid, keyIdOf(await assignmentKey.publicKeyPem()));
    assert.equal((await asVehicle(v, 'GET', `/updates/${v}`, undefined, genuine)).status, 200);
  });
});

describe('registration rights: the vehicle policy comes with the vehicles thing group (issue 18 #9)', {
  timeout: 60_000,
}, () => {
  it('admits a registered vehicle (its thing joined the group) and refuses a CA-signed certificate whose thing never did', async () => {
    const member = vin('G', 0);
    await register(member);
    const connect = (clientId: string, identity: { keyPem: string; certPem: string }) =>
      VehicleConnection.connect({ url: cloud.endpoints.mqtt, caPem: cloud.caCertPem, clientId, identity });
    const live = await connect(member, {
      keyPem: cars.get(member)!.vehicle.keyPem,
      certPem: cars.get(member)!.certPem,
    });
    assert.equal(live.closed, false, 'registration yields a working connection');
    await live.end();

    // A certificate from the very CA that signs vehicles, for a VIN that registration never added to the group:
    // it is not revoked and its CN and client id match, but no policy reaches its thing.
    const outsider = vin('G', 1);
    const { privateKeyPem, csrPem } = await generateKeyAndCsr(outsider);
    const certPem = await issueClientCertificate({
      csrPem,
      caKeyPem: readFileSync(join(dataDir, 'ca', 'ca.key.pem'), 'utf8'),
      caCertPem: cloud.caCertPem,
      commonName: outsider,
      days: 1,
    });
    await assert.rejects(
      connect(outsider, { keyPem: privateKeyPem, certPem }),
      /Not authorized|connection closed|refused/i,
    );
  });
});
