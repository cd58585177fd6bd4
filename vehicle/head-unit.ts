/**
 * What the head unit (the car's screen) sees of the agent and may do: the pending update with what a driver needs
 * to decide (version, ECUs, size, release notes, expected install time, whether the car must be parked), the
 * driver's answer to a consent question, the outcome of the last update in words a driver understands, and a
 * manual retry after a failure. Served over a local socket by head-unit-server.ts; no network, no backend
 * credentials leave the agent.
 *
 * A retry is a fresh request for the same version (POST /updates/{vin}/initiate, the vehicle's own mTLS-bound
 * token): the backend signs a new assignment, which goes through the inbox and every check like any offer.
 */
import type { UpdateConditions } from '../protocol/conditions.js';
import type { AgentContext } from './agent-context.js';
import type { ConditionGate, ConsentView, DriverDecision } from './conditions.js';
import { DecisionError, vehicleTimeZone } from './conditions.js';
import type { OfferInbox } from './offer-inbox.js';
import { offerFromAnswer } from './poller.js';
import type { RecordedOutcome, VehicleStatus } from './state-store.js';

export interface PendingView {
  readonly update_id: string;
  readonly version: string;
  readonly ecus: readonly string[];
  readonly size: number;
  readonly release_notes: string | null;
  readonly expected_install_seconds: number | null;
  readonly must_park: boolean;
  /** accepted .. installing (the agent's phase), or waiting for the driver. */
  readonly phase: string;
  readonly consent: ConsentView | null;
  readonly maintenance_window: { start: string; end: string; time_zone: string } | null;
  readonly network: 'any' | 'unmetered';
}

export interface OutcomeView {
  readonly update_id: string;
  readonly version: string;
  readonly status: VehicleStatus;
  readonly message: string;
  readonly retry_possible: boolean;
  readonly at: string;
}

export interface HeadUnitView {
  readonly vin: string;
  readonly versions: Readonly<Record<string, string>>;
  readonly pending: PendingView | null;
  readonly last_outcome: OutcomeView | null;
}

/** What the head unit shows of an update in progress, a release's or a bundle's, with its signed conditions. */
export function pendingViewOf(
  ctx: AgentContext,
  u: {
    readonly update_id: string;
    readonly version: string;
    readonly ecus: readonly string[];
    readonly size: number;
    /** The agent's phase, shown unless the driver is being asked. */
    readonly phase: string;
    readonly conditions: UpdateConditions | undefined;
    readonly consent: ConsentView | undefined;
  },
): PendingView {
  const c = u.conditions;
  const minutes = c?.install_minutes;
  return {
    update_id: u.update_id,
    version: u.version,
    ecus: u.ecus,
    size: u.size,
    release_notes: c?.release_notes ?? null,
    expected_install_seconds:
      minutes !== undefined ? minutes * 60 : (ctx.options.installEstimateSeconds ?? null),
    must_park: ctx.options.safety?.requireParked ?? true,
    phase: u.consent && u.consent.state !== 'given' ? `consent_${u.consent.state}` : u.phase,
    consent: u.consent ?? null,
    maintenance_window: c?.maintenance_window
      ? { ...c.maintenance_window, time_zone: vehicleTimeZone(ctx) }
      : null,
    network: c?.network ?? 'any',
  };
}

const RETRYABLE: ReadonlySet<VehicleStatus> = new Set(['failed', 'verification_failed', 'rolled_back']);

/** The outcome as a driver reads it. `runs`: the version the car runs now. */
export function driverMessage(o: Pick<RecordedOutcome, 'status' | 'firmware_version'>, runs: string): string {
  const v = o.firmware_version;
  const still = `your car still runs ${runs}`;
  switch (o.status) {
    case 'completed':
      return `Update ${v} installed`;
    case 'verification_failed':
      return `Update failed: the download was damaged; ${still}; retry?`;
    case 'rolled_back':
      return `Update ${v} did not start correctly and was undone; ${still}; retry?`;
    case 'failed':
      return `Update failed: ${v} could not be installed; ${still}; retry?`;
    case 'declined':
      return `Update ${v} declined; ${still}`;
    case 'expired':
      return `Update ${v} was not accepted in time and is no longer offered; ${still}`;
    case 'rejected':
      return `Update ${v} is not meant for this car and was not installed; ${still}`;
    default:
      return `Update ${v}: ${o.status}`;
  }
}

/** The bundle in progress, as the head unit sees it (bundle-runner.ts). */
export interface BundleQuestion {
  pendingView(): PendingView | null;
  readonly askingDriver: boolean;
  decide(decision: DriverDecision): Promise<void>;
}

export class HeadUnit {
  constructor(
    private readonly ctx: AgentContext,
    private readonly inbox: OfferInbox,
    private readonly gate: ConditionGate,
    private readonly bundle?: BundleQuestion,
  ) {}

  async view(): Promise<HeadUnitView> {
    const s = this.ctx.store.state;
    const versions = Object.fromEntries(Object.entries(s.ecus).map(([e, v]) => [e, v.version]));
    return { vin: s.vin, versions, pending: await this.pending(), last_outcome: this.lastOutcome() };
  }

  private async pending(): Promise<PendingView | null> {
    const cur = this.ctx.store.state.current;
    // A multi-ECU bundle runs outside the single release's state: its own view (and consent question).
    if (!cur) return this.bundle?.pendingView() ?? null;
    const offer = await this.inbox.load(cur);
    const c = offer.assignment.assignment.conditions;
    return pendingViewOf(this.ctx, {
      update_id: cur.update_id,
      version: cur.firmware_version,
      ecus: [cur.ecu],
      size: offer.manifest.manifest.size,
      phase: cur.phase,
      conditions: c,
      consent: this.gate.consentView(cur, c),
    });
  }

  lastOutcome(): OutcomeView | null {
    const s = this.ctx.store.state;
    const o = s.recent.at(-1);
    if (!o) return null;
    const ecu = Object.entries(s.ecus).find(([, v]) => v.version === o.firmware_version)?.[0];
    const runs = Object.values(s.ecus).map((v) => v.version);
    // The version the driver knows: the updated ECU's, when a single ECU is in the state (the common case).
    const running = runs.length === 1 ? runs[0]! : runs.join(', ');
    return {
      update_id: o.update_id,
      version: o.firmware_version,
      status: o.status,
      message: driverMessage(o, ecu && o.status === 'completed' ? o.firmware_version : running),
      retry_possible: this.retryTarget() !== undefined,
      at: o.at,
    };
  }

  /** The driver's answer to the pending consent question. */
  decide(decision: DriverDecision): Promise<void> {
    const cur = this.ctx.store.state.current;
    if (!cur && this.bundle?.askingDriver) return this.bundle.decide(decision);
    if (!cur) return Promise.reject(new DecisionError('no_question', 'no update is waiting for the driver'));
    return this.inbox
      .load(cur)
      .then((offer) => this.gate.decide(decision, offer.assignment.assignment.conditions));
  }

  /** The failed update a driver may retry: the last outcome, a failure, nothing else under way. */
  private retryTarget(): RecordedOutcome | undefined {
    const s = this.ctx.store.state;
    const o = s.recent.at(-1);
    if (!o || !RETRYABLE.has(o.status) || s.current || s.inbox.length > 0 || this.bundle?.pendingView())
      return undefined;
    if (Object.values(s.ecus).some((e) => e.version === o.firmware_version)) return undefined;
    return o;
  }

  /** Asks the backend for the failed version again; the answer becomes an offer like any other. */
  async retry(): Promise<{ version: string }> {
    const o = this.retryTarget();
    if (!o) throw new DecisionError('nothing_to_retry', 'no failed update to retry');
    const answer = await this.ctx.options.api.initiate(o.firmware_version, this.ctx.signal);
    this.ctx.logger.info('the driver retries a failed update', { version: o.firmware_version });
    await this.inbox.receive(Buffer.from(JSON.stringify(offerFromAnswer(answer))), 'poll');
    return { version: o.firmware_version };
  }
}
