/**
 * Generates the OpenAPI 3.1 document of the HTTP API from ROUTES: request bodies and answers come from the route's
 * zod schemas (the single source the handlers, the backend's views and the clients use), as JSON Schema 2020-12,
 * which OpenAPI 3.1 embeds as is, so any JSON Schema validator can check a real answer against the document.
 */

import { signedAssignmentSchema } from '../../protocol/assignment.js';
import * as operator from '../../protocol/operator-responses.js';
import * as vehicle from '../../protocol/responses.js';
import { ROUTES } from '../../protocol/routes.js';
import { signedManifestSchema } from '../../protocol/schemas.js';
import * as z from '../../protocol/zod.js';

/** JSON Schema of a zod schema, without the $schema line (the document's dialect is 2020-12 already). */
function jsonSchema(schema: z.core.$ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12', io });
  return rest;
}

/**
 * Names of the answer schemas in components/schemas. Shared parts (a manifest, an update) are named too, so each
 * is written once and referenced. A route answer missing here is named after its operation.
 */
const COMPONENTS: readonly (readonly [string, z.core.$ZodType])[] = [
  ['Error', vehicle.errorAnswerSchema],
  ['ChallengeAnswer', vehicle.challengeAnswerSchema],
  ['TokenAnswer', vehicle.tokenAnswerSchema],
  ['DownloadAnswer', vehicle.downloadAnswerSchema],
  ['FirmwareRedirect', vehicle.firmwareRedirectSchema],
  ['UpdateView', vehicle.updateViewSchema],
  ['UpdateList', vehicle.updateListSchema],
  ['StatusAnswer', vehicle.statusAnswerSchema],
  ['SignedManifest', signedManifestSchema],
  ['SignedAssignment', signedAssignmentSchema],
  ['ReleaseView', operator.releaseViewSchema],
  ['UploadTarget', operator.uploadTargetSchema],
  ['ReleaseCreated', operator.releaseCreatedSchema],
  ['ReleaseList', operator.releaseListSchema],
  ['VehicleRegistered', operator.vehicleRegisteredSchema],
  ['VehicleView', operator.vehicleViewSchema],
  ['RolloutPolicy', operator.rolloutPolicyViewSchema],
  ['CampaignView', operator.campaignViewSchema],
  ['CampaignList', operator.campaignListSchema],
  ['CampaignVehicles', operator.campaignVehiclesSchema],
];

const schemaRef = (name: string) => `#/components/schemas/${name}`;

function operationId(method: string, resource: string): string {
  return `${method.toLowerCase()}${resource
    .replace(/[{}]/g, '')
    .replace(/\/(\w)/g, (_, c: string) => c.toUpperCase())
    .replace(/\//g, '')}`;
}

/** The answer schemas by name, each as JSON Schema with the others it contains as $refs. */
function answerComponents(): { names: Map<z.core.$ZodType, string>; schemas: Record<string, unknown> } {
  const names = new Map<z.core.$ZodType, string>(COMPONENTS.map(([name, schema]) => [schema, name]));
  for (const r of ROUTES) {
    for (const [status, schema] of Object.entries(r.responses)) {
      if (!names.has(schema)) names.set(schema, `${operationId(r.method, r.resource)}${status}`);
    }
  }
  const registry = z.registry<{ id: string }>();
  for (const [schema, id] of names) registry.add(schema, { id });
  const converted = z.toJSONSchema(registry, { target: 'draft-2020-12', io: 'output', uri: schemaRef });
  const schemas: Record<string, unknown> = {};
  for (const [id, schema] of Object.entries(converted.schemas)) {
    // The document is the one resource: its components need no $schema or $id of their own.
    const { $schema: _s, $id: _i, ...rest } = schema as Record<string, unknown>;
    schemas[id] = rest;
  }
  return { names, schemas };
}

/** The refusals every route may answer, all with the one error body (a body on a GET is 413 too). */
const ERROR_STATUSES: Record<string, string> = {
  '400': 'Malformed JSON, unknown field, wrong type or invalid value',
  '401': 'Missing, forged or expired credentials',
  '403': 'Credentials valid, but not for this resource (e.g. another VIN)',
  '404': 'Unknown route, vehicle, release or version',
  '409': 'Conflicts with the current state',
  '413': 'Request body too large',
  '429': 'Throttled',
  '500': 'Internal error (details are logged, never answered)',
};

const SUCCESS_DESCRIPTIONS: Record<number, string> = {
  200: 'Success',
  201: 'Created',
  302: 'Redirect to the download URL (also in the Location header)',
};

export function openApiDocument(version = '0.1.0') {
  const answers = answerComponents();
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const params = [...r.resource.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    const op: Record<string, unknown> = {
      operationId: operationId(r.method, r.resource),
      summary: r.summary,
      tags: [r.fn],
      security:
        r.auth === 'none' ? [] : r.auth === 'vehicle' ? [{ vehicleToken: [] }] : [{ operatorIam: [] }],
      parameters: params,
      responses: {
        ...Object.fromEntries(
          Object.entries(r.responses).map(([status, schema]) => [
            status,
            {
              description: SUCCESS_DESCRIPTIONS[Number(status)] ?? 'Success',
              ...(status === '302'
                ? { headers: { Location: { required: true, schema: { type: 'string', format: 'uri' } } } }
                : {}),
              content: { 'application/json': { schema: { $ref: schemaRef(answers.names.get(schema)!) } } },
            },
          ]),
        ),
        ...Object.fromEntries(
          Object.entries(ERROR_STATUSES).map(([code, description]) => [
            code,
            { description, content: { 'application/json': { schema: { $ref: schemaRef('Error') } } } },
          ]),
        ),
      },
    };
    if (r.body) {
      op.requestBody = {
        required: true,
        content: { 'application/json': { schema: jsonSchema(r.body, 'input') } },
      };
    }
    paths[r.resource] ??= {};
    paths[r.resource]![r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Fleet OTA API', version },
    paths,
    components: {
      schemas: answers.schemas,
      securitySchemes: {
        vehicleToken: {
          type: 'http',
          scheme: 'bearer',
          description: 'Short-lived token from POST /auth/token',
        },
        operatorIam: {
          type: 'apiKey',
          in: 'header',
          name: 'Authorization',
          description: 'SigV4 (IAM) on AWS; admin bearer token on the local cloud',
        },
      },
    },
  };
}
