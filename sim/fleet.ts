/**
 * Fleet simulation: the whole system end to end on one machine. Starts the local cloud, registers N vehicles with
 * their own keys and certificates, runs N real TCU agents in this process, publishes a signed release, runs a
 * staged campaign to its end and compares what the backend recorded with what every vehicle actually runs.
 *
 * With faults: a share of downloads is cut mid-way, a share of vehicles loses power during installation and
 * reboots, a share duplicates and reorders its MQTT messages, a share of ECUs fails the health check, the broker
 * restarts mid-campaign, and afterwards a second release whose S3 object was tampered with is rolled out: every
 * vehicle must refuse it and the campaign must halt itself. Each fault is watched for its effect in the system,
 * not just counted as injected (sim/fault-probes.ts): bytes pulled per vehicle, state files found on reboot,
 * connections to the restarted broker and offers it delivered, messages the broker and the ingest saw twice.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTerminal } from '../lambdas/core/update-state.js';
import type { EcuConfig } from '../vehicle/agent.js';
import { registerVehicle } from '../vehicle/api-client.js';
import { DirectHttpsTransport } from '../vehicle/direct-https.js';
import { NodeHttpsTransport } from '../vehicle/http-transport.js';
import { ensureIdentity, saveCertificate } from '../vehicle/provisioning.js';
import { type CreatedAgent, createVehicleAgent, identityDir } from '../vehicle/setup.js';
import {
  BrokerProbe,
  DownloadProbe,
  duplicatingMqtt,
  type FaultEvidence,
  gatherEvidence,
  persistedUpdate,
  type StampedEvent,
} from './fault-probes.js';
import { SIM_CHUNK as CHUNK, pool, SimOperator, sleep } from './operator.js';
import { startSimCloud } from './sim-cloud.js';

export interface FleetOptions {
  readonly vehicles: number;
  readonly faults: boolean;
  /** Jitter of the duplicated messages' delay. */
  /** Image size in bytes. @default 256 KiB */
  readonly imageBytes?: number;
  /** Give up after this long. @default 600 s */
  readonly timeoutMs?: number;
  readonly seed?: number;
  readonly log?: (line: string) => void;
}

export interface FleetSummary {
  readonly vehicles: number;
  readonly faults: boolean;
  readonly campaign: {
    readonly status: string;
    readonly counts: Record<string, number>;
    readonly haltReason: string | null;
    /** Why vehicles did not complete, as they reported it. */
    readonly reasons: Record<string, number>;
  };
  readonly timings: {
    readonly notifyAllMs: number;
    readonly completeMs: number;
    readonly p50InstallMs: number;
    readonly p99InstallMs: number;
  };
  readonly bytesServed: number;
  readonly imageBytes: number;
  readonly injected: Record<string, number>;
  readonly disagreements: string[];
  readonly versions: Record<string, number>;
  readonly tamperedCampaign?: {
    readonly status: string;
    readonly haltReason: string | null;
    readonly counts: Record<string, number>;
  };
  /** With faults: what the system did about each injected fault (checked by faultChecks in sim/fault-probes.ts). */
  readonly faultEvidence?: FaultEvidence;
}

const TCU: EcuConfig = { ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' };

/** Deterministic per-vehicle fault assignment, so a failing run can be repeated exactly. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function vinOf(i: number): string {
  return `SMFLT${String(i).padStart(12, '0')}`;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runFleet(options: FleetOptions): Promise<FleetSummary> {
  const log = options.log ?? (() => {});
  const random = rng(options.seed ?? 20261127);
  const root = mkdtempSync(join(tmpdir(), 'ota-fleet-'));
  const imageBytes = options.imageBytes ?? 256 * 1024;
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  const injected: Record<string, number> = {};
  process.env.VEHICLE_RATE_PER_MINUTE ??= '100000';
  const { cloud, releaseSigner, trust } = await startSimCloud(root, log);
  const agents = new Map<string, CreatedAgent>();
  const transports = new Map<string, DownloadProbe>();
  const brokerProbe = new BrokerProbe(cloud.broker);
  const duplicated = { sent: 0 };
  /** Power-cut vehicles: when they rebooted and what their state file held then. */
  const reboots = new Map<string, { at: number; persisted: ReturnType<typeof persistedUpdate> }>();
  try {
    const ca = cloud.caCertPem;
    const api = cloud.endpoints.api;
    const operator = new SimOperator(api, ca, cloud.adminToken);
    const call = (method: string, path: string, body?: unknown) => operator.call(method, path, body);
    const publishRelease = (version: string, image: Buffer) =>
      operator.publishRelease(releaseSigner, version, image);
    const http = new NodeHttpsTransport({ ca });

    await operator.warmUp(4, deadline);
    log(`registering ${options.vehicles} vehicles`);
    const plan = new Map<string, { cut: boolean; kill: boolean; dup: boolean; unhealthy: boolean }>();
    const vins = Array.from({ length: options.vehicles }, (_, i) => vinOf(i));
    // Fault shares by position, so every run with enough vehicles has each kind: 10% cut downloads, 5% power
    // cuts during install, 10% duplicated/reordered messages, 5% failing health checks (disjoint from the cuts).
    vins.forEach((vin, i) => {
      const f = options.faults;
      plan.set(vin, {
        cut: f && i % 10 === 1,
        kill: f && i % 20 === 3,
        dup: f && i % 10 === 7,
        unhealthy: f && i % 20 === 5,
      });
    });
    const stateDirOf = (vin: string) => join(root, 'vehicles', vin);
    await pool(vins, 8, async (vin) => {
      const identity = await ensureIdentity(identityDir(stateDirOf(vin)), vin);
      const cert = await registerVehicle(http, api, cloud.adminToken, {
        vin,
        model: 'Simulator',
        ecus: [{ ...TCU }],
        csr: identity.csrPem,
      });
      await saveCertificate(identity, cert);
    });

    const events = new Map<string, StampedEvent[]>();
    const startAgent = async (vin: string, reboot: boolean) => {
      const p = plan.get(vin)!;
      if (reboot) reboots.set(vin, { at: Date.now(), persisted: persistedUpdate(stateDirOf(vin)) });
      const transport =
        transports.get(vin) ?? new DownloadProbe(new DirectHttpsTransport({ ca }), p.cut, 2 * CHUNK);
      transports.set(vin, transport);
      let killedOnce = reboot;
      const created = await createVehicleAgent({
        vin,
        stateDir: stateDirOf(vin),
        trust,
        ecus: [TCU],
        apiUrl: api,
        mqttUrl: cloud.endpoints.mqtt,
        apiCa: ca,
        downloadTransport: transport,
        factoryImage: () => Buffer.from('factory image of tcu 1.0.0\n'),
        healthCheck: () => !p.unhealthy,
        mqttKeepaliveSeconds: 5,
        mqttBackoff: { baseMs: 200, maxMs: 2000 },
        polling: { intervalMs: 2000, connectedIntervalMs: 10_000, mqttGraceMs: 3000 },
        safety: { pollMs: 100 },
        retryBackoff: { baseMs: 200, maxMs: 2000 },
        reportBackoff: { baseMs: 200, maxMs: 2000 },
        download: { backoff: { baseMs: 100, maxMs: 1000 }, minBytesPerSecond: 0 },
        ...(p.dup
          ? {
              // Every report goes out twice, the copy late: duplicated and reordered at the backend.
              mqttClientFactory: duplicatingMqtt(duplicated, () => 50 + Math.floor(random() * 400)),
            }
          : {}),
        hooks: p.kill
          ? {
              beforeInstallStep: async (step) => {
                if (step !== 'activate' || killedOnce) return;
                killedOnce = true;
                injected.powerCuts = (injected.powerCuts ?? 0) + 1;
                agents.get(vin)?.agent.kill();
                // Reboot a moment later: a fresh agent on the same folder.
                setTimeout(() => void startAgent(vin, true), 300);
                await new Promise(() => {});
              },
            }
          : {},
      });
      const list = events.get(vin) ?? [];
      events.set(vin, list);
      created.agent.onEvent((e) => list.push({ at: Date.now(), e }));
      agents.set(vin, created);
      await created.agent.start();
    };
    log('starting agents');
    await pool(vins, 16, (vin) => startAgent(vin, false));

    log('publishing release 2.0.0');
    const image = randomBytes(imageBytes);
    const mainKey = (await publishRelease('2.0.0', image)).manifest.sha256;
    const t0 = Date.now();
    await operator.createCampaign({
      campaign_id: 'fleet-main',
      name: 'fleet simulation',
      release_id: 'tcu-2.0.0',
      targets: { filter: { model: 'Simulator' } },
      policy: {
        waves: [10, 50, 100],
        advance_success_percent: 80,
        halt_failure_percent: 25,
        // 10, not 5: the run injects 5% health-check failures, and a 25% threshold judged on 5 outcomes (then 6, 7,
        // ...) halts a healthy rollout by chance now and then (2 failures among a wave's first 8 outcomes).
        halt_min_outcomes: 10,
        vehicle_timeout_seconds: 120,
        retry_budget: 1,
        notify_per_second: 100,
      },
    });
    await call('POST', '/campaigns/fleet-main/start', {});

    // A wave's vehicles, every page (the listing gives at most 1000 at a time).
    const waveVehicles = (w: number) => operator.waveVehicles('fleet-main', w);

    let restarted = false;
    let lastReport = Date.now();
    let lastCounts = '';
    let stalledReports = 0;
    const explainStall = async (waves: number) => {
      for (let w = 0; w < waves; w++) {
        const open = (await waveVehicles(w)).filter((v) => v.status !== 'scheduled' && !isTerminal(v.status));
        for (const v of open.slice(0, 5)) {
          const st = agents.get(v.vin)?.agent.state;
          log(
            `stalled: ${v.vin} wave ${w} backend ${v.status} (attempt ${v.attempt}); agent ${JSON.stringify({
              current: st?.current ? { version: st.current.firmware_version, phase: st.current.phase } : null,
              inbox: st?.inbox.length,
              pending_reports: st?.pending_reports.map((r) => r.status),
              ecus: st?.ecus,
              last_counter: st?.last_counter,
              recent: st?.recent.slice(-2),
            })}; last events ${JSON.stringify((events.get(v.vin) ?? []).slice(-6).map((x) => x.e))}`,
          );
        }
      }
    };
    let campaign = await call('GET', '/campaigns/fleet-main');
    while (!['completed', 'halted', 'cancelled'].includes(campaign.status)) {
      if (Date.now() > deadline)
        throw new Error(`fleet campaign did not finish in time: ${JSON.stringify(campaign.counts)}`);
      if (options.faults && !restarted && campaign.current_wave >= 1) {
        restarted = true;
        injected.brokerRestarts = 1;
        log('restarting the MQTT broker');
        await brokerProbe.restart(1000);
        log('broker back');
      }
      await new Promise((r) => setTimeout(r, 500));
      campaign = await call('GET', '/campaigns/fleet-main');
      if (Date.now() - lastReport > 5000) {
        lastReport = Date.now();
        const counts = JSON.stringify(campaign.counts);
        log(`wave ${campaign.current_wave}: ${counts}`);
        stalledReports = counts === lastCounts ? stalledReports + 1 : 0;
        lastCounts = counts;
        // Nothing moved for 15 s: say which vehicles hold the campaign up and what their agents believe.
        if (stalledReports === 3) await explainStall(campaign.waves.length);
      }
    }
    const completeMs = Date.now() - t0;
    log(
      `main campaign ${campaign.status} after ${(completeMs / 1000).toFixed(1)} s; waiting for agents to settle`,
    );
    // Let in-flight reports land (agents retry until acknowledged).
    await settle(agents, log);
    await cloud.rules.idle();
    campaign = await call('GET', '/campaigns/fleet-main');
    log(`main campaign ${campaign.status}: ${JSON.stringify(campaign.counts)}`);

    const offeredAt: number[] = [];
    const offeredAtByVin = new Map<string, number>();
    const reasons: Record<string, number> = {};
    const installMs: number[] = [];
    for (const w of campaign.waves) {
      for (const v of await waveVehicles(w.wave)) {
        if (v.reason && v.status !== 'completed')
          reasons[`${v.status}: ${v.reason}`] = (reasons[`${v.status}: ${v.reason}`] ?? 0) + 1;
        if (v.offered_at) offeredAt.push(Date.parse(v.offered_at));
        if (v.offered_at) offeredAtByVin.set(v.vin, Date.parse(v.offered_at));
        if (v.status === 'completed' && v.offered_at)
          installMs.push(Date.parse(v.updated_at) - Date.parse(v.offered_at));
      }
    }

    let tamperedCampaign: FleetSummary['tamperedCampaign'];
    if (options.faults) {
      log('publishing release 2.1.0 and tampering with its object in S3');
      const evil = randomBytes(imageBytes);
      const signed = await publishRelease('2.1.0', evil);
      const tampered = Buffer.from(evil);
      tampered.writeUInt8(tampered.readUInt8(CHUNK + 1) ^ 0xff, CHUNK + 1);
      // Behind S3's back, in the emulator's storage: through the S3 API the published object is under a legal
      // hold and cannot be replaced (issue 18 #5), so this stands for bytes changed in storage or in transit.
      writeFileSync(
        join(
          cloud.dataDir,
          's3',
          cloud.bucket,
          'releases',
          signed.manifest.release_id,
          `${signed.manifest.sha256}._S3rver_object`,
        ),
        tampered,
      );
      injected.tamperedObjects = 1;
      await operator.createCampaign({
        campaign_id: 'fleet-tampered',
        name: 'tampered release',
        release_id: 'tcu-2.1.0',
        targets: { filter: { model: 'Simulator', current_version: '2.0.0' } },
        policy: { waves: [10, 100], halt_failure_percent: 50, halt_min_outcomes: 3, notify_per_second: 100 },
      });
      await call('POST', '/campaigns/fleet-tampered/start', {});
      let c = await call('GET', '/campaigns/fleet-tampered');
      while (!['completed', 'halted', 'cancelled'].includes(c.status)) {
        if (Date.now() > deadline)
          throw new Error(`tampered campaign did not halt in time: ${JSON.stringify(c.counts)}`);
        await new Promise((r) => setTimeout(r, 500));
        c = await call('GET', '/campaigns/fleet-tampered');
      }
      await settle(agents, log);
      await cloud.rules.idle();
      c = await call('GET', '/campaigns/fleet-tampered');
      tamperedCampaign = { status: c.status, haltReason: c.halt_reason, counts: c.counts };
      log(`tampered campaign ${c.status}: ${c.halt_reason}`);
    }

    // The backend's view against each vehicle's own view: they must agree exactly.
    const disagreements: string[] = [];
    const versions: Record<string, number> = {};
    const backendStatus = new Map<string, string | undefined>();
    for (const vin of vins) {
      const backend = await call('GET', `/vehicles/${vin}`);
      const agent = agents.get(vin)!.agent;
      const running = agent.state?.ecus.tcu?.version;
      versions[running ?? 'unknown'] = (versions[running ?? 'unknown'] ?? 0) + 1;
      if (running !== '1.0.0' && running !== '2.0.0')
        disagreements.push(`${vin}: runs ${running}, neither old nor new`);
      if (backend.ecus[0].version !== running) {
        disagreements.push(`${vin}: backend says ${backend.ecus[0].version}, vehicle runs ${running}`);
      }
      const main = backend.updates.find((u: { update_id: string }) => u.update_id === 'campaign#fleet-main');
      backendStatus.set(vin, main?.status);
      const last = agent.state?.recent.filter((r) => r.update_id === 'campaign#fleet-main').at(-1);
      const outcome = last?.status;
      if (main?.status !== outcome) {
        disagreements.push(
          `${vin}: backend status ${main?.status}, vehicle outcome ${outcome} (${last?.reason ?? ''})`,
        );
      }
      if (tamperedCampaign) {
        const t = backend.updates.find(
          (u: { update_id: string }) => u.update_id === 'campaign#fleet-tampered',
        );
        const tOutcome = agent.state?.recent
          .filter((r) => r.update_id === 'campaign#fleet-tampered')
          .at(-1)?.status;
        if (t && t.status !== 'scheduled' && t.status !== tOutcome) {
          disagreements.push(`${vin}: tampered campaign: backend ${t.status}, vehicle ${tOutcome}`);
        }
      }
    }
    const faultEvidence = options.faults
      ? await gatherEvidence({
          vins,
          plan,
          agents,
          transports,
          events,
          reboots,
          brokerProbe,
          duplicated,
          backendStatus,
          offeredAtByVin,
          mainKey,
          imageBytes,
          chunkBytes: CHUNK,
          updatesTable: cloud.tables.updates,
          rules: cloud.rules,
        })
      : undefined;
    injected.downloadsCut = [...transports.values()].filter((t) => t.cutDone).length;
    injected.duplicatedMessages = duplicated.sent;
    http.close();
    return {
      vehicles: options.vehicles,
      faults: options.faults,
      campaign: {
        status: campaign.status,
        counts: campaign.counts,
        haltReason: campaign.halt_reason,
        reasons,
      },
      timings: {
        notifyAllMs: offeredAt.length ? Math.max(...offeredAt) - t0 : 0,
        completeMs,
        p50InstallMs: percentile(installMs, 50),
        p99InstallMs: percentile(installMs, 99),
      },
      bytesServed: [...transports.values()].reduce((n, t) => n + t.bytes, 0),
      imageBytes,
      injected,
      disagreements,
      versions,
      ...(tamperedCampaign ? { tamperedCampaign } : {}),
      ...(faultEvidence ? { faultEvidence } : {}),
    };
  } finally {
    await pool([...agents.values()], 32, (a) => a.close().catch(() => {}));
    await cloud.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

/** Waits (at most 30 s in all) until every agent has no offer waiting, no update running and no report unsent. */
async function settle(agents: Map<string, CreatedAgent>, log: (line: string) => void): Promise<void> {
  // One loop over all states twice a second: a poll loop per agent would saturate the event loop at 1,000 agents.
  const busy = () =>
    [...agents.values()].filter((a) => {
      const s = a.agent.state;
      return s && (s.current !== null || s.inbox.length > 0 || s.pending_reports.length > 0);
    });
  const until = Date.now() + 30_000;
  let left = busy();
  while (left.length > 0 && Date.now() < until) {
    await sleep(500);
    left = busy();
  }
  if (left.length > 0) {
    const sample = left
      .slice(0, 5)
      .map(
        (a) =>
          `${a.agent.vin} ${JSON.stringify({ phase: a.agent.state?.current?.phase, inbox: a.agent.state?.inbox.length, reports: a.agent.state?.pending_reports.length })}`,
      );
    log(`${left.length} agents still busy after 30 s: ${sample.join('; ')}`);
  }
}
