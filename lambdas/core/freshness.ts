/**
 * The freshness role (protocol/freshness.ts): once per period, one signed statement of time and of the latest
 * offer to every vehicle; per request, a vehicle's own leaf and its path to the signed root.
 *
 * Cost, honestly: the period job reads every vehicle item (a paged Scan of the vehicles table projecting the VIN
 * and the latest offer counter) and writes one item per bucket of BUCKET_SIZE vehicles plus one for the statement.
 * A Scan is billed by the size of the items read, not of the projection, so at 1,000,000 vehicles of ~2 KB it
 * reads ~2 GB (~250,000 read units) and writes ~2,000 bucket items of ~15 KB (~30,000 write units): about $0.05
 * per statement on demand, and the Scan takes minutes. The job is bounded by FRESHNESS_MAX_VEHICLES and refuses
 * to publish beyond it, rather than silently covering part of the fleet (vehicles then report missing
 * statements). docs/architecture.md ("Freshness") names what changes at that scale. The leaves are the counters
 * the offers already write
 * (VehicleRepository.nextAssignmentCounter with offer), so nothing else is maintained per offer.
 */
import {
  bucketOf,
  type FreshnessAlert,
  type FreshnessAlertAnswer,
  type FreshnessAnswer,
  type FreshnessStatement,
  leafHash,
  merkleProof,
  merkleRoot,
  type ProofStep,
  signFreshness,
} from '../../protocol/freshness.js';
import type { Signer } from '../../protocol/signatures.js';
import { NotFoundError, OtaError } from './errors.js';
import type { Clock, FreshnessRepository, VehicleRecord } from './ports.js';

/** Vehicles per bucket (one DynamoDB item of ~20 KB, well under the 400 KB item limit). */
export const BUCKET_SIZE = 512;
/** A statement stays valid this many periods: a late or failed run or two does not make the fleet stale. */
export const VALID_PERIODS = 4;

/** The scheduler's input asking the campaign-tick function for a freshness statement instead of a tick. */
export const FRESHNESS_JOB = { job: 'freshness' } as const;

export interface FreshnessDeps {
  readonly repo: FreshnessRepository;
  readonly signer: Signer;
  readonly clock: Clock;
  readonly periodSeconds: number;
  readonly maxVehicles: number;
}

export interface PublishResult {
  readonly sequence: number;
  readonly leafCount: number;
  readonly bucketCount: number;
}

export class FreshnessService {
  constructor(private readonly deps: FreshnessDeps) {}

  /** Builds, signs (once) and stores the next statement over every vehicle's latest offer counter. */
  async publish(): Promise<PublishResult> {
    const leaves: { vin: string; counter: number }[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.deps.repo.latestOffers(cursor);
      leaves.push(...page.items);
      if (leaves.length > this.deps.maxVehicles) {
        throw new OtaError(
          'fleet_too_large',
          `More than ${this.deps.maxVehicles} vehicles: no freshness statement published (FRESHNESS_MAX_VEHICLES)`,
          500,
        );
      }
      cursor = page.cursor;
    } while (cursor);

    const bucketCount = Math.max(1, Math.ceil(leaves.length / BUCKET_SIZE));
    const grouped: { vin: string; counter: number }[][] = Array.from({ length: bucketCount }, () => []);
    for (const leaf of leaves) grouped[bucketOf(leaf.vin, bucketCount)]!.push(leaf);
    for (const g of grouped) g.sort((a, b) => (a.vin < b.vin ? -1 : a.vin > b.vin ? 1 : 0));
    const bucketRoots = grouped.map((g) => merkleRoot(g.map((l) => leafHash(l.vin, l.counter))));
    const buckets = grouped.map((g, i) => ({ leaves: g, path: merkleProof(bucketRoots, i) }));

    const previous = await this.deps.repo.latest();
    const now = this.deps.clock.now();
    const statement: FreshnessStatement = {
      schema: 'ota.freshness/v1',
      sequence: (previous?.signed.statement.sequence ?? 0) + 1,
      issued_at: now.toISOString(),
      expires_at: new Date(now.getTime() + VALID_PERIODS * this.deps.periodSeconds * 1000).toISOString(),
      root: merkleRoot(bucketRoots),
      leaf_count: leaves.length,
    };
    const signed = await signFreshness(statement, this.deps.signer);
    const keepUntil = Math.ceil(Date.parse(statement.expires_at) / 1000) + 86400;
    if (!(await this.deps.repo.publish(signed, buckets, keepUntil))) {
      throw new OtaError(
        'concurrent_publish',
        `Freshness statement ${statement.sequence} exists already`,
        409,
      );
    }
    return { sequence: statement.sequence, leafCount: leaves.length, bucketCount };
  }

  /** The newest statement with the vehicle's leaf and its path to the root. */
  async answer(vehicle: VehicleRecord): Promise<FreshnessAnswer> {
    const latest = await this.deps.repo.latest();
    if (!latest) throw new NotFoundError('no_statement', 'No freshness statement has been published yet');
    const sequence = latest.signed.statement.sequence;
    const bucket = await this.deps.repo.bucket(sequence, bucketOf(vehicle.vin, latest.bucketCount));
    const index = bucket?.leaves.findIndex((l) => l.vin === vehicle.vin) ?? -1;
    if (!bucket || index < 0) {
      // Registered after the statement was made: the next one covers it.
      throw new NotFoundError(
        'not_in_statement',
        `Freshness statement ${sequence} does not cover this vehicle`,
      );
    }
    const hashes = bucket.leaves.map((l) => leafHash(l.vin, l.counter));
    const proof: ProofStep[] = [...merkleProof(hashes, index), ...bucket.path];
    return { signed: latest.signed, vin: vehicle.vin, counter: bucket.leaves[index]!.counter, proof };
  }

  /** Records what the vehicle reported (kept on its record, shown to operators). */
  async alert(vehicle: VehicleRecord, alert: FreshnessAlert): Promise<FreshnessAlertAnswer> {
    const at = this.deps.clock.now().toISOString();
    await this.deps.repo.recordAlert(vehicle.vin, { ...alert, at });
    return { recorded: true, at };
  }
}
