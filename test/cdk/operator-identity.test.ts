/**
 * Operator identities on AWS: a Cognito user pool (no self sign-up, TOTP MFA available), an identity pool whose
 * role groups map to four IAM roles, and each role's policy allowing exactly the routes ROUTES lists it for.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { OPERATOR_ROLES, type OperatorRole } from '../../protocol/roles.js';
import { ROUTES } from '../../protocol/routes.js';
import { otaTemplate, resources } from './fixtures.js';

const template = otaTemplate();
const all = resources(template);

/** "METHOD /path/*" of an execute-api ARN built by arnForExecuteApi (the stage and API are references). */
function routeOf(arn: unknown): string {
  const parts = (arn as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
  const last = parts[parts.length - 1] as string;
  const m = /^\/(GET|POST)(\/.*)$/.exec(last);
  assert.ok(m, `not a route ARN: ${JSON.stringify(arn)}`);
  return `${m[1]} ${m[2]}`;
}

function roleResource(role: OperatorRole) {
  const found = Object.entries(all).filter(
    ([, r]) => r.Type === 'AWS::IAM::Role' && r.Properties?.RoleName === `Ota-ota-${role}`,
  );
  assert.equal(found.length, 1, `one IAM role for ${role}`);
  return found[0]!;
}

/** The routes a role's policies allow, as "METHOD /path" with * for path parameters. */
function allowedRoutes(role: OperatorRole): string[] {
  const [, r] = roleResource(role);
  const policies = r.Properties!.Policies as {
    PolicyDocument: { Statement: { Effect: string; Action: string; Resource: unknown }[] };
  }[];
  const statements = policies.flatMap((p) => p.PolicyDocument.Statement);
  for (const s of statements) {
    assert.equal(s.Effect, 'Allow');
    assert.equal(s.Action, 'execute-api:Invoke', 'the roles may only call the API');
  }
  return statements
    .flatMap((s) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]))
    .map(routeOf)
    .sort();
}

const expected = (role: OperatorRole) =>
  ROUTES.filter((r) => r.auth === 'operator' && r.roles?.includes(role))
    .map((r) => `${r.method} ${r.resource.replace(/\{[^}]+\}/g, '*')}`)
    .sort();

describe('operator identities and roles', { timeout: 300_000 }, () => {
  it('user pool: invited users only, TOTP MFA available, a strong password policy', () => {
    template.hasResourceProperties('AWS::Cognito::UserPool', {
      AdminCreateUserConfig: { AllowAdminCreateUserOnly: true },
      MfaConfiguration: 'OPTIONAL',
      EnabledMfas: ['SOFTWARE_TOKEN_MFA'],
      Policies: { PasswordPolicy: Match.objectLike({ MinimumLength: 14, RequireSymbols: true }) },
    });
    template.hasResourceProperties('AWS::Cognito::UserPoolClient', {
      GenerateSecret: false,
      PreventUserExistenceErrors: 'ENABLED',
    });
    template.hasResourceProperties('AWS::Cognito::IdentityPool', { AllowUnauthenticatedIdentities: false });
  });

  it('each role group maps to its IAM role, assumable only by the identity pool for signed-in users', () => {
    const groups = Object.values(all).filter((r) => r.Type === 'AWS::Cognito::UserPoolGroup');
    assert.deepEqual(groups.map((g) => g.Properties!.GroupName).sort(), [...OPERATOR_ROLES].sort());
    for (const role of OPERATOR_ROLES) {
      const [id, r] = roleResource(role);
      const group = groups.find((g) => g.Properties!.GroupName === role)!;
      assert.deepEqual(group.Properties!.RoleArn, { 'Fn::GetAtt': [id, 'Arn'] });
      const trust = (r.Properties!.AssumeRolePolicyDocument as { Statement: Record<string, unknown>[] })
        .Statement;
      assert.equal(trust.length, 1);
      assert.equal(trust[0]!.Action, 'sts:AssumeRoleWithWebIdentity');
      assert.deepEqual(trust[0]!.Principal, { Federated: 'cognito-identity.amazonaws.com' });
      const condition = trust[0]!.Condition as Record<string, Record<string, unknown>>;
      assert.ok(condition.StringEquals!['cognito-identity.amazonaws.com:aud'], 'bound to this identity pool');
      assert.equal(
        condition['ForAnyValue:StringLike']!['cognito-identity.amazonaws.com:amr'],
        'authenticated',
      );
    }
    template.hasResourceProperties('AWS::Cognito::IdentityPoolRoleAttachment', {
      RoleMappings: { console: Match.objectLike({ Type: 'Token', AmbiguousRoleResolution: 'Deny' }) },
    });
  });

  it("each role's policy allows exactly the routes ROUTES lists it for", () => {
    for (const role of OPERATOR_ROLES) assert.deepEqual(allowedRoutes(role), expected(role), role);
  });

  it('viewer reads only; operator runs campaigns but not releases; release-manager the reverse; admin all', () => {
    const viewer = allowedRoutes('viewer');
    assert.ok(viewer.length > 0 && viewer.every((r) => r.startsWith('GET ')), 'viewer: GET routes only');
    assert.ok(viewer.includes('GET /audit'));
    const operator = allowedRoutes('operator');
    assert.ok(operator.includes('POST /campaigns'));
    assert.ok(operator.includes('POST /campaigns/*/start'));
    // The VIN-list upload's completion (asynchronous creation) is a campaign mutation like creation itself.
    assert.ok(operator.includes('POST /campaigns/*/targets'));
    assert.ok(viewer.includes('GET /campaigns/*/excluded'));
    assert.ok(!viewer.includes('POST /campaigns/*/targets'));
    assert.ok(!operator.includes('POST /releases/*/publish'));
    assert.ok(!operator.includes('POST /vehicles'));
    const releases = allowedRoutes('release-manager');
    assert.ok(releases.includes('POST /releases/*/publish'));
    assert.ok(releases.includes('POST /vehicles'));
    assert.ok(!releases.includes('POST /campaigns'));
    assert.ok(!releases.includes('POST /campaigns/*/targets'));
    assert.ok(releases.includes('POST /vehicles/*/revoke'));
    assert.ok(!operator.includes('POST /vehicles/*/revoke'));
    assert.ok(!releases.includes('POST /campaigns/*/cancel'));
    const operatorRoutes = ROUTES.filter((r) => r.auth === 'operator');
    assert.equal(allowedRoutes('admin').length, operatorRoutes.length, 'admin: every operator route');
    for (const role of OPERATOR_ROLES) {
      assert.ok(
        allowedRoutes(role).every((r) => !/ \/(auth|updates)\//.test(r)),
        `${role}: never a vehicle or auth route`,
      );
    }
  });
});
