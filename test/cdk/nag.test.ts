import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type App, type PolicyViolationBeta1, Stack, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { OtaStack, type OtaStackProps } from '../../lib/ota-stack.js';
import { newApp } from './fixtures.js';

/** Synthesises the app with the AwsSolutions plugin, as bin/app.ts does, and returns the unacknowledged findings. */
function nagFindings(app: App): PolicyViolationBeta1[] {
  const checks = new AwsSolutionsChecks(app);
  Validations.of(app).addPlugins(checks);
  try {
    quietly(() => app.synth());
  } catch (err) {
    if (!/Validation failed/.test((err as Error).message)) throw err;
  }
  return checks.validateScope(app).violations as PolicyViolationBeta1[];
}

function describeFindings(findings: PolicyViolationBeta1[]): string {
  return findings
    .map(
      (f) =>
        `${f.ruleName} at ${f.violatingResources.map((r) => (r as { constructPath?: string }).constructPath).join(', ')}`,
    )
    .join('\n');
}

/** Runs fn with CDK's validation report (printed with console.error) silenced; the tests inspect it instead. */
function quietly<T>(fn: () => T): T {
  const original = console.error;
  console.error = () => undefined;
  try {
    return fn();
  } finally {
    console.error = original;
  }
}

/** Every acknowledgement recorded in the tree: construct path, rule id and reason. */
function acknowledgements(root: IConstruct): { path: string; id: string; reason: string }[] {
  return root.node.findAll().flatMap((c) =>
    c.node.metadata
      .filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((m) =>
        Object.entries(m.data as Record<string, string>).map(([id, reason]) => ({
          path: c.node.path,
          id: id.replace(/^annotation::/i, ''),
          reason,
        })),
      ),
  );
}

const variants: [string, OtaStackProps][] = [
  ['default', {}],
  ['dev mode', { devMode: true }],
  [
    'with a web ACL and no CloudWatch role',
    {
      webAclArn: 'arn:aws:wafv2:eu-west-1:111111111111:regional/webacl/a/b',
      createApiGatewayCloudWatchRole: false,
    },
  ],
  ['with an alarm topic', { alarmTopicArn: 'arn:aws:sns:eu-west-1:111111111111:ota-alarms' }],
];

describe('cdk-nag AwsSolutions', { timeout: 300_000 }, () => {
  for (const [name, props] of variants) {
    it(`reports no unacknowledged finding for the stack (${name})`, () => {
      const app = newApp();
      new OtaStack(app, 'Ota', props);
      const findings = nagFindings(app);
      assert.equal(findings.length, 0, describeFindings(findings));
    });
  }

  it('detects a finding with this very harness (so the tests above can fail)', () => {
    const app = newApp();
    new OtaStack(app, 'Ota');
    new s3.Bucket(new Stack(app, 'Careless'), 'Open');
    const rules = nagFindings(app).map((f) => f.ruleName);
    assert.ok(rules.includes('AwsSolutions-S10'), rules.join(','));
    assert.ok(rules.includes('AwsSolutions-S1'), rules.join(','));
  });

  it('fails synthesis on an unacknowledged finding', () => {
    const app = newApp();
    new s3.Bucket(new Stack(app, 'Careless'), 'Open');
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    assert.throws(() => quietly(() => app.synth()), /Validation failed/);
  });

  it('acknowledges only what the design needs, each with a reason, and nothing stale', () => {
    const app = newApp();
    const stack = new OtaStack(app, 'Ota');
    const acks = acknowledgements(app);
    const ids = [...new Set(acks.map((a) => a.id.replace(/\[Resource::.*\]/, '[Resource]')))].sort();
    // No APIG3: the stage has a web ACL (the /auth/* rate rule) in every variant.
    assert.deepEqual(ids, [
      'AwsSolutions-APIG4',
      // The console's distribution: no geo restriction, no global web ACL, no CloudFront logs, default certificate.
      'AwsSolutions-CFR1',
      'AwsSolutions-CFR2',
      'AwsSolutions-CFR3',
      'AwsSolutions-CFR4',
      // MFA optional (available as TOTP) and no Plus feature plan: acknowledged on the operators' user pool only.
      'AwsSolutions-COG2',
      'AwsSolutions-COG4',
      'AwsSolutions-COG8',
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      'AwsSolutions-IAM5[Resource]',
      'AwsSolutions-SQS3',
    ]);
    for (const a of acks)
      assert.ok(a.reason.length >= 80, `a reviewer-grade reason for ${a.id} at ${a.path}`);
    // APIG4 (no API Gateway authorizer) is acknowledged on vehicle and auth routes only, never on operator routes.
    const apig4 = acks.filter((a) => a.id === 'AwsSolutions-APIG4').map((a) => a.path);
    // 11: the auth routes, and the vehicle routes (updates, download, status, freshness and its alert, inventory,
    // bundle).
    assert.equal(apig4.length, 11);
    assert.ok(
      apig4.every((p) => /\/(auth|updates)\//.test(p)),
      apig4.join(','),
    );
    // The bare "*" acknowledgement sits only on X-Ray tracing policies, the IoT registration policy and the IoT
    // endpoint lookup's policy.
    const star = acks.filter((a) => a.id === 'AwsSolutions-IAM5[Resource::*]').map((a) => a.path);
    assert.deepEqual(star.sort(), [
      'Ota/AuditRefusalsFunction/TracingPolicy',
      'Ota/AuthApiFunction/TracingPolicy',
      'Ota/CampaignTickFunction/TracingPolicy',
      'Ota/FleetIdentity/DataEndpoint/CustomResourcePolicy',
      `Ota/FleetIdentity/${stack.fleet.node.children.find((c) => c.node.id.startsWith('Registration'))!.node.id}`,
      'Ota/IngestFunction/TracingPolicy',
      'Ota/JobsWorkerFunction/TracingPolicy',
      'Ota/OfferWorkerFunction/TracingPolicy',
      'Ota/OperatorApiFunction/TracingPolicy',
      'Ota/RegistryApiFunction/TracingPolicy',
      'Ota/VehicleApiFunction/TracingPolicy',
    ]);
    assert.deepEqual(
      [...new Set(acks.filter((a) => /CFR/.test(a.id)).map((a) => a.path))],
      ['Ota/OperatorConsole/Distribution'],
    );
    assert.deepEqual(
      acks
        .filter((a) => /COG[28]/.test(a.id))
        .map((a) => a.path)
        .sort(),
      ['Ota/OperatorIdentity/Operators', 'Ota/OperatorIdentity/Operators'],
    );
    // SQS3 (no dead-letter queue) is acknowledged on the campaign schedule's dead-letter queue only (the jobs, offers
    // and ingest queues' are their RedrivePolicy targets, which cdk-nag recognises).
    assert.deepEqual(
      acks
        .filter((a) => a.id === 'AwsSolutions-SQS3')
        .map((a) => a.path)
        .sort(),
      ['Ota/CampaignSchedule/DeadLetterQueue'],
    );
    // Wildcard resources (IAM5) are acknowledged only on function roles, tracing policies and the IoT policies:
    // never on the schedule's role, which names the tick function and its dead-letter queue exactly.
    assert.deepEqual(
      acks.filter((a) => a.path.startsWith('Ota/CampaignSchedule/')).map((a) => a.id),
      ['AwsSolutions-SQS3'],
    );
    // The offer worker's one wildcard is the issue_details topic of any VIN; the tick has none. DynamoDB grants
    // name tables and indexes.
    assert.deepEqual(
      acks.filter((a) => a.path === 'Ota/CampaignTickFunction/Role').map((a) => a.id),
      [],
    );
    assert.deepEqual(
      acks
        .filter((a) => a.path === 'Ota/OfferWorkerFunction/Role')
        .map((a) => a.id)
        .sort(),
      [
        'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:topic/vehicle/updates/*/issue_details]',
      ],
    );
    assert.ok(
      !acks.some((a) => a.id.includes('/index/*')),
      'no index wildcard is granted, so none is acknowledged',
    );
    // Every acknowledgement suppresses a finding that would otherwise be reported.
    const unacknowledged = new Set(
      new AwsSolutionsChecks()
        .validateScope(withoutAcknowledgements(() => new OtaStack(newApp(), 'Ota')))
        .violations.flatMap((v) =>
          v.violatingResources.map((r) => `${v.ruleName}@${(r as { constructPath: string }).constructPath}`),
        ),
    );
    for (const a of acks) {
      assert.ok(
        [...unacknowledged].some((f) => f.startsWith(`${a.id}@${a.path}/`)),
        `stale acknowledgement ${a.id} at ${a.path}`,
      );
    }
  });
});

/** Builds a stack while acknowledgements are disabled, to see the raw findings. */
function withoutAcknowledgements(build: () => Stack): Stack {
  const proto = Validations.prototype as unknown as { acknowledge: (...args: unknown[]) => void };
  const original = proto.acknowledge;
  proto.acknowledge = () => undefined;
  try {
    const stack = build();
    stack.node.root.node.findAll();
    return stack;
  } finally {
    proto.acknowledge = original;
  }
}
