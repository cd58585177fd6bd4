import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { ENV } from '../lambdas/core/env.js';
import type { IBindableFunction } from './bindable.js';

export interface SigningKeyProps {
  /**
   * Alias of the key (must start with alias/).
   * @default 'alias/<stack name>/backend-signing'
   */
  readonly aliasName?: string;
  /**
   * Waiting period before a scheduled key deletion completes (7-30 days).
   * @default 30
   */
  readonly pendingWindowDays?: number;
  /**
   * What the key signs, for its description.
   * @default 'update assignments'
   */
  readonly purpose?: string;
  /**
   * Environment variable that tells a granted function the key's ARN.
   * @default ENV.signingKeyArn (SIGNING_KEY_ARN)
   */
  readonly envVar?: string;
}

/**
 * A backend online signing key: a KMS asymmetric ECC_NIST_P256 key for SIGN_VERIFY. The stack has two: one signs
 * per-vehicle update assignments, the other vehicle tokens, so that the function vehicles reach without a token
 * (auth-api) holds no key that could sign an assignment. The private keys never leave KMS. It is always retained: deleting it would make
 * every outstanding token and assignment unverifiable and cannot be undone. (Automatic rotation does not exist for
 * asymmetric keys; rotating means a new key and a trust-store update on vehicles.)
 */
export class SigningKey extends Construct {
  readonly key: kms.Key;
  readonly alias: kms.Alias;
  private readonly envVar: string;

  constructor(scope: Construct, id: string, props: SigningKeyProps = {}) {
    super(scope, id);
    const aliasName = props.aliasName ?? `alias/${Stack.of(this).stackName}/backend-signing`;
    if (!aliasName.startsWith('alias/') || aliasName.startsWith('alias/aws/')) {
      throw new Error(`SigningKey: aliasName must start with alias/ and not alias/aws/, got ${aliasName}`);
    }
    const pendingWindowDays = props.pendingWindowDays ?? 30;
    if (!Number.isInteger(pendingWindowDays) || pendingWindowDays < 7 || pendingWindowDays > 30) {
      throw new Error(`SigningKey: pendingWindowDays must be 7-30, got ${pendingWindowDays}`);
    }
    this.key = new kms.Key(this, 'Key', {
      description: `Fleet OTA backend signing key (${props.purpose ?? 'update assignments'})`,
      keySpec: kms.KeySpec.ECC_NIST_P256,
      keyUsage: kms.KeyUsage.SIGN_VERIFY,
      enableKeyRotation: false,
      removalPolicy: RemovalPolicy.RETAIN,
      pendingWindow: Duration.days(pendingWindowDays),
    });
    this.alias = this.key.addAlias(aliasName);
    this.envVar = props.envVar ?? ENV.signingKeyArn;
  }

  /** Allows kms:Sign (nothing else) and sets the key's environment variable. */
  grantSign(fn: IBindableFunction): void {
    this.key.grant(fn, 'kms:Sign');
    fn.addEnvironment(this.envVar, this.key.keyArn);
  }

  /** Allows kms:GetPublicKey (verification happens locally with the public key) and sets its variable. */
  grantVerify(fn: IBindableFunction): void {
    this.key.grant(fn, 'kms:GetPublicKey');
    fn.addEnvironment(this.envVar, this.key.keyArn);
  }
}
