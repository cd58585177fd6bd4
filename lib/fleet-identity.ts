import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { ENV } from '../lambdas/core/env.js';
import {
  BACKEND_CHANNELS,
  BASIC_INGEST_CHANNELS,
  basicIngestTopic,
  VEHICLE_CHANNELS,
  vehicleTopic,
} from '../protocol/topics.js';
import { type IBindableFunction, policyOwner } from './bindable.js';
import { acknowledge, acknowledgeWildcardResources } from './nag.js';

/** The thing name of the connected client, which is its VIN; the policy only works for a certificate's own thing. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: an IoT policy variable, substituted by IoT Core, not by JS
const THING = '${iot:Connection.Thing.ThingName}';

/**
 * Where a function finds the IoT Data Plane endpoint: the AWS SDK's own per-service endpoint variable, which
 * lambdas/adapters/aws-clients.ts (endpointFor('IOT_DATA_PLANE')) and the local cloud use as well, so the same
 * IoTDataPlaneClient code publishes on AWS and locally.
 */
export const IOT_DATA_ENDPOINT_ENV = 'AWS_ENDPOINT_URL_IOT_DATA_PLANE';

export interface FleetIdentityProps {
  /**
   * Delete the thing type and the policy when they leave the stack (development stacks only). Deleting them fails
   * while vehicles still use them.
   * @default false - retained
   */
  readonly destroyOnRemoval?: boolean;
  /**
   * The topic rule vehicles report to through IoT Basic Ingest: the policy lets a vehicle publish its own progress
   * and status to `$aws/rules/<rule>/vehicle/updates/{its VIN}/...` as well (no messaging charge per message).
   * @default none: the seed topics only
   */
  readonly ingestRuleName?: string;
}

/**
 * The IoT identity of vehicles: a thing type (one thing per VIN) and the one policy attached to every vehicle
 * certificate. The policy uses thing policy variables so a certificate can connect only as the thing it is attached
 * to (client id = thing name = VIN), subscribe to and receive only its own issue_details topic, and publish only its
 * own progress and status topics. Nothing else: no retained messages, no shadows, no jobs, no other topics.
 *
 * Also the account's ATS data endpoint (vehicles connect to it over MQTT, the backend publishes offers to it over
 * HTTPS). It is account-specific and only IoT knows it, so a custom resource asks iot:DescribeEndpoint at deploy
 * time. Its provider function gets a role of its own (no AWS managed policy) and a log group with a retention.
 */
export class FleetIdentity extends Construct {
  readonly thingType: iot.CfnThingType;
  readonly policy: iot.CfnPolicy;
  /** The static thing group every vehicle joins at registration; the vehicle policy is attached to it. */
  readonly thingGroup: iot.CfnThingGroup;
  /** Name of the vehicles thing group. */
  readonly thingGroupName: string;
  /** Name of the thing type of vehicles. */
  readonly thingTypeName: string;
  /** Name of the IoT policy every vehicle gets through the vehicles thing group. */
  readonly policyName: string;
  /** Host name of the account's IoT data endpoint (iot:Data-ATS), e.g. abc123-ats.iot.eu-west-1.amazonaws.com. */
  readonly dataEndpoint: string;

  constructor(scope: Construct, id: string, props: FleetIdentityProps = {}) {
    super(scope, id);
    const removal = props.destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    this.thingType = new iot.CfnThingType(this, 'VehicleThingType', {
      thingTypeProperties: { thingTypeDescription: 'A vehicle; the thing name is its VIN' },
    });
    this.thingType.applyRemovalPolicy(removal);
    this.thingTypeName = this.thingType.ref;

    this.policy = new iot.CfnPolicy(this, 'VehiclePolicy', {
      policyDocument: vehiclePolicyDocument(this, props.ingestRuleName),
    });
    this.policy.applyRemovalPolicy(removal);
    this.policyName = this.policy.ref;

    this.thingGroup = new iot.CfnThingGroup(this, 'VehicleGroup', {
      thingGroupProperties: {
        thingGroupDescription:
          'Every registered vehicle; carries the vehicle policy (attached at deploy time)',
      },
    });
    this.thingGroup.applyRemovalPolicy(removal);
    this.thingGroupName = this.thingGroup.ref;

    const deploy = this.deployCalls(removal);
    this.dataEndpoint = this.lookUpDataEndpoint(deploy);
    this.attachPolicyToGroup(deploy);
  }

  /**
   * The role and log group of the deploy-time IoT calls. AwsCustomResource runs every call of the stack in one
   * singleton provider function, so both calls here share one role (each adds its own policy to it).
   */
  private deployCalls(removal: RemovalPolicy): { role: iam.Role; logGroup: logs.LogGroup } {
    const logGroup = new logs.LogGroup(this, 'EndpointLookupLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: removal,
    });
    const role = new iam.Role(this, 'EndpointLookupRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'Runs the deploy-time IoT calls: the data endpoint lookup and the vehicle group policy',
    });
    logGroup.grantWrite(role);
    return { role, logGroup };
  }

  /**
   * Attaches the vehicle policy to the vehicles thing group at deploy time (and detaches it when the stack removes
   * the attachment). CloudFormation has no resource for a thing-group policy attachment
   * (AWS::IoT::PolicyPrincipalAttachment takes certificates only), so a custom resource calls iot:AttachPolicy with
   * the group as target; its policy names that one group ARN. With this, no runtime function needs
   * iot:AttachPolicy at all: registration adds the thing to the group.
   */
  private attachPolicyToGroup(deploy: { role: iam.Role; logGroup: logs.LogGroup }): void {
    const target = this.thingGroup.attrArn;
    const call = (action: 'AttachPolicyCommand' | 'DetachPolicyCommand'): cr.AwsSdkCall => ({
      service: '@aws-sdk/client-iot',
      action,
      parameters: { policyName: this.policyName, target },
      physicalResourceId: cr.PhysicalResourceId.of(`${this.policyName}@${this.thingGroupName}`),
    });
    new cr.AwsCustomResource(this, 'VehicleGroupPolicy', {
      resourceType: 'Custom::IotThingGroupPolicy',
      onCreate: call('AttachPolicyCommand'),
      onUpdate: call('AttachPolicyCommand'),
      onDelete: call('DetachPolicyCommand'),
      policy: cr.AwsCustomResourcePolicy.fromStatements([
        new iam.PolicyStatement({ actions: ['iot:AttachPolicy', 'iot:DetachPolicy'], resources: [target] }),
      ]),
      role: deploy.role,
      logGroup: deploy.logGroup,
      installLatestAwsSdk: false,
    });
  }

  /**
   * Lets a function publish update offers through the IoT Data Plane API: iot:Publish on
   * vehicle/updates/{any VIN}/issue_details and nothing else (not the vehicles' progress or status topics, which
   * the backend must never forge, nor any other topic). Sets AWS_ENDPOINT_URL_IOT_DATA_PLANE to the account's ATS
   * data endpoint.
   */
  grantPublishNotifications(fn: IBindableFunction): void {
    const topics = Stack.of(this).formatArn({
      service: 'iot',
      resource: 'topic',
      resourceName: vehicleTopic('*', 'issue_details'),
    });
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['iot:Publish'], resources: [topics] }),
    );
    fn.addEnvironment(IOT_DATA_ENDPOINT_ENV, `https://${this.dataEndpoint}`);
    acknowledgeWildcardResources(
      policyOwner(fn),
      [topics],
      'Publishing update offers: the VIN, the one variable topic level, is only known per request. The wildcard ' +
        'spans VINs in vehicle/updates/<VIN>/issue_details of this account and region, the topic every vehicle ' +
        'already receives only its own copy of through its IoT policy.',
    );
  }

  private lookUpDataEndpoint({ role, logGroup }: { role: iam.Role; logGroup: logs.LogGroup }): string {
    const describe: cr.AwsSdkCall = {
      service: '@aws-sdk/client-iot',
      action: 'DescribeEndpointCommand',
      parameters: { endpointType: 'iot:Data-ATS' },
      physicalResourceId: cr.PhysicalResourceId.fromResponse('endpointAddress'),
      outputPaths: ['endpointAddress'],
    };
    const lookup = new cr.AwsCustomResource(this, 'DataEndpoint', {
      resourceType: 'Custom::IotDataEndpoint',
      onCreate: describe,
      onUpdate: describe,
      policy: cr.AwsCustomResourcePolicy.fromStatements([
        new iam.PolicyStatement({ actions: ['iot:DescribeEndpoint'], resources: ['*'] }),
      ]),
      role,
      logGroup,
      installLatestAwsSdk: false,
    });
    acknowledge(
      lookup.node.findChild('CustomResourcePolicy'),
      'AwsSolutions-IAM5[Resource::*]',
      'iot:DescribeEndpoint supports no resource-level permissions, so it must be granted on "*". It only reads ' +
        "the account's endpoint host name, and this policy, attached to the lookup's own role, holds nothing else.",
    );
    return lookup.getResponseField('endpointAddress');
  }

  /**
   * Lets a function register vehicles: create the thing (a VIN) of the vehicle type, create a certificate from the
   * vehicle's CSR, attach the certificate to the thing, add the thing to the vehicles group (which carries the
   * vehicle policy), and revoke a certificate (the operator's revoke kill switch, and the undo when registration
   * fails halfway). No iot:AttachPolicy: the function cannot give any certificate any policy. Sets IOT_THING_GROUP
   * and IOT_THING_TYPE.
   *
   * The grants land in a policy of their own on the function's role, so the acknowledged wildcards cover exactly
   * these statements. iot:CreateCertificateFromCsr has no resource-level permissions at all; certificate ids are
   * random and known only once IoT answers, and certificates take no tags or conditions IAM could match, so
   * UpdateCertificate and AttachThingPrincipal stay on cert/* of this account and region.
   */
  bindRegistration(fn: IBindableFunction): void {
    const role = fn.grantPrincipal as Partial<iam.IRole>;
    if (typeof role.attachInlinePolicy !== 'function') {
      throw new Error('FleetIdentity.bindRegistration: the function must have an IAM role');
    }
    const stack = Stack.of(this);
    const arn = (resource: string) => stack.formatArn({ service: 'iot', resource, resourceName: '*' });
    const things = arn('thing');
    const certs = arn('cert');
    const thingType = this.thingType.attrArn;
    const group = this.thingGroup.attrArn;
    const policy = new iam.Policy(this, `Registration${fn.node.addr.slice(0, 8)}`, {
      statements: [
        new iam.PolicyStatement({ actions: ['iot:CreateCertificateFromCsr'], resources: ['*'] }),
        new iam.PolicyStatement({
          actions: ['iot:CreateThing', 'iot:DescribeThing'],
          resources: [things, thingType],
        }),
        new iam.PolicyStatement({ actions: ['iot:AttachThingPrincipal'], resources: [things, certs] }),
        // The vehicle policy comes with the group: joining it is the only way this function confers rights, and
        // only that one group (its ARN), for things (VINs).
        new iam.PolicyStatement({ actions: ['iot:AddThingToThingGroup'], resources: [group, things] }),
        // Revoke: the kill switch and the undo of a registration that lost a race; UpdateCertificate only.
        new iam.PolicyStatement({ actions: ['iot:UpdateCertificate'], resources: [certs] }),
      ],
    });
    role.attachInlinePolicy(policy);
    acknowledgeWildcardResources(
      policy,
      ['*', things, certs],
      'Vehicle registration: iot:CreateCertificateFromCsr supports no resource-level permissions ("*"); things are ' +
        'named by VINs and certificates by ids that exist only once a request arrives, so thing/* and cert/* of ' +
        'this account and region are the narrowest ARNs IAM accepts.',
    );
    fn.addEnvironment(ENV.iotThingGroup, this.thingGroupName);
    fn.addEnvironment(ENV.iotThingType, this.thingTypeName);
  }
}

/** IAM policy documents write a lone resource as a string. */
function oneOrMany(resources: string[]): string | string[] {
  return resources.length === 1 ? resources[0]! : resources;
}

/** The exact vehicle policy document: own client id, own topics, nothing else. */
function vehiclePolicyDocument(scope: Construct, ingestRuleName?: string): Record<string, unknown> {
  const stack = Stack.of(scope);
  const iotArn = (resource: string) =>
    `arn:${stack.partition}:iot:${stack.region}:${stack.account}:${resource}`;
  return {
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
        Resource: oneOrMany(BACKEND_CHANNELS.map((c) => iotArn(`topicfilter/${vehicleTopic(THING, c)}`))),
      },
      {
        Effect: 'Allow',
        Action: 'iot:Receive',
        Resource: oneOrMany(BACKEND_CHANNELS.map((c) => iotArn(`topic/${vehicleTopic(THING, c)}`))),
      },
      {
        Effect: 'Allow',
        Action: 'iot:Publish',
        Resource: oneOrMany([
          ...VEHICLE_CHANNELS.map((c) => iotArn(`topic/${vehicleTopic(THING, c)}`)),
          ...(ingestRuleName === undefined
            ? []
            : BASIC_INGEST_CHANNELS.map((c) =>
                iotArn(`topic/${basicIngestTopic(ingestRuleName, THING, c)}`),
              )),
        ]),
      },
    ],
  };
}
