/**
 * The agent's durable state: one small JSON file, rewritten atomically (temp file, fsync, rename, fsync folder)
 * on every change, so after a power cut the agent finds either the state before a change or after it.
 *
 * It holds what must survive a restart: the installed version per ECU, the last assignment counter accepted
 * (freeze protection), the next report sequence number (the backend drops reports that do not increase it), the
 * update in progress with its phase and verified download bytes, offers received but not yet handled, and
 * reports not yet acknowledged. Offers themselves (signed manifests can be large) live in separate immutable
 * files under offers/, named in the state.
 */
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import { canonicalJson } from '../protocol/canonical-json.js';
import { offerSchema, type UpdateOffer } from '../protocol/offer.js';
import { VEHICLE_STATUSES } from '../protocol/schemas.js';
import { ensureDir, writeFileAtomic } from './atomic-file.js';
import { StateError } from './errors.js';

export const STATE_FILE = 'state.json';

const vehicleStatus = z.enum(VEHICLE_STATUSES);
export type VehicleStatus = z.infer<typeof vehicleStatus>;

export const UPDATE_PHASES = ['accepted', 'downloading', 'downloaded', 'verified', 'installing'] as const;
export type UpdatePhase = (typeof UPDATE_PHASES)[number];

const pendingReportSchema = z.object({
  sequence: z.number().int().min(0),
  status: vehicleStatus,
  firmware_version: z.string().optional(),
  campaign_id: z.string().optional(),
  update_id: z.string().optional(),
  progress: z.number().min(0).max(100).optional(),
  reason: z.string().max(500).optional(),
  /** What the download cost, with the report that carries it (protocol/schemas.ts). */
  bytes_fetched: z.number().int().min(0).optional(),
  bytes_reused: z.number().int().min(0).optional(),
  bytes_image: z.number().int().min(1).optional(),
  created_at: z.string(),
  /** Published once on MQTT (best effort); HTTPS is what acknowledges it. */
  mqtt_sent: z.boolean(),
  attempts: z.number().int().min(0),
});
export type PendingReport = z.infer<typeof pendingReportSchema>;

const currentUpdateSchema = z.object({
  offer_file: z.string(),
  /** SHA-256 of the canonical offer: recognises a redelivery of exactly this offer. */
  offer_digest: z.string(),
  update_id: z.string(),
  campaign_id: z.string().nullable(),
  firmware_version: z.string(),
  ecu: z.string(),
  counter: z.number().int(),
  phase: z.enum(UPDATE_PHASES),
  /** Bytes of the .part file verified against the manifest's chunk digests and fsynced. */
  verified_bytes: z.number().int().min(0),
  /**
   * Bytes fetched from the network and image bytes reused locally by this update's download runs so far, and the
   * image size, saved with each checkpoint: the outcome report carries every run's, not only the one that finished.
   * (A power cut loses at most what one run fetched since its last checkpoint, a couple of seconds of transfer.)
   */
  transfer: z
    .object({
      fetched: z.number().int().min(0),
      reused: z.number().int().min(0),
      image: z.number().int().min(1).optional(),
    })
    .optional(),
  attempts: z.object({
    download: z.number().int().min(0),
    verify: z.number().int().min(0),
    install: z.number().int().min(0),
    unexpected: z.number().int().min(0),
  }),
  accepted_at: z.string(),
  /** Driver consent, when the signed conditions require it (conditions.ts): asked, postponed (until), given. */
  consent: z
    .object({
      state: z.enum(['asking', 'postponed', 'given']),
      postponements: z.number().int().min(0),
      ask_at: z.string().optional(),
    })
    .optional(),
});
export type CurrentUpdate = z.infer<typeof currentUpdateSchema>;

const inboxEntrySchema = z.object({
  offer_file: z.string(),
  offer_digest: z.string(),
  update_id: z.string(),
  firmware_version: z.string(),
  ecu: z.string(),
  counter: z.number().int(),
  received_at: z.string(),
});
export type InboxEntry = z.infer<typeof inboxEntrySchema>;

const outcomeSchema = z.object({
  update_id: z.string(),
  firmware_version: z.string(),
  counter: z.number().int().optional(),
  offer_digest: z.string().optional(),
  status: vehicleStatus,
  reason: z.string().optional(),
  at: z.string(),
});
export type RecordedOutcome = z.infer<typeof outcomeSchema>;

export const agentStateSchema = z.object({
  schema: z.literal('ota.agent-state/v1'),
  vin: z.string(),
  /** ECU name -> hardware id and the version on its active slot. */
  ecus: z.record(z.string(), z.object({ hardware_id: z.string(), version: z.string() })),
  /** Highest assignment counter accepted; offers at or below it are stale. */
  last_counter: z.number().int().min(0),
  /** Next report sequence number (per vehicle, never reused). */
  next_sequence: z.number().int().min(0),
  current: currentUpdateSchema.nullable(),
  inbox: z.array(inboxEntrySchema),
  pending_reports: z.array(pendingReportSchema),
  /** SHA-256 of the last inventory the backend acknowledged: an unchanged one is not sent again at start-up. */
  reported_inventory: z.string().optional(),
  /** Latest outcomes, newest last (bounded): recognises redelivered offers and shows history. */
  recent: z.array(outcomeSchema),
});
export type AgentState = z.infer<typeof agentStateSchema>;

export const MAX_RECENT_OUTCOMES = 20;

/** SHA-256 of the canonical offer: two deliveries of the same offer have the same digest. */
export function offerDigest(offer: UpdateOffer): string {
  return createHash('sha256').update(canonicalJson(offer)).digest('hex');
}

export function initialState(vin: string, ecus: AgentState['ecus']): AgentState {
  return {
    schema: 'ota.agent-state/v1',
    vin,
    ecus: structuredClone(ecus),
    last_counter: 0,
    next_sequence: 0,
    current: null,
    inbox: [],
    pending_reports: [],
    recent: [],
  };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

export class StoreClosedError extends Error {
  constructor() {
    super('the state store is closed');
    this.name = 'StoreClosedError';
  }
}

export class StateStore {
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly dir: string,
    private snapshot: Readonly<AgentState>,
  ) {}

  /**
   * Opens the state in dir, creating it from `initial` on first run. An unreadable or invalid state file is an
   * error, never silently replaced: starting over would forget the assignment counter and report sequence.
   */
  static async open(dir: string, initial: () => AgentState): Promise<StateStore> {
    await ensureDir(dir);
    await ensureDir(join(dir, 'offers'));
    const file = join(dir, STATE_FILE);
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
    }
    if (text === undefined) {
      const state = agentStateSchema.parse(initial());
      await writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`);
      return new StateStore(dir, deepFreeze(state));
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new StateError('state_unreadable', `${file} is not valid JSON`, { cause: err });
    }
    const result = agentStateSchema.safeParse(parsed);
    if (!result.success) {
      throw new StateError(
        'state_invalid',
        `${file} is invalid: ${result.error.issues[0]?.message ?? 'unknown'}`,
      );
    }
    return new StateStore(dir, deepFreeze(result.data));
  }

  /** The current state; frozen, change it through update(). */
  get state(): Readonly<AgentState> {
    return this.snapshot;
  }

  get file(): string {
    return join(this.dir, STATE_FILE);
  }

  /**
   * Applies `mutate` to a copy of the latest state and makes it durable before it becomes visible. Updates
   * run one at a time in call order, each seeing the result of the previous one.
   */
  update<R>(mutate: (draft: AgentState) => R): Promise<R> {
    const run = this.chain.then(async () => {
      if (this.closed) throw new StoreClosedError();
      const draft = structuredClone(this.snapshot) as AgentState;
      const result = mutate(draft);
      const next = agentStateSchema.parse(draft);
      if (next.recent.length > MAX_RECENT_OUTCOMES)
        next.recent.splice(0, next.recent.length - MAX_RECENT_OUTCOMES);
      await writeFileAtomic(this.file, `${JSON.stringify(next, null, 2)}\n`);
      // A close() while writing means the process "died" here: the file may hold the change, memory does not.
      if (this.closed) throw new StoreClosedError();
      this.snapshot = deepFreeze(next);
      return result;
    });
    this.chain = run.catch(() => {});
    return run;
  }

  /** Refuses every later update (shutdown, or a simulated power cut in tests). */
  close(): void {
    this.closed = true;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Stores an offer in its own immutable file; answers the file name to keep in the state. */
  async saveOffer(offer: UpdateOffer): Promise<string> {
    const name = `${offer.assignment.assignment.counter}-${offerDigest(offer).slice(0, 24)}.json`;
    await writeFileAtomic(join(this.dir, 'offers', name), JSON.stringify(offer));
    return name;
  }

  async loadOffer(name: string): Promise<UpdateOffer> {
    const text = await readFile(join(this.dir, 'offers', name), 'utf8');
    return offerSchema.parse(JSON.parse(text));
  }

  async deleteOffer(name: string): Promise<void> {
    await rm(join(this.dir, 'offers', name), { force: true });
  }

  /** Where downloads for this agent live. */
  get downloadsDir(): string {
    return join(this.dir, 'downloads');
  }
}
