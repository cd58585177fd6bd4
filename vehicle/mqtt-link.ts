/**
 * The agent's bookkeeping of its MQTT session: since when it is down (polling takes over after a grace period),
 * and whether a reconnect lost the session, in which case whatever the backend published meanwhile is gone at the
 * broker and the agent must ask the backend directly (catch-up poll) rather than wait for a re-offer.
 */
import type { AgentMqttFactory, AgentMqttSession } from './agent-options.js';
import type { ReportPublisher } from './reporter.js';
import type { AgentRuntime } from './runtime.js';

export interface MqttLinkHandlers {
  /** An offer arrived; resolving means it is stored (MQTT acknowledges it then). */
  onOffer(payload: Buffer): Promise<void>;
  /** catchUp: connected again without the previous session; what was published meanwhile is lost. */
  onConnectionChange(connected: boolean, catchUp: boolean): void;
}

export class MqttLink {
  private session: AgentMqttSession | undefined;
  private downSince: number;
  private connectedBefore = false;

  constructor(
    private readonly factory: AgentMqttFactory,
    private readonly runtime: AgentRuntime,
    private readonly handlers: MqttLinkHandlers,
  ) {
    this.downSince = runtime.now();
  }

  /** The session as the reporter publishes on it; undefined before start(). */
  get publisher(): ReportPublisher | undefined {
    return this.session;
  }

  get connected(): boolean {
    return this.session?.connected ?? false;
  }

  /** Connected, or down for less than graceMs (a short outage is not worth polling for). */
  usable(graceMs: number): boolean {
    return this.connected || this.runtime.now() - this.downSince < graceMs;
  }

  start(): void {
    this.session = this.factory({
      onOffer: (payload) => this.handlers.onOffer(payload),
      onConnectionChange: (connected, sessionPresent) => {
        if (!connected) this.downSince = this.runtime.now();
        // The first connection is covered by the poll every start makes.
        const catchUp = connected && sessionPresent === false && this.connectedBefore;
        if (connected) this.connectedBefore = true;
        this.handlers.onConnectionChange(connected, catchUp);
      },
    });
    this.session.start();
  }

  async stop(force?: boolean): Promise<void> {
    await this.session?.stop(force);
  }
}
