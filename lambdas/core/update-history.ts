/**
 * An update's status history lives on the update item itself: each stored status change appends one transition to
 * the item it is written to anyway, so history costs no write of its own (it was one item in a history table per
 * status change: 5 of a vehicle's writes per update, issue 12). The list is bounded: an update's normal life is
 * 5 to 7 transitions, a retried one a few more per attempt; past MAX_TRANSITIONS the oldest go, the first (how the
 * update began) stays. Progress within a status is not history (it is coalesced, vehicle-updates.ts).
 */
import type { HistoryEvent, UpdateRecord, UpdateRepository, UpdateTransition } from './ports.js';

/** Transitions kept per update item: about 2.5 KB at most, far under DynamoDB's 400 KB item limit. */
export const MAX_TRANSITIONS = 32;

/** The record with one more transition at the end of its history (bounded; the first entry is kept). */
export function withTransition(next: UpdateRecord, transition: UpdateTransition): UpdateRecord {
  const all = [...(next.history ?? []), compact(transition)];
  const history =
    all.length <= MAX_TRANSITIONS ? all : [all[0]!, ...all.slice(all.length - MAX_TRANSITIONS + 1)];
  return { ...next, history };
}

function compact(t: UpdateTransition): UpdateTransition {
  return Object.fromEntries(Object.entries(t).filter(([, v]) => v !== undefined)) as UpdateTransition;
}

/** A vehicle's status history across its updates, newest first. */
export function vehicleHistory(updates: readonly UpdateRecord[], limit: number): HistoryEvent[] {
  const events: HistoryEvent[] = [];
  for (const u of updates) {
    for (const t of u.history ?? []) events.push({ vin: u.vin, updateId: u.updateId, applied: true, ...t });
  }
  events.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  return events.slice(0, limit);
}

/** Reads a vehicle's history from its update items (one Query of the updates table). */
export class UpdateHistoryReader {
  constructor(private readonly updates: Pick<UpdateRepository, 'listForVehicle'>) {}

  async listForVehicle(vin: string, limit: number): Promise<HistoryEvent[]> {
    return vehicleHistory(await this.updates.listForVehicle(vin), limit);
  }
}
