/**
 * Turns the routes' zod body schemas into API Gateway models (JSON Schema draft 4), so the gateway rejects a
 * malformed body before it costs a Lambda invocation. The handlers still validate with the same zod schemas: the
 * gateway check is a first filter, never the only one.
 */
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as z from '../protocol/zod.js';

/** JSON Schema draft 4 of a zod schema, in the shape aws-apigateway's JsonSchema expects. */
export function toApiGatewaySchema(schema: z.core.$ZodType): apigw.JsonSchema {
  const json = z.toJSONSchema(schema, {
    target: 'draft-04',
    unrepresentable: 'throw',
    io: 'input',
  }) as Record<string, unknown>;
  const text = JSON.stringify(json);
  if (text.includes('"$ref"') || text.includes('"$defs"') || text.includes('"definitions"')) {
    // API Gateway models can reference other models only by URL; keep bodies self-contained.
    throw new Error('request body schemas must not contain references');
  }
  const { $schema: _ignored, ...rest } = json;
  return { ...(rest as apigw.JsonSchema), schema: apigw.JsonSchemaVersion.DRAFT4 };
}

/** A model name API Gateway accepts (alphanumeric), derived from method and resource path. */
export function modelName(method: string, resource: string): string {
  const words = `${method.toLowerCase()} ${resource}`.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return `${words.map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('')}Body`;
}
