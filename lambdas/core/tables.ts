/**
 * The DynamoDB data model, shared by the CDK stack and the local cloud so the two never drift.
 * Every key is a string attribute; every transition is a single-item conditional write.
 */
export interface TableDefinition {
  /** Logical name; the physical name comes from the environment (TABLE_<NAME>). */
  readonly name:
    | 'releases'
    | 'vehicles'
    | 'updates'
    | 'history'
    | 'campaigns'
    | 'challenges'
    | 'freshness'
    | 'exclusions'
    | 'audit';
  readonly envVar: string;
  readonly partitionKey: string;
  readonly sortKey?: string;
  readonly indexes: readonly {
    readonly indexName: string;
    readonly partitionKey: string;
    readonly sortKey?: string;
  }[];
  /** Attribute holding an epoch-seconds expiry, where items expire. */
  readonly ttlAttribute?: string;
}

export const TABLES: readonly TableDefinition[] = [
  {
    // One item per release: the signed manifest, upload state and the S3 object key.
    name: 'releases',
    envVar: 'TABLE_RELEASES',
    partitionKey: 'releaseId',
    indexes: [{ indexName: 'byVersion', partitionKey: 'version', sortKey: 'releaseId' }],
  },
  {
    // One item per VIN: model, ECU inventory, device certificate and active update.
    name: 'vehicles',
    envVar: 'TABLE_VEHICLES',
    partitionKey: 'vin',
    indexes: [],
  },
  {
    // One item per VIN x update (a campaign, or a direct request for a release).
    name: 'updates',
    envVar: 'TABLE_UPDATES',
    partitionKey: 'vin',
    sortKey: 'updateId',
    // Sparse: only campaign updates carry campaignId; waveKey = <wave, 3 digits>#<VIN> lists one wave in order.
    indexes: [{ indexName: 'byCampaign', partitionKey: 'campaignId', sortKey: 'waveKey' }],
  },
  {
    // One item per campaign: release, policy, waves, status and per-wave counts kept up to date with ADD.
    name: 'campaigns',
    envVar: 'TABLE_CAMPAIGNS',
    partitionKey: 'campaignId',
    indexes: [{ indexName: 'byStatus', partitionKey: 'status', sortKey: 'campaignId' }],
  },
  {
    // Login challenges, one item each (`c#<nonce>`, spent by a conditional delete), and per-VIN issuance counters
    // (`r#<VIN>#<minute>`). Each challenge is its own item, so a new one never displaces another; all expire.
    name: 'challenges',
    envVar: 'TABLE_CHALLENGES',
    partitionKey: 'id',
    indexes: [],
    ttlAttribute: 'expiresAt',
  },
  {
    // One item per campaign x excluded target, with the reason: the campaign item keeps only counts per reason, so
    // its size does not grow with the fleet (DynamoDB's 400 KB item limit), and the listing pages.
    name: 'exclusions',
    envVar: 'TABLE_EXCLUSIONS',
    partitionKey: 'campaignId',
    sortKey: 'vin',
    indexes: [],
  },
  {
    // Append-only status history; items expire after the retention period.
    name: 'history',
    envVar: 'TABLE_HISTORY',
    partitionKey: 'vin',
    sortKey: 'eventId',
    indexes: [],
    ttlAttribute: 'expiresAt',
  },
  {
    // Freshness statements: the newest under key `statement`, and each statement's leaves in buckets under
    // `bucket#<sequence>#<index>`, which expire a day after their statement.
    name: 'freshness',
    envVar: 'TABLE_FRESHNESS',
    partitionKey: 'key',
    indexes: [],
    ttlAttribute: 'expiresAt',
  },
  {
    // The operator audit log, append-only (functions get PutItem with attribute_not_exists, never Update or
    // Delete): one item per operator mutation or refusal, eventId = <ISO time>#<request id> so a Query reads it in
    // time order. One partition (`stream` = operator): operator mutations come at human rates, far below a
    // partition's 1,000 writes per second, and one partition lists newest first with a plain Query.
    name: 'audit',
    envVar: 'TABLE_AUDIT',
    partitionKey: 'stream',
    sortKey: 'eventId',
    indexes: [],
  },
];
