/**
 * Bundle fleet simulation (`npm run fleet -- --bundles --vehicles N [--faults]`): N real TCU agents of three ECUs
 * each (gateway, body controller, infotainment) against the local cloud. A campaign rolls out an OEM-signed bundle
 * moving all three from 1.0.0 to 2.0.0; then a rollback campaign, under an authorisation signed by the OEM release
 * key, takes every vehicle that installed it back to the 1.0.0 bundle. After each campaign the backend's view (the
 * campaign's per-vehicle status, the registry's per-ECU versions from the reported inventory) is compared with what
 * every vehicle runs (each ECU's active slot and the agent's recorded outcome): they must agree, and no vehicle may
 * run a mix of the two bundles.
 *
 * Faults (by position, so every run of 10 or more vehicles has each): 10% fail the infotainment health check on
 * 2.0.0 (all three return), 10% lose power between the second and third activation (all old on reboot), 10% lose
 * power after the bundle was decided but before it was confirmed (all new on reboot), and 10% lose power there
 * while the body controller's bootloader spends its boots and gives the trial up (all old on reboot).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifestDigest } from '../protocol/assignment.js';
import { type Bundle, bundleOfManifests, signBundle } from '../protocol/bundle.js';
import type { SignedManifest } from '../protocol/manifest.js';
import { signRollbackAuthorisation } from '../protocol/rollback.js';
import type { EcuConfig } from '../vehicle/agent.js';
import { registerVehicle } from '../vehicle/api-client.js';
import { NodeHttpsTransport } from '../vehicle/http-transport.js';
import { FileSlotInstaller } from '../vehicle/installer.js';
import { ensureIdentity, saveCertificate } from '../vehicle/provisioning.js';
import { type CreatedAgent, createVehicleAgent, ecuDir, identityDir } from '../vehicle/setup.js';
import { pool, SimOperator, sleep } from './operator.js';
import { startSimCloud } from './sim-cloud.js';

export interface BundleFleetOptions {
  readonly vehicles: number;
  readonly faults: boolean;
  /** Image size of each member in bytes. @default 128 KiB */
  readonly imageBytes?: number;
  readonly timeoutMs?: number;
  readonly log?: (line: string) => void;
}

export interface CampaignFigures {
  readonly status: string;
  readonly counts: Record<string, number>;
  readonly targets: number;
  readonly ms: number;
  /** Why vehicles did not complete, as they reported it. */
  readonly reasons: Record<string, number>;
}

export interface BundleFleetSummary {
  readonly vehicles: number;
  readonly faults: boolean;
  readonly injected: Record<string, number>;
  readonly bundle: CampaignFigures;
  readonly rollback: CampaignFigures;
  /** Vehicles per what all three ECUs run (a mix would show as e.g. "2.0.0/1.0.0/2.0.0"), after each campaign. */
  readonly afterBundle: Record<string, number>;
  readonly afterRollback: Record<string, number>;
  readonly disagreements: string[];
}

const ECUS: readonly EcuConfig[] = [
  { ecu: 'gw', hardware_id: 'GW-HW-1', version: '1.0.0' },
  { ecu: 'bcm', hardware_id: 'BCM-HW-1', version: '1.0.0' },
  { ecu: 'ivi', hardware_id: 'IVI-HW-1', version: '1.0.0' },
];
const factoryImage = (e: { ecu: string }) => Buffer.from(`factory image of ${e.ecu} 1.0.0\n`);
type Fault = 'none' | 'unhealthy' | 'cut_activation' | 'cut_decided' | 'boot_budget';

function vinOf(i: number): string {
  return `SMBDL${String(i).padStart(12, '0')}`;
}

function bundleOf(id: string, version: string, members: readonly SignedManifest[]): Bundle {
  return bundleOfManifests(
    id,
    version,
    members.map((s) => s.manifest),
  );
}

export async function runBundleFleet(options: BundleFleetOptions): Promise<BundleFleetSummary> {
  const log = options.log ?? (() => {});
  const root = mkdtempSync(join(tmpdir(), 'ota-bundle-fleet-'));
  const deadline = Date.now() + (options.timeoutMs ?? 900_000);
  const injected: Record<string, number> = {};
  process.env.VEHICLE_RATE_PER_MINUTE ??= '100000';
  const { cloud, releaseSigner, trust } = await startSimCloud(root, log);
  const agents = new Map<string, CreatedAgent>();
  try {
    const ca = cloud.caCertPem;
    const api = cloud.endpoints.api;
    const operator = new SimOperator(api, ca, cloud.adminToken);
    const http = new NodeHttpsTransport({ ca });
    await operator.warmUp(4, deadline);

    log('publishing 6 releases and 2 bundles');
    const imageBytes = options.imageBytes ?? 128 * 1024;
    const releases: Record<string, SignedManifest[]> = { '1.0.0': [], '2.0.0': [] };
    for (const e of ECUS) {
      const target = { ecu: e.ecu, hardwareId: e.hardware_id };
      releases['1.0.0']!.push(await operator.publishRelease(releaseSigner, '1.0.0', factoryImage(e), target));
      const image = Buffer.alloc(imageBytes, `${e.ecu} 2.0.0\n`);
      releases['2.0.0']!.push(await operator.publishRelease(releaseSigner, '2.0.0', image, target));
    }
    const base = await signBundle(bundleOf('sim-body-1-0', '1.0.0', releases['1.0.0']!), [releaseSigner]);
    const next = await signBundle(bundleOf('sim-body-2-0', '2.0.0', releases['2.0.0']!), [releaseSigner]);
    for (const b of [base, next]) await operator.call('POST', '/bundles', b);

    const vins = Array.from({ length: options.vehicles }, (_, i) => vinOf(i));
    const faultOf = (i: number): Fault => {
      if (!options.faults) return 'none';
      return (['none', 'unhealthy', 'none', 'cut_activation', 'none', 'cut_decided', 'none', 'boot_budget'][
        i % 10
      ] ?? 'none') as Fault;
    };
    const plan = new Map(vins.map((vin, i) => [vin, faultOf(i)]));
    // Counted when planned: the health check fails whenever the member is checked (the cuts count as they happen).
    injected.unhealthy = [...plan.values()].filter((f) => f === 'unhealthy').length;
    const stateDirOf = (vin: string) => join(root, 'vehicles', vin);
    log(`registering ${vins.length} vehicles of 3 ECUs`);
    await pool(vins, 8, async (vin) => {
      const identity = await ensureIdentity(identityDir(stateDirOf(vin)), vin);
      const cert = await registerVehicle(http, api, cloud.adminToken, {
        vin,
        model: 'BundleSimulator',
        ecus: ECUS.map((e) => ({ ...e })),
        csr: identity.csrPem,
      });
      await saveCertificate(identity, cert);
    });

    const startAgent = async (vin: string, reboot: boolean): Promise<void> => {
      const fault = plan.get(vin)!;
      let cut = reboot;
      const powerCut = async () => {
        cut = true;
        injected[fault] = (injected[fault] ?? 0) + 1;
        agents.get(vin)?.agent.kill();
        if (fault === 'boot_budget') {
          // The vehicle resets while the agent is down: the body controller's bootloader spends the unconfirmed
          // trial's boots, then switches back on its own.
          const bcm = new FileSlotInstaller({
            dir: ecuDir(stateDirOf(vin), 'bcm'),
            ecu: 'bcm',
            factory: { version: '1.0.0', image: factoryImage({ ecu: 'bcm' }) },
          });
          for (let i = 0; i < 10 && !(await bcm.boot()).gaveUp; i++);
        }
        setTimeout(() => void startAgent(vin, true), 300);
        await new Promise(() => {});
      };
      const created = await createVehicleAgent({
        vin,
        stateDir: stateDirOf(vin),
        trust,
        ecus: ECUS,
        apiUrl: api,
        mqttUrl: cloud.endpoints.mqtt,
        apiCa: ca,
        factoryImage,
        healthCheck: (c) => !(fault === 'unhealthy' && c.ecu === 'ivi' && c.version === '2.0.0'),
        mqttKeepaliveSeconds: 5,
        mqttBackoff: { baseMs: 200, maxMs: 2000 },
        polling: { intervalMs: 2000, connectedIntervalMs: 10_000, mqttGraceMs: 3000 },
        retryBackoff: { baseMs: 200, maxMs: 2000 },
        reportBackoff: { baseMs: 200, maxMs: 2000 },
        download: { backoff: { baseMs: 100, maxMs: 1000 }, minBytesPerSecond: 0 },
        hooks: {
          beforeBundleStep: (step, info) => {
            if (cut) return;
            if (fault === 'cut_activation' && step === 'activate' && info.ecu === 'ivi') return powerCut();
            if (
              (fault === 'cut_decided' || fault === 'boot_budget') &&
              step === 'commit' &&
              info.ecu === 'gw'
            )
              return powerCut();
          },
        },
      });
      agents.set(vin, created);
      await created.agent.start();
    };
    log('starting agents');
    await pool(vins, 16, (vin) => startAgent(vin, false));

    // A loaded machine makes the gateway answer 504 now and then: a read is tried again rather than the run lost.
    const getCampaign = async (id: string) => {
      for (let i = 0; ; i++) {
        const res = await operator.request('GET', `/campaigns/${id}`);
        if (res.status === 200) return res.json;
        if (res.status < 500 || i >= 20) throw new Error(`GET /campaigns/${id}: ${res.status}`);
        await sleep(1000);
      }
    };
    const runCampaign = async (id: string, body: Record<string, unknown>): Promise<CampaignFigures> => {
      const t0 = Date.now();
      const res = await operator.request('POST', '/campaigns', { campaign_id: id, name: id, ...body });
      if (res.status !== 202)
        throw new Error(`POST /campaigns ${id}: ${res.status} ${JSON.stringify(res.json)}`);
      let c = res.json;
      while (c.status === 'preparing') {
        if (Date.now() > deadline) throw new Error(`campaign ${id} still preparing`);
        await sleep(1000);
        c = await getCampaign(id);
      }
      if (c.status !== 'created')
        throw new Error(`campaign ${id} ${c.status}: ${JSON.stringify(c.preparation)}`);
      await operator.call('POST', `/campaigns/${id}/start`, {});
      let lastLog = Date.now();
      while (!['completed', 'halted', 'cancelled'].includes(c.status)) {
        if (Date.now() > deadline)
          throw new Error(`campaign ${id} did not finish: ${JSON.stringify(c.counts)}`);
        await sleep(500);
        c = await getCampaign(id);
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          log(`${id} wave ${c.current_wave}: ${JSON.stringify(c.counts)}`);
        }
      }
      const ms = Date.now() - t0;
      await settle(agents);
      await cloud.rules.idle();
      c = await getCampaign(id);
      log(`${id} ${c.status} in ${(ms / 1000).toFixed(1)} s: ${JSON.stringify(c.counts)}`);
      const reasons: Record<string, number> = {};
      for (let w = 0; w < c.waves.length; w++) {
        for (const v of await operator.waveVehicles(id, w)) {
          if (v.status === 'completed' || !v.reason) continue;
          const key = `${v.status}: ${v.reason.replace(/\(.*$/, '').slice(0, 90)}`;
          reasons[key] = (reasons[key] ?? 0) + 1;
        }
      }
      return { status: c.status, counts: c.counts, targets: c.target_count, ms, reasons };
    };

    log('bundle campaign: 1.0.0 -> 2.0.0 on three ECUs');
    const bundle = await runCampaign('sim-bundle', {
      bundle_id: 'sim-body-2-0',
      targets: { filter: { model: 'BundleSimulator' } },
      policy: {
        // Two waves; 30% of the vehicles fail on purpose, so even a first wave holding all of them (60% of it)
        // must advance.
        waves: [50, 100],
        advance_success_percent: 40,
        halt_failure_percent: 90,
        halt_min_outcomes: 10,
        vehicle_timeout_seconds: 180,
        retry_budget: 0,
        notify_per_second: 100,
      },
    });
    const disagreements: string[] = [];
    const afterBundle = await compare(operator, agents, vins, 'sim-bundle', disagreements);

    const completed: string[] = [];
    for (let w = 0; w < 2; w++)
      for (const v of await operator.waveVehicles('sim-bundle', w))
        if (v.status === 'completed') completed.push(v.vin);
    log(`rollback campaign for the ${completed.length} vehicles that installed the bundle`);
    const now = Date.now();
    const authorisation = await signRollbackAuthorisation(
      {
        schema: 'ota.rollback-authorisation/v1',
        authorisation_id: 'sim-rollback-1',
        campaign_id: 'sim-bundle',
        bundle_id: 'sim-body-2-0',
        ecus: releases['1.0.0']!.map((s) => ({
          ecu: s.manifest.ecu,
          from_version: '2.0.0',
          to_version: '1.0.0',
          to_manifest_sha256: manifestDigest(s.manifest),
        })),
        issued_at: new Date(now - 60_000).toISOString(),
        expires_at: new Date(now + 86_400_000).toISOString(),
      },
      [releaseSigner],
    );
    const rollback = completed.length
      ? await runCampaign('sim-bundle-rollback', {
          bundle_id: 'sim-body-1-0',
          targets: { vins: completed },
          rollback: { campaign_id: 'sim-bundle', authorisation },
          policy: { waves: [100], skip_canary: true, vehicle_timeout_seconds: 180, notify_per_second: 100 },
        })
      : { status: 'not run', counts: {}, targets: 0, ms: 0, reasons: {} };
    const afterRollback = await compare(operator, agents, vins, 'sim-bundle-rollback', disagreements);
    http.close();
    return {
      vehicles: vins.length,
      faults: options.faults,
      injected,
      bundle,
      rollback,
      afterBundle,
      afterRollback,
      disagreements,
    };
  } finally {
    await pool([...agents.values()], 32, (a) => a.close().catch(() => {}));
    await cloud.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * The backend's view against each vehicle's: every ECU's version (the registry, kept by the inventory reports,
 * against the active slot) and the campaign's status against the agent's outcome. Waits up to 30 s for late
 * inventory reports. Answers how many vehicles run each combination of versions.
 */
async function compare(
  operator: SimOperator,
  agents: Map<string, CreatedAgent>,
  vins: readonly string[],
  campaignId: string,
  disagreements: string[],
): Promise<Record<string, number>> {
  const combos: Record<string, number> = {};
  const until = Date.now() + 30_000;
  for (const vin of vins) {
    const created = agents.get(vin)!;
    const running: Record<string, string> = {};
    for (const e of ECUS) running[e.ecu] = (await created.installers[e.ecu]!.active()).version;
    const combo = ECUS.map((e) => running[e.ecu]).join('/');
    combos[combo] = (combos[combo] ?? 0) + 1;
    if (new Set(Object.values(running)).size !== 1) disagreements.push(`${vin}: runs a mix ${combo}`);
    let backend = await operator.call('GET', `/vehicles/${vin}`);
    const agrees = () =>
      ECUS.every(
        (e) => backend.ecus.find((x: { ecu: string }) => x.ecu === e.ecu)?.version === running[e.ecu],
      );
    while (!agrees() && Date.now() < until) {
      await sleep(500);
      backend = await operator.call('GET', `/vehicles/${vin}`);
    }
    if (!agrees()) {
      disagreements.push(
        `${vin}: backend ${backend.ecus.map((x: { version: string }) => x.version).join('/')}, vehicle ${combo}`,
      );
    }
    const update = backend.updates.find(
      (u: { update_id: string }) => u.update_id === `campaign#${campaignId}`,
    );
    const outcome = created.agent.state?.recent
      .filter((r) => r.update_id === `campaign#${campaignId}`)
      .at(-1);
    if (update && update.status !== 'scheduled' && update.status !== outcome?.status) {
      disagreements.push(`${vin}: ${campaignId} backend ${update.status}, vehicle ${outcome?.status}`);
    }
  }
  return combos;
}

/** Waits (at most 30 s) until no agent has an offer waiting, an update running or a report unsent. */
async function settle(agents: Map<string, CreatedAgent>): Promise<void> {
  const busy = () =>
    [...agents.values()].some((a) => {
      const s = a.agent.state;
      return s && (s.current !== null || s.inbox.length > 0 || s.pending_reports.length > 0);
    });
  const until = Date.now() + 30_000;
  while (busy() && Date.now() < until) await sleep(500);
}

/** The run's checks and its printed summary; answers the exit code. */
export function reportBundleFleet(s: BundleFleetSummary, json: boolean): number {
  const outcomes = (c: CampaignFigures) =>
    ['completed', 'failed', 'verification_failed', 'rolled_back', 'rejected', 'timed_out'].reduce(
      (n, k) => n + (c.counts[k] ?? 0),
      0,
    );
  const allOld = ECUS.map(() => '1.0.0').join('/');
  const checks: [string, boolean][] = [
    ['bundle campaign completed', s.bundle.status === 'completed'],
    ['every targeted vehicle has a bundle outcome', outcomes(s.bundle) === s.bundle.targets],
    ['rollback campaign completed', s.rollback.status === 'completed'],
    [
      'every vehicle that installed the bundle was rolled back',
      (s.rollback.counts.completed ?? 0) === (s.bundle.counts.completed ?? -1),
    ],
    [
      'no vehicle runs a mix of bundles; backend and vehicles agree on every ECU',
      s.disagreements.length === 0,
    ],
    [
      'after the rollback every vehicle runs 1.0.0 on every ECU',
      Object.keys(s.afterRollback).every((k) => k === allOld),
    ],
  ];
  if (s.faults) {
    const old =
      (s.injected.unhealthy ?? 0) + (s.injected.cut_activation ?? 0) + (s.injected.boot_budget ?? 0);
    checks.push(
      [
        'every fault kind was injected',
        ['cut_activation', 'cut_decided', 'boot_budget'].every((k) => (s.injected[k] ?? 0) > 0),
      ],
      [
        'failed health checks, cuts between activations and spent boot budgets ended all-old (rolled_back)',
        (s.bundle.counts.rolled_back ?? 0) === old,
      ],
    );
  }
  if (json) {
    process.stdout.write(`${JSON.stringify({ ...s, checks: Object.fromEntries(checks) }, null, 2)}\n`);
  } else {
    const lines = [
      `Bundle fleet simulation: ${s.vehicles} vehicles of 3 ECUs, faults ${s.faults ? 'on' : 'off'}`,
      `  bundle campaign    ${s.bundle.status} in ${(s.bundle.ms / 1000).toFixed(1)} s, ${s.bundle.targets} targets  ${JSON.stringify(s.bundle.counts)}`,
      ...Object.entries(s.bundle.reasons).map(([r, n]) => `    ${n} x ${r}`),
      `  versions after     ${JSON.stringify(s.afterBundle)}  (gw/bcm/ivi)`,
      `  rollback campaign  ${s.rollback.status} in ${(s.rollback.ms / 1000).toFixed(1)} s, ${s.rollback.targets} targets  ${JSON.stringify(s.rollback.counts)}`,
      ...Object.entries(s.rollback.reasons).map(([r, n]) => `    ${n} x ${r}`),
      `  versions after     ${JSON.stringify(s.afterRollback)}`,
      `  injected faults    ${JSON.stringify(s.injected)}`,
      `  backend vs vehicles ${s.disagreements.length === 0 ? 'agree exactly' : `${s.disagreements.length} disagreements`}`,
      ...s.disagreements.slice(0, 20).map((d) => `    ${d}`),
      ...checks.map(([name, ok]) => `  ${ok ? 'ok  ' : 'FAIL'} ${name}`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  const failed = checks.filter(([, ok]) => !ok).length;
  process.stdout.write(`${checks.length - failed} passed, ${failed} failed\n`);
  return failed === 0 ? 0 : 1;
}
