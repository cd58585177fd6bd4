import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import * as z from 'zod';
import { REFUSAL_FILTER_PATTERN } from '../../lib/vehicle-api.js';
import { ROUTES } from '../../protocol/routes.js';
import { functionId, onlyId, otaTemplate, referencedIds, resources } from './fixtures.js';

const template = otaTemplate();
const all = resources(template);

/** Full path of an AWS::ApiGateway::Resource, rebuilt from its PathPart chain. */
function pathOf(resourceRef: unknown): string {
  if (JSON.stringify(resourceRef).includes('RootResourceId')) return '';
  const id = referencedIds(resourceRef)[0]!;
  const r = all[id]!.Properties!;
  return `${pathOf(r.ParentId)}/${r.PathPart}`;
}

const methods = Object.values(template.findResources('AWS::ApiGateway::Method')).map((m) => ({
  key: `${m.Properties.HttpMethod} ${pathOf(m.Properties.ResourceId)}`,
  props: m.Properties as Record<string, unknown>,
}));
function method(route: { method: string; resource: string }) {
  const found = methods.filter((m) => m.key === `${route.method} ${route.resource}`);
  assert.equal(found.length, 1, `one method for ${route.method} ${route.resource}`);
  return found[0]!.props;
}

const stage = Object.values(template.findResources('AWS::ApiGateway::Stage'))[0]!.Properties;

/** Replaces API Gateway $context variables with sample values, as API Gateway would, to check the JSON shape. */
function render(templateText: string): string {
  return templateText
    .replace(/\$context\.error\.messageString/g, JSON.stringify('Invalid "request" body'))
    .replace(/\$context\.[A-Za-z.]+/g, 'VALUE');
}

describe('VehicleApi', { timeout: 300_000 }, () => {
  it('has one method per route and nothing else', () => {
    assert.equal(methods.length, ROUTES.length);
    assert.deepEqual(methods.map((m) => m.key).sort(), ROUTES.map((r) => `${r.method} ${r.resource}`).sort());
  });

  for (const route of ROUTES) {
    describe(`${route.method} ${route.resource}`, () => {
      const props = method(route);

      it(
        route.auth === 'operator'
          ? 'requires IAM (SigV4) authorization'
          : 'leaves authentication to the handler',
        () => {
          assert.equal(props.AuthorizationType, route.auth === 'operator' ? 'AWS_IAM' : 'NONE');
        },
      );

      it(`proxies to the ${route.fn} function`, () => {
        const integration = props.Integration as { Type: string; Uri: unknown };
        assert.equal(integration.Type, 'AWS_PROXY');
        assert.deepEqual(referencedIds(integration.Uri), [functionId(template, route.fn)]);
      });

      it('validates the request with the API validator and requires its path parameters', () => {
        assert.deepEqual(referencedIds(props.RequestValidatorId), [
          onlyId(template, 'AWS::ApiGateway::RequestValidator'),
        ]);
        const params = [...route.resource.matchAll(/\{(\w+)\}/g)].map((m) => `method.request.path.${m[1]}`);
        assert.deepEqual(props.RequestParameters, Object.fromEntries(params.map((p) => [p, true])));
      });

      if (route.body) {
        const body = route.body;
        it('validates the JSON body against the draft-4 model of its zod schema', () => {
          const models = props.RequestModels as Record<string, unknown>;
          assert.deepEqual(Object.keys(models), ['application/json']);
          const model = all[referencedIds(models['application/json'])[0]!]!.Properties!;
          assert.equal(model.ContentType, 'application/json');
          const schema = model.Schema as Record<string, unknown>;
          // What a client may send: a field with a default is optional (io: input), as the stack's model says.
          const expected = z.toJSONSchema(body, { target: 'draft-04', io: 'input' }) as Record<
            string,
            unknown
          >;
          assert.equal(schema.$schema, 'http://json-schema.org/draft-04/schema#');
          assert.equal(schema.type, 'object');
          assert.equal(schema.additionalProperties, false);
          assert.deepEqual(schema.required, expected.required);
          assert.deepEqual(schema.properties, expected.properties);
        });
      } else {
        it('has no body model', () => {
          assert.equal(props.RequestModels, undefined);
        });
      }
    });
  }

  // Written out here rather than read from ROUTES: the campaign routes must exist even if ROUTES loses one.
  it('serves the campaign routes from the operator function with IAM (SigV4) authorization', () => {
    const operatorId = functionId(template, 'operator-api');
    const campaignRoutes = [
      'POST /campaigns',
      'GET /campaigns',
      'GET /campaigns/{campaignId}',
      'GET /campaigns/{campaignId}/vehicles',
      'GET /campaigns/{campaignId}/excluded',
      'POST /campaigns/{campaignId}/start',
      'POST /campaigns/{campaignId}/pause',
      'POST /campaigns/{campaignId}/resume',
      'POST /campaigns/{campaignId}/cancel',
      'POST /campaigns/{campaignId}/targets',
    ];
    assert.deepEqual(
      methods
        .map((m) => m.key)
        .filter((k) => k.includes(' /campaigns'))
        .sort(),
      [...campaignRoutes].sort(),
    );
    for (const key of campaignRoutes) {
      const [httpMethod, resource] = key.split(' ') as [string, string];
      const props = method({ method: httpMethod, resource });
      assert.equal(props.AuthorizationType, 'AWS_IAM', key);
      assert.deepEqual(referencedIds((props.Integration as { Uri: unknown }).Uri), [operatorId], key);
      if (resource.includes('{campaignId}')) {
        assert.deepEqual(props.RequestParameters, { 'method.request.path.campaignId': true }, key);
      }
      // Every POST has a body model (an empty object for the actions), so the gateway refuses stray fields.
      assert.equal(props.RequestModels !== undefined, httpMethod === 'POST', key);
    }
  });

  it('requires the body fields a vehicle must send for a token', () => {
    const token = method({ method: 'POST', resource: '/auth/token' });
    const model =
      all[referencedIds((token.RequestModels as Record<string, unknown>)['application/json'])[0]!]!;
    assert.deepEqual((model.Properties!.Schema as { required: string[] }).required, [
      'vin',
      'nonce',
      'signature',
    ]);
  });

  it('has one request validator that checks both body and parameters', () => {
    template.resourceCountIs('AWS::ApiGateway::RequestValidator', 1);
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', {
      ValidateRequestBody: true,
      ValidateRequestParameters: true,
    });
  });

  it('throttles the whole stage (100 rps, burst 200 by default) and logs errors without bodies', () => {
    assert.deepEqual(stage.MethodSettings, [
      {
        HttpMethod: '*',
        ResourcePath: '/*',
        ThrottlingRateLimit: 100,
        ThrottlingBurstLimit: 200,
        LoggingLevel: 'ERROR',
        DataTraceEnabled: false,
        MetricsEnabled: true,
      },
    ]);
    assert.equal(stage.TracingEnabled, true);
  });

  it('takes throttling limits from the stack props', () => {
    const t = otaTemplate({ apiThrottlingRateLimit: 10, apiThrottlingBurstLimit: 20 });
    const s = Object.values(t.findResources('AWS::ApiGateway::Stage'))[0]!.Properties;
    assert.equal(s.MethodSettings[0].ThrottlingRateLimit, 10);
    assert.equal(s.MethodSettings[0].ThrottlingBurstLimit, 20);
  });

  it('writes JSON access logs to its own log group', () => {
    const setting = stage.AccessLogSetting as { DestinationArn: unknown; Format: string };
    const groupId = referencedIds(setting.DestinationArn)[0]!;
    assert.equal(all[groupId]!.Type, 'AWS::Logs::LogGroup');
    assert.equal(all[groupId]!.Properties!.RetentionInDays, 365);
    const line = JSON.parse(render(setting.Format)) as Record<string, string>;
    for (const field of [
      'requestId',
      'httpMethod',
      'resourcePath',
      'status',
      'sourceIp',
      'userArn',
      'errorMessage',
    ]) {
      assert.ok(field in line, field);
    }
    assert.equal(line.errorMessage, 'Invalid "request" body');
    assert.ok(!setting.Format.includes('$context.path'), 'concrete paths (VINs) are not logged');
  });

  it('sends the refusals API Gateway makes itself from the access log to the audit-refusals function', () => {
    const setting = stage.AccessLogSetting as { DestinationArn: unknown; Format: string };
    const groupId = referencedIds(setting.DestinationArn)[0]!;
    const line = JSON.parse(render(setting.Format)) as Record<string, string>;
    // What lambdas/core/audit-refusals.ts reads from a line.
    for (const field of ['requestTimeEpoch', 'errorType', 'cognitoAuthenticationProvider', 'status']) {
      assert.ok(field in line, field);
    }
    const filters = Object.values(template.findResources('AWS::Logs::SubscriptionFilter'));
    assert.equal(filters.length, 1);
    const filter = filters[0]!.Properties;
    assert.deepEqual(referencedIds(filter.LogGroupName), [groupId]);
    assert.equal(filter.FilterPattern, REFUSAL_FILTER_PATTERN);
    assert.match(REFUSAL_FILTER_PATTERN, /\$\.status = "401" \|\| \$\.status = "403"/);
    assert.match(REFUSAL_FILTER_PATTERN, /\$\.errorType != "-"/);
    const fnId = functionId(template, 'audit-refusals');
    assert.deepEqual(referencedIds(filter.DestinationArn), [fnId]);
    // CloudWatch Logs may invoke it for this log group only.
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission')).filter((p) =>
      referencedIds(p.Properties.FunctionName).includes(fnId),
    );
    assert.equal(permissions.length, 1);
    const permission = permissions[0]!.Properties;
    assert.equal(permission.Action, 'lambda:InvokeFunction');
    assert.equal(permission.Principal, 'logs.amazonaws.com');
    assert.deepEqual(referencedIds(permission.SourceArn), [groupId]);
  });

  it('answers gateway errors as {"error":{"code","message"}} JSON', () => {
    const responses = Object.values(template.findResources('AWS::ApiGateway::GatewayResponse'));
    assert.deepEqual(responses.map((r) => r.Properties.ResponseType).sort(), ['DEFAULT_4XX', 'DEFAULT_5XX']);
    for (const r of responses) {
      const body = JSON.parse(render(r.Properties.ResponseTemplates['application/json'])) as {
        error: { code: string; message: string };
      };
      assert.deepEqual(Object.keys(body), ['error']);
      assert.deepEqual(Object.keys(body.error), ['code', 'message']);
    }
  });

  it('lets API Gateway invoke each function only for its own routes on the deployed stage', () => {
    const all = Object.values(template.findResources('AWS::Lambda::Permission'));
    // The only other invoke permission: the access log subscription's on audit-refusals (above). The ingest function
    // is invoked by its queue's event source mapping (fleet-ingest.test.ts), which needs none.
    assert.deepEqual(
      all
        .filter((p) => p.Properties.Principal !== 'apigateway.amazonaws.com')
        .map((p) => p.Properties.Principal)
        .sort(),
      ['logs.amazonaws.com'],
    );
    const permissions = all
      .filter((p) => p.Properties.Principal === 'apigateway.amazonaws.com')
      .map((p) => ({
        fn: referencedIds(p.Properties.FunctionName)[0],
        principal: p.Properties.Principal,
        action: p.Properties.Action,
        parts: p.Properties.SourceArn['Fn::Join'][1] as unknown[],
      }));
    assert.equal(permissions.length, ROUTES.length, 'one per method, no test-invoke permissions');
    const stageId = onlyId(template, 'AWS::ApiGateway::Stage');
    for (const route of ROUTES) {
      const suffix = `/${route.method}${route.resource.replace(/\{\w+\}/g, '*')}`;
      const matching = permissions.filter((p) => p.parts.at(-1) === suffix);
      assert.equal(matching.length, 1, suffix);
      const p = matching[0]!;
      assert.equal(p.fn, functionId(template, route.fn));
      assert.equal(p.principal, 'apigateway.amazonaws.com');
      assert.equal(p.action, 'lambda:InvokeFunction');
      assert.deepEqual(p.parts.at(-2), { Ref: stageId });
    }
  });

  it('associates its own web ACL, rate-limiting /auth/* per source address with a JSON 429, by default', () => {
    const acls = template.findResources('AWS::WAFv2::WebACL');
    assert.equal(Object.keys(acls).length, 1);
    const [aclId, acl] = Object.entries(acls)[0]!;
    const props = acl.Properties;
    assert.equal(props.Scope, 'REGIONAL');
    assert.deepEqual(props.DefaultAction, { Allow: {} });
    assert.equal(props.Rules.length, 1);
    const rule = props.Rules[0];
    assert.deepEqual(rule.Action.Block.CustomResponse, {
      ResponseCode: 429,
      CustomResponseBodyKey: 'rateLimited',
    });
    const body = JSON.parse(props.CustomResponseBodies.rateLimited.Content);
    assert.equal(body.error.code, 'rate_limited');
    const rate = rule.Statement.RateBasedStatement;
    assert.equal(rate.AggregateKeyType, 'IP');
    assert.equal(rate.Limit, 1000);
    assert.equal(rate.EvaluationWindowSec, 300);
    assert.deepEqual(rate.ScopeDownStatement.ByteMatchStatement.FieldToMatch, { UriPath: {} });
    assert.equal(rate.ScopeDownStatement.ByteMatchStatement.SearchString, '/auth/');
    assert.equal(rate.ScopeDownStatement.ByteMatchStatement.PositionalConstraint, 'CONTAINS');
    template.hasResourceProperties('AWS::WAFv2::WebACLAssociation', {
      WebACLArn: { 'Fn::GetAtt': [aclId, 'Arn'] },
    });
    const stages = template.findResources('AWS::ApiGateway::Stage');
    const association = Object.values(template.findResources('AWS::WAFv2::WebACLAssociation'))[0]!;
    assert.match(JSON.stringify(association.Properties.ResourceArn), new RegExp(Object.keys(stages)[0]!));
  });

  it('takes the /auth/* limit as a prop, and associates a given web ACL instead of its own', () => {
    otaTemplate({ authRateLimitPerFiveMinutes: 300 }).hasResourceProperties('AWS::WAFv2::WebACL', {
      Rules: [Match.objectLike({ Statement: { RateBasedStatement: Match.objectLike({ Limit: 300 }) } })],
    });
    const acl = 'arn:aws:wafv2:eu-west-1:111111111111:regional/webacl/fleet/abc';
    const withGiven = otaTemplate({ webAclArn: acl });
    withGiven.resourceCountIs('AWS::WAFv2::WebACL', 0);
    withGiven.hasResourceProperties('AWS::WAFv2::WebACLAssociation', { WebACLArn: acl });
  });

  it('creates the API Gateway CloudWatch role unless told the account has one', () => {
    template.resourceCountIs('AWS::ApiGateway::Account', 1);
    otaTemplate({ createApiGatewayCloudWatchRole: false }).resourceCountIs('AWS::ApiGateway::Account', 0);
  });
});
