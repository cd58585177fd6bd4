import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { Construct } from 'constructs';
import { ENV } from '../lambdas/core/env.js';
import { type IBindableFunction, policyOwner } from './bindable.js';
import { acknowledgeWildcardResources } from './nag.js';

/**
 * Key prefix of release images: releases/<release id>/<sha256>, one key per release. The version verified at
 * publish gets an Object Lock legal hold, so it is never rewritten or deleted.
 */
export const RELEASES_PREFIX = 'releases/';
/** Key prefix of campaigns' VIN lists (lambdas/core/vin-list.ts targetListKey): no image, no legal hold. */
export const TARGET_LISTS_PREFIX = 'campaign-targets/';

export interface FirmwareStorageProps {
  /**
   * Days a noncurrent (overwritten or deleted) object version is kept before it expires.
   * @default 30
   */
  readonly noncurrentVersionRetentionDays?: number;
  /**
   * Days after which an incomplete multipart upload is aborted and its parts deleted.
   * Upload URLs live for minutes, so a day leaves ample margin.
   * @default 1
   */
  readonly abortIncompleteMultipartUploadAfterDays?: number;
  /**
   * Days server access log objects are kept.
   * @default 365
   */
  readonly accessLogRetentionDays?: number;
  /**
   * Delete the buckets and every object in them when they leave the stack (development stacks only).
   * Adds CDK's auto-delete-objects custom resource.
   * @default false - both buckets are retained
   */
  readonly destroyOnRemoval?: boolean;
}

/**
 * The firmware bucket and its access log bucket.
 *
 * Firmware bucket: private (all public access blocked, ACLs disabled), TLS 1.2+ only, versioned, server access
 * logged, noncurrent versions expired and incomplete multipart uploads aborted.
 *
 * Encryption is SSE-S3 (AES-256, S3-managed keys), chosen over SSE-KMS on purpose: vehicles download multi-GB
 * images through presigned URLs, and with SSE-KMS every GET (every ranged, resumed part of it) becomes a KMS
 * Decrypt by the presigning role, adding per-request cost and a shared KMS request quota that a fleet-wide rollout
 * could exhaust. The images' integrity and authenticity do not rest on storage encryption at all: vehicles verify
 * SHA-256 digests and OEM signatures. Read access is governed by IAM (only releases/* to the two API roles) and
 * the TLS-only bucket policy.
 *
 * Log delivery uses a bucket policy for the logging.s3.amazonaws.com service principal scoped to the source
 * bucket and account, never an ACL.
 */
export class FirmwareStorage extends Construct {
  readonly bucket: s3.Bucket;
  readonly accessLogBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: FirmwareStorageProps = {}) {
    super(scope, id);
    const noncurrentDays = props.noncurrentVersionRetentionDays ?? 30;
    const abortDays = props.abortIncompleteMultipartUploadAfterDays ?? 1;
    const logDays = props.accessLogRetentionDays ?? 365;
    for (const [name, value] of Object.entries({ noncurrentDays, abortDays, logDays })) {
      if (!Number.isInteger(value) || value < 1) {
        throw new Error(`FirmwareStorage: ${name} must be a positive whole number of days, got ${value}`);
      }
    }
    // Grant log delivery through a bucket policy (works with ACLs disabled) rather than the legacy log-delivery ACL.
    this.node.setContext(cxapi.S3_SERVER_ACCESS_LOGS_USE_BUCKET_POLICY, true);

    const destroy = props.destroyOnRemoval ?? false;
    const retention = destroy
      ? { removalPolicy: RemovalPolicy.DESTROY, autoDeleteObjects: true }
      : { removalPolicy: RemovalPolicy.RETAIN };
    const secure = {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      ...retention,
    };

    this.accessLogBucket = new s3.Bucket(this, 'AccessLogs', {
      ...secure,
      lifecycleRules: [
        { id: 'expire-access-logs', expiration: Duration.days(logDays) },
        { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
    });
    this.bucket = new s3.Bucket(this, 'Firmware', {
      ...secure,
      versioned: true,
      // Published images get a legal hold on the version vehicles download (ObjectStore.protect at publish).
      objectLockEnabled: true,
      serverAccessLogsBucket: this.accessLogBucket,
      serverAccessLogsPrefix: 'firmware/',
      lifecycleRules: [
        // Expires what an upload left behind (a replaced or deleted upload that was never published). A published
        // release's version is under a legal hold, which lifecycle expiration cannot remove: before, an overwrite
        // or delete made the pinned version noncurrent and this rule deleted it 30 days later.
        {
          id: 'expire-noncurrent-versions',
          noncurrentVersionExpiration: Duration.days(noncurrentDays),
          expiredObjectDeleteMarker: true,
        },
        {
          // A VIN list is read while its campaign is prepared, then only kept for a while for the record.
          id: 'expire-campaign-target-lists',
          prefix: TARGET_LISTS_PREFIX,
          expiration: Duration.days(30),
        },
        {
          id: 'abort-incomplete-uploads',
          abortIncompleteMultipartUploadAfter: Duration.days(abortDays),
        },
      ],
    });
    this.denyUnlocking();
  }

  /**
   * Nobody, whatever their IAM rights, may destroy a version of a release image or lift a legal hold: deleting a
   * version (s3:DeleteObjectVersion; a plain DeleteObject only adds a delete marker), removing a hold
   * (PutObjectLegalHold with status OFF) and bypassing governance retention are denied to every principal. Lifting
   * this takes a change to the bucket policy itself, which the stack owns and the functions cannot make.
   */
  private denyUnlocking(): void {
    const releases = this.releaseObjectsArn;
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'PublishedFirmwareIsPermanent',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['s3:DeleteObjectVersion', 's3:BypassGovernanceRetention'],
        resources: [releases],
      }),
    );
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'LegalHoldsAreNeverLifted',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['s3:PutObjectLegalHold'],
        resources: [releases],
        conditions: { StringNotEquals: { 's3:object-lock-legal-hold': 'ON' } },
      }),
    );
  }

  /** ARN pattern of every release image object. */
  get releaseObjectsArn(): string {
    return this.bucket.arnForObjects(`${RELEASES_PREFIX}*`);
  }

  /**
   * Lets a function presign GET URLs for release images, including a pinned object version
   * (s3:GetObject and s3:GetObjectVersion on releases/* only), and sets FIRMWARE_BUCKET.
   */
  grantPresignDownload(fn: IBindableFunction): void {
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject', 's3:GetObjectVersion'],
        resources: [this.releaseObjectsArn],
      }),
    );
    this.bindBucket(fn, 'presigns download URLs for');
  }

  /**
   * Lets a function receive release images and verify them: presign single and multipart uploads (s3:PutObject,
   * which also covers Create/UploadPart/CompleteMultipartUpload), abort and list parts, read the image back
   * (including by version id) to check its digest, delete an upload that does not match its manifest (a delete
   * marker on that release's own key; versions cannot be deleted) and put the legal hold on the verified version
   * (s3:PutObjectLegalHold, which the bucket policy allows only with status ON). All on releases/* only. Also s3:ListBucket on the bucket, without which HeadObject answers 403 instead of 404 for a
   * release not uploaded yet. Sets FIRMWARE_BUCKET.
   */
  grantUpload(fn: IBindableFunction): void {
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          's3:PutObject',
          's3:AbortMultipartUpload',
          's3:ListMultipartUploadParts',
          's3:GetObject',
          's3:GetObjectVersion',
          's3:DeleteObject',
          's3:PutObjectLegalHold',
        ],
        resources: [this.releaseObjectsArn],
      }),
    );
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [this.bucket.bucketArn] }),
    );
    this.bindBucket(fn, 'uploads and verifies');
  }

  /**
   * Lets the background verification job read a release image (by version id too, and by ranges) to hash it,
   * put the legal hold on the version it verified (s3:PutObjectLegalHold, which the bucket policy allows only with
   * status ON), and remove an upload that does not match its manifest (s3:DeleteObject: a delete marker on the
   * versioned bucket; deleting versions is denied to every principal). On releases/* only, plus s3:ListBucket so
   * HeadObject answers 404, not 403, for a missing image. No s3:PutObject: it never writes an image. Sets
   * FIRMWARE_BUCKET.
   */
  grantVerify(fn: IBindableFunction): void {
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject', 's3:GetObjectVersion', 's3:PutObjectLegalHold', 's3:DeleteObject'],
        resources: [this.releaseObjectsArn],
      }),
    );
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [this.bucket.bucketArn] }),
    );
    this.bindBucket(fn, 'verifies');
  }

  /**
   * Campaign VIN lists (campaign-targets/* only): `write` lets the operator API store an inline list, presign the
   * operator's upload and read it back to check it; `read` lets the preparation job read it by ranges.
   */
  grantTargetLists(fn: IBindableFunction, mode: 'write' | 'read'): void {
    const objects = this.bucket.arnForObjects(`${TARGET_LISTS_PREFIX}*`);
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...(mode === 'write' ? ['s3:PutObject'] : []), 's3:GetObject', 's3:GetObjectVersion'],
        resources: [objects],
      }),
    );
    fn.addEnvironment(ENV.firmwareBucket, this.bucket.bucketName);
    acknowledgeWildcardResources(
      policyOwner(fn),
      [objects],
      'Campaign VIN lists are keyed by campaign id (campaign-targets/<campaign id>.txt), known only per request; the ' +
        'wildcard covers object keys under the campaign-targets/ prefix of this one bucket.',
    );
  }

  private bindBucket(fn: IBindableFunction, what: string): void {
    fn.addEnvironment(ENV.firmwareBucket, this.bucket.bucketName);
    acknowledgeWildcardResources(
      policyOwner(fn),
      [this.releaseObjectsArn],
      `The function ${what} release images, whose keys (releases/<release id>/<sha256>) are only known per request; the ` +
        'wildcard covers object keys under the releases/ prefix of this one bucket.',
    );
  }
}
