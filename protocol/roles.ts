/**
 * Operator roles. Each operator route in ROUTES names the roles allowed to call it; the CDK stack turns that into
 * one IAM role per operator role (execute-api:Invoke on exactly those routes), and the local gateway enforces the
 * same lists for its local accounts. The role of a caller is read back from the assumed-role ARN API Gateway
 * reports, whose role name ends in `-ota-<role>` (operatorRoleName), so the audit log can say who acted as what.
 */
export const OPERATOR_ROLES = ['viewer', 'operator', 'release-manager', 'admin'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

/** Read-only routes: every role. */
export const ANY_ROLE: readonly OperatorRole[] = OPERATOR_ROLES;
/** Releases and the vehicle registry (registration, revocation). */
export const RELEASE_ROLES: readonly OperatorRole[] = ['release-manager', 'admin'];
/** Campaigns: create, start, pause, resume, cancel. */
export const CAMPAIGN_ROLES: readonly OperatorRole[] = ['operator', 'admin'];

export function isOperatorRole(value: unknown): value is OperatorRole {
  return typeof value === 'string' && (OPERATOR_ROLES as readonly string[]).includes(value);
}

/** The IAM role name of an operator role; `prefix` is the stack name on AWS, `fleet-ota-local` locally. */
export function operatorRoleName(prefix: string, role: OperatorRole): string {
  return `${prefix}-ota-${role}`;
}

export interface OperatorPrincipal {
  /** Who: the local account, the Cognito user (sub), or the IAM principal's ARN. */
  readonly actor: string;
  /** The operator role, or `iam` for a principal outside the four roles (a user with the stack's OperatorPolicy). */
  readonly role: OperatorRole | 'iam';
}

const ASSUMED_ROLE =
  /^arn:aws[a-z-]*:sts::\d{12}:assumed-role\/[A-Za-z0-9+=,.@_-]*-ota-(viewer|operator|release-manager|admin)\/([A-Za-z0-9+=,.@_-]+)$/;
const COGNITO_SUB = /:CognitoSignIn:([0-9a-f-]{36})$/;

/**
 * Who called, from API Gateway's request identity: userArn of the IAM caller, and for Cognito identity pool
 * credentials the user pool sign-in (`...:CognitoSignIn:<sub>`), which names the person where the session name
 * (`CognitoIdentityCredentials`) would not.
 */
export function principalOf(identity: {
  readonly userArn?: string | null;
  readonly cognitoAuthenticationProvider?: string | null;
}): OperatorPrincipal | undefined {
  const arn = identity.userArn ?? '';
  if (arn === '') return undefined;
  const match = ASSUMED_ROLE.exec(arn);
  const sub = COGNITO_SUB.exec(identity.cognitoAuthenticationProvider ?? '')?.[1];
  if (!match) return { actor: arn, role: 'iam' };
  return { actor: sub ? `cognito:${sub}` : match[2]!, role: match[1] as OperatorRole };
}
