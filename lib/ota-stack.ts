import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Annotations, CfnOutput, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { ENV } from '../lambdas/adapters/env.js';
import { FUNCTIONS, type FunctionName } from '../lambdas/core/api-schema.js';
import { trustedKeysFromPems } from '../lambdas/core/signatures.js';
import { DataTables } from './data-tables.js';
import { FirmwareStorage } from './firmware-storage.js';
import { FleetIdentity } from './fleet-identity.js';
import { OtaFunction } from './ota-function.js';
import { SigningKey } from './signing-key.js';
import { VehicleApi } from './vehicle-api.js';

/** Repository root (this file is lib/ota-stack.ts), where lambdas/<fn>/handler.ts and package-lock.json live. */
const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface OtaStackProps extends StackProps {
  /**
   * PEM (SPKI) public keys of the OEM release keys the backend accepts for release manifests. Each must be an ECDSA
   * P-256 key; anything else fails synthesis rather than the deployed functions.
   * @default [] - the backend refuses every release, and synthesis warns
   */
  readonly releasePublicKeys?: readonly string[];
  /**
   * Development stack: buckets (with their objects), tables, log groups and IoT resources are deleted with the stack
   * and table deletion protection is off. The signing key is retained regardless.
   * @default false
   */
  readonly devMode?: boolean;
  /**
   * Seconds a presigned download or upload URL stays valid (PRESIGN_TTL_SECONDS). At most 7 days (SigV4).
   * @default 300
   */
  readonly presignTtlSeconds?: number;
  /**
   * Seconds a vehicle bearer token stays valid (TOKEN_TTL_SECONDS).
   * @default 900
   */
  readonly tokenTtlSeconds?: number;
  /**
   * Days a status history item is kept before its TTL expires it (HISTORY_RETENTION_DAYS).
   * @default 90
   */
  readonly historyRetentionDays?: number;
  /**
   * API stage rate limit, requests per second.
   * @default 100
   */
  readonly apiThrottlingRateLimit?: number;
  /**
   * API stage burst limit, requests.
   * @default 200
   */
  readonly apiThrottlingBurstLimit?: number;
  /**
   * Retention of the functions' log groups.
   * @default logs.RetentionDays.THREE_MONTHS
   */
  readonly functionLogRetention?: logs.RetentionDays;
  /**
   * Days a replaced or deleted firmware object version is kept.
   * @default 30
   */
  readonly firmwareNoncurrentVersionRetentionDays?: number;
  /**
   * Existing WAFv2 web ACL (REGIONAL) to associate with the API stage.
   * @default - none
   */
  readonly webAclArn?: string;
  /**
   * Create API Gateway's account-level CloudWatch Logs role; turn off when the account already has one.
   * @default true
   */
  readonly createApiGatewayCloudWatchRole?: boolean;
  /**
   * Reserved concurrency of each API function.
   * @default - none
   */
  readonly reservedConcurrentExecutions?: number;
}

/**
 * The vehicle OTA backend on AWS: firmware storage, data tables, the backend signing key, the vehicles' IoT identity,
 * and the HTTPS API with one function per FUNCTIONS entry, each granted exactly what its routes need.
 */
export class OtaStack extends Stack {
  readonly storage: FirmwareStorage;
  readonly data: DataTables;
  readonly signingKey: SigningKey;
  readonly fleet: FleetIdentity;
  readonly functions: ReadonlyMap<FunctionName, OtaFunction>;
  readonly api: VehicleApi;

  constructor(scope: Construct, id: string, props: OtaStackProps = {}) {
    super(scope, id, props);
    const presignTtl = props.presignTtlSeconds ?? 300;
    const tokenTtl = props.tokenTtlSeconds ?? 900;
    const historyDays = props.historyRetentionDays ?? 90;
    positiveInteger('presignTtlSeconds', presignTtl, 604800);
    positiveInteger('tokenTtlSeconds', tokenTtl, 86400);
    positiveInteger('historyRetentionDays', historyDays, 36500);
    const releaseKeys = [...(props.releasePublicKeys ?? [])];
    try {
      trustedKeysFromPems(releaseKeys);
    } catch (err) {
      throw new Error(
        `OtaStack: releasePublicKeys must be PEM (SPKI) ECDSA P-256 public keys: ${(err as Error).message}`,
      );
    }
    const destroy = props.devMode ?? false;
    const logRemovalPolicy = destroy ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    this.storage = new FirmwareStorage(this, 'FirmwareStorage', {
      destroyOnRemoval: destroy,
      noncurrentVersionRetentionDays: props.firmwareNoncurrentVersionRetentionDays,
    });
    this.data = new DataTables(this, 'Data', { destroyOnRemoval: destroy });
    this.signingKey = new SigningKey(this, 'SigningKey');
    this.fleet = new FleetIdentity(this, 'FleetIdentity', { destroyOnRemoval: destroy });

    const functions = new Map<FunctionName, OtaFunction>();
    for (const name of FUNCTIONS) {
      const fn = new OtaFunction(this, `${pascal(name)}Function`, {
        entry: join(PROJECT_ROOT, 'lambdas', name, 'handler.ts'),
        depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
        serviceName: name,
        logRetention: props.functionLogRetention,
        logRemovalPolicy,
        reservedConcurrentExecutions: props.reservedConcurrentExecutions,
        environment: {
          [ENV.releasePublicKeys]: JSON.stringify(releaseKeys),
          [ENV.presignTtlSeconds]: String(presignTtl),
          [ENV.tokenTtlSeconds]: String(tokenTtl),
          [ENV.historyRetentionDays]: String(historyDays),
        },
      });
      functions.set(name, fn);
    }
    this.functions = functions;
    this.grantLeastPrivilege();

    this.api = new VehicleApi(this, 'Api', {
      handlers: Object.fromEntries([...functions].map(([name, fn]) => [name, fn.function])),
      throttlingRateLimit: props.apiThrottlingRateLimit,
      throttlingBurstLimit: props.apiThrottlingBurstLimit,
      webAclArn: props.webAclArn,
      createCloudWatchRole: props.createApiGatewayCloudWatchRole,
      logRemovalPolicy,
    });

    new CfnOutput(this, 'ApiUrl', { value: this.api.url, description: 'Base URL of the HTTPS API' });
    new CfnOutput(this, 'FirmwareBucketName', { value: this.storage.bucket.bucketName });
    new CfnOutput(this, 'IotPolicyName', { value: this.fleet.policyName });
    new CfnOutput(this, 'IotThingTypeName', { value: this.fleet.thingTypeName });
    new CfnOutput(this, 'SigningKeyArn', { value: this.signingKey.key.keyArn });
    if (releaseKeys.length === 0) {
      const warning =
        'No release public keys configured (context releasePublicKeysFile): the backend will refuse every release.';
      Annotations.of(this).addWarningV2('fleet-ota:no-release-keys', warning);
      new CfnOutput(this, 'ReleaseKeysWarning', { value: warning });
    }
  }

  /** The one place that decides what each function may do. */
  private grantLeastPrivilege(): void {
    const fn = (name: FunctionName) => this.functions.get(name)!;

    // auth-api: challenges and tokens.
    const auth = fn('auth-api');
    this.data.bindReadWrite(auth, 'vehicles');
    this.signingKey.grantSign(auth);
    // Tokens carry the signer's key id, derived from the public key (lambdas/core/vehicle-auth.ts).
    this.signingKey.grantVerify(auth);

    // vehicle-api: offers (signed assignments, presigned downloads) and status reports.
    const vehicle = fn('vehicle-api');
    this.data.bindRead(vehicle, 'releases');
    this.data.bindReadWrite(vehicle, 'vehicles');
    this.data.bindReadWrite(vehicle, 'updates');
    this.data.bindReadWrite(vehicle, 'history');
    this.storage.grantPresignDownload(vehicle);
    this.signingKey.grantVerify(vehicle);
    // Every offer carries a per-vehicle assignment signed with the backend key (lambdas/core/assignment.ts).
    this.signingKey.grantSign(vehicle);

    // operator-api: releases and vehicle registration.
    const operator = fn('operator-api');
    this.data.bindReadWrite(operator, 'releases');
    this.data.bindReadWrite(operator, 'vehicles');
    this.data.bindRead(operator, 'updates');
    this.data.bindRead(operator, 'history');
    this.storage.grantUpload(operator);
    this.fleet.bindRegistration(operator);
    // No signing-key access: operator routes neither sign nor verify backend signatures.
  }
}

function positiveInteger(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new Error(`OtaStack: ${name} must be a whole number from 1 to ${max}, got ${value}`);
  }
}

function pascal(name: string): string {
  return name
    .split('-')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
}
