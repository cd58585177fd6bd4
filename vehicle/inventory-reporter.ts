/**
 * Reports the vehicle's software inventory (protocol/inventory.ts) to the backend: at start-up (so right after
 * registration, and after whatever a restart settled) and after every install that changed what an ECU runs. Each
 * report takes the next number of the agent's durable report sequence, so the backend can ignore a late older one.
 * Delivery is best effort with back-off; a newer trigger replaces an undelivered report (only the latest matters),
 * and an inventory the backend already acknowledged is not sent again (a restart with nothing changed costs nothing).
 */
import { canonicalJson } from '../protocol/canonical-json.js';
import type { InventoryEcu } from '../protocol/inventory.js';
import { sha256Hex } from '../protocol/signatures.js';
import type { AgentContext } from './agent-context.js';
import { backoffDelay } from './backoff.js';
import { describeError } from './logger.js';
import { Wakeup } from './runtime.js';

export class InventoryReporter {
  private due = true;
  private readonly wake = new Wakeup();

  constructor(private readonly ctx: AgentContext) {}

  /** Something changed what an ECU runs: report again. */
  trigger(): void {
    this.due = true;
    this.wake.notify();
  }

  stop(): void {
    this.wake.notify();
  }

  /** What every ECU with an installer runs now. */
  async current(): Promise<InventoryEcu[]> {
    const out: InventoryEcu[] = [];
    for (const [ecu, e] of Object.entries(this.ctx.store.state.ecus)) {
      const installer = this.ctx.options.installers[ecu];
      if (!installer) continue;
      const active = await installer.active();
      out.push({ ecu, hardware_id: e.hardware_id, version: active.version, sha256: active.sha256 });
    }
    return out;
  }

  async loop(): Promise<void> {
    const api = this.ctx.options.api;
    if (!api.reportInventory) return;
    let failures = 0;
    while (!this.ctx.signal.aborted) {
      if (!this.due) {
        await this.wake.wait(this.ctx.runtime, 3600_000, this.ctx.signal);
        continue;
      }
      this.due = false;
      try {
        const ecus = await this.current();
        if (ecus.length === 0) continue;
        // Each report costs the backend writes (the vehicle item, its rate window): an unchanged one is not resent.
        const digest = sha256Hex(canonicalJson(ecus));
        if (digest === this.ctx.store.state.reported_inventory) continue;
        const sequence = await this.ctx.store.update((d) => d.next_sequence++);
        const answer = await api.reportInventory({ sequence, ecus }, this.ctx.signal);
        await this.ctx.store.update((d) => {
          d.reported_inventory = digest;
        });
        failures = 0;
        this.ctx.emit({ type: 'inventory', sequence, applied: answer.applied });
      } catch (err) {
        if (this.ctx.signal.aborted) return;
        this.due = true;
        const wait = backoffDelay(failures++, { baseMs: 2000, maxMs: 300_000 }, () =>
          this.ctx.runtime.random(),
        );
        this.ctx.logger.warn('inventory report failed; retrying later', {
          error: describeError(err),
          in_ms: wait,
        });
        await this.ctx.runtime.sleep(wait, this.ctx.signal).catch(() => {});
      }
    }
  }
}
