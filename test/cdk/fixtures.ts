/** Shared helpers for the CDK assertions: synthesise stacks without bundling and read IAM grants per function. */
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { OtaStack, type OtaStackProps } from '../../lib/ota-stack.js';
import { FUNCTIONS, type FunctionName } from '../../protocol/routes.js';

/** Context that skips esbuild bundling: these tests look at the template, not the code. */
export const NO_BUNDLING = { 'aws:cdk:bundling-stacks': [] };

/**
 * An app for template assertions. CDK's built-in CloudFormation validation (a WASM rule engine, seconds per synth)
 * is off here; the bin/app.ts test runs it on the real app.
 */
export function newApp(): App {
  return new App({ context: NO_BUNDLING, builtinCloudFormationValidation: false });
}

/** A bare stack for testing one construct on its own. */
export function newStack(): Stack {
  return new Stack(newApp(), 'Test');
}

const cache = new Map<string, Template>();

/** Template of an OtaStack with these props, synthesised once per distinct props. */
export function otaTemplate(props: OtaStackProps = {}): Template {
  const key = JSON.stringify(props);
  let template = cache.get(key);
  if (!template) {
    const stack = new OtaStack(newApp(), 'Ota', props);
    template = Template.fromStack(stack);
    cache.set(key, template);
  }
  return template;
}

export type Resources = Record<
  string,
  { Type: string; Properties?: Record<string, unknown>; [k: string]: unknown }
>;

export function resources(template: Template): Resources {
  return template.toJSON().Resources as Resources;
}

/** Every function of the backend by service name: the API functions, MQTT ingest, the campaign tick, the jobs worker. */
export type OtaFunctionName =
  | FunctionName
  | 'ingest'
  | 'campaign-tick'
  | 'jobs-worker'
  | 'offer-worker'
  | 'audit-refusals';
export const ALL_FUNCTIONS: readonly OtaFunctionName[] = [
  ...FUNCTIONS,
  'ingest',
  'campaign-tick',
  'jobs-worker',
  'offer-worker',
  'audit-refusals',
];

/** Logical id of the backend function with this service name. */
export function functionId(template: Template, fn: OtaFunctionName): string {
  const found = Object.entries(
    template.findResources('AWS::Lambda::Function', {
      Properties: { Description: `Fleet OTA ${fn}` },
    }),
  );
  if (found.length !== 1) throw new Error(`expected one function ${fn}, found ${found.length}`);
  return found[0]![0];
}

export function functionProps(template: Template, fn: OtaFunctionName): Record<string, unknown> {
  return resources(template)[functionId(template, fn)]!.Properties!;
}

export function functionEnv(template: Template, fn: OtaFunctionName): Record<string, unknown> {
  return (functionProps(template, fn).Environment as { Variables: Record<string, unknown> }).Variables;
}

/** Logical id of the resource an environment variable of a function refers to (Ref or Fn::GetAtt). */
export function envTarget(template: Template, fn: OtaFunctionName, name: string): string {
  const value = functionEnv(template, fn)[name];
  const ids = referencedIds(value);
  if (ids.length !== 1) throw new Error(`${fn} ${name} does not reference exactly one resource`);
  return ids[0]!;
}

export function referencedIds(value: unknown): string[] {
  const ids: string[] = [];
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.Ref === 'string' && !o.Ref.startsWith('AWS::')) ids.push(o.Ref);
      if (Array.isArray(o['Fn::GetAtt'])) ids.push(String(o['Fn::GetAtt'][0]));
      Object.values(o).forEach(visit);
    }
  };
  visit(value);
  return [...new Set(ids)];
}

export interface Statement {
  readonly Effect: string;
  readonly actions: readonly string[];
  readonly resources: readonly unknown[];
  readonly Condition?: unknown;
}

function asArray<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Every IAM statement that applies to a role: inline Policies and AWS::IAM::Policy resources attached to it. */
export function roleStatements(template: Template, roleId: string): Statement[] {
  const all = resources(template);
  const docs: { Statement: Record<string, unknown>[] }[] = [];
  const role = all[roleId]!;
  for (const p of asArray(role.Properties?.Policies as { PolicyDocument: { Statement: [] } }[])) {
    docs.push(p.PolicyDocument);
  }
  for (const r of Object.values(all)) {
    if (r.Type !== 'AWS::IAM::Policy') continue;
    const roles = asArray(r.Properties!.Roles as unknown[]);
    if (roles.some((x) => referencedIds(x).includes(roleId))) {
      docs.push(r.Properties!.PolicyDocument as { Statement: Record<string, unknown>[] });
    }
  }
  return docs.flatMap((d) =>
    d.Statement.map((s) => ({
      Effect: s.Effect as string,
      actions: asArray(s.Action as string | string[]),
      resources: asArray(s.Resource),
      Condition: s.Condition,
    })),
  );
}

export function functionRoleId(template: Template, fn: OtaFunctionName): string {
  return referencedIds(functionProps(template, fn).Role)[0]!;
}

/** Every Allow statement of a function's execution role. */
export function functionStatements(template: Template, fn: OtaFunctionName): Statement[] {
  return roleStatements(template, functionRoleId(template, fn)).filter((s) => s.Effect === 'Allow');
}

/** Actions a function may perform on anything referencing the given logical id. */
export function actionsOn(template: Template, fn: OtaFunctionName, logicalId: string): string[] {
  return functionStatements(template, fn)
    .filter((s) => s.resources.some((r) => referencedIds(r).includes(logicalId)))
    .flatMap((s) => s.actions);
}

export function allActions(template: Template, fn: OtaFunctionName): string[] {
  return functionStatements(template, fn).flatMap((s) => s.actions);
}

/** The single resource of a type, e.g. the firmware bucket found by a distinguishing property. */
export function onlyId(template: Template, type: string, props?: Record<string, unknown>): string {
  const found = Object.keys(template.findResources(type, props ? { Properties: props } : undefined));
  if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
  return found[0]!;
}

/** Logical id of the resource a stack output refers to (Ref or Fn::GetAtt). */
export function outputTarget(template: Template, output: string): string {
  const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
  const ids = referencedIds(outputs[output]?.Value);
  if (ids.length !== 1) throw new Error(`output ${output} does not reference exactly one resource`);
  return ids[0]!;
}

/** The ingest dead-letter queue: the one the IoT topic rule's error action sends to. */
export function ingestQueueId(template: Template): string {
  const rule = Object.values(template.findResources('AWS::IoT::TopicRule'))[0]!;
  return referencedIds(rule.Properties.TopicRulePayload.ErrorAction.Sqs.QueueUrl)[0]!;
}

/** What an SQS event source mapping grants its function on the queue (sorted). */
export const SQS_CONSUME_ACTIONS = [
  'sqs:ChangeMessageVisibility',
  'sqs:DeleteMessage',
  'sqs:GetQueueAttributes',
  'sqs:GetQueueUrl',
  'sqs:ReceiveMessage',
];

/** The ingest queue: the one the topic rule's action sends vehicle messages to. */
export function ingestMessagesQueueId(template: Template): string {
  const rule = Object.values(template.findResources('AWS::IoT::TopicRule'))[0]!;
  return referencedIds(rule.Properties.TopicRulePayload.Actions[0].Sqs.QueueUrl)[0]!;
}

/** The campaign schedule's dead-letter queue: the one the schedule's target dead-letters to. */
export function scheduleQueueId(template: Template): string {
  const schedule = Object.values(template.findResources('AWS::Scheduler::Schedule'))[0]!;
  return referencedIds(schedule.Properties.Target.DeadLetterConfig.Arn)[0]!;
}

/** Logical id of the stack's operator alerts topic (lib/operator-alerts.ts). */
export function alertsTopicId(template: Template): string {
  const ids = Object.keys(template.findResources('AWS::SNS::Topic'));
  if (ids.length !== 1) throw new Error(`expected one SNS topic, found ${ids.length}`);
  return ids[0]!;
}
