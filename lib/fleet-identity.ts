import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import { Construct } from 'constructs';
import { ENV } from '../lambdas/adapters/env.js';
import type { IBindableFunction } from './bindable.js';
import { acknowledgeWildcardResources } from './nag.js';

/** Root of every vehicle topic: vehicle/updates/{VIN}/issue_details | progress | status. */
export const VEHICLE_TOPIC_ROOT = 'vehicle/updates';
/** The thing name of the connected client, which is its VIN; the policy only works for a certificate's own thing. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: an IoT policy variable, substituted by IoT Core, not by JS
const THING = '${iot:Connection.Thing.ThingName}';

export interface FleetIdentityProps {
  /**
   * Delete the thing type and the policy when they leave the stack (development stacks only). Deleting them fails
   * while vehicles still use them.
   * @default false - retained
   */
  readonly destroyOnRemoval?: boolean;
}

/**
 * The IoT identity of vehicles: a thing type (one thing per VIN) and the one policy attached to every vehicle
 * certificate. The policy uses thing policy variables so a certificate can connect only as the thing it is attached
 * to (client id = thing name = VIN), subscribe to and receive only its own issue_details topic, and publish only its
 * own progress and status topics. Nothing else: no retained messages, no shadows, no jobs, no other topics.
 */
export class FleetIdentity extends Construct {
  readonly thingType: iot.CfnThingType;
  readonly policy: iot.CfnPolicy;
  /** Name of the thing type of vehicles. */
  readonly thingTypeName: string;
  /** Name of the IoT policy attached to every vehicle certificate. */
  readonly policyName: string;

  constructor(scope: Construct, id: string, props: FleetIdentityProps = {}) {
    super(scope, id);
    const removal = props.destroyOnRemoval ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    this.thingType = new iot.CfnThingType(this, 'VehicleThingType', {
      thingTypeProperties: { thingTypeDescription: 'A vehicle; the thing name is its VIN' },
    });
    this.thingType.applyRemovalPolicy(removal);
    this.thingTypeName = this.thingType.ref;

    this.policy = new iot.CfnPolicy(this, 'VehiclePolicy', { policyDocument: vehiclePolicyDocument(this) });
    this.policy.applyRemovalPolicy(removal);
    this.policyName = this.policy.ref;
  }

  /**
   * Lets a function register vehicles: create the thing (a VIN) of the vehicle type, create a certificate from the
   * vehicle's CSR, attach the vehicle policy to that certificate and the certificate to the thing, and revoke a
   * certificate again when registration fails halfway. Sets IOT_POLICY_NAME and IOT_THING_TYPE.
   *
   * The grants land in a policy of their own on the function's role, so the acknowledged wildcards cover exactly
   * these statements. IAM cannot narrow iot:AttachPolicy to one IoT policy (its resource is the target certificate),
   * and iot:CreateCertificateFromCsr has no resource-level permissions at all.
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
    const policy = new iam.Policy(this, `Registration${fn.node.addr.slice(0, 8)}`, {
      statements: [
        new iam.PolicyStatement({ actions: ['iot:CreateCertificateFromCsr'], resources: ['*'] }),
        new iam.PolicyStatement({
          actions: ['iot:CreateThing', 'iot:DescribeThing'],
          resources: [things, thingType],
        }),
        new iam.PolicyStatement({ actions: ['iot:AttachThingPrincipal'], resources: [things, certs] }),
        new iam.PolicyStatement({
          actions: ['iot:AttachPolicy', 'iot:UpdateCertificate'],
          resources: [certs],
        }),
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
    fn.addEnvironment(ENV.iotPolicyName, this.policyName);
    fn.addEnvironment(ENV.iotThingType, this.thingTypeName);
  }
}

/** The exact vehicle policy document: own client id, own topics, nothing else. */
function vehiclePolicyDocument(scope: Construct): Record<string, unknown> {
  const stack = Stack.of(scope);
  const iotArn = (resource: string) =>
    `arn:${stack.partition}:iot:${stack.region}:${stack.account}:${resource}`;
  const own = `${VEHICLE_TOPIC_ROOT}/${THING}`;
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: iotArn(`client/${THING}`),
        Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
      },
      { Effect: 'Allow', Action: 'iot:Subscribe', Resource: iotArn(`topicfilter/${own}/issue_details`) },
      { Effect: 'Allow', Action: 'iot:Receive', Resource: iotArn(`topic/${own}/issue_details`) },
      {
        Effect: 'Allow',
        Action: 'iot:Publish',
        Resource: [iotArn(`topic/${own}/progress`), iotArn(`topic/${own}/status`)],
      },
    ],
  };
}
