/**
 * One vehicle worker process of the scale-out fleet run (sim/scale.ts forks several): holds a slice of the fleet
 * as light vehicles (sim/light-vehicle.ts). Each vehicle makes its own key and CSR, is registered through the
 * operator API (which has the local CA issue its certificate), connects over mutual TLS and then answers offers.
 * Answers the parent's requests over IPC: `register`, `connect`, `progress`, `outcomes`, `stop`.
 */

import { trustedKeysFromPems } from '../protocol/signatures.js';
import { generateKeyAndCsr } from '../protocol/x509.js';
import { registerVehicle } from '../vehicle/api-client.js';
import { ApiError } from '../vehicle/errors.js';
import { NodeHttpsTransport } from '../vehicle/http-transport.js';
import { LightVehicle, type LightVehicleOutcome } from './light-vehicle.js';
import { peakRssBytes, pool } from './operator.js';

export interface VehicleWorkerOptions {
  readonly vins: readonly string[];
  readonly api: string;
  readonly mqtt: string;
  /** Reports go through IoT Basic Ingest to this topic rule, as the agent's do. */
  readonly ingestRule: string;
  readonly ca: string;
  readonly adminToken: string;
  readonly releasePublicKey: string;
  readonly backendPublicKey: string;
  /** Model of each VIN (campaigns target vehicles by model). */
  readonly models: readonly string[];
  /** Registrations in flight at once from this worker. */
  readonly registerConcurrency: number;
  /** MQTT connections being opened at once from this worker. */
  readonly connectConcurrency: number;
  readonly keepaliveSeconds: number;
  /** Safety-net poll while a vehicle has no outcome yet, s. */
  readonly pollSeconds: number;
}

export type WorkerRequest = { id: number; op: 'register' | 'connect' | 'progress' | 'outcomes' | 'stop' };

export interface WorkerProgress {
  readonly vehicles: number;
  readonly offered: number;
  readonly done: number;
  readonly busy: number;
  readonly byStatus: Record<string, number>;
  readonly firstOfferAt: number | null;
  readonly lastOfferAt: number | null;
  readonly lastDoneAt: number | null;
  readonly bytes: number;
  readonly peakRssBytes: number;
}

const options = JSON.parse(process.argv[2] ?? '{}') as VehicleWorkerOptions;
const ecus = [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }];
const transport = new NodeHttpsTransport({ ca: options.ca, maxSockets: 32 });
const trust = {
  releaseKeys: trustedKeysFromPems([options.releasePublicKey]),
  backendKeys: trustedKeysFromPems([options.backendPublicKey]),
};
const vehicles: LightVehicle[] = [];

async function register(): Promise<{ registered: number; errors: string[] }> {
  const errors: string[] = [];
  const modelOf = new Map(options.vins.map((vin, i) => [vin, options.models[i]!]));
  let done = 0;
  await pool(options.vins, options.registerConcurrency, async (vin) => {
    if (++done % 100 === 0) process.stdout.write(`registering: ${done} of ${options.vins.length}\n`);
    const { privateKeyPem, csrPem } = await generateKeyAndCsr(vin);
    for (let attempt = 1; ; attempt++) {
      try {
        const certPem = await registerVehicle(transport, options.api, options.adminToken, {
          vin,
          model: modelOf.get(vin)!,
          ecus,
          csr: csrPem,
        });
        vehicles.push(
          new LightVehicle(
            vin,
            { keyPem: privateKeyPem, certPem },
            {
              apiUrl: options.api,
              mqttUrl: options.mqtt,
              ingestRule: options.ingestRule,
              ca: options.ca,
              trust,
              transport,
              hardwareId: 'TCU-HW-1',
              keepaliveSeconds: options.keepaliveSeconds,
              pollSeconds: options.pollSeconds,
            },
          ),
        );
        return;
      } catch (err) {
        // A registration whose answer was lost (a 504 while it went on) leaves the VIN taken: it cannot be redone.
        const taken = err instanceof ApiError && err.code === 'vehicle_exists';
        if (attempt >= 5 || taken) {
          errors.push(
            `${vin}: ${(err as Error).message}${taken && attempt > 1 ? ' (the first answer was lost)' : ''}`,
          );
          return;
        }
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  });
  return { registered: vehicles.length, errors: errors.slice(0, 20) };
}

async function connect(): Promise<{ connected: number; errors: string[] }> {
  const errors: string[] = [];
  let connected = 0;
  await pool(vehicles, options.connectConcurrency, async (v) => {
    try {
      await v.connect();
      connected++;
    } catch (err) {
      errors.push(`${v.vin}: ${(err as Error).message}`);
    }
  });
  return { connected, errors: errors.slice(0, 20) };
}

function progress(): WorkerProgress {
  const byStatus: Record<string, number> = {};
  let offered = 0;
  let done = 0;
  let busy = 0;
  let bytes = 0;
  let firstOfferAt: number | null = null;
  let lastOfferAt: number | null = null;
  let lastDoneAt: number | null = null;
  for (const v of vehicles) {
    const o = v.outcome;
    bytes += o.bytes;
    if (!v.idle) busy++;
    if (o.offeredAt !== null) {
      offered++;
      firstOfferAt = Math.min(firstOfferAt ?? o.offeredAt, o.offeredAt);
      lastOfferAt = Math.max(lastOfferAt ?? o.offeredAt, o.offeredAt);
    }
    if (o.doneAt !== null) {
      done++;
      lastDoneAt = Math.max(lastDoneAt ?? o.doneAt, o.doneAt);
    }
    const s = o.status ?? 'none';
    byStatus[s] = (byStatus[s] ?? 0) + 1;
  }
  return {
    vehicles: vehicles.length,
    offered,
    done,
    busy,
    byStatus,
    firstOfferAt,
    lastOfferAt,
    lastDoneAt,
    bytes,
    peakRssBytes: peakRssBytes(),
  };
}

process.on('message', async (req: WorkerRequest) => {
  let result: unknown;
  try {
    if (req.op === 'register') result = await register();
    else if (req.op === 'connect') result = await connect();
    else if (req.op === 'progress') result = progress();
    else if (req.op === 'outcomes') result = vehicles.map((v): LightVehicleOutcome => ({ ...v.outcome }));
    else if (req.op === 'stop') {
      await pool(vehicles, 64, (v) => v.close());
      transport.close();
      process.send?.({ id: req.id, result: { peakRssBytes: peakRssBytes() } });
      process.exit(0);
    }
    process.send?.({ id: req.id, result });
  } catch (err) {
    process.send?.({ id: req.id, error: err instanceof Error ? err.message : String(err) });
  }
});
// Orphaned (the run was stopped): stop too.
process.on('disconnect', () => process.exit(1));
process.send?.({ id: 0, result: 'ready' });
