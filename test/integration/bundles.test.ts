/**
 * Multi-ECU bundles end to end against a private local cloud (real gateway, lambdas, DynamoDB and S3 emulators,
 * MQTT over mutual TLS): a vehicle of three ECUs (gateway, body controller, infotainment) is offered an OEM-signed
 * bundle by a campaign, fetches it and its members over HTTPS, and installs all or nothing. Failures on the
 * vehicle (a member's health check, a power cut between activations, a bootloader giving a trial up) end with every
 * ECU on its old image; offers a compromised backend makes of part of a bundle or of members from elsewhere are
 * refused before anything is downloaded. A member download cut mid-way, or stopped by a restart, resumes after its
 * verified chunks (the bytes the S3 emulator served say so). Compressed members are built from each ECU's installed
 * image. Campaign conditions on bundles: bundle-conditions.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { signBundle } from '../../protocol/bundle.js';
import type { VehicleAgent } from '../../vehicle/agent.js';
import { FileSlotInstaller } from '../../vehicle/installer.js';
import { ecuDir } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  backendVehicle,
  type PublishedRelease,
  publishRelease,
  readAgentState,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';
import {
  assertAllRun,
  assertEnded as assertEndedOf,
  assertRuns,
  type BundleFixture,
  bundleOf,
  bundleVehicle as bundleVehicleOf,
  campaignUpdate as campaignUpdateOf,
  ECUS,
  factoryImageOf,
  publishBundles,
  publishForgedBundleOffer,
  requestOffsets,
  resumableBundle as resumableBundleOf,
  slotVersions,
  startBundleCampaign,
  untilInventory,
} from '../support/bundles.js';
import { patched, proxyToS3, textImage, transportVia } from '../support/delta-vehicle.js';

let ac: AgentCloud;
let f: BundleFixture;
const HOOK_TIMEOUT = { timeout: 120_000 };
let vinSeq = 0;
const nextVin = () => `1HGCM82633A${String(500_000 + ++vinSeq)}`;

before(async () => {
  ac = await startAgentCloud();
  f = await publishBundles(ac);
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

const bundleVehicle = (vin: string, overrides: Parameters<typeof startAgent>[3] = {}) =>
  bundleVehicleOf(ac, vin, overrides);
const campaignUpdate = (id: string, vin: string) => campaignUpdateOf(ac, id, vin);
const resumableBundle = () => resumableBundleOf(ac);
const assertEnded = (v: { agent: VehicleAgent }, dir: string, campaign: string, vin: string) =>
  assertEndedOf(ac, v, dir, campaign, vin);

const KiB = 1024;
const MiB = 1024 * KiB;

/** The resumable bundle, a fault proxy in front of the S3 emulator, the image transport through it, a fresh VIN. */
async function resumeSetup() {
  const members = await resumableBundle();
  const proxy = await proxyToS3(ac);
  const transport = transportVia(ac, proxy);
  ac.track(() => transport.close());
  return { members, proxy, transport, vin: nextVin() };
}

/** Starts an agent whose hook kills it before `step` of `ecu`; answers once the power is cut. */
async function cutPowerBefore(step: string, ecu: string) {
  const vin = nextVin();
  let agent: VehicleAgent | undefined;
  let cut = false;
  const { dir, v } = await bundleVehicle(vin, {
    hooks: {
      beforeBundleStep: (s, info) => {
        if (s !== step || info.ecu !== ecu) return;
        agent?.kill();
        cut = true;
        return new Promise<void>(() => {}); // the power is off: nothing after this point runs
      },
    },
  });
  agent = v.agent;
  return { vin, dir, v, untilCut: () => waitUntil(() => cut, 60_000, `power cut before ${step} ${ecu}`) };
}

describe('multi-ECU bundles, all or nothing', { timeout: 600_000 }, () => {
  it('installs a bundle on all three ECUs through a campaign; backend and vehicle agree on every version', async () => {
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin);
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-happy', 'body-2-0', [vin]);
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(outcome.update_id, 'campaign#bundle-happy');
    assertAllRun(dir, f, '2.0.0');
    // Per-ECU progress: every member was downloaded, activated, checked healthy and committed, in install order.
    for (const phase of ['downloaded', 'activated', 'healthy', 'committed']) {
      const order = v.events.events
        .filter((e) => e.type === 'bundle_progress' && e.phase === phase)
        .map((e) => (e as { ecu: string }).ecu);
      assert.deepEqual(order, ['gw', 'bcm', 'ivi'], phase);
    }
    await v.agent.whenIdle();
    await untilInventory(ac, vin, '2.0.0');
    const update = await campaignUpdate('bundle-happy', vin);
    assert.equal(update?.status, 'completed');
    // The outcome names every ECU's version; it is what `ota vehicles history` shows. (Per-ECU phase reports go
    // out on MQTT as they happen; on a install this quick they may reach the backend after the outcome, which
    // then ignores them as late.)
    const history = (await ac.operator.call('GET', `/vehicles/${vin}/history`)).json;
    assert.match(JSON.stringify(history), /installed: gw 2\.0\.0, bcm 2\.0\.0, ivi 2\.0\.0/);
    await v.close();
  });

  it("one member's failing health check returns all three ECUs to their old versions and names it", async () => {
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin, {
      healthCheck: (c) => !(c.ecu === 'bcm' && c.version === '2.0.0'),
    });
    await startBundleCampaign(ac, 'bundle-unhealthy', 'body-2-0', [vin]);
    const outcome = await v.events.outcome('2.0.0', 120_000);
    assert.equal(outcome.status, 'rolled_back', outcome.reason);
    assert.match(outcome.reason ?? '', /member bcm: health check of bcm 2\.0\.0 failed/);
    assertAllRun(dir, f, '1.0.0');
    await v.agent.whenIdle();
    const update = await campaignUpdate('bundle-unhealthy', vin);
    assert.equal(update?.status, 'rolled_back');
    await v.close();
  });

  it('a power cut between the second and third activation recovers to all-old on restart', async () => {
    const cut = await cutPowerBefore('activate', 'ivi');
    await startBundleCampaign(ac, 'bundle-power-cut', 'body-2-0', [cut.vin]);
    await cut.untilCut();
    // Two ECUs run their new image on trial, the third its old one: a mix, until the restart settles it.
    assert.deepEqual(slotVersions(cut.dir), { gw: '2.0.0', bcm: '2.0.0', ivi: '1.0.0' });
    const again = await startAgent(ac, cut.vin, cut.dir, { ecus: ECUS, factoryImage: factoryImageOf });
    const outcome = await again.events.outcome('2.0.0', 60_000);
    assert.equal(outcome.status, 'rolled_back', outcome.reason);
    assertAllRun(cut.dir, f, '1.0.0');
    await again.agent.whenIdle();
    assert.equal((await campaignUpdate('bundle-power-cut', cut.vin))?.status, 'rolled_back');
    assert.deepEqual(readAgentState(cut.dir).inbox, [], 'the offer is settled, not retried');
    await again.close();
  });

  it('an unconfirmed slot whose boots run out is given up, and the whole bundle with it', async () => {
    // Every member passed its health check and the bundle was decided; the power goes before the confirmations.
    const cut = await cutPowerBefore('commit', 'gw');
    await startBundleCampaign(ac, 'bundle-boot-budget', 'body-2-0', [cut.vin]);
    await cut.untilCut();
    assert.deepEqual(slotVersions(cut.dir), { gw: '2.0.0', bcm: '2.0.0', ivi: '2.0.0' });
    // The vehicle resets a few times before the agent runs again: the body controller's bootloader spends the
    // trial's boots, then switches back to its old slot on its own.
    const bcm = new FileSlotInstaller({
      dir: ecuDir(cut.dir, 'bcm'),
      ecu: 'bcm',
      factory: { version: '1.0.0', image: factoryImageOf({ ecu: 'bcm' }) },
    });
    let gaveUp: string | undefined;
    for (let boot = 0; boot < 10 && !gaveUp; boot++) gaveUp = (await bcm.boot()).gaveUp?.version;
    assert.equal(gaveUp, '2.0.0', 'the bootloader gave the unconfirmed 2.0.0 up');
    assert.deepEqual(slotVersions(cut.dir), { gw: '2.0.0', bcm: '1.0.0', ivi: '2.0.0' });
    const again = await startAgent(ac, cut.vin, cut.dir, { ecus: ECUS, factoryImage: factoryImageOf });
    const outcome = await again.events.outcome('2.0.0', 60_000);
    assert.equal(outcome.status, 'rolled_back', outcome.reason);
    assert.match(outcome.reason ?? '', /member bcm: bcm fell back to 1\.0\.0/);
    assertAllRun(cut.dir, f, '1.0.0');
    await again.close();
  });

  it('refuses a partial bundle and a mix-and-match offer from a compromised backend, installing nothing', async () => {
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin);
    const next = (ecu: string) => f.releases[ecu]!['2.0.0']!.signed;
    // Only two of the three members: the infotainment unit would run 1.0.0 against a 2.0.0 gateway.
    await publishForgedBundleOffer(ac, vin, 'forged-partial', f.next, [next('gw'), next('bcm')]);
    const partial = await v.events.waitFor(
      (e) => e.type === 'outcome' && e.update_id === 'forged-partial',
      60_000,
      'partial bundle refused',
    );
    assert.equal((partial as { status: string }).status, 'rejected');
    assert.match((partial as { reason: string }).reason, /bundle_incomplete/);
    // All three members, but the infotainment one from another bundle (its 1.0.0 release): mix and match.
    await publishForgedBundleOffer(ac, vin, 'forged-mix', f.next, [
      next('gw'),
      next('bcm'),
      f.releases.ivi!['1.0.0']!.signed,
    ]);
    const mixed = await v.events.waitFor(
      (e) => e.type === 'outcome' && e.update_id === 'forged-mix',
      60_000,
      'mix and match refused',
    );
    assert.equal((mixed as { status: string }).status, 'rejected');
    assert.match((mixed as { reason: string }).reason, /bundle_mix_and_match/);
    assert.ok(
      !v.events.events.some((e) => e.type === 'bundle_progress' || e.type === 'request'),
      'nothing was downloaded or written',
    );
    assertAllRun(dir, f, '1.0.0');
    const backend = await backendVehicle(ac, vin);
    assert.ok(backend.ecus.every((e) => e.version === '1.0.0'));
    await v.close();
  });

  it('a connection cut mid-member resumes after its verified chunks and the bundle installs; verified bytes are not fetched again', async () => {
    const { members, proxy, transport, vin } = await resumeSetup();
    // The downloader gives up at the cut (one attempt, the link gone for a second): the bundle's next download run
    // resumes the member from its checkpoint.
    const { dir, v } = await bundleVehicle(vin, {
      downloadTransport: transport,
      download: { maxAttempts: 1, minBytesPerSecond: 0, backoff: { baseMs: 50, maxMs: 500 } },
      budgets: { downloadRuns: 20 },
    });
    proxy.cutAfter(MiB + 768 * KiB, 1000); // three quarters into the second member (bcm)
    await startBundleCampaign(ac, 'bundle-cut', 'body-3-0', [vin]);
    const outcome = await v.events.outcome('3.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assert.equal(proxy.cuts, 1);
    assertRuns(dir, members, '3.0.0');
    // One request from the start per member; the bcm's next ones start after its verified chunks.
    const offsets = requestOffsets(v);
    assert.equal(offsets.filter((o) => o === 0).length, 3, `requests at ${offsets.join(', ')}`);
    const resumedAt = offsets.find((o) => o > 0) ?? 0;
    assert.ok(resumedAt >= 512 * KiB, `bcm resumed at ${resumedAt}`);
    assert.equal(resumedAt % members[1]!.signed.manifest.chunk_size, 0, 'at a chunk boundary');
    // Bytes the S3 emulator served through the proxy (TLS, headers and the cut chunk's tail as slack): starting the
    // bcm again from zero would have cost its first ~700 KiB a second time.
    assert.ok(
      proxy.bytesToClient < 3 * MiB + 192 * KiB,
      `served ${proxy.bytesToClient} for 3 MiB of members`,
    );
    await assertEnded(v, dir, 'bundle-cut', vin);
    await v.close();
  });

  it("compressed members are built from each ECU's installed image; the campaign counts the bytes the vehicle saved", async () => {
    // Each ECU runs a 400 KiB image of its own; bundle 4.0.0 carries a patch of each, stored compressed, the
    // gateway's with a precomputed delta from the image it runs.
    const installed = (e: { ecu: string }) => textImage(400 * KiB, `installed ${e.ecu}`);
    const members: PublishedRelease[] = [];
    for (const e of ECUS) {
      members.push(
        await publishRelease(ac, {
          version: '4.0.0',
          ecu: e.ecu,
          hardwareIds: [e.hardware_id],
          releaseId: `${e.ecu}-4.0.0`,
          image: patched(installed(e)),
          compressed: true,
          ...(e.ecu === 'gw' ? { deltaFrom: [{ version: '1.0.0', image: installed(e) }] } : {}),
        }),
      );
    }
    const signed = await signBundle(
      bundleOf(
        'body-4-0',
        '4.0.0',
        members.map((p) => p.signed),
      ),
      [ac.releaseKey.signer],
    );
    const res = await ac.operator.call('POST', '/bundles', signed);
    assert.equal(res.status, 201, res.raw.toString());
    const proxy = await proxyToS3(ac);
    const transport = transportVia(ac, proxy);
    ac.track(() => transport.close());
    const vin = nextVin();
    const { dir, v } = await bundleVehicle(vin, { factoryImage: installed, downloadTransport: transport });
    await untilInventory(ac, vin, '1.0.0');
    await startBundleCampaign(ac, 'bundle-reuse', 'body-4-0', [vin]);
    const outcome = await v.events.outcome('4.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertRuns(dir, members, '4.0.0');
    // Only the frames the installed images lack were served: a fraction of the compressed objects.
    const objects = members.reduce((n, p) => n + p.signed.manifest.compression!.object_size, 0);
    const images = members.reduce((n, p) => n + p.image.length, 0);
    assert.ok(
      proxy.bytesToClient < objects * 0.4,
      `served ${proxy.bytesToClient}, compressed objects ${objects}`,
    );
    const paths = v.events.events.flatMap((e) =>
      e.type === 'downloaded' ? [[e.ecu, e.path, e.fallback]] : [],
    );
    assert.deepEqual(paths, [
      ['gw', 'delta', undefined],
      ['bcm', 'chunk-reuse', undefined],
      ['ivi', 'chunk-reuse', undefined],
    ]);
    await assertEnded(v, dir, 'bundle-reuse', vin);
    // The outcome report carried what the members cost; the campaign sums it (bytes saved across the fleet).
    const campaign = await ac.operator.call('GET', '/campaigns/bundle-reuse');
    assert.equal(campaign.status, 200, campaign.raw.toString());
    const t = campaign.json.transfer as Record<string, number>;
    assert.equal(t.downloads, 1);
    assert.equal(t.bytes_image, images);
    assert.ok(t.bytes_reused! > images * 0.7, `reused ${t.bytes_reused} of ${images}`);
    assert.ok(t.bytes_fetched! > 0 && t.bytes_fetched! <= proxy.bytesToClient, `fetched ${t.bytes_fetched}`);
    assert.equal(t.bytes_saved, images - t.bytes_fetched!);
    await v.close();
  });

  it('an agent whose power is cut mid-member and started again on its state resumes the member from its checkpoint', async () => {
    const { members, proxy, transport, vin } = await resumeSetup();
    const chunk = members[1]!.signed.manifest.chunk_size;
    let agent: VehicleAgent | undefined;
    let cut = false;
    const { dir, v: first } = await bundleVehicle(vin, {
      downloadTransport: transport,
      // A resume point at every verified chunk: the cut below leaves one at a known place.
      download: { checkpointIntervalMs: 0, minBytesPerSecond: 0 },
      hooks: {
        onChunkVerified: ({ ecu, verifiedBytes }) => {
          if (ecu !== 'bcm' || verifiedBytes !== 512 * KiB) return;
          agent?.kill();
          cut = true;
          // The power is off: the download ends here (a hook that never returned would leave its timers running).
          throw new Error('power cut');
        },
      },
    });
    agent = first.agent;
    await startBundleCampaign(ac, 'bundle-restart', 'body-3-0', [vin]);
    await waitUntil(() => cut, 60_000, 'the power cut half way through bcm');
    const kept = JSON.parse(readFileSync(join(dir, 'bundle', 'members', 'resume.json'), 'utf8')) as {
      verified: Record<string, number>;
    };
    const verifiedBcm = kept.verified[members[1]!.signed.manifest.sha256] ?? 0;
    assert.equal(
      verifiedBcm,
      512 * KiB - chunk,
      'the resume point of the last chunk checkpointed before the cut',
    );
    assert.ok(!first.events.events.some((e) => e.type === 'outcome'), 'no outcome before the restart');
    // The cut connection's last bytes have reached the proxy's count.
    let servedFirst = -1;
    await waitUntil(
      async () => {
        const before = proxy.bytesToClient;
        await sleep(200);
        if (before === proxy.bytesToClient) servedFirst = before;
        return servedFirst >= 0;
      },
      10_000,
      'the first run served',
    );

    const second = await startAgent(ac, vin, dir, {
      ecus: ECUS,
      factoryImage: factoryImageOf,
      downloadTransport: transport,
    });
    const outcome = await second.events.outcome('3.0.0', 120_000);
    assert.equal(outcome.status, 'completed', outcome.reason);
    assertRuns(dir, members, '3.0.0');
    // The gateway image verified before the stop is checked on disk, not fetched; bcm goes on from its checkpoint.
    assert.deepEqual(requestOffsets(second), [verifiedBcm, 0], 'bcm from its checkpoint, then ivi');
    const servedSecond = proxy.bytesToClient - servedFirst;
    assert.ok(
      servedSecond < 2 * MiB - verifiedBcm + 64 * KiB,
      `the restarted agent was served ${servedSecond}`,
    );
    await assertEnded(second, dir, 'bundle-restart', vin);
    await second.close();
  });
});
