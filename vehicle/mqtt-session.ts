/**
 * The vehicle's MQTT session: MQTT 3.1.1 over mutual TLS, client id = VIN, persistent session (clean: false) so
 * offers published while the car is offline wait at the broker, QoS 1 both ways.
 *
 * Reconnection is ours, not mqtt.js's: exponential backoff with full jitter (a fleet that lost its broker does
 * not return in lock-step), reset once a connection has stayed up. Every connection subscribes again, because a
 * restarted broker may have lost the session. An offer is acknowledged (PUBACK) only after the handler has
 * stored it, so a crash between receipt and storage makes the broker deliver it again.
 */
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { vehicleTopic } from '../protocol/topics.js';
import { type BackoffPolicy, backoffDelay } from './backoff.js';
import { AgentError } from './errors.js';
import { type AgentLogger, describeError, silentLogger } from './logger.js';
import { type AgentRuntime, settleWithin, systemRuntime } from './runtime.js';

export type MqttClientFactory = (url: string, options: IClientOptions) => MqttClient;

export interface MqttSessionOptions {
  /** mqtts://host:port */
  readonly url: string;
  readonly vin: string;
  /** PEM CA(s) that issued the broker's certificate (the local CA, or Amazon's root for IoT Core). */
  readonly ca?: string | readonly string[];
  /** Device key and certificate (mutual TLS). */
  readonly keyPem: string;
  readonly certPem: string;
  /** Called for each offer message; the PUBACK waits for it. Throwing withholds the PUBACK (redelivery). */
  readonly onOffer: (payload: Buffer) => Promise<void>;
  /**
   * Connection up or down. On the way up, sessionPresent false means the broker kept nothing for us (first
   * connection, an expired persistent session, a broker that lost its state): offers published meanwhile are gone.
   */
  readonly onConnectionChange?: (connected: boolean, sessionPresent?: boolean) => void;
  /** @default mqtt.connect */
  readonly factory?: MqttClientFactory;
  /** @default 30 */
  readonly keepaliveSeconds?: number;
  /** @default 10000 */
  readonly connectTimeoutMs?: number;
  /** @default { baseMs: 1000, maxMs: 60000 } */
  readonly backoff?: BackoffPolicy;
  /** A connection that lasted this long resets the backoff. @default 10000 */
  readonly stableAfterMs?: number;
  /** @default 10000 */
  readonly publishTimeoutMs?: number;
  readonly runtime?: AgentRuntime;
  readonly logger?: AgentLogger;
}

export class NotConnectedError extends AgentError {
  constructor() {
    super('mqtt_not_connected', 'the MQTT session is not connected');
  }
}

export class MqttSession {
  private client: MqttClient | undefined;
  private connectedSince: number | undefined;
  private attempt = 0;
  private reconnectWait: AbortController | undefined;
  private stopped = true;
  private readonly runtime: AgentRuntime;
  private readonly logger: AgentLogger;
  /** Connections made (for observability and tests). */
  connections = 0;

  constructor(private readonly options: MqttSessionOptions) {
    this.runtime = options.runtime ?? systemRuntime;
    this.logger = options.logger ?? silentLogger;
  }

  get connected(): boolean {
    return this.connectedSince !== undefined;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  /** Publishes with QoS 1; resolves on PUBACK. Fails at once when not connected (the caller has other routes). */
  publish(topic: string, payload: string | Buffer): Promise<void> {
    const client = this.client;
    if (!client || !this.connected) return Promise.reject(new NotConnectedError());
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new AgentError('mqtt_publish_timeout', 'no PUBACK in time')),
        this.options.publishTimeoutMs ?? 10_000,
      );
      client.publish(topic, payload, { qos: 1 }, (err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /** Disconnects cleanly (or at once with force, as a power cut would) and stops reconnecting. */
  async stop(force = false): Promise<void> {
    this.stopped = true;
    this.reconnectWait?.abort();
    const client = this.client;
    this.client = undefined;
    this.setConnected(false);
    if (!client) return;
    if (force) {
      client.end(true);
      return;
    }
    await settleWithin(this.runtime, client.endAsync(), 2000).catch(() => {});
    client.end(true);
  }

  private connect(): void {
    if (this.stopped) return;
    const o = this.options;
    const factory = o.factory ?? ((url, opts) => mqtt.connect(url, opts));
    const client = factory(o.url, {
      protocolVersion: 4,
      clientId: o.vin,
      clean: false,
      ...(o.ca ? { ca: typeof o.ca === 'string' ? o.ca : [...o.ca] } : {}),
      key: o.keyPem,
      cert: o.certPem,
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      keepalive: o.keepaliveSeconds ?? 30,
      resubscribe: false,
      queueQoSZero: false,
    });
    this.client = client;
    const topic = vehicleTopic(o.vin, 'issue_details');

    // Installed before the connection opens: a persistent session may deliver right after CONNACK.
    client.handleMessage = (packet: IPublishPacket, callback: (err?: Error) => void) => {
      if (packet.topic !== topic) return callback();
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      o.onOffer(payload).then(
        () => callback(),
        (err: unknown) => {
          this.logger.error('offer not stored; withholding PUBACK so the broker delivers it again', {
            error: describeError(err),
          });
          callback(err instanceof Error ? err : new Error(String(err)));
        },
      );
    };

    client.on('connect', (connack) => {
      if (this.client !== client) return;
      this.connections++;
      this.logger.info('mqtt connected', { session_present: connack.sessionPresent });
      this.setConnected(true, connack.sessionPresent);
      client.subscribe(topic, { qos: 1 }, (err, granted) => {
        if (err) {
          this.logger.warn('mqtt subscribe failed', { error: describeError(err) });
          return;
        }
        if (granted?.some((g) => g.qos === 128))
          this.logger.error('mqtt subscription refused by the broker', { topic });
      });
    });
    client.on('error', (err) => {
      if (this.client === client) this.logger.warn('mqtt error', { error: describeError(err) });
    });
    client.on('close', () => {
      if (this.client !== client) return;
      const upFor = this.connectedSince === undefined ? 0 : this.runtime.now() - this.connectedSince;
      if (this.connectedSince !== undefined && upFor >= (o.stableAfterMs ?? 10_000)) this.attempt = 0;
      this.setConnected(false);
      client.removeAllListeners('connect');
      client.end(true);
      this.client = undefined;
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt++, this.options.backoff ?? { baseMs: 1000, maxMs: 60_000 }, () =>
      this.runtime.random(),
    );
    this.logger.info('mqtt reconnecting', { in_ms: delay, attempt: this.attempt });
    this.reconnectWait?.abort();
    const wait = new AbortController();
    this.reconnectWait = wait;
    this.runtime.sleep(delay, wait.signal).then(
      () => this.connect(),
      () => {},
    );
  }

  private setConnected(connected: boolean, sessionPresent?: boolean): void {
    const was = this.connected;
    this.connectedSince = connected ? this.runtime.now() : undefined;
    if (was !== connected)
      this.options.onConnectionChange?.(connected, connected ? sessionPresent : undefined);
  }
}
