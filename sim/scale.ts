/**
 * The scale-out fleet run (`npm run fleet -- --vehicles 10000`): the local cloud in a process of its own
 * (sim/cloud-process.ts), the vehicles spread over worker processes (sim/vehicle-worker.ts, child_process.fork)
 * as light vehicles (sim/light-vehicle.ts: own key, certificate, mutual-TLS MQTT connection, tokens, a verified
 * download), the operator here. Publishes a signed release, creates one campaign for the whole fleet (following
 * the asynchronous 202 -> `preparing` -> `created` answer when the backend gives it), runs it to its end and
 * measures: time to notify all, time to complete, peak RSS of every process, and the backend's AWS operations
 * counted by instrumenting its clients (lambdas/adapters/operation-counter.ts) during the campaign, per vehicle.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  diffOperations,
  type OperationDelta,
  shapeOperations,
} from '../lambdas/adapters/operation-counter.js';
import { KeyFileSigner } from '../protocol/signatures.js';
import type { CloudMessage, CloudProcessInfo, CloudProcessOptions } from './cloud-process.js';
import type { LightVehicleOutcome } from './light-vehicle.js';
import { peakRssBytes, SimOperator } from './operator.js';
import type { VehicleWorkerOptions, WorkerProgress } from './vehicle-worker.js';

export interface ScaleOptions {
  readonly vehicles: number;
  /** Vehicle worker processes. @default 4 */
  readonly workers?: number;
  /** @default 256 KiB */
  readonly imageBytes?: number;
  /** Give up after this long. @default 3 h */
  readonly timeoutMs?: number;
  /** @default 1000 */
  readonly notifyPerSecond?: number;
  /**
   * Period of the campaign tick, s. @default 60, as deployed: the tick's own reads (it lists the current wave each
   * time) count per minute as on AWS, not per second as in the interactive local cloud
   */
  readonly tickSeconds?: number;
  /**
   * Campaigns the fleet is split into (by model), created one after the other and started together. @default 1;
   * more only where the backend creates a campaign synchronously and cannot create one for the whole fleet
   */
  readonly campaigns?: number;
  /** Called with the counts as soon as they are complete (before the comparisons that end the run). */
  readonly onCounted?: (counts: {
    vehicles: number;
    operations: { total: OperationDelta; registration: OperationDelta };
  }) => void;
  /** Vehicle messages per ingest invocation (1 for the per-message baseline). @default as deployed */
  readonly ingestBatchSize?: number;
  /** Cumulative wave percentages. @default [10, 100] */
  readonly waves?: readonly number[];
  readonly log?: (line: string) => void;
}

export interface ScaleSummary {
  readonly vehicles: number;
  readonly workers: number;
  readonly campaigns: number;
  readonly imageBytes: number;
  readonly campaign: {
    status: string;
    counts: Record<string, number>;
    haltReason: string | null;
    created: string;
  };
  readonly timings: {
    readonly registerMs: number;
    readonly connectMs: number;
    /** POST /campaigns until the campaign was `created` (202 path: until preparation ended). */
    readonly createMs: number;
    /** Campaign start until the last vehicle received its offer. */
    readonly notifyAllMs: number;
    /** Campaign start until the campaign reached its end state. */
    readonly completeMs: number;
    /** Campaign start until the last vehicle's outcome was acknowledged. */
    readonly lastOutcomeMs: number;
  };
  readonly vehicleStatuses: Record<string, number>;
  /** `<VIN>: <status> (<reason>)` of the vehicles that did not complete, the first 20. */
  readonly notCompleted: string[];
  /** Image downloads resumed after a cut or a refused URL, over the whole fleet. */
  readonly resumedDownloads: number;
  readonly disagreements: string[];
  readonly bytesDownloaded: number;
  readonly peakRssBytes: { parent: number; cloud: number; workers: number[] };
  /** Operations counted from campaign creation until every report had been ingested. */
  readonly operations: { total: OperationDelta; registration: OperationDelta };
  readonly perVehicle: PerVehicleOperations;
}

export interface PerVehicleOperations {
  readonly dynamodbReads: number;
  readonly dynamodbWrites: number;
  readonly kmsSigns: number;
  readonly iotPublishes: number;
  readonly iotInbound: number;
  readonly lambdaInvocations: number;
  readonly apiRequests: number;
}

/** Per-vehicle figures of a counted stretch (the model, bench/fleet-model.ts, reads the same flat counts). */
export function perVehicle(total: OperationDelta, vehicles: number): PerVehicleOperations {
  const s = shapeOperations(total);
  const per = (n: number) => n / vehicles;
  return {
    dynamodbReads: per(s.dynamodb.reads),
    dynamodbWrites: per(s.dynamodb.writes),
    kmsSigns: per(s.kms.sign),
    iotPublishes: per(s.iot.publish),
    iotInbound: per(s.iot.inbound),
    lambdaInvocations: per(s.lambda.total),
    apiRequests: per(s.apigateway.requests),
  };
}

/** A sleep that keeps the process alive (the operator's own loop is all this process waits on). */
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const vinOf = (i: number) => `SMSCL${String(i).padStart(12, '0')}`;

/** A child process answering {id, op} requests with {id, result|error}. */
class Rpc {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  constructor(readonly child: ChildProcess) {
    child.on('message', (m: { id?: number; type?: string; result?: unknown; error?: string }) => {
      const id = m.type === 'reply' || m.type === undefined ? m.id : undefined;
      const w = id !== undefined ? this.waiting.get(id) : undefined;
      if (!w || id === undefined) return;
      this.waiting.delete(id);
      if (m.error !== undefined) w.reject(new Error(m.error));
      else w.resolve(m.result);
    });
    child.on('exit', (code) => {
      for (const w of this.waiting.values()) w.reject(new Error(`process exited with ${code}`));
      this.waiting.clear();
    });
  }
  call<T>(op: string): Promise<T> {
    const id = ++this.seq + 1;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, op });
    });
  }
}

function forkTs(file: string, arg: unknown, heapMb: number, logFile: string): ChildProcess {
  const out = openSync(logFile, 'a');
  return fork(new URL(file, import.meta.url).pathname, [JSON.stringify(arg)], {
    execArgv: [...process.execArgv, `--max-old-space-size=${heapMb}`],
    stdio: ['ignore', out, out, 'ipc'],
  });
}

/** The first message pick() accepts (an Error from pick() rejects). */
function once<T>(child: ChildProcess, pick: (m: unknown) => T | Error | undefined, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onMessage = (m: unknown) => {
      const v = pick(m);
      if (v === undefined) return;
      child.off('message', onMessage);
      if (v instanceof Error) reject(v);
      else resolve(v);
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code} before it was ready`)));
  });
}

export async function runScaleFleet(options: ScaleOptions): Promise<ScaleSummary> {
  const log = options.log ?? (() => {});
  const root = mkdtempSync(join(tmpdir(), 'ota-scale-'));
  const logs = join(root, 'logs');
  mkdirSync(logs);
  const imageBytes = options.imageBytes ?? 256 * 1024;
  const workerCount = Math.max(1, Math.min(options.workers ?? 4, options.vehicles));
  const campaignCount = Math.max(1, Math.min(options.campaigns ?? 1, options.vehicles));
  const modelOf = (k: number) => (campaignCount === 1 ? 'ScaleSim' : `ScaleSim-${k}`);
  const deadline = Date.now() + (options.timeoutMs ?? 3 * 3600_000);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const releaseSigner = new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const releasePublicKey = await releaseSigner.publicKeyPem();

  const cloudOptions: CloudProcessOptions = {
    dataDir: join(root, 'cloud'),
    releasePublicKey,
    mqttMaxConnections: options.vehicles + 100,
    rulesMaxQueued: Math.max(10_000, options.vehicles * 30),
    maxInstancesPerFunction: 4,
    ...(options.ingestBatchSize !== undefined ? { ingestBatchSize: options.ingestBatchSize } : {}),
    campaignTickMs: (options.tickSeconds ?? 60) * 1000,
  };
  log(`starting the local cloud (logs in ${logs})`);
  const cloudChild = forkTs('./cloud-process.ts', cloudOptions, 12_288, join(logs, 'cloud.log'));
  const cloud = new Rpc(cloudChild);
  const workers: Rpc[] = [];
  try {
    const info = await once<CloudProcessInfo>(
      cloudChild,
      (m) => {
        const msg = m as CloudMessage;
        if (msg.type === 'failed') return new Error(`the local cloud failed to start: ${msg.error}`);
        return msg.type === 'ready' ? msg.info : undefined;
      },
      'the local cloud',
    );
    const operator = new SimOperator(info.api, info.ca, info.adminToken);
    const vins = Array.from({ length: options.vehicles }, (_, i) => vinOf(i));
    for (let w = 0; w < workerCount; w++) {
      const slice = vins.filter((_, i) => i % workerCount === w);
      const workerOptions: VehicleWorkerOptions = {
        vins: slice,
        api: info.api,
        mqtt: info.mqtt,
        ingestRule: info.ingestRule,
        ca: info.ca,
        adminToken: info.adminToken,
        releasePublicKey,
        backendPublicKey: info.backendPublicKey,
        models: slice.map((vin) => modelOf(Number(vin.slice(5)) % campaignCount)),
        registerConcurrency: Math.max(1, Math.ceil(8 / workerCount)),
        connectConcurrency: Math.max(1, Math.ceil(64 / workerCount)),
        keepaliveSeconds: 600,
        // The agent's safety-net poll while MQTT is connected (AgentOptions.polling.connectedIntervalMs): a day.
        // Every 3 minutes, as here before, was 480 times the agent's rate: 10,000 waiting vehicles polled 55 times a
        // second (a login each), more load than the campaign, and counted as if the agent did it.
        pollSeconds: 86_400,
      };
      const child = forkTs('./vehicle-worker.ts', workerOptions, 4096, join(logs, `worker-${w}.log`));
      await once(child, (m) => ((m as { id?: number }).id === 0 ? true : undefined), `worker ${w}`);
      workers.push(new Rpc(child));
    }

    // Cold starts first, with nothing else waiting on them: on a loaded machine an instance's cold start can outlast
    // API Gateway's 29 s, and a registration whose answer is lost cannot be repeated (the VIN is taken).
    log('warming the operator function instances');
    await operator.warmUp(4, deadline);
    log(`registering ${options.vehicles} vehicles over ${workerCount} worker processes`);
    const beforeRegistration = await cloud.call<OperationDelta>('operations');
    let t = Date.now();
    const registered = await Promise.all(
      workers.map((w) => w.call<{ registered: number; errors: string[] }>('register')),
    );
    const registerMs = Date.now() - t;
    const registration = diffOperations(await cloud.call<OperationDelta>('operations'), beforeRegistration);
    const regCount = registered.reduce((n, r) => n + r.registered, 0);
    log(
      `registered ${regCount} in ${(registerMs / 1000).toFixed(1)} s ${registered
        .flatMap((r) => r.errors)
        .slice(0, 3)
        .join('; ')}`,
    );
    if (regCount !== options.vehicles)
      throw new Error(`only ${regCount} of ${options.vehicles} vehicles registered`);

    t = Date.now();
    const connected = await Promise.all(
      workers.map((w) => w.call<{ connected: number; errors: string[] }>('connect')),
    );
    const connectMs = Date.now() - t;
    const conCount = connected.reduce((n, r) => n + r.connected, 0);
    log(
      `connected ${conCount} over mutual TLS in ${(connectMs / 1000).toFixed(1)} s ${connected
        .flatMap((r) => r.errors)
        .slice(0, 3)
        .join('; ')}`,
    );
    if (conCount !== options.vehicles)
      throw new Error(`only ${conCount} of ${options.vehicles} vehicles connected`);

    log('publishing release 2.0.0');
    await operator.publishRelease(releaseSigner, '2.0.0', randomBytes(imageBytes));

    const before = await cloud.call<OperationDelta>('operations');
    t = Date.now();
    // One campaign per model; several only to work around a backend that creates campaigns synchronously
    // (--campaigns): they are created one after the other and started together.
    const ids = Array.from({ length: campaignCount }, (_, k) =>
      campaignCount === 1 ? 'scale-main' : `scale-${k}`,
    );
    const perCampaign = Math.floor(options.vehicles / campaignCount);
    const createdStatus: string[] = [];
    for (const [k, id] of ids.entries()) {
      const created = await operator.createCampaign(
        {
          campaign_id: id,
          name: 'scale-out fleet simulation',
          release_id: 'tcu-2.0.0',
          targets: { filter: { model: modelOf(k) } },
          policy: {
            waves: [...(options.waves ?? [10, 100])],
            advance_success_percent: 80,
            halt_failure_percent: 25,
            halt_min_outcomes: Math.max(1, Math.min(20, Math.floor(perCampaign / 10))),
            vehicle_timeout_seconds: 3600,
            retry_budget: 1,
            notify_per_second: Math.max(1, Math.floor((options.notifyPerSecond ?? 1000) / campaignCount)),
          },
        },
        Math.max(0, deadline - Date.now()),
        log,
      );
      createdStatus.push(created.status);
      if (created.status !== 'created')
        throw new Error(`campaign ${id} not created: ${JSON.stringify(created)}`);
    }
    const createMs = Date.now() - t;
    log(`${campaignCount} campaign(s) created in ${(createMs / 1000).toFixed(1)} s`);
    const t0 = Date.now();
    await Promise.all(ids.map((id) => operator.call('POST', `/campaigns/${id}/start`, {})));

    const progressAll = async () => {
      const all = await Promise.all(workers.map((w) => w.call<WorkerProgress>('progress')));
      return {
        offered: all.reduce((n, p) => n + p.offered, 0),
        done: all.reduce((n, p) => n + p.done, 0),
        busy: all.reduce((n, p) => n + p.busy, 0),
        lastOfferAt: Math.max(0, ...all.map((p) => p.lastOfferAt ?? 0)),
        lastDoneAt: Math.max(0, ...all.map((p) => p.lastDoneAt ?? 0)),
        bytes: all.reduce((n, p) => n + p.bytes, 0),
      };
    };
    const campaignsNow = () => Promise.all(ids.map((id) => operator.call('GET', `/campaigns/${id}`)));
    const sum = (cs: { counts: Record<string, number> }[]) => {
      const out: Record<string, number> = {};
      for (const c of cs) for (const [k, v] of Object.entries(c.counts)) out[k] = (out[k] ?? 0) + v;
      return out;
    };
    const ended = (cs: { status: string }[]) =>
      cs.every((c) => ['completed', 'halted', 'cancelled'].includes(c.status));
    let campaigns = await campaignsNow();
    let completeMs = 0;
    let lastLog = 0;
    for (;;) {
      if (Date.now() > deadline)
        throw new Error(`campaign did not finish in time: ${JSON.stringify(sum(campaigns))}`);
      // The operator's own polling is counted with the rest: every 5 s, a small share of a large run.
      await sleep(5000);
      campaigns = await campaignsNow();
      const p = await progressAll();
      if (completeMs === 0 && ended(campaigns)) completeMs = Date.now() - t0;
      if (Date.now() - lastLog > 15_000) {
        lastLog = Date.now();
        const stats = await cloud.call<{ rules: { pending: number } }>('stats');
        log(
          `+${((Date.now() - t0) / 1000).toFixed(0)} s waves ${campaigns.map((c) => c.current_wave).join(',')} ${[...new Set(campaigns.map((c) => c.status))].join(',')}: offered ${p.offered}, done ${p.done}, busy ${p.busy}, ingest queue ${stats.rules.pending}; ${JSON.stringify(sum(campaigns))}`,
        );
      }
      if (completeMs > 0 && p.busy === 0) break;
    }
    // Let the last reports through the rules path before counting.
    for (let i = 0; i < 600; i++) {
      const stats = await cloud.call<{ rules: { pending: number } }>('stats');
      if (stats.rules.pending === 0) break;
      await sleep(1000);
    }
    const total = diffOperations(await cloud.call<OperationDelta>('operations'), before);
    options.onCounted?.({ vehicles: options.vehicles, operations: { total, registration } });
    campaigns = await campaignsNow();
    const p = await progressAll();

    const outcomes = (
      await Promise.all(workers.map((w) => w.call<LightVehicleOutcome[]>('outcomes')))
    ).flat();
    const vehicleStatuses: Record<string, number> = {};
    for (const o of outcomes)
      vehicleStatuses[o.status ?? 'none'] = (vehicleStatuses[o.status ?? 'none'] ?? 0) + 1;
    const backend = new Map<string, string>();
    for (const c of campaigns) {
      for (const w of c.waves as { wave: number }[]) {
        for (const v of await operator.waveVehicles(c.campaign_id, w.wave)) backend.set(v.vin, v.status);
      }
    }
    const disagreements: string[] = [];
    for (const o of outcomes) {
      const b = backend.get(o.vin);
      if (b !== (o.status ?? 'scheduled') && !(o.status === null && b === 'scheduled'))
        disagreements.push(`${o.vin}: backend ${b}, vehicle ${o.status} (${o.reason ?? ''})`);
    }
    const statuses = [...new Set(campaigns.map((c) => c.status as string))];
    const campaign = {
      status: statuses.length === 1 ? statuses[0]! : statuses.join('+'),
      counts: sum(campaigns),
      halt_reason: campaigns.map((c) => c.halt_reason).find((r) => r) ?? null,
    };
    const created = { status: [...new Set(createdStatus)].join('+') };

    const workerRss: number[] = [];
    for (const w of workers.splice(0))
      workerRss.push((await w.call<{ peakRssBytes: number }>('stop')).peakRssBytes);
    const cloudRss = (await cloud.call<{ peakRssBytes: number }>('stop')).peakRssBytes;
    return {
      vehicles: options.vehicles,
      workers: workerCount,
      campaigns: campaignCount,
      imageBytes,
      campaign: {
        status: campaign.status,
        counts: campaign.counts,
        haltReason: campaign.halt_reason ?? null,
        created: created.status,
      },
      timings: {
        registerMs,
        connectMs,
        createMs,
        notifyAllMs: p.lastOfferAt ? p.lastOfferAt - t0 : 0,
        completeMs,
        lastOutcomeMs: p.lastDoneAt ? p.lastDoneAt - t0 : 0,
      },
      vehicleStatuses,
      notCompleted: outcomes
        .filter((o) => o.status !== 'completed')
        .slice(0, 20)
        .map((o) => `${o.vin}: ${o.status} (${o.reason ?? ''})`),
      disagreements,
      resumedDownloads: outcomes.reduce((n, o) => n + o.resumes, 0),
      bytesDownloaded: p.bytes,
      peakRssBytes: { parent: peakRssBytes(), cloud: cloudRss, workers: workerRss },
      operations: { total, registration },
      perVehicle: perVehicle(total, options.vehicles),
    };
  } catch (err) {
    const tail = (f: string) => {
      try {
        return readFileSync(join(logs, f), 'utf8').split('\n').slice(-15).join('\n');
      } catch {
        return '';
      }
    };
    log(`cloud log tail:\n${tail('cloud.log')}\nworker 0 log tail:\n${tail('worker-0.log')}`);
    throw err;
  } finally {
    for (const w of workers) w.child.kill();
    cloudChild.kill();
    await sleep(500);
    rmSync(root, { recursive: true, force: true });
  }
}
