/**
 * The vehicle's reported software inventory (protocol/inventory.ts): checked against what the vehicle was
 * registered with (the same ECUs, the same hardware ids: a vehicle cannot grow an ECU or change its hardware by
 * saying so), then stored with the versions it names, so campaign targeting and "already at this version" go by
 * what the vehicle actually runs. Reports are ordered by the vehicle's report sequence: a late older one is ignored.
 */
import type { InventoryAnswer, InventoryReport, InventoryView } from '../../protocol/inventory.js';
import { versionMatches } from '../../protocol/inventory.js';
import { ConflictError } from './errors.js';
import type { Clock, EcuRecord, InventoryRecord, VehicleRecord, VehicleRepository } from './ports.js';

export class InventoryService {
  constructor(private readonly deps: { vehicles: VehicleRepository; clock: Clock }) {}

  async report(vehicle: VehicleRecord, body: InventoryReport): Promise<InventoryAnswer> {
    const registered = new Map(vehicle.ecus.map((e) => [e.ecu, e]));
    const reported = new Set<string>();
    for (const e of body.ecus) {
      const known = registered.get(e.ecu);
      if (!known) {
        throw new ConflictError(
          'inventory_mismatch',
          `${vehicle.vin} was not registered with an ECU ${e.ecu}`,
        );
      }
      if (known.hardware_id !== e.hardware_id) {
        throw new ConflictError(
          'inventory_mismatch',
          `${e.ecu} of ${vehicle.vin} is registered as ${known.hardware_id}, not ${e.hardware_id}`,
        );
      }
      if (reported.has(e.ecu)) throw new ConflictError('inventory_mismatch', `${e.ecu} is reported twice`);
      reported.add(e.ecu);
    }
    const versions = new Map(body.ecus.map((e) => [e.ecu, e.version]));
    // Same order as registered: per-ECU writes (recordCompletion) address the list by position.
    const ecus: EcuRecord[] = vehicle.ecus.map((e) => ({ ...e, version: versions.get(e.ecu) ?? e.version }));
    const inventory: InventoryRecord = {
      ecus: body.ecus.map((e) => ({
        ecu: e.ecu,
        hardware_id: e.hardware_id,
        version: e.version,
        sha256: e.sha256,
      })),
      sequence: body.sequence,
      reportedAt: this.deps.clock.now().toISOString(),
    };
    const applied = await this.deps.vehicles.recordInventory(vehicle.vin, inventory, ecus);
    return { vin: vehicle.vin, sequence: body.sequence, applied };
  }
}

export function inventoryView(vehicle: VehicleRecord): InventoryView | null {
  const i = vehicle.inventory;
  return i ? { ecus: i.ecus.map((e) => ({ ...e })), sequence: i.sequence, reported_at: i.reportedAt } : null;
}

/** Whether a vehicle runs, on ECU `ecu`, a version matching `pattern` (inventory when reported, else registration). */
export function runsVersion(vehicle: VehicleRecord, ecu: string, pattern: string): boolean {
  const source = vehicle.inventory?.ecus ?? vehicle.ecus;
  const e = source.find((x) => x.ecu === ecu);
  return e !== undefined && versionMatches(pattern, e.version);
}
