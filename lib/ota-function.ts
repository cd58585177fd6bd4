import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { type BundlingOptions, NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { IBindableFunction } from './bindable.js';
import { acknowledge } from './nag.js';

/**
 * The newest Node.js LTS runtime this aws-cdk-lib knows. Node 24 is the active LTS; keep this in step with
 * lambda.Runtime so cdk-nag's AwsSolutions-L1 (latest runtime) keeps passing without an acknowledgement.
 */
export const NODE_RUNTIME = lambda.Runtime.NODEJS_24_X;
/** esbuild target matching NODE_RUNTIME. */
export const NODE_TARGET = 'node24';

/**
 * ESM bundles have no `require`; a few CommonJS dependencies still call it for Node built-ins.
 */
export const CREATE_REQUIRE_BANNER =
  "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);";

/** The module standing in for the SDK's default credential chain in bundles, relative to the project root. */
export const LAMBDA_CREDENTIALS_MODULE = './lambdas/adapters/lambda-credentials.ts';

/**
 * How every function is bundled. Exported so that the bundle test and the cold-start benchmark
 * (lib/function-bundles.ts) build with exactly these options instead of a copy of them.
 */
export const OTA_BUNDLING = {
  format: OutputFormat.ESM,
  target: NODE_TARGET,
  mainFields: ['module', 'main'],
  minify: true,
  sourceMap: true,
  sourcesContent: false,
  bundleAwsSDK: true,
  banner: CREATE_REQUIRE_BANNER,
  // Lambda gives credentials in environment variables only; the SDK's whole default chain (SSO, STS, INI, IMDS
  // and the nested clients they need) is dead weight in a bundle. See lambdas/adapters/lambda-credentials.ts.
  // Resolved from the project root, the working directory CDK runs esbuild in.
  esbuildArgs: { '--alias': `@aws-sdk/credential-provider-node=${LAMBDA_CREDENTIALS_MODULE}` },
} as const satisfies BundlingOptions;

export interface OtaFunctionProps {
  /** Path of the TypeScript entry point exporting the handler. */
  readonly entry: string;
  /**
   * Exported handler name.
   * @default 'handler'
   */
  readonly handler?: string;
  /**
   * Lock file that marks the project root for bundling.
   * @default - found by walking up from the working directory
   */
  readonly depsLockFilePath?: string;
  /** Powertools service name (POWERTOOLS_SERVICE_NAME), also used in the function description. */
  readonly serviceName: string;
  /**
   * CloudWatch metrics namespace for Powertools Metrics (POWERTOOLS_METRICS_NAMESPACE).
   * @default 'FleetOta'
   */
  readonly metricsNamespace?: string;
  /**
   * Memory in MB. CPU scales with memory; signature and hash checks are CPU bound.
   * @default 512
   */
  readonly memorySize?: number;
  /**
   * Timeout. API Gateway gives up after 29 seconds, so an API function never needs more.
   * @default Duration.seconds(10)
   */
  readonly timeout?: Duration;
  /**
   * Retention of the function's own log group.
   * @default logs.RetentionDays.THREE_MONTHS
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the log group when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  /**
   * Caps concurrency so one busy route cannot starve the account of Lambda concurrency.
   * @default - no reservation (shares the account's unreserved pool)
   */
  readonly reservedConcurrentExecutions?: number;
  /**
   * Extra environment variables. Prefer the bindX/grantX helpers, which set a variable together with its permission.
   * @default - only the runtime variables set by this construct
   */
  readonly environment?: Readonly<Record<string, string>>;
}

/**
 * The one base function of the backend: arm64, the current Node.js LTS, an ESM bundle built locally by esbuild
 * (minified, source-mapped, AWS SDK bundled), active X-Ray tracing, Powertools configuration, and its own role and log
 * group. The role starts with nothing but write access to that log group (no AWSLambdaBasicExecutionRole managed
 * policy, which would allow writing to any log group); every other permission comes from a bindX/grantX helper.
 *
 * The AWS SDK is bundled rather than taken from the runtime so the deployed code runs the exact SDK versions the
 * lock file pins and the tests exercised; esbuild tree-shakes the unused clients.
 */
export class OtaFunction extends Construct implements IBindableFunction {
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly grantPrincipal: iam.IPrincipal;
  /** The TypeScript entry point bundled into the function (for tests that build it as the stack does). */
  readonly entry: string;
  readonly serviceName: string;

  constructor(scope: Construct, id: string, props: OtaFunctionProps) {
    super(scope, id);
    this.entry = props.entry;
    this.serviceName = props.serviceName;
    if (props.memorySize !== undefined && (props.memorySize < 128 || props.memorySize > 10240)) {
      throw new Error(`OtaFunction ${id}: memorySize must be 128-10240 MB, got ${props.memorySize}`);
    }
    if (props.timeout !== undefined && props.timeout.toSeconds() > 900) {
      throw new Error(`OtaFunction ${id}: timeout must be at most 15 minutes`);
    }
    if (props.reservedConcurrentExecutions !== undefined && props.reservedConcurrentExecutions < 1) {
      throw new Error(
        `OtaFunction ${id}: reservedConcurrentExecutions must be at least 1 (0 would disable it)`,
      );
    }

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention ?? logs.RetentionDays.THREE_MONTHS,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Execution role of ${props.serviceName}`,
    });
    this.logGroup.grantWrite(this.role);
    this.grantPrincipal = this.role;

    this.function = new NodejsFunction(this, 'Function', {
      entry: props.entry,
      handler: props.handler ?? 'handler',
      depsLockFilePath: props.depsLockFilePath,
      description: `Fleet OTA ${props.serviceName}`,
      runtime: NODE_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(10),
      role: this.role,
      logGroup: this.logGroup,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      environment: {
        ...props.environment,
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_SERVICE_NAME: props.serviceName,
        POWERTOOLS_METRICS_NAMESPACE: props.metricsNamespace ?? 'FleetOta',
      },
      bundling: { ...OTA_BUNDLING, mainFields: [...OTA_BUNDLING.mainFields] },
    });

    // Active tracing is set on the L1 function with its X-Ray permissions in a policy of their own, instead of
    // Tracing.ACTIVE (which puts a Resource "*" statement into the role's default policy): the cdk-nag
    // acknowledgement of that unavoidable wildcard then covers only X-Ray, and any other "*" grant still fails.
    const tracing = new iam.Policy(this, 'TracingPolicy', {
      statements: [
        new iam.PolicyStatement({
          actions: ['xray:PutTraceSegments', 'xray:PutTelemetryRecords'],
          resources: ['*'],
        }),
      ],
    });
    this.role.attachInlinePolicy(tracing);
    (this.function.node.defaultChild as lambda.CfnFunction).tracingConfig = { mode: lambda.Tracing.ACTIVE };
    this.function.node.addDependency(tracing);
    acknowledge(
      tracing,
      'AwsSolutions-IAM5[Resource::*]',
      'X-Ray active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level ' +
        'permissions, so they must be granted on "*". This policy holds nothing else.',
    );
  }

  /** Sets an environment variable on the function. */
  addEnvironment(key: string, value: string): this {
    this.function.addEnvironment(key, value);
    return this;
  }
}
