/**
 * Wires one agent from configuration: identity files, trust anchors, endpoints and CAs, one FileSlotInstaller per
 * ECU, HTTPS transports and the MQTT session. The CLI, the tests and fleet simulations all build agents here;
 * every piece stays overridable (transports, MQTT client factory, installers, runtime, logger).
 */
import { join } from 'node:path';
import { TRUST_ECU, trustDocumentOf } from '../protocol/trust-document.js';
import { type AgentMqttFactory, type EcuConfig, VehicleAgent, type VehicleAgentOptions } from './agent.js';
import { VehicleApiClient } from './api-client.js';
import type { BackoffPolicy } from './backoff.js';
import { DirectHttpsTransport } from './direct-https.js';
import { AgentError } from './errors.js';
import { type HttpTransport, NodeHttpsTransport } from './http-transport.js';
import { type EcuInstaller, FileSlotInstaller, type HealthCheck } from './installer.js';
import { silentLogger, withFields } from './logger.js';
import { type MqttClientFactory, MqttSession } from './mqtt-session.js';
import { challengeSigner, type DeviceIdentity, ensureIdentity, type TrustAnchors } from './provisioning.js';
import { systemRuntime } from './runtime.js';
import { trustDocumentHealthCheck } from './trust-store.js';

export interface CreateAgentOptions
  extends Partial<
    Omit<
      VehicleAgentOptions,
      'vin' | 'stateDir' | 'trust' | 'ecus' | 'api' | 'transport' | 'installers' | 'mqtt'
    >
  > {
  readonly vin: string;
  readonly stateDir: string;
  readonly trust: TrustAnchors;
  readonly ecus: readonly EcuConfig[];
  /** https://... of the vehicle API. */
  readonly apiUrl: string;
  /** mqtts://... of the broker; omit for polling only. */
  readonly mqttUrl?: string;
  /** PEM CA for the API (system store when omitted). */
  readonly apiCa?: string;
  /** PEM CA for downloads. @default apiCa */
  readonly downloadCa?: string;
  /** PEM CA for the broker. @default apiCa */
  readonly mqttCa?: string;
  /** Slot A content on first run. @default a placeholder naming the ECU and version */
  readonly factoryImage?: (ecu: EcuConfig) => Buffer;
  /** Health check after switching slots. @default re-hash the active slot */
  readonly healthCheck?: HealthCheck;
  /** Replaces the file-slot installers (a real flasher). */
  readonly installers?: Readonly<Record<string, EcuInstaller>>;
  readonly apiTransport?: HttpTransport;
  readonly downloadTransport?: HttpTransport;
  readonly mqttClientFactory?: MqttClientFactory;
  readonly mqttKeepaliveSeconds?: number;
  readonly mqttBackoff?: BackoffPolicy;
}

export interface CreatedAgent {
  readonly agent: VehicleAgent;
  readonly identity: DeviceIdentity;
  readonly installers: Readonly<Record<string, EcuInstaller>>;
  readonly api: VehicleApiClient;
  /** Stops the agent and closes the transports made here. */
  close(): Promise<void>;
}

export const identityDir = (stateDir: string) => join(stateDir, 'identity');
export const ecuDir = (stateDir: string, ecu: string) => join(stateDir, 'ecus', ecu);

export const placeholderFactoryImage = (e: EcuConfig) =>
  Buffer.from(`factory image of ${e.ecu} ${e.version}\n`);

export async function createVehicleAgent(o: CreateAgentOptions): Promise<CreatedAgent> {
  const logger = withFields(o.logger ?? silentLogger, { vin: o.vin });
  const runtime = o.runtime ?? systemRuntime;
  const identity = await ensureIdentity(identityDir(o.stateDir), o.vin);
  if (o.mqttUrl && !identity.certPem) {
    throw new AgentError('not_registered', `${o.vin} has no device certificate yet: register it first`);
  }
  const owned: HttpTransport[] = [];
  const own = <T extends HttpTransport>(t: T) => {
    owned.push(t);
    return t;
  };
  const apiCa = o.apiCa;
  const downloadCa = o.downloadCa ?? o.apiCa;
  // The API: many small calls on pooled keep-alive connections. Images: few large responses read without
  // per-record allocations (memory stays flat whatever the image size).
  const apiTransport = o.apiTransport ?? own(new NodeHttpsTransport(apiCa ? { ca: apiCa } : {}));
  const downloadTransport =
    o.downloadTransport ?? own(new DirectHttpsTransport(downloadCa ? { ca: downloadCa } : {}));
  const api = new VehicleApiClient({
    baseUrl: o.apiUrl,
    vin: o.vin,
    signChallenge: challengeSigner(identity),
    transport: apiTransport,
    runtime,
    logger,
  });
  const installers =
    o.installers ??
    Object.fromEntries(
      o.ecus.map((e) => {
        // The release-key set as a pseudo-ECU (trust-store.ts): its factory image is the configured keys, and its
        // health check is that the set parses.
        const keys = e.ecu === TRUST_ECU;
        const healthCheck = keys ? trustDocumentHealthCheck : o.healthCheck;
        const image = keys
          ? trustDocumentOf(o.trust.releaseKeys)
          : (o.factoryImage ?? placeholderFactoryImage)(e);
        return [
          e.ecu,
          new FileSlotInstaller({
            dir: ecuDir(o.stateDir, e.ecu),
            ecu: e.ecu,
            factory: { version: e.version, image },
            ...(healthCheck ? { healthCheck } : {}),
            ...(o.freeSpace ? { freeSpace: o.freeSpace } : {}),
          }),
        ];
      }),
    );
  const mqttUrl = o.mqttUrl;
  const certPem = identity.certPem;
  const mqtt: AgentMqttFactory | undefined =
    mqttUrl && certPem
      ? (handlers) =>
          new MqttSession({
            url: mqttUrl,
            vin: o.vin,
            ...((o.mqttCa ?? o.apiCa) ? { ca: o.mqttCa ?? o.apiCa } : {}),
            keyPem: identity.keyPem,
            certPem,
            onOffer: handlers.onOffer,
            onConnectionChange: handlers.onConnectionChange,
            ...(o.mqttClientFactory ? { factory: o.mqttClientFactory } : {}),
            ...(o.mqttKeepaliveSeconds ? { keepaliveSeconds: o.mqttKeepaliveSeconds } : {}),
            ...(o.mqttBackoff ? { backoff: o.mqttBackoff } : {}),
            runtime,
            logger,
          })
      : undefined;
  const agent = new VehicleAgent({
    ...o,
    vin: o.vin,
    stateDir: o.stateDir,
    trust: o.trust,
    ecus: o.ecus,
    installers,
    api,
    transport: downloadTransport,
    ...(mqtt ? { mqtt } : {}),
    runtime,
    logger,
  });
  return {
    agent,
    identity,
    installers,
    api,
    close: async () => {
      await agent.stop();
      for (const t of owned) t.close();
    },
  };
}
