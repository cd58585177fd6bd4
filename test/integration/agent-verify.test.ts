/**
 * The agent refuses what it must refuse, before installing anything, and says why: forged manifest and assignment
 * signatures, replayed (stale) and expired assignments, downgrades, wrong hardware, another vehicle's assignment,
 * mixed-up metadata, malformed offers, and an image whose bytes were changed in S3 after publication.
 * Each test checks the vehicle (state file, active slot) and the backend (DynamoDB through GET /vehicles/{vin}).
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signAssignment } from '../../protocol/assignment.js';
import { signManifest } from '../../protocol/manifest.js';
import type { FullOffer } from '../../protocol/offer.js';
import type { EcuConfig } from '../../vehicle/agent.js';
import type { CreateAgentOptions } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  activeSlot,
  assertVehicleRuns,
  backendUpdate,
  backendVehicle,
  downloadsLeft,
  FACTORY_IMAGE,
  flipStoredByte,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  readAgentState,
  registerAgentVehicle,
  resignAssignment,
  s3ObjectFile,
  sha256,
  startAgent,
  startAgentCloud,
  TCU,
  waitUntil,
} from '../support/agent-cloud.js';
import { newReleaseKey } from '../support/fleet.js';

let ac: AgentCloud;
let v15: PublishedRelease;
let v2: PublishedRelease;
let v3: PublishedRelease;
const rogue = newReleaseKey();
let vinSerial = 0;
const nextVin = () => `1HGCM82633A2${String(++vinSerial).padStart(5, '0')}`;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud();
  [v15, v2, v3] = await Promise.all([
    publishRelease(ac, { version: '1.5.0', size: 200 * 1024 }),
    publishRelease(ac, { version: '2.0.0', size: 256 * 1024 + 17 }),
    publishRelease(ac, { version: '3.0.0', size: 256 * 1024 }),
  ]);
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

type Vehicle = Awaited<ReturnType<typeof startAgent>> & { vin: string; dir: string };

async function withVehicle(
  fn: (v: Vehicle) => Promise<void>,
  opts: {
    registry?: EcuConfig[];
    inventory?: EcuConfig[];
    overrides?: (dir: string) => Partial<CreateAgentOptions>;
  } = {},
): Promise<void> {
  const vin = nextVin();
  const dir = await registerAgentVehicle(ac, vin, opts.registry ?? [TCU]);
  const started = await startAgent(ac, vin, dir, {
    ...(opts.inventory ? { ecus: opts.inventory } : {}),
    ...opts.overrides?.(dir),
  });
  try {
    await started.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
    await fn({ ...started, vin, dir });
  } finally {
    await started.close();
  }
}

/** Publishes the offer and waits for the agent's rejection; checks nothing was downloaded or installed. */
async function expectRejected(v: Vehicle, offer: unknown, version: string, reason: RegExp): Promise<void> {
  const before = readAgentState(v.dir);
  const requestsBefore = v.events.events.filter((e) => e.type === 'request').length;
  await publishOffer(ac, v.vin, offer);
  const outcome = await v.events.outcome(version);
  assert.equal(outcome.status, 'rejected', `outcome: ${JSON.stringify(outcome)}`);
  assert.match(outcome.reason ?? '', reason);
  await v.agent.whenIdle();
  assert.equal(
    v.events.events.filter((e) => e.type === 'request').length,
    requestsBefore,
    'nothing was downloaded',
  );
  const state = readAgentState(v.dir);
  assert.equal(
    state.last_counter,
    before.last_counter,
    'a refused assignment never raises the accepted counter',
  );
  assert.equal(state.current, null, 'no update in progress');
  assert.deepEqual(downloadsLeft(v.dir), [], 'no download files');
}

/**
 * Publishes an offer whose assignment is not verifiably for this vehicle and waits for the agent to refuse it: no
 * download, no counter, no outcome and no report (it cannot tell which update the offer really concerns).
 */
async function expectRefused(v: Vehicle, offer: unknown, reason: RegExp): Promise<void> {
  const before = readAgentState(v.dir);
  const seen = v.events.events.length;
  await publishOffer(ac, v.vin, offer);
  const refused = await v.events.waitFor(
    (e) => e.type === 'refused' && v.events.events.indexOf(e) >= seen,
    20_000,
    'the refusal',
  );
  assert.match(refused.type === 'refused' ? refused.reason : '', reason);
  await v.agent.whenIdle();
  const after = v.events.events.slice(seen);
  assert.deepEqual(
    after.filter((e) => e.type === 'request' || e.type === 'outcome' || e.type === 'url'),
    [],
    'nothing fetched, no outcome',
  );
  const state = readAgentState(v.dir);
  assert.equal(state.last_counter, before.last_counter);
  assert.equal(state.pending_reports.length, 0, 'nothing to report');
  assert.equal(state.current, null);
}

async function expectBackend(
  vin: string,
  version: string,
  status: string | undefined,
  ecuVersion: string,
  reason?: RegExp,
) {
  const backend = await backendVehicle(ac, vin);
  const update = backendUpdate(backend, version);
  assert.equal(update?.status, status, `backend status of ${version}: ${JSON.stringify(backend.updates)}`);
  if (reason) assert.match(update?.reason ?? '', reason, 'the backend records the reason');
  assert.equal(backend.ecus[0]?.version, ecuVersion, 'backend inventory version');
}

const assertFactory = (dir: string) => assertVehicleRuns(dir, '1.0.0', FACTORY_IMAGE);

describe('vehicle agent: what it refuses', { timeout: 240_000 }, () => {
  it('refuses a manifest not signed by a trusted release key (compromised backend alone)', async () => {
    await withVehicle(async (v) => {
      const offer = await initiateOffer(v, '2.0.0');
      const forged: FullOffer = {
        ...offer,
        manifest: await signManifest(offer.manifest.manifest, [rogue.signer]),
      };
      await expectRejected(v, forged, '2.0.0', /^manifest_signature/);
      assertFactory(v.dir);
      await expectBackend(v.vin, '2.0.0', 'rejected', '1.0.0', /manifest_signature/);
    });
  });

  it('refuses an assignment not signed by the backend key (stolen release key alone), without reporting on the update it names', async () => {
    await withVehicle(async (v) => {
      const offer = await initiateOffer(v, '2.0.0');
      const bySomeoneElse = await signAssignment(offer.assignment.assignment, rogue.signer);
      const forged: FullOffer = {
        ...offer,
        assignment: { ...bySomeoneElse, key_id: offer.assignment.key_id },
      };
      await expectRefused(v, forged, /^assignment_signature/);
      assertFactory(v.dir);
      // A forged offer says nothing about the genuine update it names: that update is untouched, and installs.
      await expectBackend(v.vin, '2.0.0', 'initiated', '1.0.0');
      await publishOffer(ac, v.vin, offer);
      assert.equal((await v.events.outcome('2.0.0')).status, 'completed');
      await v.agent.whenIdle();
      await expectBackend(v.vin, '2.0.0', 'completed', '2.0.0');
    });
  });

  it('refuses a replayed older assignment (freeze): its counter is not above the last accepted', async () => {
    await withVehicle(async (v) => {
      const older = await initiateOffer(v, '2.0.0');
      const newer = await initiateOffer(v, '3.0.0');
      assert.ok(newer.assignment.assignment.counter > older.assignment.assignment.counter, 'counters grow');
      await publishOffer(ac, v.vin, newer);
      assert.equal((await v.events.outcome('3.0.0')).status, 'completed');
      await expectRejected(v, older, '2.0.0', /^stale_counter/);
      assert.equal(readAgentState(v.dir).last_counter, newer.assignment.assignment.counter);
      assertVehicleRuns(v.dir, '3.0.0', v3.image);
      await expectBackend(v.vin, '2.0.0', 'rejected', '3.0.0', /stale_counter/);
      assert.equal(backendUpdate(await backendVehicle(ac, v.vin), '3.0.0')?.status, 'completed');
    });
  });

  it('refuses an expired assignment even with a valid backend signature', async () => {
    await withVehicle(async (v) => {
      const offer = await initiateOffer(v, '2.0.0');
      const past = Date.now() - 3600_000;
      const expired: FullOffer = {
        ...offer,
        assignment: await resignAssignment(ac, offer.assignment, {
          issued_at: new Date(past - 60_000).toISOString(),
          expires_at: new Date(past).toISOString(),
        }),
      };
      await expectRejected(v, expired, '2.0.0', /^expired/);
      assertFactory(v.dir);
      await expectBackend(v.vin, '2.0.0', 'rejected', '1.0.0', /expired/);
    });
  });

  it('refuses a downgrade below the installed version (anti-rollback)', async () => {
    await withVehicle(async (v) => {
      const higher = await initiateOffer(v, '2.0.0');
      const lower = await initiateOffer(v, '1.5.0'); // valid when issued: the car still ran 1.0.0
      await publishOffer(ac, v.vin, higher);
      assert.equal((await v.events.outcome('2.0.0')).status, 'completed');
      await expectRejected(v, lower, '1.5.0', /^downgrade/);
      assertVehicleRuns(v.dir, '2.0.0', v2.image);
      await expectBackend(v.vin, '1.5.0', 'rejected', '2.0.0', /downgrade/);
      assert.notEqual(sha256(v15.image), activeSlot(v.dir).contentSha256);
    });
  });

  it('refuses software built for other hardware (the registry is stale; the car knows its ECU)', async () => {
    const replaced = { ...TCU, hardware_id: 'TCU-HW-2' };
    await withVehicle(
      async (v) => {
        const offer = await initiateOffer(v, '2.0.0'); // the backend believes the car has TCU-HW-1
        await expectRejected(v, offer, '2.0.0', /^hardware_mismatch/);
        assertFactory(v.dir);
        await expectBackend(v.vin, '2.0.0', 'rejected', '1.0.0', /hardware_mismatch/);
      },
      { registry: [TCU], inventory: [replaced] },
    );
  });

  it("refuses another vehicle's assignment without being silenced by it, and metadata mixed from two releases", async () => {
    const otherVin = nextVin();
    const otherDir = await registerAgentVehicle(ac, otherVin);
    const other = await startAgent(ac, otherVin, otherDir, {
      mqttUrl: undefined,
      polling: { intervalMs: 3_600_000 },
    });
    const theirs = await initiateOffer(other, '2.0.0');
    await other.close();
    await withVehicle(async (v) => {
      await expectRefused(v, theirs, /^wrong_vin/);
      // Its own offer for the same update (same per-vehicle counter value as theirs) is still installed.
      const own2 = await initiateOffer(v, '2.0.0');
      assert.equal(
        own2.assignment.assignment.counter,
        theirs.assignment.assignment.counter,
        'same counter value',
      );
      const outcomesBefore = v.events.events.filter((e) => e.type === 'outcome').length;
      await publishOffer(ac, v.vin, own2);
      const installed = await v.events.waitFor(
        (e) =>
          e.type === 'outcome' && v.events.events.filter((x) => x.type === 'outcome').length > outcomesBefore,
        20_000,
        'the genuine offer outcome',
      );
      assert.equal(installed.type === 'outcome' && installed.status, 'completed', JSON.stringify(installed));
      // Its own assignment for 3.0.0 with the 1.5.0 manifest: the assignment binds the manifest digest.
      const own3 = await initiateOffer(v, '3.0.0');
      const mixed: FullOffer = { ...own3, manifest: v15.signed };
      await expectRejected(v, mixed, '3.0.0', /^manifest_mismatch/);
      assertVehicleRuns(v.dir, '2.0.0', v2.image);
      await expectBackend(v.vin, '3.0.0', 'rejected', '2.0.0', /manifest_mismatch/);
      assert.equal(backendUpdate(await backendVehicle(ac, v.vin), '2.0.0')?.status, 'completed');
    });
    const theirBackend = await backendVehicle(ac, otherVin);
    assert.equal(
      backendUpdate(theirBackend, '2.0.0')?.status,
      'initiated',
      "the other car's update is untouched",
    );
  });

  it('rejects a malformed offer it can attribute, and ignores garbage', async () => {
    await withVehicle(async (v) => {
      await publishOffer(ac, v.vin, { hello: 'not an offer' });
      const offer = await initiateOffer(v, '2.0.0');
      const { signatures: _dropped, ...unsigned } = offer.manifest;
      await publishOffer(ac, v.vin, { ...offer, manifest: unsigned });
      // A malformed offer never becomes an update here, but the rejection it can attribute reaches the backend.
      await waitUntil(
        async () => backendUpdate(await backendVehicle(ac, v.vin), '2.0.0')?.status === 'rejected',
        10_000,
        'the backend to record the rejection',
      );
      await v.agent.whenIdle();
      assert.equal(
        v.events.events.filter((e) => e.type === 'accepted' || e.type === 'outcome').length,
        0,
        'no update was started',
      );
      assert.equal(
        v.events.events.filter((e) => e.type === 'offer').length,
        0,
        'neither message entered the inbox',
      );
      assertFactory(v.dir);
      await expectBackend(v.vin, '2.0.0', 'rejected', '1.0.0', /invalid_offer/);
    });
  });

  it('refuses an image changed in S3 after publication: corrupt chunks are re-fetched, then verification_failed', async () => {
    const tampered = await publishRelease(ac, { version: '4.0.0', size: 640 * 1024 });
    const file = s3ObjectFile(ac, tampered.signed.manifest);
    assert.equal(statSync(file).size, tampered.image.length, 'found the stored object');
    const at = 5 * 64 * 1024 + 1000; // inside chunk 5
    flipStoredByte(file, at);

    await withVehicle(async (v) => {
      await publishOffer(ac, v.vin, await initiateOffer(v, '4.0.0'));
      const outcome = await v.events.outcome('4.0.0');
      assert.equal(outcome.status, 'verification_failed', JSON.stringify(outcome));
      assert.match(outcome.reason ?? '', /chunk 5/);
      const retries = v.events.events.filter((e) => e.type === 'request' && e.offset === 5 * 64 * 1024);
      assert.ok(
        retries.length >= 2,
        `the corrupt chunk was fetched again (${retries.length} requests at its offset)`,
      );
      await v.agent.whenIdle();
      assertFactory(v.dir);
      assert.equal(readAgentState(v.dir).recent.at(-1)?.status, 'verification_failed');
      await expectBackend(v.vin, '4.0.0', 'verification_failed', '1.0.0', /chunk 5/);
    });
  });

  it('checks the image again as the installer reads it: a file damaged after download is deleted and fetched again, nothing activated', async () => {
    // Every chunk verified as it arrived; then the storage flips a bit before the install (a disk fault).
    const damage = (times: number) => (dir: string) => ({
      hooks: {
        onChunkVerified: ({ verifiedBytes }: { verifiedBytes: number }) => {
          if (verifiedBytes !== v2.image.length || times-- <= 0) return;
          const fd = openSync(join(dir, 'downloads', `${v2.signed.manifest.sha256}.part`), 'r+');
          writeSync(fd, Buffer.from([v2.image[100]! ^ 0x01]), 0, 1, 100);
          closeSync(fd);
        },
      },
    });
    await withVehicle(
      async (v) => {
        await publishOffer(ac, v.vin, await initiateOffer(v, '2.0.0'));
        const outcome = await v.events.outcome('2.0.0');
        assert.equal(outcome.status, 'completed', outcome.reason);
        const fromZero = v.events.events.filter((e) => e.type === 'request' && e.offset === 0);
        assert.equal(fromZero.length, 2, 'the damaged image was deleted and downloaded again');
        await v.agent.whenIdle();
        assertVehicleRuns(v.dir, '2.0.0', v2.image);
        await expectBackend(v.vin, '2.0.0', 'completed', '2.0.0');
      },
      { overrides: damage(1) },
    );
    await withVehicle(
      async (v) => {
        await publishOffer(ac, v.vin, await initiateOffer(v, '2.0.0'));
        const outcome = await v.events.outcome('2.0.0');
        assert.equal(outcome.status, 'verification_failed', JSON.stringify(outcome));
        assert.match(outcome.reason ?? '', /does not match the signed manifest.*SHA-256/);
        await v.agent.whenIdle();
        assertFactory(v.dir);
        await expectBackend(v.vin, '2.0.0', 'verification_failed', '1.0.0', /SHA-256/);
      },
      { overrides: damage(Number.POSITIVE_INFINITY) },
    );
  });
});
