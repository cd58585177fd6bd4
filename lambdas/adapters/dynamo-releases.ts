import {
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import type {
  BundleRecord,
  BundleRepository,
  Page,
  ReleaseRecord,
  ReleaseRepository,
  VerificationCheckpoint,
} from '../core/ports.js';
import { conditionally, createOnce } from './dynamo-common.js';
import { decodePageToken, encodePageToken } from './page-token.js';

export class DynamoReleaseRepository implements ReleaseRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async get(releaseId: string): Promise<ReleaseRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { releaseId }, ConsistentRead: true }),
    );
    return isBundleItem(out.Item) ? undefined : (out.Item as ReleaseRecord | undefined);
  }

  async create(release: ReleaseRecord): Promise<void> {
    await createOnce(this.db, this.table, { ...release }, 'releaseId', {
      code: 'release_exists',
      message: `Release ${release.releaseId} already exists`,
    });
  }

  /** A conditional UpdateItem of one release; `#s` names its status. */
  private updateIf(
    releaseId: string,
    update: string,
    condition: string,
    values: Record<string, unknown>,
  ): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { releaseId },
        UpdateExpression: update,
        ConditionExpression: condition,
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: values,
      }),
    );
  }

  async markWithdrawn(releaseId: string, withdrawnAt: string, reason: string): Promise<boolean> {
    return conditionally(
      this.db,
      new UpdateCommand({
        TableName: this.table,
        Key: { releaseId },
        UpdateExpression: 'SET #s = :withdrawn, withdrawnAt = :at, withdrawnReason = :r',
        ConditionExpression: '#s IN (:pending, :verifying, :failed, :published)',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: {
          ':withdrawn': 'withdrawn',
          ':pending': 'pending_upload',
          ':verifying': 'verifying',
          ':failed': 'failed',
          ':published': 'published',
          ':at': withdrawnAt,
          ':r': reason,
        },
      }),
    );
  }

  async markPublished(
    releaseId: string,
    publishedAt: string,
    objectVersionId: string | undefined,
  ): Promise<boolean> {
    return this.updateIf(
      releaseId,
      objectVersionId
        ? 'SET #s = :published, publishedAt = :at, objectVersionId = :v'
        : 'SET #s = :published, publishedAt = :at',
      '#s = :verifying',
      {
        ':published': 'published',
        ':verifying': 'verifying',
        ':at': publishedAt,
        ...(objectVersionId ? { ':v': objectVersionId } : {}),
      },
    );
  }

  async startVerification(releaseId: string, checkpoint: VerificationCheckpoint): Promise<boolean> {
    return this.updateIf(
      releaseId,
      'SET #s = :verifying, verification = :c REMOVE failureReason',
      '#s IN (:pending, :failed)',
      { ':verifying': 'verifying', ':pending': 'pending_upload', ':failed': 'failed', ':c': checkpoint },
    );
  }

  async saveVerification(
    releaseId: string,
    expectedBytes: number,
    checkpoint: VerificationCheckpoint,
  ): Promise<boolean> {
    return this.updateIf(
      releaseId,
      'SET verification = :c',
      '#s = :verifying AND verification.bytesVerified = :b',
      { ':verifying': 'verifying', ':b': expectedBytes, ':c': checkpoint },
    );
  }

  async markFailed(releaseId: string, reason: string, at: string): Promise<boolean> {
    return this.updateIf(
      releaseId,
      'SET #s = :failed, failureReason = :r, failedAt = :at',
      '#s = :verifying',
      { ':failed': 'failed', ':verifying': 'verifying', ':r': reason, ':at': at },
    );
  }

  async reopen(releaseId: string): Promise<boolean> {
    return this.updateIf(releaseId, 'SET #s = :pending REMOVE verification, uploadId', '#s = :failed', {
      ':pending': 'pending_upload',
      ':failed': 'failed',
    });
  }

  async setUploadId(releaseId: string, uploadId: string): Promise<void> {
    await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { releaseId },
        UpdateExpression: 'SET uploadId = :u',
        ConditionExpression: '#s = :pending',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: { ':u': uploadId, ':pending': 'pending_upload' },
      }),
    );
  }

  async listByVersion(version: string): Promise<ReleaseRecord[]> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: 'byVersion',
        KeyConditionExpression: 'version = :v',
        ExpressionAttributeValues: { ':v': version },
      }),
    );
    return (out.Items ?? []).filter((i) => !isBundleItem(i)) as ReleaseRecord[];
  }

  async list(limit: number, token?: string): Promise<Page<ReleaseRecord>> {
    const start = decodePageToken(token, ['releaseId']);
    const out = await this.db.send(
      new ScanCommand({ TableName: this.table, Limit: limit, ExclusiveStartKey: start }),
    );
    return {
      items: (out.Items ?? []).filter((i) => !isBundleItem(i)) as ReleaseRecord[],
      token: encodePageToken(out.LastEvaluatedKey),
    };
  }
}

/** Bundles share the releases table (one id namespace); release reads never see them. */
function isBundleItem(item: Record<string, unknown> | undefined): boolean {
  return item?.kind === 'bundle';
}

export class DynamoBundleRepository implements BundleRepository {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async get(bundleId: string): Promise<BundleRecord | undefined> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { releaseId: bundleId }, ConsistentRead: true }),
    );
    if (!isBundleItem(out.Item)) return undefined;
    const { releaseId, kind: _k, ecu: _e, status: _s, ...rest } = out.Item as Record<string, unknown>;
    return { bundleId: releaseId, ...rest } as unknown as BundleRecord;
  }

  async create(bundle: BundleRecord): Promise<void> {
    const { bundleId, ...rest } = bundle;
    // ecu and status make the item look like no release of any ECU to the byVersion index's readers.
    const item = { releaseId: bundleId, kind: 'bundle', ecu: '@bundle', status: 'published', ...rest };
    await createOnce(this.db, this.table, item, 'releaseId', {
      code: 'bundle_exists',
      message: `A release or bundle ${bundleId} already exists`,
    });
  }
}
