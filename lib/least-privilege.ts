/**
 * What each backend function may do, decided in one place: the table items and indexes it reads and writes
 * (DataTables.bindItems), the keys it signs or verifies with, the storage, queues and IoT rights it has. The
 * constructs own their resources; this file owns who may touch them. test/cdk/least-privilege.test.ts checks the
 * outcome against the synthesized template.
 */
import type { FunctionName } from '../protocol/routes.js';
import type { BackgroundJobs } from './background-jobs.js';
import type { DataTables } from './data-tables.js';
import type { FirmwareStorage } from './firmware-storage.js';
import type { FleetIdentity } from './fleet-identity.js';
import type { OfferPacing } from './offer-pacing.js';
import type { OtaFunction } from './ota-function.js';
import type { SigningKey } from './signing-key.js';

/** The stack's parts the grants name (OtaStack has them all). */
export interface GrantedParts {
  readonly data: DataTables;
  readonly storage: FirmwareStorage;
  readonly signingKey: SigningKey;
  readonly tokenKey: SigningKey;
  readonly fleet: FleetIdentity;
  readonly jobs: BackgroundJobs;
  readonly offers: OfferPacing;
  readonly functions: ReadonlyMap<FunctionName, OtaFunction>;
  readonly ingestFunction: OtaFunction;
  readonly campaignTickFunction: OtaFunction;
  readonly jobsWorkerFunction: OtaFunction;
  readonly offerWorkerFunction: OtaFunction;
  readonly auditRefusalsFunction: OtaFunction;
}

/**
 * The one place that decides what each function may do. Index access is granted per index, only to the
 * functions whose code queries it: releases.byVersion (release creation, firmware requests), updates.byCampaign
 * (campaign routes, the tick), campaigns.byStatus (the tick).
 */
export function grantLeastPrivilege(s: GrantedParts): void {
  const fn = (name: FunctionName) => s.functions.get(name)!;
  const d = s.data;

  // auth-api: challenges (UpdateItem to set and to spend one) and the vehicle read; tokens signed with the token
  // key only, whose public key gives the token's key id. No assignment key: an exploit of this unauthenticated
  // function cannot mint assignments.
  const auth = fn('auth-api');
  d.bindItems(auth, 'vehicles', ['GetItem']);
  // A challenge is issued (PutItem), counted per VIN and minute and spent once (conditional UpdateItem).
  d.bindItems(auth, 'challenges', ['PutItem', 'UpdateItem']);
  s.tokenKey.grantSign(auth);
  s.tokenKey.grantVerify(auth);

  // vehicle-api: offers (releases by version through the index only, signed assignments, presigned downloads) and
  // status reports (updates read by key or per vehicle, written whole with a revision check; vehicles' rate
  // window, active update, assignment counter and ECU version by UpdateItem; campaign counts by UpdateItem).
  const vehicle = fn('vehicle-api');
  // GetItem: a bundle offered to the vehicle and its member releases, by id (POST /updates/{vin}/bundle).
  d.bindItems(vehicle, 'releases', ['GetItem'], { indexes: ['byVersion'] });
  d.bindItems(vehicle, 'vehicles', ['GetItem', 'UpdateItem']);
  d.bindItems(vehicle, 'updates', ['GetItem', 'Query', 'PutItem']);
  // A campaign being cancelled refuses its updates' downloads (GetItem); its counts move in the counter shards,
  // by an UpdateItem inside the update's TransactWriteItems (which needs no action of its own).
  d.bindItems(vehicle, 'campaigns', ['GetItem']);
  d.bindItems(vehicle, 'counters', ['UpdateItem']);
  // Freshness: reads the newest statement and the vehicle's bucket; alerts are written on the vehicle's item.
  d.bindItems(vehicle, 'freshness', ['GetItem']);
  s.storage.grantPresignDownload(vehicle);
  s.tokenKey.grantVerify(vehicle);
  s.signingKey.grantVerify(vehicle);
  s.signingKey.grantSign(vehicle);

  // operator-api: releases (create, publish, withdraw, list with a Scan), campaigns (targets by a Scan of vehicles, one update per target, listed with a Scan, cancelled through the
  // byCampaign index) and the release withdraw's search for open direct updates (a Scan of updates). History is
  // append-only. Nothing is ever deleted.
  const operator = fn('operator-api');
  d.bindItems(operator, 'releases', ['GetItem', 'PutItem', 'UpdateItem', 'Scan'], {
    indexes: ['byVersion'],
  });
  d.bindItems(operator, 'vehicles', ['GetItem', 'UpdateItem', 'Scan']);
  d.bindItems(operator, 'updates', ['GetItem', 'Query', 'PutItem', 'Scan'], { indexes: ['byCampaign'] });
  d.bindItems(operator, 'campaigns', ['GetItem', 'PutItem', 'UpdateItem', 'Scan']);
  // Campaign views sum the counter shards (a Query per wave). A release withdraw takes back direct updates only
  // (no count) and cancels campaigns through their job, so nothing here moves a count.
  d.bindItems(operator, 'counters', ['Query']);
  // Campaign exclusions: listed a page at a time (Query); the preparation job writes them.
  d.bindItems(operator, 'exclusions', ['Query']);
  // The audit log: every mutation appended (PutItem, conditional on a new event id), GET /audit (Query).
  d.bindItems(operator, 'audit', ['PutItem', 'Query']);
  s.storage.grantUpload(operator);
  // Campaign VIN lists: an inline list stored, an upload presigned and checked when complete.
  s.storage.grantTargetLists(operator, 'write');
  // Publish and cancel queue their background job.
  s.jobs.grantSend(operator);
  // No signing-key access: operator routes neither sign nor verify backend signatures. No IoT rights.

  // registry-api: vehicle registration (the vehicle written once, PutItem; read back), its view (the vehicle and
  // its updates by key and per vehicle) and the revoke kill switch (the vehicle flagged by UpdateItem, its open
  // updates withdrawn: updates rewritten with a revision check, campaign counts by UpdateItem, history appended).
  // The only function with IoT identity rights (FleetIdentity.bindRegistration).
  const registry = fn('registry-api');
  d.bindItems(registry, 'vehicles', ['GetItem', 'PutItem', 'UpdateItem']);
  d.bindItems(registry, 'updates', ['GetItem', 'Query', 'PutItem']);
  d.bindItems(registry, 'campaigns', ['GetItem', 'UpdateItem']);
  // A revoke's withdrawn campaign update moves its count shard in the update's transaction.
  d.bindItems(registry, 'counters', ['UpdateItem']);
  // Its mutations (registration, revocation) are audited like operator-api's: appended only, never listed here.
  d.bindItems(registry, 'audit', ['PutItem']);
  // audit-refusals: appends the refusals API Gateway made (conditional on a new event id); reads nothing.
  d.bindItems(s.auditRefusalsFunction, 'audit', ['PutItem']);
  s.fleet.bindRegistration(registry);

  // jobs-worker: verifies release images (reads the object by ranges, saves its checkpoint on the release,
  // protects and publishes it, or fails it and removes the bad upload under its own key) and withdraws cancelled campaigns' updates a page at a time (byCampaign; counts by UpdateItem;
  // history appended; vehicles' campaign locks released by UpdateItem). Queue consumption and self-continuation
  // are granted by BackgroundJobs. No KMS, no IoT.
  const worker = s.jobsWorkerFunction;
  d.bindItems(worker, 'releases', ['GetItem', 'UpdateItem']);
  s.storage.grantVerify(worker);
  // Campaign preparation: checkpoints are items of the campaigns table (PutItem, conditional on the slice);
  // vehicles read by a parallel Scan or by VIN (GetItem) and locked (UpdateItem); target items written
  // conditionally (PutItem) after reading the vehicle's updates (Query); exclusions written conditionally;
  // the VIN list read by ranges. Nothing is deleted.
  d.bindItems(worker, 'campaigns', ['GetItem', 'PutItem', 'UpdateItem']);
  d.bindItems(worker, 'updates', ['GetItem', 'PutItem', 'Query'], { indexes: ['byCampaign'] });
  // Withdrawn updates move their count (cancel, and the preparation's sweep of a cancelled one's targets).
  d.bindItems(worker, 'counters', ['UpdateItem']);
  d.bindItems(worker, 'vehicles', ['GetItem', 'UpdateItem', 'Scan']);
  d.bindItems(worker, 'exclusions', ['PutItem']);
  s.storage.grantTargetLists(worker, 'read');

  // ingest: applies vehicle reports: vehicles read, and updated when an update completes (the ECU's new version,
  // the campaign lock released); updates read and written with a revision check; history append-only; campaign
  // counts by UpdateItem. No S3, no KMS, no IoT.
  const ingest = s.ingestFunction;
  d.bindItems(ingest, 'vehicles', ['GetItem', 'UpdateItem']);
  d.bindItems(ingest, 'updates', ['GetItem', 'Query', 'PutItem']);
  d.bindItems(ingest, 'counters', ['UpdateItem']);

  // campaign-tick: finds running campaigns (byStatus) and decides from each campaign item and its summed counter
  // shards (a Query per wave); overdue updates come from the sparse byDeadline index, a page per tick, and are timed
  // out (PutItem with their count, vehicles unlocked by UpdateItem) or sent to the offers queue again; the pacer
  // is (re)started by a conditional PutItem of its state. No reads of a wave, no signing, no IoT: offers are the
  // offer worker's. The freshness job (same function) signs statements.
  const tick = s.campaignTickFunction;
  d.bindItems(tick, 'campaigns', ['GetItem', 'UpdateItem'], { indexes: ['byStatus'] });
  d.bindItems(tick, 'counters', ['GetItem', 'Query', 'PutItem', 'UpdateItem']);
  // The freshness job (same function) scans the vehicles for its leaves (bounded by FRESHNESS_MAX_VEHICLES).
  d.bindItems(tick, 'vehicles', ['UpdateItem', 'Scan']);
  d.bindItems(tick, 'updates', ['PutItem'], { indexes: ['byDeadline'] });
  // ...and writes statements and their buckets.
  d.bindItems(tick, 'freshness', ['GetItem', 'PutItem']);
  s.signingKey.grantSign(tick);
  // Statements carry the signer's key id, derived from the public key (KmsSigner.publicKeyPem).
  s.signingKey.grantVerify(tick);
  s.offers.grantSend(tick);

  // offer-worker: a pacer step reads one page of the queued targets (byCampaign) and saves the pacer's state
  // (conditional PutItem); an offer takes its target into a wave (the update's PutItem and its count's UpdateItem
  // in one transaction), takes the vehicle's offer counter and active update (one UpdateItem), signs the
  // assignment and publishes it on the vehicle's issue_details topic. Queue consumption and sending are granted by
  // OfferPacing. No S3.
  const offer = s.offerWorkerFunction;
  d.bindItems(offer, 'campaigns', ['GetItem']);
  d.bindItems(offer, 'releases', ['GetItem']);
  d.bindItems(offer, 'vehicles', ['GetItem', 'UpdateItem']);
  d.bindItems(offer, 'updates', ['GetItem', 'PutItem'], { indexes: ['byCampaign'] });
  d.bindItems(offer, 'counters', ['GetItem', 'PutItem', 'UpdateItem']);
  s.signingKey.grantSign(offer);
  s.signingKey.grantVerify(offer);
  s.fleet.grantPublishNotifications(offer);
}
