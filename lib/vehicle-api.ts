import { RemovalPolicy } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as destinations from 'aws-cdk-lib/aws-logs-destinations';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { type FunctionName, ROUTES, type RouteDefinition } from '../protocol/routes.js';
import { AuthWaf } from './auth-waf.js';
import { acknowledge, acknowledgeWildcardResources } from './nag.js';
import { modelName, toApiGatewaySchema } from './request-models.js';

export interface VehicleApiProps {
  /** The function serving each FunctionName that appears in the routes. */
  readonly handlers: Readonly<Partial<Record<FunctionName, lambda.IFunction>>>;
  /**
   * The routes to build.
   * @default ROUTES (lambdas/core/api-schema.ts), shared with the handlers, the local gateway and the OpenAPI file
   */
  readonly routes?: readonly RouteDefinition[];
  /**
   * Stage name (the first path segment of the URL).
   * @default 'v1'
   */
  readonly stageName?: string;
  /**
   * Steady-state request rate limit of the stage, requests per second, across all clients.
   * @default 100
   */
  readonly throttlingRateLimit?: number;
  /**
   * Burst capacity of the stage, requests.
   * @default 200
   */
  readonly throttlingBurstLimit?: number;
  /**
   * Retention of the access log group.
   * @default logs.RetentionDays.ONE_YEAR
   */
  readonly accessLogRetention?: logs.RetentionDays;
  /**
   * What happens to the access log group when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  /**
   * ARN of an existing AWS WAFv2 web ACL (REGIONAL scope) to associate with the stage instead of the API's own,
   * e.g. one managed centrally by Firewall Manager. It should carry a rate rule on /auth/* like AuthWaf's.
   * @default - the API's own web ACL (AuthWaf): a per-address rate rule on /auth/*
   */
  readonly webAclArn?: string;
  /**
   * Requests to /auth/* one source address may make in 5 minutes (the API's own web ACL only).
   * @default 1000
   */
  readonly authRateLimitPerFiveMinutes?: number;
  /**
   * Create the account-level IAM role that lets API Gateway write CloudWatch logs (AWS::ApiGateway::Account).
   * Access and execution logging need it once per account and region; turn this off when another stack or the
   * landing zone already sets it.
   * @default true
   */
  readonly createCloudWatchRole?: boolean;
}

/** The JSON error body every gateway-generated error uses, the same shape the handlers answer with. */
const GATEWAY_ERROR_BODY =
  '{"error":{"code":"$context.error.responseType","message":$context.error.messageString}}';

/**
 * The HTTPS API, built entirely from the route table: one Lambda proxy integration per route, request validation
 * (required path parameters, and the body against a draft-4 model converted from the route's zod schema), IAM
 * (SigV4) authorization on operator routes, stage-wide throttling, JSON access logs, error-level execution logs
 * without request/response data, X-Ray tracing, and gateway errors in the API's {"error":{code,message}} shape.
 *
 * Vehicle and auth routes have no API Gateway authorizer on purpose: vehicles have no AWS identity, and their
 * bearer token (an ECDSA P-256 signature by the backend KMS key, bound to the vehicle's device key and VIN) is
 * verified inside the handler, which also checks that the token's VIN matches the path.
 */
export class VehicleApi extends Construct {
  readonly api: apigw.RestApi;
  readonly accessLogGroup: logs.LogGroup;
  readonly requestValidator: apigw.RequestValidator;
  /** Every method, keyed "METHOD /resource". */
  readonly methods: ReadonlyMap<string, apigw.Method>;
  /** The API's own web ACL; undefined when an existing one (webAclArn) is associated instead. */
  readonly webAcl?: wafv2.CfnWebACL;
  /**
   * What an operator needs and nothing more: execute-api:Invoke on each operator route of this API's stage (a
   * {param} becomes *), never on vehicle or auth routes and never on another stage or API. Attach it to the
   * operators' role or group.
   */
  readonly operatorPolicy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: VehicleApiProps) {
    super(scope, id);
    const routes = props.routes ?? ROUTES;
    const rate = props.throttlingRateLimit ?? 100;
    const burst = props.throttlingBurstLimit ?? 200;
    if (!(rate > 0) || !Number.isInteger(burst) || burst < 1) {
      throw new Error(`VehicleApi: throttling limits must be positive (rate ${rate}, burst ${burst})`);
    }
    const used = new Set(routes.map((r) => r.fn));
    for (const fn of used) {
      if (!props.handlers[fn])
        throw new Error(`VehicleApi: no handler for function ${fn}, which serves routes`);
    }
    for (const fn of Object.keys(props.handlers)) {
      if (!used.has(fn as FunctionName)) throw new Error(`VehicleApi: handler ${fn} serves no route`);
    }

    this.accessLogGroup = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.accessLogRetention ?? logs.RetentionDays.ONE_YEAR,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    const createCloudWatchRole = props.createCloudWatchRole ?? true;

    this.api = new apigw.RestApi(this, 'Api', {
      description: 'Fleet OTA: vehicle updates, vehicle authentication and operator routes',
      cloudWatchRole: createCloudWatchRole,
      cloudWatchRoleRemovalPolicy: createCloudWatchRole ? RemovalPolicy.RETAIN : undefined,
      deployOptions: {
        stageName: props.stageName ?? 'v1',
        throttlingRateLimit: rate,
        throttlingBurstLimit: burst,
        tracingEnabled: true,
        metricsEnabled: true,
        loggingLevel: apigw.MethodLoggingLevel.ERROR,
        // Request and response bodies carry tokens, CSRs and presigned URLs: never copy them into logs.
        dataTraceEnabled: false,
        accessLogDestination: new apigw.LogGroupLogDestination(this.accessLogGroup),
        accessLogFormat: accessLogFormat(),
      },
    });

    // The stack exports the URL under its own name; drop RestApi's generated duplicate output.
    this.api.node.tryRemoveChild('Endpoint');

    this.requestValidator = this.api.addRequestValidator('Validator', {
      requestValidatorName: 'body-and-parameters',
      validateRequestBody: true,
      validateRequestParameters: true,
    });
    for (const type of [apigw.ResponseType.DEFAULT_4XX, apigw.ResponseType.DEFAULT_5XX]) {
      this.api.addGatewayResponse(type.responseType, {
        type,
        templates: { 'application/json': GATEWAY_ERROR_BODY },
      });
    }

    const integrations = new Map<FunctionName, apigw.LambdaIntegration>();
    const methods = new Map<string, apigw.Method>();
    for (const route of routes) {
      let integration = integrations.get(route.fn);
      if (!integration) {
        integration = new apigw.LambdaIntegration(props.handlers[route.fn]!, {
          proxy: true,
          allowTestInvoke: false,
        });
        integrations.set(route.fn, integration);
      }
      const key = `${route.method} ${route.resource}`;
      if (methods.has(key)) throw new Error(`VehicleApi: route ${key} is defined twice`);
      const method = this.api.root.resourceForPath(route.resource).addMethod(route.method, integration, {
        operationName: modelName(route.method, route.resource).replace(/Body$/, ''),
        authorizationType:
          route.auth === 'operator' ? apigw.AuthorizationType.IAM : apigw.AuthorizationType.NONE,
        requestValidator: this.requestValidator,
        requestParameters: Object.fromEntries(
          pathParameters(route.resource).map((p) => [`method.request.path.${p}`, true]),
        ),
        requestModels: route.body
          ? {
              'application/json': this.api.addModel(modelName(route.method, route.resource), {
                modelName: modelName(route.method, route.resource),
                contentType: 'application/json',
                schema: toApiGatewaySchema(route.body),
              }),
            }
          : undefined,
      });
      methods.set(key, method);
      this.acknowledgeAuthorization(method, route);
    }
    this.methods = methods;

    const stage = this.api.deploymentStage.stageName;
    const operatorArns = routes
      .filter((r) => r.auth === 'operator')
      .map((r) => this.api.arnForExecuteApi(r.method, r.resource.replace(/\{[^}]+\}/g, '*'), stage));
    this.operatorPolicy = new iam.ManagedPolicy(this, 'OperatorPolicy', {
      description: 'Fleet OTA operators: call the operator routes of the API (releases, vehicles, campaigns)',
      statements: [new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: operatorArns })],
    });
    acknowledgeWildcardResources(
      this.operatorPolicy,
      operatorArns,
      'Each resource is one operator route of this API and stage; the only wildcards stand for its path parameters ' +
        '(release id, VIN, campaign id), which an operator must be able to name.',
    );

    // Anyone who knows a VIN may call the open login routes: a web ACL limits them per source address.
    this.webAcl = props.webAclArn
      ? undefined
      : new AuthWaf(this, 'AuthWaf', { authRateLimit: props.authRateLimitPerFiveMinutes }).webAcl;
    new wafv2.CfnWebACLAssociation(this, 'WebAcl', {
      resourceArn: this.api.deploymentStage.stageArn,
      webAclArn: props.webAclArn ?? this.webAcl!.attrArn,
    });
    if (createCloudWatchRole) {
      acknowledge(
        this.api,
        'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        'The account-level role API Gateway itself assumes to deliver access and execution logs; AWS maintains this ' +
          'managed policy for exactly that purpose and only apigateway.amazonaws.com can assume the role.',
      );
    }
  }

  /** The invoke URL of the stage. */
  get url(): string {
    return this.api.url;
  }

  /**
   * Sends the refusals API Gateway makes itself (REFUSAL_FILTER_PATTERN) from the access log to `fn`, which appends
   * them to the audit table: IAM refuses those calls before any function runs, so no function could audit them.
   * Delivered within the subscription's delay (seconds), not synchronously with the answer.
   */
  auditRefusals(fn: lambda.IFunction): logs.SubscriptionFilter {
    return new logs.SubscriptionFilter(this, 'AuditRefusals', {
      logGroup: this.accessLogGroup,
      destination: new destinations.LambdaDestination(fn),
      filterPattern: logs.FilterPattern.literal(REFUSAL_FILTER_PATTERN),
      filterName: 'operator-refusals-to-audit',
    });
  }

  private acknowledgeAuthorization(method: apigw.Method, route: RouteDefinition): void {
    if (route.auth !== 'operator') {
      acknowledge(
        method,
        'AwsSolutions-APIG4',
        route.auth === 'vehicle'
          ? 'Vehicle route: vehicles have no AWS identity; the handler verifies the bearer token (ECDSA P-256, signed ' +
              "by the backend's KMS key, short-lived, bound to the vehicle's device key) and that its VIN matches the " +
              'path before touching any data.'
          : 'Vehicle authentication route: it is how a vehicle obtains a token, so it cannot require one. It only ' +
              'issues single-use challenges (capped per VIN) and exchanges a challenge signed by the device key for ' +
              'a short-lived token; the web ACL rate rule per address and the stage throttle bound abuse.',
      );
    }
    acknowledge(
      method,
      'AwsSolutions-COG4',
      route.auth === 'operator'
        ? 'Operator route: authorised with IAM (SigV4), so operator access is governed by IAM policies and ' +
            'CloudTrail rather than a separate Cognito user pool.'
        : 'Vehicles authenticate with device keys and backend-signed tokens verified in the handler; a Cognito user ' +
            'pool cannot represent a device-key identity.',
    );
  }
}

function pathParameters(resource: string): string[] {
  return [...resource.matchAll(/\{([^}+]+)\+?\}/g)].map((m) => m[1]!);
}

/**
 * The access log lines of refusals API Gateway made itself: 401/403 with a gateway error type (IAM refused the
 * SigV4 call, or it was unsigned). A 401/403 a function answered has no error type and was audited by the function.
 * The function (lambdas/audit-refusals) keeps only operator mutations, by method and resource path.
 */
export const REFUSAL_FILTER_PATTERN = '{ ($.status = "401" || $.status = "403") && $.errorType != "-" }';

/**
 * One JSON object per request: who (IAM caller on operator routes), what, outcome, timings and error causes. The
 * resource template is logged, not the concrete path, so VINs stay out of the year-long access log. Every value
 * either cannot contain a double quote or is the pre-quoted messageString, so every line stays valid JSON.
 */
function accessLogFormat(): apigw.AccessLogFormat {
  const f = apigw.AccessLogField;
  const quoted: Record<string, string> = {
    requestId: f.contextRequestId(),
    extendedRequestId: f.contextExtendedRequestId(),
    requestTime: f.contextRequestTime(),
    // Milliseconds: the audit entry of a refusal API Gateway made (auditRefusals) takes its time from here.
    requestTimeEpoch: f.contextRequestTimeEpoch(),
    httpMethod: f.contextHttpMethod(),
    resourcePath: f.contextResourcePath(),
    protocol: f.contextProtocol(),
    status: f.contextStatus(),
    responseLength: f.contextResponseLength(),
    responseLatency: f.contextResponseLatency(),
    integrationStatus: f.contextIntegrationStatus(),
    integrationLatency: f.contextIntegrationLatency(),
    errorType: f.contextErrorResponseType(),
    sourceIp: f.contextIdentitySourceIp(),
    caller: f.contextIdentityCaller(),
    userArn: f.contextIdentityUserArn(),
    // Cognito identity pool callers: names the user pool user (protocol/roles.ts principalOf); no double quotes.
    cognitoAuthenticationProvider: f.contextIdentityCognitoAuthenticationProvider(),
    xrayTraceId: f.contextXrayTraceId(),
  };
  const fields = Object.entries(quoted).map(([k, v]) => `"${k}":"${v}"`);
  fields.push(`"errorMessage":${f.contextErrorMessageString()}`);
  return apigw.AccessLogFormat.custom(`{${fields.join(',')}}`);
}
