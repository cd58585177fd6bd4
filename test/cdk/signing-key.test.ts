import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SigningKey } from '../../lib/signing-key.js';
import { newStack, otaTemplate } from './fixtures.js';

function fnWith(bind: (key: SigningKey, fn: lambda.Function) => void) {
  const stack = newStack();
  const key = new SigningKey(stack, 'Signing');
  const fn = new lambda.Function(stack, 'Fn', {
    runtime: lambda.Runtime.NODEJS_24_X,
    handler: 'index.handler',
    code: lambda.Code.fromInline('export const handler = () => {}'),
  });
  bind(key, fn);
  const t = Template.fromStack(stack);
  const statements = Object.values(t.findResources('AWS::IAM::Policy')).flatMap(
    (p) => p.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[],
  );
  const env = Object.values(t.findResources('AWS::Lambda::Function'))[0]!.Properties.Environment.Variables;
  const keyArn = { 'Fn::GetAtt': [Object.keys(t.findResources('AWS::KMS::Key'))[0], 'Arn'] };
  return { statements, env, keyArn };
}

describe('SigningKey', { timeout: 300_000 }, () => {
  it('two ECC_NIST_P256 SIGN_VERIFY keys, retained: assignments and tokens (issue 18 #9)', () => {
    const template = otaTemplate();
    // Two signing keys; the stack's third key is the symmetric one of the operator alerts topic.
    const signing = Object.values(template.findResources('AWS::KMS::Key')).filter(
      (k) => k.Properties.KeyUsage === 'SIGN_VERIFY',
    );
    assert.equal(signing.length, 2);
    template.hasResource('AWS::KMS::Key', {
      Properties: { KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY', PendingWindowInDays: 30 },
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
    });
  });

  it('stays retained in dev mode: outstanding signatures must remain verifiable', () => {
    otaTemplate({ devMode: true }).hasResource('AWS::KMS::Key', { DeletionPolicy: 'Retain' });
  });

  it('has an alias under the stack name', () => {
    otaTemplate().hasResourceProperties('AWS::KMS::Alias', { AliasName: 'alias/Ota/backend-signing' });
    otaTemplate().hasResourceProperties('AWS::KMS::Alias', { AliasName: 'alias/Ota/token-signing' });
  });

  it('grantSign allows kms:Sign only and sets SIGNING_KEY_ARN', () => {
    const { statements, env, keyArn } = fnWith((k, fn) => k.grantSign(fn));
    assert.deepEqual(
      statements.map((s) => s.Action),
      ['kms:Sign'],
    );
    assert.deepEqual(statements[0]!.Resource, keyArn);
    assert.deepEqual(env, { SIGNING_KEY_ARN: keyArn });
  });

  it('grantVerify allows kms:GetPublicKey only and sets SIGNING_KEY_ARN', () => {
    const { statements, env, keyArn } = fnWith((k, fn) => k.grantVerify(fn));
    assert.deepEqual(
      statements.map((s) => s.Action),
      ['kms:GetPublicKey'],
    );
    assert.deepEqual(statements[0]!.Resource, keyArn);
    assert.deepEqual(env, { SIGNING_KEY_ARN: keyArn });
  });

  it('rejects an alias outside alias/ or in the AWS namespace', () => {
    assert.throws(() => new SigningKey(newStack(), 'K', { aliasName: 'backend' }), /must start with alias\//);
    assert.throws(() => new SigningKey(newStack(), 'K', { aliasName: 'alias/aws/x' }), /alias\/aws\//);
  });
});
