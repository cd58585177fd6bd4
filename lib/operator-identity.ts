/**
 * Who the operators are, and what each may do. A Cognito user pool holds the operators (no self sign-up, MFA
 * available as TOTP), one group per operator role; an identity pool exchanges a signed-in user's token for the
 * temporary credentials of their group's IAM role, and each role may call exactly the routes whose `roles` name it
 * in ROUTES (execute-api:Invoke per route ARN). So IAM (SigV4) stays the one authorisation of operator routes,
 * the console signs with the role's credentials, and the local gateway enforces the same lists.
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cognito from 'aws-cdk-lib/aws-cognito';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { OPERATOR_ROLES, type OperatorRole, operatorRoleName } from '../protocol/roles.js';
import { ROUTES, type RouteDefinition } from '../protocol/routes.js';
import { acknowledge, acknowledgeWildcardResources } from './nag.js';

export interface OperatorIdentityProps {
  readonly api: apigw.RestApi;
  /** @default ROUTES */
  readonly routes?: readonly RouteDefinition[];
  /**
   * Prefix of the four IAM role names (`<prefix>-ota-<role>`), from which the functions read the caller's role.
   * @default the stack name
   */
  readonly rolePrefix?: string;
  /** What happens to the user pool when it leaves the stack. @default RemovalPolicy.RETAIN */
  readonly removalPolicy?: RemovalPolicy;
}

/** The execute-api ARNs of the routes a role may call (a {param} becomes *). */
export function routeArnsFor(
  api: apigw.RestApi,
  routes: readonly RouteDefinition[],
  role: OperatorRole,
): string[] {
  const stage = api.deploymentStage.stageName;
  return routes
    .filter((r) => r.auth === 'operator' && r.roles?.includes(role))
    .map((r) => api.arnForExecuteApi(r.method, r.resource.replace(/\{[^}]+\}/g, '*'), stage));
}

export class OperatorIdentity extends Construct {
  readonly userPool: cognito.UserPool;
  readonly consoleClient: cognito.UserPoolClient;
  readonly identityPool: cognito.CfnIdentityPool;
  readonly roles: Readonly<Record<OperatorRole, iam.Role>>;

  constructor(scope: Construct, id: string, props: OperatorIdentityProps) {
    super(scope, id);
    const routes = props.routes ?? ROUTES;
    const prefix = props.rolePrefix ?? Stack.of(this).stackName;

    this.userPool = new cognito.UserPool(this, 'Operators', {
      // Operators are invited by an administrator (AdminCreateUser), never sign themselves up.
      selfSignUpEnabled: false,
      signInAliases: { username: true, email: true },
      mfa: cognito.Mfa.OPTIONAL,
      mfaSecondFactor: { otp: true, sms: false },
      passwordPolicy: {
        minLength: 14,
        requireLowercase: true,
        requireUppercase: true,
        requireDigits: true,
        requireSymbols: true,
        tempPasswordValidity: Duration.days(3),
      },
      accountRecovery: cognito.AccountRecovery.EMAIL_ONLY,
      // Dev stacks (removalPolicy DESTROY) must be able to go away with their pool.
      deletionProtection: (props.removalPolicy ?? RemovalPolicy.RETAIN) !== RemovalPolicy.DESTROY,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    acknowledge(
      this.userPool,
      'AwsSolutions-COG2',
      'MFA is available to every operator (TOTP) and can be made mandatory by the administrator; the issue asks for ' +
        'MFA to be available, and a forced enrolment at first sign-in is a deployment choice.',
    );
    acknowledge(
      this.userPool,
      'AwsSolutions-COG8',
      'Threat protection (compromised credentials, risky sign-ins) needs the Plus feature plan, priced per user; operators are a small invited group with ' +
        'MFA available and every call they make is in the audit log. Enable it with featurePlan PLUS where wanted.',
    );

    this.consoleClient = this.userPool.addClient('Console', {
      // A browser app cannot keep a secret. USER_PASSWORD_AUTH: the console posts the password to Cognito over
      // TLS (no SRP library in the bundle); SRP stays available for other clients.
      generateSecret: false,
      authFlows: { userPassword: true, userSrp: true },
      preventUserExistenceErrors: true,
      idTokenValidity: Duration.hours(1),
      accessTokenValidity: Duration.hours(1),
      refreshTokenValidity: Duration.hours(12),
    });

    this.identityPool = new cognito.CfnIdentityPool(this, 'Identities', {
      allowUnauthenticatedIdentities: false,
      cognitoIdentityProviders: [
        {
          clientId: this.consoleClient.userPoolClientId,
          providerName: this.userPool.userPoolProviderName,
          serverSideTokenCheck: true,
        },
      ],
    });

    const roles = {} as Record<OperatorRole, iam.Role>;
    for (const role of OPERATOR_ROLES) {
      const roleName = operatorRoleName(prefix, role);
      if (roleName.length > 64)
        throw new Error(`OperatorIdentity: role name ${roleName} exceeds 64 characters`);
      const arns = routeArnsFor(props.api, routes, role);
      const r = new iam.Role(this, `Role-${role}`, {
        roleName,
        description: `Fleet OTA ${role}: the operator routes ROUTES allows the ${role} role`,
        maxSessionDuration: Duration.hours(1),
        assumedBy: new iam.FederatedPrincipal(
          'cognito-identity.amazonaws.com',
          {
            StringEquals: { 'cognito-identity.amazonaws.com:aud': this.identityPool.ref },
            'ForAnyValue:StringLike': { 'cognito-identity.amazonaws.com:amr': 'authenticated' },
          },
          'sts:AssumeRoleWithWebIdentity',
        ),
        inlinePolicies: {
          routes: new iam.PolicyDocument({
            statements: [new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: arns })],
          }),
        },
      });
      acknowledgeWildcardResources(
        r,
        arns,
        `Each resource is one operator route the ${role} role may call on this API and stage; the only wildcards ` +
          'stand for its path parameters (release id, VIN, campaign id).',
      );
      new cognito.CfnUserPoolGroup(this, `Group-${role}`, {
        userPoolId: this.userPool.userPoolId,
        groupName: role,
        description: `Fleet OTA ${role}`,
        roleArn: r.roleArn,
        // One group per operator; should a user be in several, the lowest precedence (most rights) wins.
        precedence: OPERATOR_ROLES.length - OPERATOR_ROLES.indexOf(role),
      });
      roles[role] = r;
    }
    this.roles = roles;

    new cognito.CfnIdentityPoolRoleAttachment(this, 'RoleMapping', {
      identityPoolId: this.identityPool.ref,
      roleMappings: {
        console: {
          identityProvider: `${this.userPool.userPoolProviderName}:${this.consoleClient.userPoolClientId}`,
          // The role of the user's group (the token's cognito:preferred_role); a user in no group gets nothing.
          type: 'Token',
          ambiguousRoleResolution: 'Deny',
        },
      },
    });
  }
}
