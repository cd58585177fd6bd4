/**
 * Local stand-in for the AWS IoT Core message broker: aedes over mutual TLS, enforcing the same per-vehicle rules
 * as the fleet's IoT policy.
 *
 * - TLS: only certificates issued by the local CA are accepted (no certificate or another CA's: handshake refused).
 * - Identity comes from the certificate alone: its subject CN must be a VIN, and the MQTT client id must equal it
 *   (IoT Core: client id = thing name). Username and password, if sent, are ignored.
 * - Subscribe: only `vehicle/updates/{own VIN}/issue_details`, no wildcards. Any other filter is answered with the
 *   failure return code 0x80 in SUBACK and the connection stays open (aedes' authorizeSubscribe semantics).
 *   QoS 2 is granted as QoS 1 (IoT Core has no QoS 2).
 * - Publish: only `vehicle/updates/{own VIN}/progress` and `.../status`, QoS 0 or 1, not retained, payload at most
 *   128 KiB. Anything else closes the connection, as IoT Core disconnects a client on an unauthorised publish.
 * - Delivery: a vehicle is only ever sent its own issue_details topic, even from a persisted session (aedes stores
 *   a whole SUBSCRIBE packet in the session, refused filters included, so forwarding is checked again).
 * - A revoked certificate (isRevoked) is refused at CONNECT, and a live connection is cut at its next publish.
 * - A thing outside the vehicles group (hasVehiclePolicy) is refused at CONNECT: the policy comes with the group.
 * - A second connection with the same client id takes over the first (IoT Core behaviour).
 * - Abuse limits: MQTT frames larger than the payload limit plus headers are cut off before they are buffered,
 *   keep-alive must be 1..1200 s, CONNECT must arrive within 10 s, TLS handshakes within 10 s.
 *
 * Sessions (clean: false) and their QoS 1 offline queues live in memory (aedes-persistence): they survive a
 * vehicle reconnect, not a broker restart. A durable aedes persistence can be passed in as `persistence`.
 */

import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { Aedes, type AedesOptions, type Client, type PublishPacket } from 'aedes';
import { recordOperation } from '../lambdas/adapters/operation-counter.js';
import { VIN_PATTERN } from '../protocol/schemas.js';
import {
  BACKEND_CHANNELS,
  isVehiclePublishTopic,
  MAX_MQTT_PAYLOAD_BYTES,
  vehicleTopic,
} from '../protocol/topics.js';
import { listen } from './listen.js';

/** Narrow logger; Powertools Logger and console-like adapters both fit. */
export interface BrokerLogger {
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
}

export interface MqttBrokerProps {
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** 0 picks an ephemeral port. @default 0 */
  readonly port?: number;
  /** PEM private key of the broker's server certificate. */
  readonly key: string;
  /** PEM server certificate (for the host above), issued by the local CA. */
  readonly cert: string;
  /** PEM of the local CA: the only issuer whose client certificates are accepted. */
  readonly ca: string;
  /** Client id stamped on messages published in-process (the Data Plane shim); never a VIN. @default 'iot-data-plane' */
  readonly internalClientId?: string;
  /** Largest message payload a vehicle may publish, in bytes (IoT Core: 128 KB). @default 131072 */
  readonly maxPayloadBytes?: number;
  /**
   * The topic rule a vehicle may reach through IoT Basic Ingest (`$aws/rules/<rule>/vehicle/updates/{own VIN}/...`).
   * Such a message goes to the rules router only and is never delivered to a subscriber, as on IoT.
   * @default none: Basic Ingest topics are refused
   */
  readonly basicIngestRule?: string;
  /** Largest keep-alive a client may ask for, in seconds (IoT Core: 1200). @default 1200 */
  readonly maxKeepAliveSeconds?: number;
  /** Most simultaneous TLS connections. @default 1000 */
  readonly maxConnections?: number;
  /** An aedes persistence instance (e.g. a durable one); sessions are in memory without it. @default in memory */
  readonly persistence?: AedesOptions['persistence'];
  /**
   * Whether a client certificate (by its id: lowercase hex SHA-256 fingerprint) has been revoked. Checked at
   * CONNECT and at every subscribe and publish, so a connection made before the revoke is cut at its next publish.
   * @default none revoked
   */
  readonly isRevoked?: (certificateId: string) => boolean;
  /**
   * Whether the vehicle policy applies to this thing (VIN). On AWS it is attached to the vehicles thing group, so a
   * certificate whose thing is not in the group has no policy and IoT Core refuses its CONNECT; the local cloud
   * answers from the group registration writes (ThingGroupMembers). @default every thing (a bare broker in tests)
   */
  readonly hasVehiclePolicy?: (thingName: string) => boolean;
  /** @default silent */
  readonly log?: BrokerLogger;
}

/** A message a vehicle published and the broker accepted. */
export interface VehicleMessage {
  /** The publishing vehicle's VIN (its client id, which equals its certificate CN). */
  readonly vin: string;
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1;
  /** Broker receive time, epoch milliseconds. */
  readonly receivedAt: number;
}

export type VehicleMessageListener = (message: VehicleMessage) => void;

export interface MqttBroker {
  readonly port: number;
  /** mqtts://host:port */
  readonly url: string;
  readonly aedes: Aedes;
  /** In-process publish, as the IoT Data Plane does; not subject to the vehicle policy. */
  publish(topic: string, payload: Buffer | string, qos: 0 | 1): Promise<void>;
  /** Registers a listener for accepted vehicle publishes; returns a function that removes it. */
  onVehicleMessage(listener: VehicleMessageListener): () => void;
  stop(): Promise<void>;
}

const silent: BrokerLogger = { info() {}, warn() {} };
const HEADER_ALLOWANCE = 1024; // fixed header, topic (IoT Core: <= 256 bytes) and packet id

/** Reason codes for CONNACK refusals (MQTT 3.1.1). */
const NOT_AUTHORIZED = 5;

/**
 * The TLS socket as aedes sees it, with the certificate identity attached and a guard that counts MQTT frame
 * lengths as bytes arrive: a client that announces a frame above the limit is disconnected before aedes' parser
 * buffers it.
 */
class GuardedConnection extends Duplex {
  private state: 'type' | 'length' | 'body' = 'type';
  private remaining = 0;
  private multiplier = 1;
  private lengthBytes = 0;

  constructor(
    private readonly socket: TLSSocket,
    readonly commonName: string | undefined,
    private readonly maxFrameBytes: number,
    readonly certificateId: string | undefined,
  ) {
    super();
    socket.on('data', (chunk: Buffer) => {
      if (this.destroyed) return;
      const error = this.scan(chunk);
      if (error) {
        this.destroy(error);
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => {
      if (!this.destroyed) this.push(null);
    });
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
    socket.on('drain', () => this.emit('socketDrain'));
  }

  /** Walks the MQTT framing (type byte, variable-length remaining length, body) without copying. */
  private scan(chunk: Buffer): Error | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'type') {
        i++;
        this.state = 'length';
        this.remaining = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === 'length') {
        const byte = chunk[i++]!;
        this.remaining += (byte & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        this.lengthBytes++;
        if (this.remaining > this.maxFrameBytes) return new Error('MQTT packet exceeds the size limit');
        if ((byte & 0x80) === 0) this.state = this.remaining === 0 ? 'type' : 'body';
        else if (this.lengthBytes >= 4) return new Error('malformed MQTT remaining length');
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'type';
      }
    }
    return undefined;
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.write(chunk)) callback();
    else this.once('socketDrain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(error);
  }
}

function refusal(message: string): Error & { returnCode: number } {
  return Object.assign(new Error(message), { returnCode: NOT_AUTHORIZED });
}

/** The VIN a client acts as: its certificate CN, when its client id equals it (authenticate admits no other). */
function vinOf(client: Client | null | undefined): string | undefined {
  if (!client || !(client.conn instanceof GuardedConnection)) return undefined;
  const cn = client.conn.commonName;
  return cn !== undefined && client.id === cn && VIN_PATTERN.test(cn) ? cn : undefined;
}

/** A topic the backend publishes on for this vehicle, which the vehicle may subscribe to and receive. */
function isOwnBackendTopic(vin: string, topic: string): boolean {
  return BACKEND_CHANNELS.some((channel) => topic === vehicleTopic(vin, channel));
}

export async function startMqttBroker(props: MqttBrokerProps): Promise<MqttBroker> {
  const host = props.host ?? '127.0.0.1';
  const log = props.log ?? silent;
  const maxPayloadBytes = props.maxPayloadBytes ?? MAX_MQTT_PAYLOAD_BYTES;
  const internalClientId = props.internalClientId ?? 'iot-data-plane';
  if (VIN_PATTERN.test(internalClientId)) throw new Error('internalClientId must not look like a VIN');
  const listeners = new Set<VehicleMessageListener>();
  const revoked = (client: Client | null | undefined): boolean => {
    const id = client?.conn instanceof GuardedConnection ? client.conn.certificateId : undefined;
    return id === undefined || (props.isRevoked?.(id) ?? false);
  };

  const aedes = await Aedes.createBroker({
    persistence: props.persistence,
    keepaliveLimit: props.maxKeepAliveSeconds ?? 1200,
    connectTimeout: 10_000,
    maxTopicLevels: 8,

    authenticate(client, _username, _password, done) {
      // The certificate is the identity: a password sent alongside proves nothing more and is not checked.
      const cn = client.conn instanceof GuardedConnection ? client.conn.commonName : undefined;
      if (cn === undefined || !VIN_PATTERN.test(cn)) {
        log.warn('mqtt connect refused: certificate CN is not a VIN', { clientId: client.id, cn });
        return done(refusal('certificate subject is not a vehicle'), false);
      }
      if (client.id !== cn) {
        log.warn('mqtt connect refused: client id differs from certificate CN', { clientId: client.id, cn });
        return done(refusal('client id must equal the certificate CN'), false);
      }
      if (revoked(client)) {
        log.warn('mqtt connect refused: certificate revoked', { clientId: client.id });
        return done(refusal('certificate revoked'), false);
      }
      if (!(props.hasVehiclePolicy?.(cn) ?? true)) {
        log.warn('mqtt connect refused: thing not in the vehicles group (no policy)', {
          clientId: client.id,
        });
        return done(refusal('no policy allows this thing to connect'), false);
      }
      done(null, true);
    },

    authorizeSubscribe(client, subscription, done) {
      const vin = vinOf(client);
      if (vin !== undefined && !revoked(client) && isOwnBackendTopic(vin, subscription.topic)) {
        return done(null, { ...subscription, qos: subscription.qos >= 1 ? 1 : 0 });
      }
      log.warn('mqtt subscribe refused', { clientId: client.id, topic: subscription.topic });
      // null (not an error) answers 0x80 for this filter and keeps the others and the connection.
      done(null, null);
    },

    authorizePublish(client, packet, done) {
      // client is null only for wills of a client that is gone; the will keeps the id it was stored under.
      const vin = client ? vinOf(client) : (packet as { clientId?: string }).clientId;
      let reason: string | undefined;
      if (
        vin === undefined ||
        !VIN_PATTERN.test(vin) ||
        !isVehiclePublishTopic(vin, packet.topic, props.basicIngestRule)
      )
        reason = 'topic not allowed';
      else if (client && revoked(client)) reason = 'certificate revoked';
      else if (packet.retain) reason = 'retained messages are not allowed';
      else if (packet.qos > 1) reason = 'QoS 2 is not supported';
      else if (Buffer.byteLength(packet.payload) > maxPayloadBytes) reason = 'payload too large';
      if (reason) {
        log.warn('mqtt publish refused, disconnecting', {
          clientId: client?.id,
          topic: packet.topic,
          reason,
        });
        return done(new Error(reason));
      }
      done(null);
    },

    authorizeForward(client, packet) {
      const vin = vinOf(client);
      // A connection made before its certificate was revoked receives nothing more either. Only a vehicle's own
      // backend topics are ever delivered: a Basic Ingest message ($aws/rules/...) reaches the rules router alone.
      if (vin === undefined || revoked(client) || !isOwnBackendTopic(vin, packet.topic)) return null;
      recordOperation('iot.broker.delivered');
      return packet;
    },
  });

  aedes.on('client', () => recordOperation('iot.broker.connect'));
  aedes.on('publish', (packet, client) => {
    // Messages devices publish (the backend's own arrive through the IoT Data shim and are counted as Publish).
    if (client) {
      recordOperation('iot.broker.inbound');
      if (packet.topic.startsWith('$aws/rules/')) recordOperation('iot.broker.basicIngest');
    }
    const vin = vinOf(client);
    if (vin === undefined || listeners.size === 0) return;
    const message: VehicleMessage = {
      vin,
      topic: packet.topic,
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      qos: packet.qos === 1 ? 1 : 0,
      receivedAt: Date.now(),
    };
    for (const listener of listeners) {
      try {
        listener(message);
      } catch (err) {
        log.warn('vehicle message listener failed', { error: String(err) });
      }
    }
  });
  aedes.on('clientError', (client, err) =>
    log.info('mqtt client error', { clientId: client.id, error: err.message }),
  );
  aedes.on('connectionError', (_client, err) => log.info('mqtt connection error', { error: err.message }));

  const sockets = new Set<Socket>();
  const server: Server = createServer({
    key: props.key,
    cert: props.cert,
    ca: [props.ca],
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    handshakeTimeout: 10_000,
  });
  server.maxConnections = props.maxConnections ?? 1000;
  server.on('connection', (socket: Socket) => {
    // Tracked from the first byte so stop() also ends connections still in their TLS handshake.
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // handshake failures are reported through tlsClientError
  });
  server.on('tlsClientError', (err) => log.info('mqtt TLS handshake refused', { error: err.message }));
  server.on('secureConnection', (socket: TLSSocket) => {
    const subject = socket.getPeerCertificate().subject as Record<string, string | string[]> | undefined;
    const cn = typeof subject?.CN === 'string' ? subject.CN : undefined; // several CNs: no identity
    const fingerprint = socket.getPeerCertificate().fingerprint256;
    const certificateId = fingerprint ? fingerprint.replaceAll(':', '').toLowerCase() : undefined;
    aedes.handle(new GuardedConnection(socket, cn, maxPayloadBytes + HEADER_ALLOWANCE, certificateId));
  });

  try {
    await listen(server, props.port ?? 0, host);
  } catch (err) {
    // createBroker started aedes' heartbeat timers; left running they keep the process alive after a failed start.
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw err;
  }
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('MQTT broker has no TCP address');
  const port = address.port;
  log.info('mqtt broker listening', { host, port });

  let stopped: Promise<void> | undefined;
  return {
    port,
    url: `mqtts://${host}:${port}`,
    aedes,
    publish(topic, payload, qos) {
      return new Promise<void>((resolve, reject) => {
        const packet: PublishPacket = {
          cmd: 'publish',
          topic,
          payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
          qos,
          retain: false,
          dup: false,
        };
        aedes.publish(Object.assign(packet, { clientId: internalClientId }), (err) =>
          err ? reject(err) : resolve(),
        );
      });
    },
    onVehicleMessage(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop() {
      stopped ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await closed;
        listeners.clear();
      })();
      return stopped;
    },
  };
}
