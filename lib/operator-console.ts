/**
 * The operator console on AWS: its built files in a private S3 bucket, read only by CloudFront through origin
 * access control, with security headers on every answer. The same distribution forwards /<stage>/* to the API, so
 * the console calls the API on its own origin as it does locally (no CORS); the console signs each call with SigV4
 * for the API's own host, which CloudFront forwards to without the viewer's Host header. config.json (the Cognito
 * ids, the region, the API host) is answered by a CloudFront Function, so no custom resource writes it. The built
 * files are copied in after a deploy (`npm run build:console`, `aws s3 sync dist/console s3://<ConsoleBucketName>`):
 * a CDK BucketDeployment would add a Lambda function with an AWS-managed policy and wildcard S3 grants on the CDK
 * asset bucket, for files that change only with a release of this repository.
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudfront from 'aws-cdk-lib/aws-cloudfront';
import * as origins from 'aws-cdk-lib/aws-cloudfront-origins';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge } from './nag.js';
import type { OperatorIdentity } from './operator-identity.js';

export interface OperatorConsoleProps {
  readonly api: apigw.RestApi;
  /**
   * The API's stage name, as a plain string: a reference to the stage resource would make the firmware bucket's
   * CORS rule (which names the distribution) depend on the API's deployment, which depends on the functions,
   * whose grants name the firmware bucket: a cycle.
   */
  readonly apiStageName: string;
  readonly identity: OperatorIdentity;
  /** The firmware bucket: the console uploads release images to its presigned URLs (a CORS rule is added). */
  readonly firmwareBucket: s3.Bucket;
  /** Server access logs of the console bucket go here (the firmware storage's log bucket). */
  readonly accessLogBucket: s3.IBucket;
  /** @default false: the bucket and its files are kept when the stack is deleted */
  readonly destroyOnRemoval?: boolean;
}

export class OperatorConsole extends Construct {
  readonly bucket: s3.Bucket;
  readonly distribution: cloudfront.Distribution;
  readonly url: string;

  constructor(scope: Construct, id: string, props: OperatorConsoleProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const destroy = props.destroyOnRemoval ?? false;
    this.bucket = new s3.Bucket(this, 'Files', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      serverAccessLogsBucket: props.accessLogBucket,
      serverAccessLogsPrefix: 'console/',
      ...(destroy
        ? { removalPolicy: RemovalPolicy.DESTROY, autoDeleteObjects: true }
        : { removalPolicy: RemovalPolicy.RETAIN }),
    });

    const apiHost = `${props.api.restApiId}.execute-api.${stack.region}.${stack.urlSuffix}`;
    const stage = props.apiStageName;
    // Presigned upload URLs are virtual-hosted (<bucket>.s3.<region>...). The bucket's own name cannot appear here:
    // the bucket's CORS rule names this distribution, which would then depend on the bucket and back (a cycle).
    const upload = `https://*.s3.${stack.region}.${stack.urlSuffix}`;
    const cognito = [
      `https://cognito-idp.${stack.region}.${stack.urlSuffix}`,
      `https://cognito-identity.${stack.region}.${stack.urlSuffix}`,
    ];
    const headers = new cloudfront.ResponseHeadersPolicy(this, 'SecurityHeaders', {
      comment: 'Fleet OTA console: strict CSP, no framing, HSTS',
      securityHeadersBehavior: {
        contentSecurityPolicy: {
          contentSecurityPolicy: [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            `connect-src 'self' ${upload} ${cognito.join(' ')}`,
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "object-src 'none'",
          ].join('; '),
          override: true,
        },
        contentTypeOptions: { override: true },
        frameOptions: { frameOption: cloudfront.HeadersFrameOption.DENY, override: true },
        referrerPolicy: { referrerPolicy: cloudfront.HeadersReferrerPolicy.NO_REFERRER, override: true },
        strictTransportSecurity: {
          accessControlMaxAge: Duration.days(365),
          includeSubdomains: true,
          override: true,
        },
      },
    });
    const config = JSON.stringify({
      mode: 'aws',
      region: stack.region,
      apiPath: `/${stage}`,
      apiHost,
      userPoolId: props.identity.userPool.userPoolId,
      clientId: props.identity.consoleClient.userPoolClientId,
      identityPoolId: props.identity.identityPool.ref,
    });
    const configFunction = new cloudfront.Function(this, 'Config', {
      comment: 'Answers /config.json: where the console signs in and which API it calls',
      runtime: cloudfront.FunctionRuntime.JS_2_0,
      code: cloudfront.FunctionCode.fromInline(
        `function handler(event) {
  if (event.request.uri !== '/config.json') return event.request;
  return { statusCode: 200, statusDescription: 'OK', headers: { 'content-type': { value: 'application/json' }, 'cache-control': { value: 'no-store' } }, body: ${JSON.stringify(config)} };
}`,
      ),
    });

    this.distribution = new cloudfront.Distribution(this, 'Distribution', {
      comment: 'Fleet OTA operator console',
      defaultRootObject: 'index.html',
      // No minimumProtocolVersion: it has no effect with the default certificate (CFR4 below says why).
      httpVersion: cloudfront.HttpVersion.HTTP2_AND_3,
      defaultBehavior: {
        origin: origins.S3BucketOrigin.withOriginAccessControl(this.bucket),
        viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
        responseHeadersPolicy: headers,
        functionAssociations: [
          { function: configFunction, eventType: cloudfront.FunctionEventType.VIEWER_REQUEST },
        ],
      },
      additionalBehaviors: {
        [`/${stage}/*`]: {
          origin: new origins.HttpOrigin(apiHost, {
            protocolPolicy: cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
            originSslProtocols: [cloudfront.OriginSslPolicy.TLS_V1_2],
          }),
          viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
          allowedMethods: cloudfront.AllowedMethods.ALLOW_ALL,
          // Every answer depends on who signed the request: nothing is cached, every header but Host is forwarded.
          cachePolicy: cloudfront.CachePolicy.CACHING_DISABLED,
          originRequestPolicy: cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
          responseHeadersPolicy: headers,
        },
      },
    });
    this.url = `https://${this.distribution.distributionDomainName}/`;

    props.firmwareBucket.addCorsRule({
      allowedOrigins: [`https://${this.distribution.distributionDomainName}`],
      allowedMethods: [s3.HttpMethods.PUT],
      allowedHeaders: ['content-type'],
      exposedHeaders: ['ETag'],
      maxAge: 600,
    });

    acknowledge(
      this.distribution,
      'AwsSolutions-CFR1',
      'No geo restriction: operators work from wherever the OEM does; every call is SigV4-signed by a role and audited.',
    );
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR2',
      'The console is static files and the API behind it has its own web ACL (regional, on the stage); a second, ' +
        'global web ACL on the distribution is left to the deployment.',
    );
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR3',
      'Reads of the static console are not logged by CloudFront: the bucket has server access logs, and every API ' +
        'call is in the API access log and, for mutations, in the audit table.',
    );
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR4',
      'The distribution uses the default CloudFront certificate (no custom domain is configured); with it CloudFront ' +
        'cannot enforce a minimum TLS version. Add a custom domain and certificate to set TLSv1.2_2021.',
    );
  }
}
