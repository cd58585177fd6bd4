/**
 * What the parts of a started agent share (inbox, acceptance, update runner, poller): its options, durable state,
 * reporter, clock, log, stop signal and event stream. Built by VehicleAgent.start() once the state is open.
 */
import { join } from 'node:path';
import type { ReleaseManifest } from '../protocol/manifest.js';
import type { AgentEvent, VehicleAgentOptions } from './agent-options.js';
import type { BackoffPolicy } from './backoff.js';
import { AgentError } from './errors.js';
import type { AgentLogger } from './logger.js';
import type { Reporter, ReportInput } from './reporter.js';
import type { AgentRuntime } from './runtime.js';
import type { CurrentUpdate, StateStore } from './state-store.js';

export interface AgentContext {
  readonly options: VehicleAgentOptions;
  readonly store: StateStore;
  readonly reporter: Reporter;
  readonly runtime: AgentRuntime;
  /**
   * The time offers and assignments expire against: the vehicle's clock, or the newest signed freshness time if
   * that is later (freshness.ts), so a clock set back cannot revive an expired assignment.
   */
  expiryNow(): number;
  readonly logger: AgentLogger;
  /** Aborted by stop() and kill(). */
  readonly signal: AbortSignal;
  /** The simulated power cut happened: nothing more may be written. */
  killed(): boolean;
  emit(event: AgentEvent): void;
}

/** A later retry of the same step (the backend is unreachable); no budget is consumed. */
export class RetryLater extends AgentError {}

export const DEFAULT_RETRY_BACKOFF: BackoffPolicy = { baseMs: 2000, maxMs: 300_000 };

/** The fields every report about this update carries. */
export function reportBase(cur: CurrentUpdate): Omit<ReportInput, 'status'> {
  return { firmware_version: cur.firmware_version, campaign_id: cur.campaign_id, update_id: cur.update_id };
}

/** The download in progress (.part) and the verified image (.img), named by the image digest. */
export function partFile(store: StateStore, m: ReleaseManifest): string {
  return join(store.downloadsDir, `${m.sha256}.part`);
}

export function imageFile(store: StateStore, m: ReleaseManifest): string {
  return join(store.downloadsDir, `${m.sha256}.img`);
}
