/** The agent's public configuration and event types (VehicleAgent in agent.ts; its parts read the options). */
import type { VehicleApi } from './api-client.js';
import type { BackoffPolicy } from './backoff.js';
import type { BundleStepName, EcuPhase } from './bundle-install.js';
import type { ConditionOptions, DriverDecision } from './conditions.js';
import type { DownloaderOptions } from './downloader.js';
import type { FreshnessOptions } from './freshness.js';
import type { HttpTransport } from './http-transport.js';
import type { FreeSpace } from './image-file.js';
import type { EcuInstaller } from './installer.js';
import type { AgentLogger } from './logger.js';
import type { TrustAnchors } from './provisioning.js';
import type { ReportPublisher } from './reporter.js';
import type { AgentRuntime } from './runtime.js';
import type { VehicleStatus } from './state-store.js';
import type { InstallSafetyPolicy, VehicleStateProvider } from './vehicle-state.js';

export interface EcuConfig {
  readonly ecu: string;
  readonly hardware_id: string;
  /** The version on first run; afterwards the A/B slots say what runs. */
  readonly version: string;
}

/** The MQTT side as the agent uses it (MqttSession implements it). */
export interface AgentMqttSession extends ReportPublisher {
  start(): void;
  stop(force?: boolean): Promise<void>;
}

export type AgentMqttFactory = (handlers: {
  onOffer: (payload: Buffer) => Promise<void>;
  onConnectionChange: (connected: boolean, sessionPresent?: boolean) => void;
}) => AgentMqttSession;

export type InstallStep = 'write' | 'activate' | 'health' | 'commit';

/** Points where tests (or diagnostics) can observe or freeze the agent; each is awaited. */
export interface AgentHooks {
  /** Each verified chunk of a download; `ecu` names the member of a bundle. */
  onChunkVerified?(info: {
    update_id: string;
    ecu?: string;
    index: number;
    verifiedBytes: number;
  }): Promise<void> | void;
  beforeInstallStep?(
    step: InstallStep,
    info: { update_id: string; ecu: string; version: string },
  ): Promise<void> | void;
  /** Before each step of each member of a bundle install (vehicle/bundle-install.ts). */
  beforeBundleStep?(step: BundleStepName, info: { update_id: string; ecu: string }): Promise<void> | void;
}

export type AgentEvent =
  /** One ECU's step in a bundle install (per-ECU progress). */
  | {
      type: 'bundle_progress';
      update_id: string;
      ecu: string;
      phase: EcuPhase;
      version: string;
      percent?: number;
    }
  | { type: 'offer'; source: 'mqtt' | 'poll'; update_id: string; firmware_version: string; counter: number }
  | { type: 'poll'; reason: 'interval' | 'catch_up'; pending: number }
  /** The accepted assignment had expired by install time and the backend signed a fresh one. */
  | { type: 'renewed'; update_id: string; expires_at: string }
  | { type: 'accepted'; update_id: string; firmware_version: string; ecu: string }
  | {
      type: 'phase';
      update_id: string;
      firmware_version: string;
      phase: 'downloading' | 'verifying' | 'waiting' | 'installing';
    }
  | {
      type: 'progress';
      update_id: string;
      firmware_version: string;
      phase: 'downloading' | 'installing';
      bytes: number;
      total: number;
      percent: number;
      bytesPerSecond: number;
    }
  | { type: 'request'; update_id: string; offset: number; end: number }
  /** A download URL was asked for; refresh: the previous one was refused (expired). */
  | { type: 'url'; update_id: string; refresh: boolean }
  | {
      type: 'downloaded';
      update_id: string;
      /** A bundle member's ECU (a single release's is the update's). */
      ecu?: string;
      path: 'raw' | 'compressed' | 'chunk-reuse' | 'delta';
      /** Body bytes read from the network (frame table and re-fetches included), every run of this update. */
      bytes_fetched: number;
      /** Image bytes taken from the installed image, every run of this update. */
      bytes_reused: number;
      fallback?: string;
    }
  | { type: 'deferred'; update_id: string; reason: string }
  /** The driver was asked (ask) or answered (head unit, conditions.ts). */
  | { type: 'consent'; update_id: string; decision: DriverDecision | 'ask' }
  | {
      type: 'outcome';
      update_id: string;
      firmware_version: string;
      ecu: string;
      status: VehicleStatus;
      reason?: string;
    }
  /** An offer refused without a report: its assignment is not verifiably for this vehicle (forged, other VIN). */
  | { type: 'refused'; reason: string; message: string }
  | { type: 'connection'; connected: boolean }
  /** The software inventory was reported (applied: false when the backend already held a newer one). */
  | { type: 'inventory'; sequence: number; applied: boolean }
  /**
   * Freshness (freshness.ts): a newer statement verified (fresh), one refused (refused: older, forged, another
   * VIN's, future-dated or expired), an offer found withheld (withheld), no statement for too long (silent), an
   * alert taken by the backend (reported; reason names its kind).
   */
  | {
      type: 'freshness';
      status: 'fresh' | 'refused' | 'withheld' | 'silent' | 'reported';
      sequence?: number;
      issued_at?: string;
      counter?: number;
      reason?: string;
    }
  | { type: 'error'; message: string };

export interface VehicleAgentOptions {
  readonly vin: string;
  /** The agent's own folder: state.json, offers/, downloads/. */
  readonly stateDir: string;
  readonly trust: TrustAnchors;
  /** ECU inventory for the first run. */
  readonly ecus: readonly EcuConfig[];
  /** One installer per ECU name. */
  readonly installers: Readonly<Record<string, EcuInstaller>>;
  readonly api: VehicleApi;
  /** Transport for image downloads (presigned S3 URLs). */
  readonly transport: HttpTransport;
  /** Makes the MQTT session; omit for polling only. */
  readonly mqtt?: AgentMqttFactory;
  /**
   * The backend's topic rule: progress and status then go to `$aws/rules/<rule>/vehicle/updates/{VIN}/...` (IoT
   * Basic Ingest: straight to the rule, no messaging charge) instead of `vehicle/updates/{VIN}/...`.
   * @default none: the seed topics
   */
  readonly basicIngestRule?: string;
  /** @default always parked with a full battery */
  readonly vehicleState?: VehicleStateProvider;
  /** @default parked, battery >= 50 %, checked every 10 s */
  readonly safety?: InstallSafetyPolicy & { readonly pollMs?: number };
  readonly download?: DownloaderOptions;
  readonly budgets?: {
    /** Download runs (each with the downloader's own retries) that may fail before the update fails. @default 3 */
    readonly downloadRuns?: number;
    /** Whole-image verifications that may fail (each followed by a fresh download). @default 2 */
    readonly verifyAttempts?: number;
    /** Install attempts (an attempt interrupted before switching slots counts). @default 2 */
    readonly installAttempts?: number;
  };
  readonly polling?: {
    /** Poll interval without MQTT configured, jittered x0.5-1.5 per poll. @default 60000 */
    readonly intervalMs?: number;
    /** Poll interval while a configured MQTT connection is down, jittered likewise. @default intervalMs, else 900000 */
    readonly fallbackIntervalMs?: number;
    /** Poll interval while MQTT is connected, as a safety net, jittered x0.5-1.5 per poll; 0 disables. @default 86400000 (a day) */
    readonly connectedIntervalMs?: number;
    /** MQTT down this long counts as unavailable. @default 30000 */
    readonly mqttGraceMs?: number;
  };
  /** Delay policy between a failed download run and the next, and while the backend is unreachable. */
  readonly retryBackoff?: BackoffPolicy;
  readonly reportBackoff?: BackoffPolicy;
  /** Offers waiting at most. @default 16 */
  readonly maxInbox?: number;
  /** @default 16 GiB */
  readonly maxImageBytes?: number;
  readonly freeSpace?: FreeSpace;
  /**
   * Checking the backend's signed freshness statements (withheld offers, silence, signed time); false turns it
   * off. Active only when the api can fetch statements.
   * @default every 5 minutes, silence reported after 1 hour
   */
  readonly freshness?: FreshnessOptions | false;
  readonly runtime?: AgentRuntime;
  readonly logger?: AgentLogger;
  readonly hooks?: AgentHooks;
  /** The vehicle's clock, time zone and network, as the campaign conditions are judged (conditions.ts). */
  readonly conditions?: ConditionOptions;
  /** Shown to the driver when the campaign gives no install time (head-unit.ts). @default unknown */
  readonly installEstimateSeconds?: number;
}
