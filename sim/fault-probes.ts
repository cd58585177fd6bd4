/**
 * The fleet run's fault injectors and the probes that watch what the system did about each fault, and the checks
 * over that evidence (sim/fleet.ts gathers it, bin/fleet.ts prints the checks). A check passes on an effect in the
 * system, never on the injector's own counter:
 *   - a cut download must have resumed: the bytes each cut vehicle pulled for the image stay within the image plus
 *     one chunk (the unverified tail is fetched again, nothing before it), and a Range request started past byte 0;
 *   - a power cut must have been recovered from the state file: the rebooted agent found the update persisted in
 *     its install phase, installed again without downloading again and ended on the new version, as the backend
 *     says;
 *   - the broker restart must have been survived: every vehicle reconnected to the new broker and every vehicle
 *     offered since the restart received its offer (over MQTT or by the catch-up poll);
 *   - duplicated messages must have reached the backend twice (seen twice by the broker, and every vehicle message
 *     the broker accepted, copies included, delivered by the topic rule to the ingest function, none dead-lettered)
 *     and been applied once (no status change twice in the history, which keeps status changes only).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import mqtt from 'mqtt';
import { clientConfig } from '../lambdas/adapters/aws-clients.js';
import { documentClient } from '../lambdas/adapters/dynamo-common.js';
import { DynamoUpdateRepository } from '../lambdas/adapters/dynamo-updates.js';
import type { HistoryEvent } from '../lambdas/core/ports.js';
import { UpdateHistoryReader } from '../lambdas/core/update-history.js';
import type { LocalBroker } from '../local/cloud.js';
import type { AgentEvent } from '../vehicle/agent.js';
import { type HttpResponse, type HttpTransport, TransportError } from '../vehicle/http-transport.js';
import type { CreateAgentOptions, CreatedAgent } from '../vehicle/setup.js';
import { agentStateSchema } from '../vehicle/state-store.js';

const MAIN_UPDATE = 'campaign#fleet-main';

/** An agent event and when it happened. */
export interface StampedEvent {
  readonly at: number;
  readonly e: AgentEvent;
}

/**
 * The download transport of one vehicle: counts the bytes it receives per object and the Range start of every
 * request, and, for a vehicle chosen to be cut, cuts its first image download half-way.
 */
export class DownloadProbe implements HttpTransport {
  /** Object key (last path segment: the image's sha256) -> bytes received. */
  readonly bytesByObject = new Map<string, number>();
  /** Object key -> first byte asked for, per request (0 without a Range header). */
  readonly rangeStarts = new Map<string, number[]>();
  cutDone = false;

  constructor(
    private readonly inner: HttpTransport,
    private readonly cut: boolean,
    private readonly minBytes: number,
  ) {}

  get bytes(): number {
    let n = 0;
    for (const b of this.bytesByObject.values()) n += b;
    return n;
  }

  async send(req: Parameters<HttpTransport['send']>[0]): Promise<HttpResponse> {
    const key = new URL(req.url).pathname.split('/').pop() ?? '';
    const range = /^bytes=(\d+)-/.exec(String(req.headers?.range ?? ''));
    this.rangeStarts.set(key, [...(this.rangeStarts.get(key) ?? []), range ? Number(range[1]) : 0]);
    const res = await this.inner.send(req);
    const total = Number(res.headers['content-length'] ?? 0);
    const cutHere = this.cut && !this.cutDone && req.method === 'GET' && total > this.minBytes;
    if (cutHere) this.cutDone = true;
    const bytes = this.bytesByObject;
    // Cut a little past half-way, inside a chunk: exactly there, whatever sizes the socket reads have (a cut
    // checked only between reads could come after the last byte and cut nothing).
    const cutAt = Math.floor(total / 2) + 1000;
    const body = (async function* () {
      let seen = 0;
      for await (const read of res.body) {
        const chunk = cutHere && seen + read.length > cutAt ? read.subarray(0, cutAt - seen) : read;
        bytes.set(key, (bytes.get(key) ?? 0) + chunk.length);
        seen += chunk.length;
        yield chunk;
        if (cutHere && seen >= cutAt) {
          res.abort();
          throw new TransportError('connection_cut', 'connection cut (injected fault)');
        }
      }
    })();
    return { status: res.status, headers: res.headers, body, abort: () => res.abort() };
  }

  close(): void {
    this.inner.close();
  }
}

/**
 * An MQTT client whose every publish goes out a second time, a little later (duplicated and reordered at the
 * backend). `sent` counts only copies the broker acknowledged, not copies attempted.
 */
export function duplicatingMqtt(
  counter: { sent: number },
  delayMs: () => number,
): NonNullable<CreateAgentOptions['mqttClientFactory']> {
  return (url, opts) => {
    const client = mqtt.connect(url, opts);
    const publish = client.publish.bind(client) as (...a: unknown[]) => unknown;
    (client as unknown as { publish: (...a: unknown[]) => unknown }).publish = (...args: unknown[]) => {
      const [topic, message] = args as [string, Buffer | string];
      setTimeout(() => {
        if (!client.connected) return;
        publish(topic, message, { qos: 1 }, (err?: Error) => {
          if (!err) counter.sent++;
        });
      }, delayMs());
      return publish(...args);
    };
    return client;
  };
}

/** The update an agent had in progress in its state file, as a rebooting agent finds it. */
export function persistedUpdate(
  stateDir: string,
): { update_id: string; phase: string; installAttempts: number } | null {
  try {
    const s = agentStateSchema.parse(JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')));
    return s.current
      ? {
          update_id: s.current.update_id,
          phase: s.current.phase,
          installAttempts: s.current.attempts.install,
        }
      : null;
  } catch {
    return null;
  }
}

/** What the broker saw: vehicle messages seen more than once, and clients and offer acks on a restarted broker. */
export class BrokerProbe {
  private readonly seen = new Set<string>();
  /** VIN -> messages it published that the broker had already accepted once, byte for byte. */
  readonly seenTwice = new Map<string, number>();
  restartedAt?: number;
  /** VINs that connected to the broker started by the restart. */
  readonly clientsAfterRestart = new Set<string>();
  /** Offers of the main campaign (issue_details) vehicles acknowledged to the restarted broker. */
  offersAckedAfterRestart = 0;
  /** Vehicle messages (progress, status) the broker accepted, copies included. */
  vehicleMessages = 0;

  constructor(private readonly broker: LocalBroker) {
    broker.onVehicleMessage((m) => {
      this.vehicleMessages++;
      const key = `${m.vin}\n${m.topic}\n${m.payload.toString('base64')}`;
      if (this.seen.has(key)) this.seenTwice.set(m.vin, (this.seenTwice.get(m.vin) ?? 0) + 1);
      else this.seen.add(key);
    });
  }

  /** Restarts the broker and watches the new one from its first connection on. */
  async restart(downMs: number): Promise<void> {
    this.restartedAt = Date.now();
    await this.broker.restart(downMs);
    // Attached before any I/O callback can run: no connection to the new broker is missed.
    const aedes = this.broker.aedes;
    aedes.on('client', (client) => this.clientsAfterRestart.add(client.id));
    aedes.on('ack', (packet) => {
      if (!('topic' in packet) || !/\/issue_details$/.test(String(packet.topic))) return;
      try {
        if (JSON.parse(String(packet.payload)).update_id === MAIN_UPDATE) this.offersAckedAfterRestart++;
      } catch {
        // not an offer this probe can read: not counted
      }
    });
  }
}

/** Reports the ingest recorded more than once (same VIN and sequence), and any applied more than once. */
export function ingestDuplicates(history: readonly HistoryEvent[]): {
  twice: number;
  appliedTwice: number[];
} {
  const bySequence = new Map<number, { n: number; applied: number }>();
  for (const e of history) {
    if (e.source === 'backend' || e.sequence === undefined) continue;
    const s = bySequence.get(e.sequence) ?? { n: 0, applied: 0 };
    s.n++;
    if (e.applied) s.applied++;
    bySequence.set(e.sequence, s);
  }
  const twice = [...bySequence.values()].filter((s) => s.n > 1).length;
  const appliedTwice = [...bySequence].filter(([, s]) => s.applied > 1).map(([seq]) => seq);
  return { twice, appliedTwice };
}

export interface FaultEvidence {
  readonly imageBytes: number;
  readonly chunkBytes: number;
  readonly cutDownloads: readonly {
    readonly vin: string;
    readonly cut: boolean;
    readonly imageBytes: number;
    readonly rangeStarts: readonly number[];
  }[];
  readonly powerCuts: readonly {
    readonly vin: string;
    /** What the rebooted agent found in its state file. */
    readonly persisted: { update_id: string; phase: string; installAttempts: number } | null;
    /** The rebooted agent entered the install phase again. */
    readonly installedAfterReboot: boolean;
    readonly runs: string | undefined;
    readonly outcome: string | undefined;
    readonly backendStatus: string | undefined;
    readonly imageBytes: number;
  }[];
  readonly broker: {
    readonly restarted: boolean;
    readonly vehicles: number;
    readonly agentsReconnected: number;
    readonly clientsOnNewBroker: number;
    readonly offersAckedAfterRestart: number;
    readonly offeredAfterRestart: number;
    /** Vehicles the backend offered the update after the restart that never received it. */
    readonly offerMissed: readonly string[];
    /** Offers agents received after the restart, by how: pushed over MQTT or found by a poll. */
    readonly offersReceived: { readonly mqtt: number; readonly poll: number };
    /** Polls agents made to catch up after reconnecting. */
    readonly catchUpPolls: number;
  };
  readonly duplicates: {
    readonly sent: number;
    readonly brokerSeenTwice: number;
    /** Vehicle messages the broker accepted, and those the topic rule delivered to ingest or dead-lettered. */
    readonly brokerMessages: number;
    readonly ruleDelivered: number;
    readonly ruleDeadLetters: number;
    readonly appliedTwice: readonly string[];
  };
}

/** Reads, after the run, what the system did about each injected fault (see sim/fault-probes.ts). */
export async function gatherEvidence(a: {
  vins: readonly string[];
  plan: ReadonlyMap<string, { cut: boolean; kill: boolean; dup: boolean }>;
  agents: ReadonlyMap<string, CreatedAgent>;
  transports: ReadonlyMap<string, DownloadProbe>;
  events: ReadonlyMap<string, StampedEvent[]>;
  reboots: ReadonlyMap<string, { at: number; persisted: ReturnType<typeof persistedUpdate> }>;
  brokerProbe: BrokerProbe;
  duplicated: { sent: number };
  backendStatus: ReadonlyMap<string, string | undefined>;
  offeredAtByVin: ReadonlyMap<string, number>;
  mainKey: string;
  imageBytes: number;
  chunkBytes: number;
  updatesTable: string;
  rules: { stats(): { delivered: number; deadLetters: number } };
}): Promise<FaultEvidence> {
  const imageBytesOf = (vin: string) => a.transports.get(vin)?.bytesByObject.get(a.mainKey) ?? 0;
  const history = new UpdateHistoryReader(
    new DynamoUpdateRepository(documentClient(new DynamoDBClient(clientConfig('DYNAMODB'))), a.updatesTable),
  );
  const appliedTwice: string[] = [];
  for (const vin of a.vins) {
    const found = ingestDuplicates(await history.listForVehicle(vin, 1000));
    for (const seq of found.appliedTwice) appliedTwice.push(`${vin} sequence ${seq}`);
  }
  const ruleStats = a.rules.stats();
  const restartedAt = a.brokerProbe.restartedAt ?? Number.POSITIVE_INFINITY;
  const stampedAfter = (type: AgentEvent['type'], since: number) =>
    [...a.events.values()].flatMap((list) =>
      list.filter((x) => x.at >= since && x.e.type === type).map((x) => x.e),
    );
  const mainOffers = stampedAfter('offer', restartedAt).flatMap((e) =>
    e.type === 'offer' && e.update_id === MAIN_UPDATE ? [e] : [],
  );
  const offeredAfter = a.vins.filter((vin) => (a.offeredAtByVin.get(vin) ?? 0) >= restartedAt);
  return {
    imageBytes: a.imageBytes,
    chunkBytes: a.chunkBytes,
    cutDownloads: a.vins
      .filter((vin) => a.plan.get(vin)?.cut)
      .map((vin) => ({
        vin,
        cut: a.transports.get(vin)?.cutDone ?? false,
        imageBytes: imageBytesOf(vin),
        rangeStarts: a.transports.get(vin)?.rangeStarts.get(a.mainKey) ?? [],
      })),
    powerCuts: a.vins
      .filter((vin) => a.plan.get(vin)?.kill)
      .map((vin) => {
        const reboot = a.reboots.get(vin);
        const state = a.agents.get(vin)?.agent.state;
        return {
          vin,
          persisted: reboot?.persisted ?? null,
          installedAfterReboot: (a.events.get(vin) ?? []).some(
            (x) =>
              reboot !== undefined &&
              x.at >= reboot.at &&
              x.e.type === 'phase' &&
              x.e.phase === 'installing' &&
              x.e.update_id === MAIN_UPDATE,
          ),
          runs: state?.ecus.tcu?.version,
          outcome: state?.recent.filter((r) => r.update_id === MAIN_UPDATE).at(-1)?.status,
          backendStatus: a.backendStatus.get(vin),
          imageBytes: imageBytesOf(vin),
        };
      }),
    broker: {
      restarted: a.brokerProbe.restartedAt !== undefined,
      vehicles: a.vins.length,
      agentsReconnected: a.vins.filter((vin) => reconnectedSince(a.events.get(vin) ?? [], restartedAt))
        .length,
      clientsOnNewBroker: a.vins.filter((vin) => a.brokerProbe.clientsAfterRestart.has(vin)).length,
      offersAckedAfterRestart: a.brokerProbe.offersAckedAfterRestart,
      offeredAfterRestart: offeredAfter.length,
      offersReceived: {
        mqtt: mainOffers.filter((e) => e.source === 'mqtt').length,
        poll: mainOffers.filter((e) => e.source === 'poll').length,
      },
      catchUpPolls: stampedAfter('poll', restartedAt).filter(
        (e) => e.type === 'poll' && e.reason === 'catch_up',
      ).length,
      offerMissed: offeredAfter.filter(
        (vin) => offersSince(a.events.get(vin) ?? [], MAIN_UPDATE, restartedAt) === 0,
      ),
    },
    duplicates: {
      sent: a.duplicated.sent,
      brokerSeenTwice: a.vins
        .filter((vin) => a.plan.get(vin)?.dup)
        .reduce((n, vin) => n + (a.brokerProbe.seenTwice.get(vin) ?? 0), 0),
      brokerMessages: a.brokerProbe.vehicleMessages,
      ruleDelivered: ruleStats.delivered,
      ruleDeadLetters: ruleStats.deadLetters,
      appliedTwice,
    },
  };
}

export interface FaultCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export function faultChecks(ev: FaultEvidence, mainUpdate: string): FaultCheck[] {
  const bound = ev.imageBytes + ev.chunkBytes;
  const cuts = ev.cutDownloads;
  const badCuts = cuts.filter(
    (d) =>
      !d.cut || d.imageBytes < ev.imageBytes || d.imageBytes > bound || !d.rangeStarts.some((s) => s > 0),
  );
  const maxCut = Math.max(0, ...cuts.map((d) => d.imageBytes));
  const power = ev.powerCuts;
  const badPower = power.filter(
    (p) =>
      p.persisted?.update_id !== mainUpdate ||
      p.persisted.phase !== 'installing' ||
      !p.installedAfterReboot ||
      p.runs !== '2.0.0' ||
      p.outcome !== 'completed' ||
      p.backendStatus !== 'completed' ||
      p.imageBytes > ev.imageBytes,
  );
  const b = ev.broker;
  const d = ev.duplicates;
  const sample = (xs: readonly { vin: string }[]) => xs.slice(0, 3).map((x) => JSON.stringify(x));
  return [
    {
      name: 'cut downloads resumed after their last verified chunk (bytes per vehicle)',
      ok: cuts.length > 0 && badCuts.length === 0,
      detail:
        `${cuts.length} cut vehicles, at most ${maxCut} bytes each for a ${ev.imageBytes}-byte image ` +
        `(bound: image + one ${ev.chunkBytes}-byte chunk = ${bound})` +
        (badCuts.length ? `; ${badCuts.length} did not resume: ${sample(badCuts).join(' ')}` : ''),
    },
    {
      name: 'vehicles that lost power mid-install recovered from their state files',
      ok: power.length > 0 && badPower.length === 0,
      detail:
        `${power.length} power cuts; each reboot found ${mainUpdate} in phase installing, installed again ` +
        'without downloading again and completed 2.0.0' +
        (badPower.length ? `; ${badPower.length} did not: ${sample(badPower).join(' ')}` : ''),
    },
    {
      name: 'after the broker restart every vehicle reconnected and offers caught up',
      ok:
        b.restarted &&
        b.agentsReconnected === b.vehicles &&
        b.clientsOnNewBroker === b.vehicles &&
        b.offersAckedAfterRestart > 0 &&
        b.offeredAfterRestart > 0 &&
        b.offerMissed.length === 0,
      detail:
        `${b.agentsReconnected}/${b.vehicles} agents reconnected, ${b.clientsOnNewBroker} vehicles connected to ` +
        `the new broker, ${b.offersAckedAfterRestart} offers acknowledged to it, ${b.offeredAfterRestart} vehicles ` +
        `offered after the restart, ${b.offerMissed.length} of them never received it (offers received: ` +
        `${b.offersReceived.mqtt} over MQTT, ${b.offersReceived.poll} by poll after ${b.catchUpPolls} catch-up polls)` +
        (b.offerMissed.length ? ` (${b.offerMissed.slice(0, 3).join(', ')})` : ''),
    },
    {
      name: 'duplicated MQTT messages reached the backend twice and were applied once',
      ok:
        d.sent > 0 &&
        d.brokerSeenTwice > 0 &&
        d.ruleDelivered >= d.brokerMessages &&
        d.ruleDeadLetters === 0 &&
        d.appliedTwice.length === 0,
      detail:
        `${d.sent} copies acknowledged by the broker, ${d.brokerSeenTwice} messages it accepted twice, ` +
        `${d.ruleDelivered} of its ${d.brokerMessages} vehicle messages delivered to ingest ` +
        `(${d.ruleDeadLetters} dead-lettered), ${d.appliedTwice.length} applied twice` +
        (d.appliedTwice.length ? ` (${d.appliedTwice.slice(0, 3).join(', ')})` : ''),
    },
  ];
}

/** Offers an agent received at or after `since`. */
export function offersSince(events: readonly StampedEvent[], updateId: string, since: number): number {
  return events.filter((x) => x.at >= since && x.e.type === 'offer' && x.e.update_id === updateId).length;
}

/** The agent saw its connection drop and come back at or after `since`. */
export function reconnectedSince(events: readonly StampedEvent[], since: number): boolean {
  const after = events.filter((x) => x.at >= since && x.e.type === 'connection');
  const down = after.findIndex((x) => x.e.type === 'connection' && !x.e.connected);
  return down >= 0 && after.slice(down).some((x) => x.e.type === 'connection' && x.e.connected);
}
