/**
 * Whether the car may be flashed now. Installing while driving or on a weak battery can leave an ECU dead, so
 * the agent downloads and verifies at any time but installs only when the provider says the car is parked and
 * the battery is above the threshold; otherwise it waits and checks again.
 */
import { readFile } from 'node:fs/promises';
import * as z from 'zod';
import type { AgentRuntime } from './runtime.js';

export interface VehicleConditions {
  readonly parked: boolean;
  /** 0-100 */
  readonly batteryPercent: number;
}

/** Where conditions come from: the vehicle bus on a car, a file or a test double here. */
export interface VehicleStateProvider {
  read(): Promise<VehicleConditions>;
}

export interface InstallSafetyPolicy {
  /** @default true */
  readonly requireParked?: boolean;
  /** @default 50 */
  readonly minBatteryPercent?: number;
}

export type SafetyVerdict = { readonly safe: true } | { readonly safe: false; readonly reason: string };

export function checkSafety(c: VehicleConditions, policy: InstallSafetyPolicy = {}): SafetyVerdict {
  if ((policy.requireParked ?? true) && !c.parked) return { safe: false, reason: 'vehicle is not parked' };
  const min = policy.minBatteryPercent ?? 50;
  if (!(c.batteryPercent >= min))
    return { safe: false, reason: `battery at ${c.batteryPercent}%, needs ${min}%` };
  return { safe: true };
}

/** Conditions held in memory; set() changes them (simulations, tests, a CLI reading a bus elsewhere). */
export class StaticVehicleState implements VehicleStateProvider {
  private current: VehicleConditions;

  constructor(initial: VehicleConditions = { parked: true, batteryPercent: 100 }) {
    this.current = initial;
  }

  set(next: Partial<VehicleConditions>): void {
    this.current = { ...this.current, ...next };
  }

  async read(): Promise<VehicleConditions> {
    return this.current;
  }
}

const fileSchema = z.object({ parked: z.boolean(), battery_percent: z.number().min(0).max(100) });

/** Reads {"parked": bool, "battery_percent": n} from a file on each check; unreadable means unsafe. */
export class FileVehicleState implements VehicleStateProvider {
  constructor(private readonly path: string) {}

  async read(): Promise<VehicleConditions> {
    try {
      const parsed = fileSchema.parse(JSON.parse(await readFile(this.path, 'utf8')));
      return { parked: parsed.parked, batteryPercent: parsed.battery_percent };
    } catch {
      return { parked: false, batteryPercent: 0 };
    }
  }
}

/**
 * Resolves once the conditions are safe, checking every pollMs; calls onDeferred when the answer changes to
 * unsafe (so the caller can log and report it once, not on every poll). Rejects only when the signal aborts.
 */
export async function waitUntilSafe(
  provider: VehicleStateProvider,
  policy: InstallSafetyPolicy,
  opts: { runtime: AgentRuntime; signal: AbortSignal; pollMs: number; onDeferred?: (reason: string) => void },
): Promise<void> {
  let lastReason: string | undefined;
  for (;;) {
    let verdict: SafetyVerdict;
    try {
      verdict = checkSafety(await provider.read(), policy);
    } catch (err) {
      verdict = { safe: false, reason: `vehicle state unavailable: ${(err as Error).message}` };
    }
    if (verdict.safe) return;
    if (verdict.reason !== lastReason) {
      lastReason = verdict.reason;
      opts.onDeferred?.(verdict.reason);
    }
    await opts.runtime.sleep(opts.pollMs, opts.signal);
  }
}
