import type { IGrantable } from 'aws-cdk-lib/aws-iam';
import { Construct, type IConstruct } from 'constructs';

/**
 * What the grantX/bindX helpers need from a function: a principal to grant to and an environment to set, so a
 * permission and the variable that tells the code where to use it are always added together. Both lambda.Function
 * and OtaFunction satisfy it.
 */
export interface IBindableFunction extends IConstruct, IGrantable {
  addEnvironment(key: string, value: string): unknown;
}

/**
 * The construct that owns the grantee's identity policy, where cdk-nag reports wildcard findings: the role when it
 * is a construct in this app, otherwise the function itself.
 */
export function policyOwner(fn: IBindableFunction): IConstruct {
  return Construct.isConstruct(fn.grantPrincipal) ? fn.grantPrincipal : fn;
}
