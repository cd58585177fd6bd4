import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { OtaStack } from '../../lib/ota-stack.js';
import { parseReleasePublicKeys } from '../../lib/release-keys.js';
import { FUNCTIONS, ROUTES } from '../../protocol/routes.js';
import {
  alertsTopicId,
  functionEnv,
  ingestQueueId,
  NO_BUNDLING,
  newApp,
  otaTemplate,
  scheduleQueueId,
} from './fixtures.js';

const p256 = () =>
  generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    .publicKey.export({ type: 'spki', format: 'pem' })
    .toString();
const rsa = () =>
  generateKeyPairSync('rsa', { modulusLength: 2048 })
    .publicKey.export({ type: 'spki', format: 'pem' })
    .toString();

const NO_KEYS_WARNING = /refuse every release/;

describe('OtaStack', { timeout: 300_000 }, () => {
  it('exports the API URL, bucket name, IoT policy name, signing key ARN, MQTT endpoint and dead-letter queues', () => {
    const outputs = otaTemplate().toJSON().Outputs as Record<string, { Value: unknown }>;
    for (const name of [
      'ApiUrl',
      'FirmwareBucketName',
      'IotPolicyName',
      'SigningKeyArn',
      'MqttEndpoint',
      'IngestDeadLetterQueueUrl',
      'CampaignTickDeadLetterQueueUrl',
    ]) {
      assert.ok(outputs[name], name);
    }
    const lookupId = Object.keys(otaTemplate().findResources('Custom::IotDataEndpoint'))[0];
    assert.deepEqual(outputs.MqttEndpoint!.Value, { 'Fn::GetAtt': [lookupId, 'endpointAddress'] });
    assert.deepEqual(outputs.IngestDeadLetterQueueUrl!.Value, { Ref: ingestQueueId(otaTemplate()) });
    assert.deepEqual(outputs.CampaignTickDeadLetterQueueUrl!.Value, { Ref: scheduleQueueId(otaTemplate()) });
    assert.notEqual(ingestQueueId(otaTemplate()), scheduleQueueId(otaTemplate()));
    // The signing and token keys; the third encrypts the operator alerts topic (test/cdk/operator-alerts.test.ts).
    const alertsTopic = Object.values(otaTemplate().findResources('AWS::SNS::Topic'))[0]!;
    const topicKey = (alertsTopic.Properties.KmsMasterKeyId as { 'Fn::GetAtt': [string, string] })[
      'Fn::GetAtt'
    ][0];
    const keys = Object.keys(otaTemplate().findResources('AWS::KMS::Key')).filter((k) => k !== topicKey);
    assert.equal(keys.length, 2);
    assert.equal((outputs.AlertsTopicArn!.Value as { Ref: string }).Ref, alertsTopicId(otaTemplate()));
    const [signing, token] = [outputs.SigningKeyArn!.Value, outputs.TokenSigningKeyArn!.Value] as unknown as {
      'Fn::GetAtt': [string, string];
    }[];
    assert.deepEqual([signing!['Fn::GetAtt'][0], token!['Fn::GetAtt'][0]].sort(), [...keys].sort());
    assert.ok(!Object.keys(outputs).some((k) => k.startsWith('ApiEndpoint')), 'no duplicate URL output');
  });

  it('outputs what a first vehicle and its operator need: the backend key command and the operator policy', () => {
    const template = otaTemplate();
    const json = template.toJSON();
    const outputs = json.Outputs as Record<string, { Value: unknown }>;
    const keyId = Object.keys(template.findResources('AWS::KMS::Key'))[0]!;
    const command = JSON.stringify(outputs.BackendPublicKeyCommand?.Value);
    assert.match(command, /keys backend --key-id /);
    assert.ok(command.includes(`"Fn::GetAtt":["${keyId}","Arn"]`), 'names the signing key');

    const policies = template.findResources('AWS::IAM::ManagedPolicy');
    const [policyId, policy] = Object.entries(policies).find(([, p]) =>
      String(p.Properties.Description).startsWith('Fleet OTA operators'),
    )!;
    assert.deepEqual(outputs.OperatorPolicyArn?.Value, { Ref: policyId });
    const statements = policy.Properties.PolicyDocument.Statement as {
      Action: unknown;
      Resource: unknown[];
    }[];
    assert.equal(statements.length, 1);
    assert.equal(statements[0]!.Action, 'execute-api:Invoke');
    // Each resource ends in /<stage>/<METHOD>/<path>: exactly the operator routes, path parameters as *.
    const apiId = Object.keys(template.findResources('AWS::ApiGateway::RestApi'))[0]!;
    const granted = statements[0]!.Resource.map((r) => {
      const parts = (r as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
      assert.deepEqual(parts.at(-4), { Ref: apiId }, 'this API only');
      return String(parts.at(-1));
    }).sort();
    const operatorRoutes = ROUTES.filter((r) => r.auth === 'operator')
      .map((r) => `/${r.method}${r.resource.replace(/\{[^}]+\}/g, '*')}`)
      .sort();
    assert.deepEqual(granted, operatorRoutes);
    assert.ok(!granted.some((g) => /\/(auth|updates)\//.test(g)), 'no vehicle or auth route');
  });

  it('warns (annotation and output) when no release keys are configured', () => {
    const stack = new OtaStack(newApp(), 'Ota');
    Annotations.fromStack(stack).hasWarning('/Ota', Match.stringLikeRegexp('refuse every release'));
    const outputs = Template.fromStack(stack).toJSON().Outputs as Record<string, { Value: string }>;
    assert.match(outputs.ReleaseKeysWarning!.Value, NO_KEYS_WARNING);
  });

  it('passes release keys to every function as a JSON array, without a warning', () => {
    const keys = [p256(), p256()];
    const stack = new OtaStack(newApp(), 'Ota', { releasePublicKeys: keys });
    const template = Template.fromStack(stack);
    for (const fn of FUNCTIONS) {
      assert.deepEqual(JSON.parse(functionEnv(template, fn).RELEASE_PUBLIC_KEYS as string), keys, fn);
    }
    assert.equal(
      Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('refuse every release')).length,
      0,
    );
    assert.equal((template.toJSON().Outputs as Record<string, unknown>).ReleaseKeysWarning, undefined);
  });

  it('refuses release keys that the functions would refuse at cold start', () => {
    assert.throws(() => new OtaStack(newApp(), 'Ota', { releasePublicKeys: [rsa()] }), /ECDSA P-256/);
    assert.throws(
      () => new OtaStack(newApp(), 'Ota', { releasePublicKeys: ['not a key'] }),
      /releasePublicKeys/,
    );
  });

  it('refuses settings outside their valid range', () => {
    assert.throws(() => new OtaStack(newApp(), 'Ota', { presignTtlSeconds: 0 }), /presignTtlSeconds/);
    assert.throws(() => new OtaStack(newApp(), 'Ota', { presignTtlSeconds: 604801 }), /presignTtlSeconds/);
    assert.throws(() => new OtaStack(newApp(), 'Ota', { tokenTtlSeconds: 1.5 }), /tokenTtlSeconds/);
    assert.throws(() => new OtaStack(newApp(), 'Ota', { apiThrottlingBurstLimit: 0 }), /throttling/);
  });
});

describe('release key files', { timeout: 300_000 }, () => {
  it('reads a JSON array of PEM strings', () => {
    const keys = [p256()];
    assert.deepEqual(parseReleasePublicKeys(JSON.stringify(keys)), keys);
  });

  it('reads a PEM file with several keys', () => {
    const [a, b] = [p256(), p256()];
    assert.deepEqual(parseReleasePublicKeys(`# OEM keys\n${a}\n${b}`), [a, b]);
  });

  it('refuses anything else', () => {
    assert.throws(() => parseReleasePublicKeys('{"keys":[]}'), /array of PEM strings/);
    assert.throws(() => parseReleasePublicKeys('hello'), /PUBLIC KEY/);
  });
});

describe('bin/app.ts', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'ota-app-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('synthesises the app with the release keys file and passes cdk-nag', async () => {
    const key = p256();
    const keysFile = join(dir, 'keys.pem');
    writeFileSync(keysFile, key);
    const out = join(dir, 'out');
    await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bin/app.ts'], {
      env: {
        ...process.env,
        CDK_OUTDIR: out,
        CDK_CONTEXT_JSON: JSON.stringify({ ...NO_BUNDLING, releasePublicKeysFile: keysFile }),
      },
    });
    const template = Template.fromJSON(JSON.parse(readFileSync(join(out, 'FleetOta.template.json'), 'utf8')));
    for (const fn of FUNCTIONS) {
      assert.deepEqual(JSON.parse(functionEnv(template, fn).RELEASE_PUBLIC_KEYS as string), [key]);
    }
    const report = JSON.parse(readFileSync(join(out, 'validation-report.json'), 'utf8')) as {
      pluginReports: { pluginName: string; conclusion: string }[];
    };
    assert.deepEqual(report.pluginReports, [], 'no plugin reported a failure');
    // The AwsSolutions pack is wired in: it wrote the acknowledgements, with reasons, into the template.
    const suppressed = Object.values(
      template.toJSON().Resources as Record<string, { Metadata?: Record<string, unknown> }>,
    ).flatMap(
      (r) =>
        (r.Metadata?.cdk_nag as { rules_to_suppress?: { id: string; reason: string }[] })
          ?.rules_to_suppress ?? [],
    );
    assert.ok(suppressed.some((r) => r.id === 'AwsSolutions-APIG4' && r.reason.length > 80));
  });
});
