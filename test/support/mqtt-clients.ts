/** Real mqtt.js vehicle connections for the broker tests: MQTT 3.1.1 over mutual TLS, no automatic reconnect. */
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { KeyAndCert } from './mqtt-pki.js';

export interface VehicleConnectOptions {
  readonly url: string;
  readonly caPem: string;
  readonly clientId: string;
  /** Omit to connect without a client certificate. */
  readonly identity?: KeyAndCert;
  readonly clean?: boolean;
  readonly username?: string;
  readonly password?: string;
  readonly resubscribe?: boolean;
  /** Seconds. @default 30 */
  readonly keepalive?: number;
}

export interface ReceivedMessage {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: number;
  readonly retain: boolean;
}

/** A connected vehicle, recording every message it receives and whether its connection closed. */
export class VehicleConnection {
  readonly messages: ReceivedMessage[] = [];
  closed = false;

  private constructor(
    readonly client: MqttClient,
    readonly sessionPresent: boolean,
  ) {
    client.on('message', (topic, payload, packet) =>
      this.messages.push({ topic, payload, qos: packet.qos, retain: packet.retain }),
    );
    client.on('close', () => {
      this.closed = true;
    });
  }

  /** Connects, or rejects with the CONNACK refusal or the TLS error. */
  static async connect(options: VehicleConnectOptions): Promise<VehicleConnection> {
    const client = mqtt.connect(options.url, clientOptions(options));
    const received: ReceivedMessage[] = [];
    // Messages of a restored session can arrive right after CONNACK, before the caller's handler exists.
    const early = (topic: string, payload: Buffer, packet: { qos: number; retain: boolean }) =>
      received.push({ topic, payload, qos: packet.qos, retain: packet.retain });
    client.on('message', early);
    try {
      const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
        client.once('connect', resolve);
        client.once('error', reject);
        client.once('close', () => reject(new Error('connection closed before CONNACK')));
      });
      const connection = new VehicleConnection(client, connack.sessionPresent);
      client.off('message', early);
      connection.messages.push(...received);
      return connection;
    } catch (err) {
      client.end(true);
      throw err;
    }
  }

  /** Subscribes and returns the SUBACK return codes (128 = refused), whatever they are. */
  subscribe(topics: string[], qos: 0 | 1 = 1): Promise<number[]> {
    return new Promise((resolve, reject) => {
      const request = Object.fromEntries(topics.map((t) => [t, { qos }]));
      this.client.subscribe(request, (err, _granted, packet) => {
        const codes = (packet as { granted?: number[] } | undefined)?.granted;
        if (codes) resolve(codes);
        else reject(err ?? new Error('no SUBACK'));
      });
    });
  }

  /** Publishes; resolves when PUBACK arrives (QoS 1) or the packet is written (QoS 0); rejects on close. */
  publish(
    topic: string,
    payload: Buffer | string,
    opts: { qos?: 0 | 1; retain?: boolean } = {},
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const onClose = () => reject(new Error('connection closed'));
      this.client.once('close', onClose);
      this.client.publish(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false }, (err) => {
        this.client.off('close', onClose);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  async waitForClose(timeoutMs = 3000): Promise<boolean> {
    return waitFor(() => this.closed, timeoutMs);
  }

  async end(): Promise<void> {
    if (this.client.disconnected || this.closed) {
      this.client.end(true);
      return;
    }
    await this.client.endAsync();
  }
}

function clientOptions(o: VehicleConnectOptions): IClientOptions {
  return {
    protocolVersion: 4,
    clientId: o.clientId,
    clean: o.clean ?? true,
    ca: o.caPem,
    ...(o.identity ? { key: o.identity.keyPem, cert: o.identity.certPem } : {}),
    ...(o.username !== undefined ? { username: o.username, password: o.password } : {}),
    rejectUnauthorized: true,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    keepalive: o.keepalive ?? 30,
    resubscribe: o.resubscribe ?? true,
  };
}

/** Polls until the predicate holds; false if it never did within the time. */
export async function waitFor(predicate: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** MQTT variable-length "remaining length" encoding. */
function remainingLength(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0);
  return Buffer.from(bytes);
}

/** A raw MQTT 3.1.1 CONNECT (clean session, 30 s keep-alive), for tests that speak bytes the client lib won't. */
export function rawConnectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId);
  const body = Buffer.concat([
    Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x1e]),
    Buffer.from([id.length >> 8, id.length & 0xff]),
    id,
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** The first bytes of a QoS 0 PUBLISH that announces `declaredLength` bytes after its fixed header. */
export function rawPublishHeader(topic: string, declaredLength: number): Buffer {
  const t = Buffer.from(topic);
  return Buffer.concat([
    Buffer.from([0x30]),
    remainingLength(declaredLength),
    Buffer.from([t.length >> 8, t.length & 0xff]),
    t,
  ]);
}
