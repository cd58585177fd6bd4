import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { FleetIdentity, IOT_DATA_ENDPOINT_ENV } from '../../lib/fleet-identity.js';
import {
  ALL_FUNCTIONS,
  allActions,
  envTarget,
  functionEnv,
  functionStatements,
  newStack,
  otaTemplate,
  referencedIds,
  resources,
  roleStatements,
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
/** The stack's topic rule (lib/fleet-ingest.ts): the one name the policy's Basic Ingest topics may carry. */
const RULE = 'Ota_vehicle_messages';

describe('FleetIdentity', { timeout: 300_000 }, () => {
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
          // The seed topics, and the same through Basic Ingest to the stack's own rule: only its own VIN either way.
          Resource: [
            iotArn(`topic/vehicle/updates/${THING}/progress`),
            iotArn(`topic/vehicle/updates/${THING}/status`),
            iotArn(`topic/$aws/rules/${RULE}/vehicle/updates/${THING}/progress`),
            iotArn(`topic/$aws/rules/${RULE}/vehicle/updates/${THING}/status`),
          ],
        },
      ],
    });
  });

  it('names in its Basic Ingest topics the topic rule the stack creates, and outputs that name', () => {
    const rules = Object.values(template.findResources('AWS::IoT::TopicRule'));
    assert.deepEqual(
      rules.map((r) => r.Properties.RuleName),
      [RULE],
    );
    assert.equal(template.findOutputs('IngestRuleName').IngestRuleName?.Value, RULE);
  });

  it('gives the registry function its thing group and thing type names, and no function the policy name', () => {
    const groupId = Object.keys(template.findResources('AWS::IoT::ThingGroup'))[0];
    const typeId = Object.keys(template.findResources('AWS::IoT::ThingType'))[0];
    assert.equal(envTarget(template, 'registry-api', 'IOT_THING_GROUP'), groupId);
    assert.equal(envTarget(template, 'registry-api', 'IOT_THING_TYPE'), typeId);
    for (const fn of ALL_FUNCTIONS) {
      assert.equal(functionEnv(template, fn).IOT_POLICY_NAME, undefined, fn);
      if (fn !== 'registry-api') assert.equal(functionEnv(template, fn).IOT_THING_GROUP, undefined, fn);
    }
  });

  it('attaches the vehicle policy to the static vehicles thing group at deploy time, with rights on that group only (issue 18 #9)', () => {
    const groups = Object.entries(template.findResources('AWS::IoT::ThingGroup'));
    assert.equal(groups.length, 1);
    const [groupId] = groups[0]!;
    assert.equal(groups[0]![1].Properties.QueryString, undefined, 'a static group, not a dynamic one');
    const policyId = Object.keys(template.findResources('AWS::IoT::Policy'))[0]!;
    const attachments = Object.entries(template.findResources('Custom::IotThingGroupPolicy'));
    assert.equal(attachments.length, 1);
    const [, attachment] = attachments[0]!;
    const call = (phase: string) => JSON.stringify(attachment.Properties[phase]);
    for (const [phase, action] of [
      ['Create', 'AttachPolicyCommand'],
      ['Update', 'AttachPolicyCommand'],
      ['Delete', 'DetachPolicyCommand'],
    ] as const) {
      const text = call(phase);
      assert.ok(text.includes(`\\"action\\":\\"${action}\\"`), `${phase}: ${action}`);
      assert.ok(text.includes(`{"Ref":"${policyId}"}`), `${phase}: the vehicle policy`);
      assert.ok(text.includes(`{"Fn::GetAtt":["${groupId}","Arn"]}`), `${phase}: targets the group`);
    }
    // The deploy-time call may attach or detach on that group's ARN and nothing else.
    const attachStatements = Object.values(resources(template))
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .flatMap(
        (r) =>
          (r.Properties!.PolicyDocument as { Statement: { Action: string | string[]; Resource: unknown }[] })
            .Statement,
      )
      .filter((st) => [st.Action].flat().some((a) => a === 'iot:AttachPolicy' || a === 'iot:DetachPolicy'));
    assert.deepEqual(
      attachStatements.map((st) => st.Resource),
      [{ 'Fn::GetAtt': [groupId, 'Arn'] }],
    );
  });

  it('no policy anywhere may attach IoT policies to certificates (issue 18 #9)', () => {
    for (const [id, r] of Object.entries(resources(template))) {
      if (r.Type !== 'AWS::IAM::Policy' && r.Type !== 'AWS::IAM::Role') continue;
      const text = JSON.stringify(r.Properties);
      if (!text.includes('iot:AttachPolicy') && !text.includes('iot:AttachPrincipalPolicy')) continue;
      assert.ok(!text.includes(':cert/'), `${id} may attach a policy to a certificate`);
      assert.ok(!text.includes('iot:AttachPrincipalPolicy'), `${id}: legacy AttachPrincipalPolicy`);
    }
    for (const fn of ALL_FUNCTIONS) {
      assert.ok(!allActions(template, fn).includes('iot:AttachPolicy'), fn);
    }
  });

  it('grants the registry function exactly the registration calls, scoped to things, certificates, the type and the group', () => {
    const iot = functionStatements(template, 'registry-api').filter((s) =>
      s.actions.some((a) => a.startsWith('iot:')),
    );
    const typeId = Object.keys(template.findResources('AWS::IoT::ThingType'))[0];
    const groupId = Object.keys(template.findResources('AWS::IoT::ThingGroup'))[0];
    assert.deepEqual(
      iot.map((s) => ({ actions: [...s.actions].sort(), resources: s.resources })),
      [
        { actions: ['iot:CreateCertificateFromCsr'], resources: ['*'] },
        {
          actions: ['iot:CreateThing', 'iot:DescribeThing'],
          resources: [iotArn('thing/*'), { 'Fn::GetAtt': [typeId, 'Arn'] }],
        },
        { actions: ['iot:AttachThingPrincipal'], resources: [iotArn('thing/*'), iotArn('cert/*')] },
        {
          actions: ['iot:AddThingToThingGroup'],
          resources: [{ 'Fn::GetAtt': [groupId, 'Arn'] }, iotArn('thing/*')],
        },
        { actions: ['iot:UpdateCertificate'], resources: [iotArn('cert/*')] },
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

  it('gives no other function any IoT permission, except publishing offers to the campaign tick', () => {
    for (const fn of ALL_FUNCTIONS.filter((f) => f !== 'registry-api')) {
      assert.deepEqual(
        allActions(template, fn).filter((a) => a.startsWith('iot:')),
        fn === 'campaign-tick' ? ['iot:Publish'] : [],
        fn,
      );
    }
  });

  it('looks up the ATS data endpoint at deploy time with iot:DescribeEndpoint and nothing else', () => {
    const lookups = Object.entries(template.findResources('Custom::IotDataEndpoint'));
    assert.equal(lookups.length, 1);
    const [, lookup] = lookups[0]!;
    for (const phase of ['Create', 'Update']) {
      const call = JSON.parse(lookup.Properties[phase] as string) as Record<string, unknown>;
      assert.equal(call.service, '@aws-sdk/client-iot', phase);
      assert.equal(call.action, 'DescribeEndpointCommand', phase);
      assert.deepEqual(call.parameters, { endpointType: 'iot:Data-ATS' }, phase);
      assert.deepEqual(call.outputPaths, ['endpointAddress'], phase);
    }
    assert.equal(lookup.Properties.InstallLatestAwsSdk, false, 'no npm download at deploy time');
    // The provider runs with a role of its own: the lookup call, the group's policy attachment, and writing to its
    // own log group.
    const provider = resources(template)[referencedIds(lookup.Properties.ServiceToken)[0]!]!;
    const roleId = referencedIds(provider.Properties!.Role)[0]!;
    const role = resources(template)[roleId]!;
    assert.equal(role.Properties!.ManagedPolicyArns, undefined, 'no AWSLambdaBasicExecutionRole');
    const logGroupId = referencedIds(provider.Properties!.LoggingConfig)[0]!;
    assert.equal(resources(template)[logGroupId]!.Properties!.RetentionInDays, 90);
    const statements = roleStatements(template, roleId)
      .map((s) => ({ Effect: s.Effect, actions: s.actions, resources: s.resources }))
      .sort((a, b) => a.actions[0]!.localeCompare(b.actions[0]!));
    const groupId = Object.keys(template.findResources('AWS::IoT::ThingGroup'))[0];
    assert.deepEqual(statements, [
      {
        Effect: 'Allow',
        actions: ['iot:AttachPolicy', 'iot:DetachPolicy'],
        resources: [{ 'Fn::GetAtt': [groupId, 'Arn'] }],
      },
      { Effect: 'Allow', actions: ['iot:DescribeEndpoint'], resources: ['*'] },
      {
        Effect: 'Allow',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [{ 'Fn::GetAtt': [logGroupId, 'Arn'] }],
      },
    ]);
  });

  it('grantPublishNotifications allows iot:Publish on issue_details topics only and sets the data endpoint', () => {
    const stack = newStack();
    const fleet = new FleetIdentity(stack, 'Fleet');
    const fn = new lambda.Function(stack, 'Notifier', {
      runtime: lambda.Runtime.NODEJS_24_X,
      handler: 'index.handler',
      code: lambda.Code.fromInline('export const handler = () => {}'),
    });
    fleet.grantPublishNotifications(fn);
    const t = Template.fromStack(stack);
    const notifier = Object.values(t.findResources('AWS::Lambda::Function')).find((f) =>
      JSON.stringify(f.Properties.Role).includes('NotifierServiceRole'),
    )!;
    const roleId = referencedIds(notifier.Properties.Role)[0]!;
    assert.deepEqual(
      roleStatements(t, roleId).map((s) => ({
        Effect: s.Effect,
        actions: s.actions,
        resources: s.resources,
      })),
      [
        {
          Effect: 'Allow',
          actions: ['iot:Publish'],
          resources: [iotArn('topic/vehicle/updates/*/issue_details')],
        },
      ],
    );
    const lookupId = Object.keys(t.findResources('Custom::IotDataEndpoint'))[0]!;
    assert.deepEqual(notifier.Properties.Environment.Variables, {
      [IOT_DATA_ENDPOINT_ENV]: {
        'Fn::Join': ['', ['https://', { 'Fn::GetAtt': [lookupId, 'endpointAddress'] }]],
      },
    });
    assert.equal(IOT_DATA_ENDPOINT_ENV, 'AWS_ENDPOINT_URL_IOT_DATA_PLANE');
  });

  it('grants notification publishing to the campaign tick only, on issue_details topics, with the endpoint', () => {
    for (const fn of ALL_FUNCTIONS.filter((f) => f !== 'campaign-tick')) {
      assert.equal(functionEnv(template, fn)[IOT_DATA_ENDPOINT_ENV], undefined, fn);
      assert.ok(!allActions(template, fn).includes('iot:Publish'), fn);
    }
    const publish = functionStatements(template, 'campaign-tick').filter((s) =>
      s.actions.includes('iot:Publish'),
    );
    assert.deepEqual(
      publish.map((s) => ({ actions: s.actions, resources: s.resources })),
      [{ actions: ['iot:Publish'], resources: [iotArn('topic/vehicle/updates/*/issue_details')] }],
    );
    const lookupId = Object.keys(template.findResources('Custom::IotDataEndpoint'))[0]!;
    assert.deepEqual(functionEnv(template, 'campaign-tick')[IOT_DATA_ENDPOINT_ENV], {
      'Fn::Join': ['', ['https://', { 'Fn::GetAtt': [lookupId, 'endpointAddress'] }]],
    });
  });
});
