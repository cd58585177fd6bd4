/**
 * The vehicle registry: an operator registers a vehicle with its ECU inventory and a CSR made on the vehicle (the
 * private key never leaves it); the backend answers the device certificate that identifies it on MQTT and HTTPS.
 */

import { X509Certificate } from 'node:crypto';
import type { VehicleRegistered, VehicleView } from '../../protocol/operator-responses.js';
import { keyIdOf } from '../../protocol/signatures.js';
import { ConflictError, NotFoundError } from './errors.js';
import { inventoryView } from './inventory.js';
import type { CertificateIssuer, Clock, UpdateRepository, VehicleRepository } from './ports.js';
import { toUpdateView } from './vehicle-updates.js';

export interface RegisterVehicleInput {
  readonly vin: string;
  readonly model: string;
  readonly ecus: { ecu: string; hardware_id: string; version: string }[];
  readonly csr: string;
}

export class VehicleRegistryService {
  constructor(
    private readonly deps: {
      readonly vehicles: VehicleRepository;
      readonly updates: UpdateRepository;
      readonly issuer: CertificateIssuer;
      readonly clock: Clock;
    },
  ) {}

  async register(input: RegisterVehicleInput): Promise<VehicleRegistered> {
    if (new Set(input.ecus.map((e) => e.ecu)).size !== input.ecus.length) {
      throw new ConflictError('duplicate_ecu', 'Each ECU may appear once in the inventory');
    }
    if (await this.deps.vehicles.get(input.vin)) {
      throw new ConflictError('vehicle_exists', `Vehicle ${input.vin} is already registered`);
    }
    const issued = await this.deps.issuer.issue(input.vin, input.csr);
    const publicKeyPem = new X509Certificate(issued.certificatePem).publicKey
      .export({ type: 'spki', format: 'pem' })
      .toString();
    const registeredAt = this.deps.clock.now().toISOString();
    try {
      await this.deps.vehicles.create({
        vin: input.vin,
        model: input.model,
        ecus: input.ecus,
        certificatePem: issued.certificatePem,
        certificateId: issued.certificateId,
        publicKeyPem,
        deviceKeyId: keyIdOf(publicKeyPem),
        registeredAt,
      });
    } catch (err) {
      await this.deps.issuer.revoke(input.vin, issued.certificateId).catch(() => undefined);
      throw err;
    }
    return {
      vin: input.vin,
      model: input.model,
      certificate_pem: issued.certificatePem,
      certificate_id: issued.certificateId,
      registered_at: registeredAt,
    };
  }

  async get(vin: string): Promise<VehicleView> {
    const vehicle = await this.deps.vehicles.get(vin);
    if (!vehicle) throw new NotFoundError('unknown_vehicle', `No vehicle ${vin}`);
    const updates = await this.deps.updates.listForVehicle(vin);
    return {
      vin: vehicle.vin,
      model: vehicle.model,
      ecus: vehicle.ecus.map((e) => ({ ecu: e.ecu, hardware_id: e.hardware_id, version: e.version })),
      certificate_id: vehicle.certificateId,
      registered_at: vehicle.registeredAt,
      active_update_id: vehicle.activeUpdateId ?? null,
      revoked_at: vehicle.revokedAt ?? null,
      /** The last withheld offer or freshness silence the vehicle reported (lambdas/core/freshness.ts). */
      freshness_alert: vehicle.freshnessAlert ?? null,
      inventory: inventoryView(vehicle),
      updates: updates.map(toUpdateView),
    };
  }
}
