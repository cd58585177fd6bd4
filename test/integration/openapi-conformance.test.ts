/**
 * Real answers against the API document: every route of the local cloud is driven over HTTPS (the real handlers,
 * emulators and gateway) and each answer, success or refusal, is validated against docs/openapi.json by a JSON
 * Schema validator. The last test requires every route of ROUTES to have answered a conforming success, so a
 * route added without a conformance check here fails.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startLocalCloud } from '../../local/cloud.js';
import { bundleDigest, signBundle } from '../../protocol/bundle.js';
import { ROUTES } from '../../protocol/routes.js';
import { bundleOf } from '../support/bundles.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { https, jsonRequest } from '../support/https.js';
import { OpenApiConformance } from '../support/openapi-conformance.js';

const MiB = 1024 * 1024;
const VIN = '1HGCM82633A004352';
const OTHER_VIN = '5YJSA1E26HF000337';

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let operator: Operator;
let car: TestVehicle;
let other: TestVehicle;
let token: string;
const releaseKey = newReleaseKey();
const image = randomBytes(200 * 1024 + 7);
const doc = new OpenApiConformance();

/** An operator call whose answer must conform to the document and have the expected status. */
async function asOperator(method: string, path: string, status: number, body?: unknown) {
  const res = doc.check(method, path, await operator.call(method, path, body));
  assert.equal(res.status, status, `${method} ${path}: ${res.raw.toString().slice(0, 300)}`);
  return res;
}

/** A vehicle call (as VIN, with its bearer token unless another is given), checked the same way. */
async function asVehicle(method: string, path: string, status: number, body?: unknown, bearer = token) {
  const res = doc.check(
    method,
    path,
    await jsonRequest(cloud.endpoints.api, method, path, cloud.caCertPem, body, bearer),
  );
  assert.equal(res.status, status, `${method} ${path}: ${res.raw.toString().slice(0, 300)}`);
  return res;
}

/** Polls until `done` holds (background jobs), for at most 20 s. */
async function until(done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await done())) {
    assert.ok(Date.now() < deadline, 'the background job did not finish within 20 s');
    await sleep(100);
  }
}

/** Signatures of the bundle by a key the cloud does not trust. */
function newBundleSignatures(b: { signatures: { key_id: string; signature: string }[] }) {
  return b.signatures.map((x) => ({
    ...x,
    signature: Buffer.from('forged signature bytes').toString('base64'),
  }));
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-openapi-'));
  // Read by the operator function at its cold start: a small threshold shows the multipart upload answer too.
  process.env.MULTIPART_THRESHOLD_BYTES = String(5 * MiB);
  process.env.MULTIPART_PART_BYTES = String(5 * MiB);
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 200,
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  car = await TestVehicle.create(VIN);
  other = await TestVehicle.create(OTHER_VIN);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('real answers conform to docs/openapi.json', { timeout: 120_000 }, () => {
  it('releases: create (single PUT and multipart), publish, get, list, and refusals', async () => {
    const signed = await signedRelease(image, {
      releaseId: 'tcu-3.0.1',
      version: '3.0.1',
      signer: releaseKey.signer,
    });
    const created = await asOperator('POST', '/releases', 201, signed);
    assert.equal(created.json.upload.method, 'PUT');
    const put = await https(created.json.upload.url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(image.length) },
      body: image,
      ca: cloud.caCertPem,
    });
    assert.equal(put.status, 200);
    // 202: the image is verified by the background job; the release is published when it is done.
    await asOperator('POST', '/releases/tcu-3.0.1/publish', 202, {});
    await until(
      async () => (await asOperator('GET', '/releases/tcu-3.0.1', 200)).json.status === 'published',
    );
    await asOperator('POST', '/releases/tcu-3.0.1/publish', 200, {});

    const big = await signedRelease(randomBytes(6 * MiB), {
      releaseId: 'tcu-4.0.0',
      version: '4.0.0',
      signer: releaseKey.signer,
    });
    const multipart = await asOperator('POST', '/releases', 201, big);
    assert.equal(multipart.json.upload.method, 'MULTIPART');
    assert.equal(multipart.json.upload.parts.length, 2);

    assert.equal((await asOperator('GET', '/releases/tcu-3.0.1', 200)).json.status, 'published');
    assert.equal((await asOperator('GET', '/releases/tcu-4.0.0', 200)).json.published_at, null);
    const list = await asOperator('GET', '/releases?limit=1', 200);
    assert.equal(list.json.releases.length, 1);
    assert.equal(typeof list.json.next_token, 'string');
    assert.equal(list.json.releases[0].manifest, undefined, 'listings leave manifests out');
    const second = await asOperator('GET', `/releases?limit=1&next_token=${list.json.next_token}`, 200);
    assert.notEqual(second.json.releases[0].release_id, list.json.releases[0].release_id, 'the next page');
    await asOperator('GET', '/releases?next_token=not-a-token', 400);

    await asOperator('GET', '/releases/no-such-release', 404);
    await asOperator('POST', '/releases/tcu-4.0.0/publish', 409, {});
    await asOperator('POST', '/releases', 400, { manifest: {} });
    await asOperator('GET', '/releases?limit=1001', 400);
  });

  it('vehicles: register, get, and refusals', async () => {
    await asOperator('POST', '/vehicles', 201, car.registration());
    await asOperator('POST', '/vehicles', 201, other.registration());
    await asOperator('POST', '/vehicles', 409, car.registration());
    const v = await asOperator('GET', `/vehicles/${VIN}`, 200);
    assert.deepEqual(v.json.updates, []);
    assert.equal(v.json.active_update_id, null);
    await asOperator('GET', '/vehicles/1M8GDM9AXKP042788', 404);
    await asOperator('GET', '/vehicles/not-a-vin', 400);
    const res = doc.check(
      'GET',
      `/vehicles/${VIN}`,
      await jsonRequest(cloud.endpoints.api, 'GET', `/vehicles/${VIN}`, cloud.caCertPem, undefined, 'wrong'),
    );
    assert.equal(res.status, 401, 'operator routes need the admin token');
  });

  it('vehicle auth: challenge, token, and a refused answer', async () => {
    const challenge = await asVehicle('POST', '/auth/challenge', 200, { vin: VIN }, undefined);
    const issued = await asVehicle(
      'POST',
      '/auth/token',
      200,
      { vin: VIN, nonce: challenge.json.nonce, signature: car.signChallenge(challenge.json.nonce) },
      undefined,
    );
    token = issued.json.token;
    const again = await asVehicle('POST', '/auth/challenge', 200, { vin: VIN }, undefined);
    await asVehicle(
      'POST',
      '/auth/token',
      401,
      { vin: VIN, nonce: again.json.nonce, signature: other.signChallenge(again.json.nonce) },
      undefined,
    );
    await asVehicle('POST', '/auth/challenge', 400, { vin: VIN, extra: 1 }, undefined);
  });

  it('vehicle updates: initiate, download, redirect, status, list, and refusals', async () => {
    const initiated = await asVehicle('POST', `/updates/${VIN}/initiate`, 200, { firmware_version: '3.0.1' });
    assert.equal(initiated.json.status, 'initiated');
    await asVehicle('POST', `/updates/${VIN}/download`, 200, { firmware_version: '3.0.1' });
    const redirect = await asVehicle('GET', `/updates/${VIN}/firmware/3.0.1`, 302);
    assert.equal(redirect.headers.location, redirect.json.download_url);
    const progress = await asVehicle('POST', `/updates/${VIN}/status`, 200, {
      status: 'downloading',
      progress: 40,
      sequence: 1,
    });
    assert.equal(progress.json.applied, true);
    const list = await asVehicle('GET', `/updates/${VIN}`, 200);
    assert.equal(list.json.pending.length, 1);
    await asVehicle('POST', `/updates/${VIN}/status`, 200, { status: 'completed', sequence: 2 });
    const replay = await asVehicle('POST', `/updates/${VIN}/status`, 200, {
      status: 'downloading',
      sequence: 1,
    });
    assert.equal(replay.json.applied, false);
    const done = await asVehicle('GET', `/updates/${VIN}`, 200);
    assert.equal(done.json.pending.length, 0);
    assert.equal(done.json.updates[0].status, 'completed');

    const v = await asOperator('GET', `/vehicles/${VIN}`, 200);
    assert.equal(v.json.updates[0].status, 'completed');
    assert.equal(v.json.ecus[0].version, '3.0.1');

    await asVehicle('GET', `/updates/${OTHER_VIN}`, 403);
    await asVehicle('GET', `/updates/${VIN}`, 401, undefined, 'not-a-token');
    await asVehicle('POST', `/updates/${VIN}/initiate`, 409, { firmware_version: '3.0.1' });
    await asVehicle('POST', `/updates/${VIN}/download`, 404, { firmware_version: '9.9.9' });
    await asVehicle('POST', `/updates/${VIN}/status`, 400, { status: 'offered' });
    await asVehicle('POST', `/updates/${VIN}/status`, 413, { status: 'failed', reason: 'x'.repeat(20_000) });
    await asVehicle('GET', `/updates/${VIN}/firmware/not-a-version`, 400);
  });

  it('campaigns: create, list, get, vehicles, excluded, start, pause, resume, cancel, and refusals', async () => {
    const accepted = await asOperator('POST', '/campaigns', 202, {
      campaign_id: 'conformance',
      name: 'conformance',
      release_id: 'tcu-3.0.1',
      targets: { vins: [OTHER_VIN, VIN, '1M8GDM9AXKP042788'] },
      policy: { waves: [100], skip_canary: true, halt_failure_count: 1 },
    });
    assert.equal(accepted.json.status, 'preparing');
    let created = accepted;
    await until(async () => {
      created = await asOperator('GET', '/campaigns/conformance', 200);
      return created.json.status !== 'preparing';
    });
    assert.equal(created.json.status, 'created');
    assert.deepEqual(created.json.excluded, {
      count: 2,
      by_reason: { already_at_or_above_version: 1, unknown_vehicle: 1 },
    });
    const excluded = await asOperator('GET', '/campaigns/conformance/excluded?limit=1', 200);
    assert.equal(excluded.json.excluded.length, 1);
    const rest = await asOperator(
      'GET',
      `/campaigns/conformance/excluded?limit=1&next_token=${excluded.json.next_token}`,
      200,
    );
    assert.deepEqual(
      [...excluded.json.excluded, ...rest.json.excluded].map((e: { reason: string }) => e.reason).sort(),
      ['already_at_or_above_version', 'unknown_vehicle'],
    );
    await asOperator('GET', '/campaigns/conformance/excluded?limit=0', 400);
    // A VIN list uploaded through the presigned PUT, then announced complete.
    const vinList = `${OTHER_VIN}\r\n`;
    const byList = await asOperator('POST', '/campaigns', 202, {
      campaign_id: 'conformance-list',
      name: 'by list',
      release_id: 'tcu-3.0.1',
      targets: { vin_list: { size: vinList.length } },
      policy: { waves: [100], skip_canary: true },
    });
    assert.equal(byList.json.preparation.state, 'awaiting_targets');
    await asOperator('POST', '/campaigns/conformance-list/targets', 409, {});
    await https(byList.json.upload.url, {
      method: 'PUT',
      headers: byList.json.upload.headers,
      body: Buffer.from(vinList),
      ca: cloud.caCertPem,
    });
    const started = await asOperator('POST', '/campaigns/conformance-list/targets', 202, {});
    assert.equal(started.json.preparation.state, 'running');
    let prepared = started;
    await until(async () => {
      prepared = await asOperator('GET', '/campaigns/conformance-list', 200);
      return prepared.json.status !== 'preparing';
    });
    // Its only vehicle is held by the campaign above: reported, and nothing left to target.
    assert.equal(prepared.json.status, 'failed');
    assert.deepEqual(prepared.json.excluded.by_reason, { in_other_campaign: 1 });
    // Cancelled while it waits for its list: nothing was written, so it is cancelled at once.
    await asOperator('POST', '/campaigns', 202, {
      campaign_id: 'conformance-wait',
      name: 'waits',
      release_id: 'tcu-3.0.1',
      targets: { vin_list: { size: 100 } },
    });
    const dropped = await asOperator('POST', '/campaigns/conformance-wait/cancel', 200, {});
    assert.equal(dropped.json.status, 'cancelled');
    await asOperator('GET', '/campaigns/no-such-campaign/excluded', 404);
    await asOperator('POST', '/campaigns', 409, {
      campaign_id: 'conformance',
      name: 'again',
      release_id: 'tcu-3.0.1',
      targets: { vins: [OTHER_VIN] },
    });
    await asOperator('POST', '/campaigns/conformance/pause', 409, {});
    await asOperator('POST', '/campaigns/conformance/start', 200, {});
    // The engine's tick offers the wave: the per-vehicle view then has its offer time and deadline.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const wave = await asOperator('GET', '/campaigns/conformance/vehicles?wave=0', 200);
      if (wave.json.vehicles[0]?.offered_at) {
        assert.equal(typeof wave.json.vehicles[0].deadline, 'string');
        break;
      }
      assert.ok(Date.now() < deadline, 'the campaign never offered its wave');
      await sleep(100);
    }
    await asOperator('GET', '/campaigns/conformance/vehicles?wave=5', 400);
    await asOperator('POST', '/campaigns/conformance/pause', 200, {});
    await asOperator('POST', '/campaigns/conformance/resume', 200, {});
    const running = await asOperator('GET', '/campaigns/conformance', 200);
    assert.equal(running.json.status, 'running');
    assert.equal(running.json.counts.offered, 1);
    const list = await asOperator('GET', '/campaigns?limit=10', 200);
    // Campaigns only: the preparation checkpoints sharing their table are not listed.
    assert.deepEqual(list.json.campaigns.map((c: { campaign_id: string }) => c.campaign_id).sort(), [
      'conformance',
      'conformance-list',
      'conformance-wait',
    ]);
    // 202: the offers are withdrawn by the background job; the campaign is cancelled when it is done.
    const cancelling = await asOperator('POST', '/campaigns/conformance/cancel', 202, {});
    assert.equal(cancelling.json.status, 'cancelling');
    await until(
      async () => (await asOperator('GET', '/campaigns/conformance', 200)).json.status === 'cancelled',
    );
    await asOperator('POST', '/campaigns/conformance/cancel', 200, {});
    await asOperator('POST', '/campaigns/conformance/resume', 409, {});
    await asOperator('GET', '/campaigns/no-such-campaign', 404);
    await asOperator('POST', '/campaigns/conformance/start', 400, { now: true });
  });

  it("freshness: the statement with this vehicle's proof, an alert, and refusals", async () => {
    await cloud.publishFreshness();
    const answer = await asVehicle('GET', `/updates/${VIN}/freshness`, 200);
    assert.equal(answer.json.vin, VIN);
    const alert = await asVehicle('POST', `/updates/${VIN}/freshness/alert`, 202, {
      kind: 'no_statement',
      sequence: answer.json.signed.statement.sequence,
      detail: 'conformance',
    });
    assert.equal(alert.json.recorded, true);
    await asVehicle('POST', `/updates/${VIN}/freshness/alert`, 400, {
      kind: 'nonsense',
      sequence: 1,
      detail: '',
    });
    await asVehicle('GET', `/updates/${OTHER_VIN}/freshness`, 403);
  });

  it('inventory: a report stored and shown, a stale one not applied, and refusals', async () => {
    const ecus = [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '3.0.1', sha256: 'a'.repeat(64) }];
    const stored = await asVehicle('POST', `/updates/${VIN}/inventory`, 200, { sequence: 1_000_000, ecus });
    assert.equal(stored.json.applied, true);
    const stale = await asVehicle('POST', `/updates/${VIN}/inventory`, 200, { sequence: 999_999, ecus });
    assert.equal(stale.json.applied, false);
    const v = await asOperator('GET', `/vehicles/${VIN}`, 200);
    assert.deepEqual(v.json.inventory.ecus, ecus);
    await asVehicle('POST', `/updates/${VIN}/inventory`, 409, {
      sequence: 1_000_001,
      ecus: [{ ...ecus[0], hardware_id: 'OTHER-HW' }],
    });
    await asVehicle('POST', `/updates/${VIN}/inventory`, 400, { sequence: 1, ecus: [] });
  });

  it('kill switches: withdraw a release, revoke a vehicle, and refusals', async () => {
    const withdrawn = await asOperator('POST', '/releases/tcu-4.0.0/withdraw', 200, { reason: 'bad batch' });
    assert.equal(withdrawn.json.status, 'withdrawn');
    assert.equal(typeof withdrawn.json.withdrawn_at, 'string');
    await asOperator('POST', '/releases/no-such-release/withdraw', 404, {});
    const revoked = await asOperator('POST', `/vehicles/${OTHER_VIN}/revoke`, 200, { reason: 'stolen' });
    assert.equal(revoked.json.vin, OTHER_VIN);
    const v = await asOperator('GET', `/vehicles/${OTHER_VIN}`, 200);
    assert.equal(v.json.revoked_at, revoked.json.revoked_at);
    await asOperator('POST', '/vehicles/1M8GDM9AXKP042788/revoke', 404, {});
  });

  it('audit: the mutations above, newest first, with filters, and refusals', async () => {
    const page = await asOperator('GET', '/audit?limit=1', 200);
    assert.deepEqual(
      [page.json.entries[0].action, page.json.entries[0].target, page.json.entries[0].outcome],
      ['POST /vehicles/{vin}/revoke', '1M8GDM9AXKP042788', 'failed'],
    );
    assert.equal(page.json.entries[0].actor, 'local-admin', 'the admin token acts as local-admin');
    const refused = await asOperator('GET', '/audit?outcome=refused', 200);
    assert.deepEqual(refused.json.entries, [], 'the admin token is never refused a route');
    await asOperator('GET', '/audit?outcome=maybe', 400);
  });

  it('console reads: the caller, the registry filtered, a vehicle timeline, and refusals', async () => {
    assert.deepEqual((await asOperator('GET', '/me', 200)).json, { actor: 'local-admin', role: 'admin' });
    const all = await asOperator('GET', '/vehicles', 200);
    assert.deepEqual(all.json.vehicles.map((v: { vin: string }) => v.vin).sort(), [VIN, OTHER_VIN].sort());
    assert.equal(all.json.next_token, null);
    const upgraded = await asOperator('GET', '/vehicles?version=3.0.1', 200);
    assert.deepEqual(
      upgraded.json.vehicles.map((v: { vin: string }) => v.vin),
      [VIN],
    );
    assert.equal(upgraded.json.scanned, 2);
    await asOperator('GET', '/vehicles?next_token=not-a-token', 400);
    // Installed versions of the targeted ECU, counted over two scan segments: what the registry listing shows.
    const counted: Record<string, number> = {};
    for (const segment of [0, 1]) {
      const page = await asOperator(
        'GET',
        `/fleet/versions?ecu=tcu&below=9.0.0&segments=2&segment=${segment}`,
        200,
      );
      assert.equal(page.json.next_token, null);
      for (const { version, vehicles } of page.json.versions)
        counted[version] = (counted[version] ?? 0) + vehicles;
    }
    const listed: Record<string, number> = {};
    type Listed = { revoked_at: string | null; ecus: { ecu: string; version: string }[] };
    for (const v of all.json.vehicles as Listed[]) {
      const tcu = v.ecus.find((e) => e.ecu === 'tcu');
      // A revoked vehicle is no campaign's target, so it is not counted.
      if (tcu && v.revoked_at === null) listed[tcu.version] = (listed[tcu.version] ?? 0) + 1;
    }
    assert.ok(
      (all.json.vehicles as Listed[]).some((v) => v.revoked_at !== null),
      'one vehicle was revoked above',
    );
    assert.deepEqual(counted, listed);
    assert.ok(Object.keys(counted).length > 0);
    const none = await asOperator('GET', '/fleet/versions?ecu=tcu&below=0.0.1', 200);
    assert.deepEqual(none.json.versions, [], 'every vehicle is at or above 0.0.1');
    await asOperator('GET', '/fleet/versions?ecu=tcu&segment=2&segments=2', 400);
    await asOperator('GET', '/fleet/versions?below=1.0.0', 400);
    await asOperator('GET', '/vehicles?version=new', 400);
    const history = await asOperator('GET', `/vehicles/${VIN}/history?limit=50`, 200);
    assert.ok(history.json.events.some((e: { status: string }) => e.status === 'downloading'));
    // Newest first: the completion, then the download before it. The replayed report above is not in it: the
    // history keeps status changes only (issue 12 point 5).
    assert.deepEqual(
      history.json.events.slice(0, 2).map((e: { status: string; applied: boolean }) => [e.status, e.applied]),
      [
        ['completed', true],
        ['downloading', true],
      ],
    );
    await asOperator('GET', '/vehicles/1M8GDM9AXKP042788/history', 404);
    await asOperator('GET', `/vehicles/${VIN}/history?limit=0`, 400);
  });

  it('bundles: stored, read, offered by a campaign and fetched by the vehicle, and refusals', async () => {
    const img = randomBytes(100 * 1024);
    const member = await signedRelease(img, {
      releaseId: 'tcu-3.0.5',
      version: '3.0.5',
      signer: releaseKey.signer,
    });
    const { published } = await operator.publish(member, img);
    assert.equal(published?.json.status, 'published');
    const bundle = await signBundle(bundleOf('tcu-bundle-3-0-5', '3.0.5', [member]), [releaseKey.signer]);
    const stored = await asOperator('POST', '/bundles', 201, bundle);
    assert.equal(stored.json.digest, bundleDigest(bundle.bundle));
    await asOperator('POST', '/bundles', 400, { ...bundle, signatures: newBundleSignatures(bundle) });
    assert.equal((await asOperator('GET', '/bundles/tcu-bundle-3-0-5', 200)).json.members.length, 1);
    await asOperator('GET', '/bundles/no-such-bundle', 404);
    await asVehicle('POST', `/updates/${VIN}/bundle`, 409, { bundle_id: 'tcu-bundle-3-0-5' });
    const created = await operator.createCampaign({
      campaign_id: 'bundle-conformance',
      name: 'bundle conformance',
      bundle_id: 'tcu-bundle-3-0-5',
      targets: { vins: [VIN] },
      policy: { waves: [100], skip_canary: true },
    });
    assert.equal(created.json.status, 'created', created.raw.toString());
    await asOperator('POST', '/campaigns/bundle-conformance/start', 200, {});
    await until(
      async () =>
        (
          await jsonRequest(
            cloud.endpoints.api,
            'POST',
            `/updates/${VIN}/bundle`,
            cloud.caCertPem,
            {
              bundle_id: 'tcu-bundle-3-0-5',
            },
            token,
          )
        ).status === 200,
    );
    const answer = await asVehicle('POST', `/updates/${VIN}/bundle`, 200, { bundle_id: 'tcu-bundle-3-0-5' });
    assert.equal(answer.json.members[0].manifest.manifest.release_id, 'tcu-3.0.5');
    assert.equal(answer.json.rollback, null);
    await asVehicle('POST', `/updates/${VIN}/bundle`, 400, { bundle_id: '' });
  });

  it('every route of ROUTES answered a success that conforms to the document', () => {
    const routes = new Set(ROUTES.map((r) => `${r.method} ${r.resource}`));
    assert.deepEqual([...doc.operations()].sort(), [...routes].sort(), 'the document lists exactly ROUTES');
    assert.deepEqual([...doc.succeeded()].sort(), [...routes].sort(), 'routes without a conforming success');
  });
});
