/** Generates the OpenAPI 3 document of the HTTP API from ROUTES and their schemas (the single source). */
import * as z from 'zod';
import { ROUTES } from '../../protocol/routes.js';

const ERROR_SCHEMA = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' } },
    },
  },
};

const ERROR_STATUSES: Record<string, string> = {
  '400': 'Malformed JSON, unknown field, wrong type or invalid value',
  '401': 'Missing, forged or expired credentials',
  '403': 'Credentials valid, but not for this resource (e.g. another VIN)',
  '404': 'Unknown route, vehicle, release or version',
  '409': 'Conflicts with the current state',
  '413': 'Request body too large',
  '429': 'Throttled',
};

export function openApiDocument(version = '0.1.0') {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const params = [...r.resource.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    const op: Record<string, unknown> = {
      operationId: `${r.method.toLowerCase()}${r.resource
        .replace(/[{}]/g, '')
        .replace(/\/(\w)/g, (_, c: string) => c.toUpperCase())
        .replace(/\//g, '')}`,
      summary: r.summary,
      tags: [r.fn],
      security:
        r.auth === 'none' ? [] : r.auth === 'vehicle' ? [{ vehicleToken: [] }] : [{ operatorIam: [] }],
      parameters: params,
      responses: {
        [r.resource.endsWith('/firmware/{version}')
          ? '302'
          : r.method === 'POST' && r.fn === 'operator-api' && !r.resource.endsWith('publish')
            ? '201'
            : '200']: {
          description: 'Success',
          content: { 'application/json': { schema: { type: 'object' } } },
        },
        ...Object.fromEntries(
          Object.entries(ERROR_STATUSES).map(([code, description]) => [
            code,
            {
              description,
              content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
            },
          ]),
        ),
      },
    };
    if (r.body) {
      op.requestBody = {
        required: true,
        content: { 'application/json': { schema: z.toJSONSchema(r.body, { target: 'openapi-3.0' }) } },
      };
    }
    paths[r.resource] ??= {};
    paths[r.resource]![r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.0.3',
    info: { title: 'Fleet OTA API', version },
    paths,
    components: {
      schemas: { Error: ERROR_SCHEMA },
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
