/**
 * Per-vehicle assignments (protocol/assignment.ts) signed by the backend: what one binds (a release's manifest or a
 * bundle), and the issuer that counts and signs them, shared by the vehicle API's answers and the offer worker.
 */
import {
  ASSIGNMENT_SCOPE,
  type Assignment,
  manifestDigest,
  type SignedAssignment,
  signAssignment,
  signAssignmentDelegated,
} from '../../protocol/assignment.js';
import { DelegatedSigner } from '../../protocol/delegation.js';
import type { ReleaseManifest } from '../../protocol/manifest.js';
import type { Signer } from '../../protocol/signatures.js';
import type { Clock, UpdateRecord, VehicleRecord, VehicleRepository } from './ports.js';

/**
 * delegated: by the instance's online key certified by the backend key (one backend Sign per instance per hour);
 * direct: by the backend key itself, one backend Sign per assignment, for fleets whose agents predate delegation.
 */
export type AssignmentSigning = 'delegated' | 'direct';

/** What an assignment binds: a release's manifest, or a bundle (ecu BUNDLE_ASSIGNMENT_ECU, the bundle digest). */
export interface AssignmentTarget {
  readonly release_id: string;
  readonly version: string;
  readonly ecu: string;
  readonly manifest_sha256: string;
}

export function assignmentTargetOf(manifest: ReleaseManifest): AssignmentTarget {
  return {
    release_id: manifest.release_id,
    version: manifest.version,
    ecu: manifest.ecu,
    manifest_sha256: manifestDigest(manifest),
  };
}

/**
 * Signs per-vehicle assignments, each with the vehicle's next counter value. Make one per function instance (at
 * module scope): its online key and delegation live as long as it does, so a new issuer per request would cost a
 * backend (KMS) Sign per request again.
 */
export class AssignmentIssuer {
  private readonly sign: (a: Assignment) => Promise<SignedAssignment>;

  constructor(
    private readonly deps: {
      readonly vehicles: Pick<VehicleRepository, 'nextAssignmentCounter'>;
      /** The backend key (KMS on AWS). */
      readonly signer: Signer;
      readonly clock: Clock;
      /** Seconds an assignment stays valid. @default 86400 */
      readonly ttlSeconds?: number;
      /** @default 'delegated' */
      readonly signing?: AssignmentSigning;
    },
  ) {
    if (deps.signing === 'direct') {
      this.sign = (a) => signAssignment(a, deps.signer);
    } else {
      const online = new DelegatedSigner(deps.signer, {
        scope: ASSIGNMENT_SCOPE,
        maxDocumentSeconds: deps.ttlSeconds ?? 86400,
        now: () => deps.clock.now(),
      });
      this.sign = (a) => signAssignmentDelegated(a, online);
    }
  }

  /** Takes the vehicle's next counter value, to record on an update before its assignment is signed. */
  /**
   * The vehicle's next assignment counter. offer: it goes out in a pushed offer, and the same write records it as the
   * vehicle's latest offer, which the freshness statement commits to (download answers and renewals do not move it).
   */
  reserveCounter(vin: string, purpose: 'offer' | 'answer' = 'answer'): Promise<number> {
    return this.deps.vehicles.nextAssignmentCounter(vin, purpose === 'offer');
  }

  /** Signs an assignment, with a counter from reserveCounter or else the vehicle's next one. */
  async assign(
    vehicle: VehicleRecord,
    update: UpdateRecord,
    manifest: ReleaseManifest,
    reservedCounter?: number,
  ): Promise<SignedAssignment> {
    return this.assignTarget(vehicle, update, assignmentTargetOf(manifest), reservedCounter);
  }

  /** Signs an assignment of any target: a release (its manifest digest) or a bundle (its bundle digest). */
  async assignTarget(
    vehicle: VehicleRecord,
    update: UpdateRecord,
    target: AssignmentTarget,
    reservedCounter?: number,
  ): Promise<SignedAssignment> {
    const now = this.deps.clock.now();
    const counter = reservedCounter ?? (await this.deps.vehicles.nextAssignmentCounter(vehicle.vin));
    return this.sign({
      schema: 'ota.assignment/v1',
      vin: vehicle.vin,
      update_id: update.updateId,
      campaign_id: update.campaignId ?? null,
      ...target,
      counter,
      issued_at: now.toISOString(),
      expires_at: new Date(now.getTime() + (this.deps.ttlSeconds ?? 86400) * 1000).toISOString(),
      // The campaign offer's conditions travel signed in every assignment of it (protocol/conditions.ts).
      ...(update.conditions && update.campaignId !== undefined ? { conditions: update.conditions } : {}),
    });
  }
}
