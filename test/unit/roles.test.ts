/** Operator roles: the route table's roles, the principal read back from API Gateway's identity, audit entries. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { APIGatewayProxyEvent } from 'aws-lambda';
import { LOCAL_CLOUD_REGION, resolveConnection } from '../../cli/config.js';
import { auditEntryFor, outcomeOf, targetOf } from '../../lambdas/core/audit.js';
import { LOCAL_ROLE_PREFIX, principalArn } from '../../local/operator-accounts.js';
import { LOCAL_REGION } from '../../local/storage-emulators.js';
import { OPERATOR_ROLES, operatorRoleName, principalOf } from '../../protocol/roles.js';
import { ROUTES } from '../../protocol/routes.js';

describe('operator roles', { timeout: 60_000 }, () => {
  it('every operator route lists its roles, admin among them; other routes list none', () => {
    for (const r of ROUTES) {
      const name = `${r.method} ${r.resource}`;
      if (r.auth !== 'operator') {
        assert.equal(r.roles, undefined, name);
        continue;
      }
      assert.ok(r.roles && r.roles.length > 0, `${name} has no roles`);
      assert.ok(r.roles.includes('admin'), `${name}: admin may do everything`);
      if (r.method === 'GET')
        assert.deepEqual([...r.roles], [...OPERATOR_ROLES], `${name}: every role reads`);
      else assert.ok(!r.roles.includes('viewer'), `${name}: viewers never mutate`);
    }
  });

  it('splits mutations: releases and vehicles to release-manager, campaigns to operator', () => {
    const mutations = ROUTES.filter((r) => r.auth === 'operator' && r.method === 'POST');
    for (const r of mutations) {
      const expected = r.resource.startsWith('/campaigns') ? 'operator' : 'release-manager';
      const other = expected === 'operator' ? 'release-manager' : 'operator';
      assert.ok(r.roles!.includes(expected), `${r.resource} allows ${expected}`);
      assert.ok(!r.roles!.includes(other), `${r.resource} refuses ${other}`);
    }
  });

  it('reads the role and the person back from an assumed-role ARN and a Cognito sign-in', () => {
    const arn = `arn:aws:sts::123456789012:assumed-role/${operatorRoleName('FleetOta', 'release-manager')}/CognitoIdentityCredentials`;
    assert.deepEqual(
      principalOf({
        userArn: arn,
        cognitoAuthenticationProvider:
          'cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc,cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc:CognitoSignIn:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b',
      }),
      { actor: 'cognito:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b', role: 'release-manager' },
    );
    assert.deepEqual(principalOf({ userArn: principalArn({ name: 'viewer', role: 'viewer' }) }), {
      actor: 'viewer',
      role: 'viewer',
    });
    assert.ok(principalArn({ name: 'x', role: 'admin' }).includes(`/${LOCAL_ROLE_PREFIX}-ota-admin/`));
    // A principal outside the four roles (an IAM user with the stack's OperatorPolicy) is named by its ARN.
    assert.deepEqual(principalOf({ userArn: 'arn:aws:iam::123456789012:user/alice' }), {
      actor: 'arn:aws:iam::123456789012:user/alice',
      role: 'iam',
    });
    assert.deepEqual(
      principalOf({ userArn: 'arn:aws:sts::123456789012:assumed-role/ci-ota-superuser/x' }),
      { actor: 'arn:aws:sts::123456789012:assumed-role/ci-ota-superuser/x', role: 'iam' },
      'only the four role names map to roles',
    );
    assert.equal(principalOf({ userArn: null }), undefined);
  });

  it('builds audit entries: outcome from the status, target from the path or the created answer', () => {
    assert.equal(outcomeOf(201), 'allowed');
    assert.equal(outcomeOf(403), 'refused');
    assert.equal(outcomeOf(401), 'refused');
    assert.equal(outcomeOf(409), 'failed');
    assert.equal(outcomeOf(500), 'failed');
    assert.equal(targetOf({ campaignId: 'c-1' }, '{"campaign_id":"other"}'), 'c-1');
    assert.equal(targetOf(null, '{"release_id":"tcu-1"}'), 'tcu-1');
    assert.equal(targetOf(null, 'not json'), null);
    const entry = auditEntryFor(
      {
        httpMethod: 'POST',
        resource: '/campaigns',
        pathParameters: null,
        requestContext: {
          requestId: 'req-1',
          identity: { sourceIp: '203.0.113.9', userArn: principalArn({ name: 'ops', role: 'operator' }) },
        } as unknown as APIGatewayProxyEvent['requestContext'],
      },
      400,
      '{"campaign_id":"c-1"}',
      new Date('2030-01-02T03:04:05.000Z'),
    );
    assert.deepEqual(entry, {
      event_id: '2030-01-02T03:04:05.000Z#req-1',
      at: '2030-01-02T03:04:05.000Z',
      actor: 'ops',
      role: 'operator',
      action: 'POST /campaigns',
      target: null,
      source_ip: '203.0.113.9',
      outcome: 'failed',
      status: 400,
      request_id: 'req-1',
    });
  });

  it('the CLI signs --as <role> for the local cloud region and refuses other roles', () => {
    assert.equal(LOCAL_CLOUD_REGION, LOCAL_REGION);
    const c = resolveConnection({ values: { as: 'viewer' }, env: {}, cwd: '/w', fileExists: () => false });
    assert.deepEqual(c.credentials, {
      kind: 'local-account',
      role: 'viewer',
      file: '/w/.ota-local/operators.json',
    });
    assert.throws(
      () => resolveConnection({ values: { as: 'root' }, env: {}, cwd: '/w', fileExists: () => false }),
      /--as takes one of viewer, operator, release-manager, admin/,
    );
    assert.throws(
      () =>
        resolveConnection({
          values: { as: 'viewer', aws: true },
          env: { OTA_ENDPOINT: 'https://x.example' },
          cwd: '/w',
        }),
      /--as excludes --aws/,
    );
  });
});
