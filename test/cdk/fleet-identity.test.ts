import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FUNCTIONS } from '../../lambdas/core/api-schema.js';
import {
  allActions,
  envTarget,
  functionEnv,
  functionStatements,
  otaTemplate,
  resources,
} from './fixtures.js';

const template = otaTemplate();

const iotArn = (resource: string) => ({
  'Fn::Join': [
    '',
    [
      'arn:',
      { Ref: 'AWS::Partition' },
      ':iot:',
      { Ref: 'AWS::Region' },
      ':',
      { Ref: 'AWS::AccountId' },
      `:${resource}`,
    ],
  ],
});
// biome-ignore lint/suspicious/noTemplateCurlyInString: an IoT policy variable, substituted by IoT Core, not by JS
const THING = '${iot:Connection.Thing.ThingName}';

describe('FleetIdentity', () => {
  it('defines one vehicle thing type and one vehicle policy, both retained', () => {
    template.resourceCountIs('AWS::IoT::ThingType', 1);
    template.resourceCountIs('AWS::IoT::Policy', 1);
    template.hasResource('AWS::IoT::ThingType', { DeletionPolicy: 'Retain' });
    template.hasResource('AWS::IoT::Policy', { DeletionPolicy: 'Retain' });
  });

  it('lets a certificate connect only as its attached thing and use only its own topics', () => {
    const policy = Object.values(template.findResources('AWS::IoT::Policy'))[0]!;
    assert.deepEqual(policy.Properties.PolicyDocument, {
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: 'iot:Connect',
          Resource: iotArn(`client/${THING}`),
          Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
        },
        {
          Effect: 'Allow',
          Action: 'iot:Subscribe',
          Resource: iotArn(`topicfilter/vehicle/updates/${THING}/issue_details`),
        },
        {
          Effect: 'Allow',
          Action: 'iot:Receive',
          Resource: iotArn(`topic/vehicle/updates/${THING}/issue_details`),
        },
        {
          Effect: 'Allow',
          Action: 'iot:Publish',
          Resource: [
            iotArn(`topic/vehicle/updates/${THING}/progress`),
            iotArn(`topic/vehicle/updates/${THING}/status`),
          ],
        },
      ],
    });
  });

  it('gives the operator function its policy and thing type names', () => {
    const policyId = Object.keys(template.findResources('AWS::IoT::Policy'))[0];
    const typeId = Object.keys(template.findResources('AWS::IoT::ThingType'))[0];
    assert.equal(envTarget(template, 'operator-api', 'IOT_POLICY_NAME'), policyId);
    assert.equal(envTarget(template, 'operator-api', 'IOT_THING_TYPE'), typeId);
    for (const fn of FUNCTIONS.filter((f) => f !== 'operator-api')) {
      assert.equal(functionEnv(template, fn).IOT_POLICY_NAME, undefined, fn);
    }
  });

  it('grants the operator function exactly the registration calls, scoped to things, certificates and the type', () => {
    const iot = functionStatements(template, 'operator-api').filter((s) =>
      s.actions.some((a) => a.startsWith('iot:')),
    );
    const typeId = Object.keys(template.findResources('AWS::IoT::ThingType'))[0];
    assert.deepEqual(
      iot.map((s) => ({ actions: [...s.actions].sort(), resources: s.resources })),
      [
        { actions: ['iot:CreateCertificateFromCsr'], resources: ['*'] },
        {
          actions: ['iot:CreateThing', 'iot:DescribeThing'],
          resources: [iotArn('thing/*'), { 'Fn::GetAtt': [typeId, 'Arn'] }],
        },
        { actions: ['iot:AttachThingPrincipal'], resources: [iotArn('thing/*'), iotArn('cert/*')] },
        { actions: ['iot:AttachPolicy', 'iot:UpdateCertificate'], resources: [iotArn('cert/*')] },
      ],
    );
  });

  it('puts the registration grants in a policy of their own', () => {
    const registration = Object.entries(resources(template)).filter(
      ([, r]) =>
        r.Type === 'AWS::IAM::Policy' &&
        JSON.stringify(r.Properties).includes('iot:CreateCertificateFromCsr'),
    );
    assert.equal(registration.length, 1);
    const actions = (
      registration[0]![1].Properties!.PolicyDocument as { Statement: { Action: string | string[] }[] }
    ).Statement.flatMap((s) => [s.Action].flat());
    assert.ok(
      actions.every((a) => a.startsWith('iot:')),
      'nothing but IoT registration',
    );
  });

  it('gives no other function any IoT permission', () => {
    for (const fn of FUNCTIONS.filter((f) => f !== 'operator-api')) {
      assert.deepEqual(
        allActions(template, fn).filter((a) => a.startsWith('iot:')),
        [],
        fn,
      );
    }
  });
});
