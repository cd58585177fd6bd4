/**
 * The TCU agent: offer -> verify -> download -> verify -> wait until safe -> install -> report.
 *
 * One update runs at a time, driven by the phase stored in the state file, so a restart continues where the
 * previous run stopped: a download resumes after its last verified chunk, a verified image goes on to install,
 * and an interrupted install is settled by the A/B slots (old or new, never a mix) and reported.
 *
 * Offers arrive on MQTT (stored before they are acknowledged) or, when MQTT is unavailable, from polling
 * GET /updates/{vin} (a pending update there has no manifest: POST /download answers it with the assignment).
 * Every outcome is reported with the reason, durably; a failure never leaves unverified or half-installed
 * software active.
 *
 * Nothing here is global: a process may run many agents (fleet simulation), each with its own state folder,
 * transports and runtime.
 */
import type { AgentContext } from './agent-context.js';
import type { AgentEvent, VehicleAgentOptions } from './agent-options.js';
import { BundleRunner } from './bundle-runner.js';
import { DownloadUrls } from './download-phase.js';
import { Downloader } from './downloader.js';
import { AgentError } from './errors.js';
import { FreshnessMonitor } from './freshness.js';
import { HeadUnit } from './head-unit.js';
import { InventoryReporter } from './inventory-reporter.js';
import { type AgentLogger, describeError, silentLogger } from './logger.js';
import { MqttLink } from './mqtt-link.js';
import { OfferAcceptance } from './offer-acceptance.js';
import { OfferInbox } from './offer-inbox.js';
import { Poller } from './poller.js';
import { Reporter } from './reporter.js';
import { type AgentRuntime, settleWithin, systemRuntime, Wakeup } from './runtime.js';
import { type AgentState, initialState, StateStore } from './state-store.js';
import { UpdateRunner } from './update-runner.js';

export type {
  AgentEvent,
  AgentHooks,
  AgentMqttFactory,
  AgentMqttSession,
  EcuConfig,
  InstallStep,
  VehicleAgentOptions,
} from './agent-options.js';

/** The parts that exist once the agent is started (they need its state). */
interface Parts {
  readonly store: StateStore;
  readonly reporter: Reporter;
  readonly inbox: OfferInbox;
  readonly poller: Poller;
  readonly freshness: FreshnessMonitor | undefined;
  readonly headUnit: HeadUnit;
}

/**
 * The composition: the inbox stores offers from MQTT (MqttLink) and the Poller; the UpdateRunner accepts them one
 * at a time (OfferAcceptance) and runs each through download, verify and install; the Reporter delivers every
 * report. The agent owns their lifecycle and the event stream.
 */
export class VehicleAgent {
  private parts: Parts | undefined;
  /** The work loop and the polling loop, once running. */
  private loops: Promise<void>[] = [];
  private readonly abort = new AbortController();
  private readonly workWake = new Wakeup();
  private killed = false;
  private readonly listeners = new Set<(e: AgentEvent) => void>();
  private readonly downloader: Downloader;
  private readonly runtime: AgentRuntime;
  private readonly logger: AgentLogger;
  private readonly mqtt: MqttLink | undefined;

  constructor(private readonly options: VehicleAgentOptions) {
    this.runtime = options.runtime ?? systemRuntime;
    this.logger = options.logger ?? silentLogger;
    this.downloader = new Downloader(options.transport, options.download, {
      runtime: this.runtime,
      logger: this.logger,
      ...(options.freeSpace ? { freeSpace: options.freeSpace } : {}),
    });
    this.mqtt = options.mqtt
      ? new MqttLink(options.mqtt, this.runtime, {
          onOffer: (payload) => this.started.inbox.receive(payload, 'mqtt'),
          onConnectionChange: (connected, catchUp) => {
            if (catchUp) this.parts?.poller.requestCatchUp();
            this.emit({ type: 'connection', connected });
            this.parts?.poller.wake();
            if (connected) this.parts?.reporter.notify();
          },
        })
      : undefined;
    for (const e of options.ecus) {
      if (!options.installers[e.ecu]) throw new AgentError('no_installer', `no installer for ECU ${e.ecu}`);
    }
  }

  get vin(): string {
    return this.options.vin;
  }

  /** The durable state (read-only); undefined before start(). */
  get state(): Readonly<AgentState> | undefined {
    return this.parts?.store.state;
  }

  get mqttConnected(): boolean {
    return this.mqtt?.connected ?? false;
  }

  onEvent(listener: (e: AgentEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(): Promise<void> {
    if (this.parts) throw new AgentError('already_started', 'the agent is already started');
    const o = this.options;
    const inventory = Object.fromEntries(
      o.ecus.map((e) => [e.ecu, { hardware_id: e.hardware_id, version: e.version }]),
    );
    const store = await StateStore.open(o.stateDir, () => initialState(o.vin, inventory));
    if (store.state.vin !== o.vin) {
      throw new AgentError('wrong_state', `${o.stateDir} belongs to ${store.state.vin}, not ${o.vin}`);
    }
    const reporter = new Reporter({
      vin: o.vin,
      store,
      api: o.api,
      mqtt: () => this.mqtt?.publisher,
      ...(o.basicIngestRule ? { basicIngestRule: o.basicIngestRule } : {}),
      runtime: this.runtime,
      logger: this.logger,
      ...(o.reportBackoff ? { backoff: o.reportBackoff } : {}),
    });
    let freshness: FreshnessMonitor | undefined;
    const ctx: AgentContext = {
      options: o,
      store,
      reporter,
      runtime: this.runtime,
      expiryNow: () => freshness?.signedNow() ?? this.runtime.now(),
      logger: this.logger,
      signal: this.abort.signal,
      killed: () => this.killed,
      emit: (e) => this.emit(e),
    };
    const inbox = new OfferInbox(ctx, () => this.workWake.notify());
    const urls = new DownloadUrls();
    const bundles = new BundleRunner(ctx, this.downloader);
    const acceptance = new OfferAcceptance(ctx, inbox, urls, bundles);
    const runner = new UpdateRunner(ctx, inbox, acceptance, this.downloader, urls);
    const poller = new Poller(ctx, inbox, urls, this.mqtt);
    if (o.freshness !== false && o.api.freshness) {
      freshness = new FreshnessMonitor(ctx, o.freshness ?? {}, () => {
        poller.requestCatchUp();
        poller.wake();
      });
      await freshness.open();
    }
    this.parts = {
      store,
      reporter,
      inbox,
      poller,
      freshness,
      headUnit: new HeadUnit(ctx, inbox, runner.gate, bundles),
    };
    // A bundle's journal decides before the ECUs' own recovery, which would switch back trials it keeps.
    await bundles.recover();
    await runner.recover();
    reporter.start();
    this.mqtt?.start();
    // Reported at start (after registration, after what a restart settled) and after each change of version.
    const inventoryReports = new InventoryReporter(ctx);
    this.onEvent((e) => {
      if (e.type === 'outcome' && (e.status === 'completed' || e.status === 'rolled_back'))
        inventoryReports.trigger();
    });
    this.abort.signal.addEventListener('abort', () => inventoryReports.stop(), { once: true });
    this.loops = [
      runner.loop(this.workWake),
      poller.loop(),
      inventoryReports.loop(),
      ...(freshness ? [freshness.loop()] : []),
    ];
  }

  /** Graceful stop: the update in progress keeps its phase and resumes on the next start. */
  async stop(): Promise<void> {
    if (this.abort.signal.aborted) return;
    this.abort.abort(new AgentError('stopped', 'the agent is stopping'));
    this.workWake.notify();
    this.parts?.poller.wake();
    this.parts?.freshness?.wake();
    await this.mqtt?.stop();
    for (const loop of this.loops) await settleWithin(this.runtime, loop, 5000);
    await this.parts?.reporter.stop();
    this.parts?.store.close();
  }

  /**
   * Simulated power cut: from now on nothing is written (state, slots, reports) and connections drop without
   * goodbye. Work suspended in a hook stays suspended. A new agent on the same folder is the "reboot".
   */
  kill(): void {
    this.killed = true;
    this.parts?.store.close();
    this.abort.abort(new AgentError('killed', 'power cut'));
    void this.mqtt?.stop(true);
    void this.parts?.reporter.stop();
    this.workWake.notify();
    this.parts?.poller.wake();
  }

  /** Resolves once no offer waits, no update runs and every report is acknowledged. */
  async whenIdle(pollMs = 25): Promise<void> {
    for (;;) {
      const s = this.parts?.store.state;
      if (this.abort.signal.aborted) return;
      if (s && s.current === null && s.inbox.length === 0 && s.pending_reports.length === 0) return;
      await this.runtime.sleep(pollMs);
    }
  }

  /** What the head unit shows and may do (head-unit.ts; served by head-unit-server.ts). */
  get headUnit(): HeadUnit {
    return this.started.headUnit;
  }

  /** Checks the freshness statement now (fetch, verify, withheld offer, silence, alerts). */
  async checkFreshnessOnce(): Promise<void> {
    await this.started.freshness?.checkOnce();
  }

  /** Asks the polling loop to poll now. */
  pollNow(): void {
    this.parts?.poller.pollNow();
  }

  /**
   * One poll of GET /updates/{vin}: each pending update not yet known here becomes an offer via /download.
   * Answers how many updates the backend listed as pending.
   */
  async pollOnce(): Promise<number> {
    return this.started.poller.pollOnce();
  }

  private get started(): Parts {
    if (!this.parts) throw new AgentError('not_started', 'the agent is not started');
    return this.parts;
  }

  private emit(event: AgentEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.logger.warn('event listener failed', { error: describeError(err) });
      }
    }
  }
}
