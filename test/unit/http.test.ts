import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { APIGatewayProxyEvent } from 'aws-lambda';
import { ConflictError } from '../../lambdas/core/errors.js';
import { createRouter, json } from '../../lambdas/core/http.js';
import { openApiDocument } from '../../lambdas/core/openapi.js';
import { ROUTES } from '../../protocol/routes.js';

const silent = { warn: () => {}, error: () => {} };
const VIN = '1HGCM82633A004352';

function event(
  resource: string,
  method: string,
  body: string | null,
  params: Record<string, string> = {},
): APIGatewayProxyEvent {
  return {
    resource,
    httpMethod: method,
    path: resource,
    body,
    headers: {},
    multiValueHeaders: {},
    isBase64Encoded: false,
    pathParameters: params,
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    stageVariables: null,
    requestContext: {} as APIGatewayProxyEvent['requestContext'],
  };
}

const seen: unknown[] = [];
const router = createRouter(
  'vehicle-api',
  Object.fromEntries(
    ROUTES.filter((r) => r.fn === 'vehicle-api').map((r) => [
      `${r.method} ${r.resource}`,
      async (req: { body: unknown }) => {
        seen.push(req.body);
        if ((req.body as { firmware_version?: string })?.firmware_version === '9.9.9')
          throw new ConflictError('x', 'conflict');
        if ((req.body as { firmware_version?: string })?.firmware_version === '6.6.6')
          throw new Error('secret detail');
        return json(200, { ok: true });
      },
    ]),
  ),
  silent,
);

async function call(body: string | null, params = { vin: VIN }) {
  const res = await router(event('/updates/{vin}/download', 'POST', body, params));
  return { status: res.statusCode, body: JSON.parse(res.body) };
}

describe('request validation', { timeout: 60_000 }, () => {
  it('passes a valid body to the route', async () => {
    const res = await call('{"firmware_version":"3.0.1"}');
    assert.equal(res.status, 200);
    assert.deepEqual(seen.at(-1), { firmware_version: '3.0.1' });
  });

  const cases: [string, string | null, number, string][] = [
    ['malformed JSON', '{"firmware_version":', 400, 'malformed_json'],
    ['missing body', null, 400, 'missing_body'],
    ['unknown field', '{"firmware_version":"3.0.1","admin":true}', 400, 'unknown_field'],
    ['wrong type', '{"firmware_version":301}', 400, 'invalid_request'],
    ['bad version', '{"firmware_version":"latest"}', 400, 'invalid_request'],
    ['array body', '[1]', 400, 'invalid_request'],
    [
      'oversized body',
      JSON.stringify({ firmware_version: '3.0.1', pad: 'x'.repeat(20000) }),
      413,
      'body_too_large',
    ],
  ];
  for (const [name, body, status, code] of cases) {
    it(`answers ${status} ${code} for ${name}`, async () => {
      const res = await call(body);
      assert.equal(res.status, status);
      assert.equal(res.body.error.code, code);
      assert.equal(typeof res.body.error.message, 'string');
    });
  }

  // The protocol's schemas are zod/mini, which has no messages of its own (protocol/zod.ts sets the English ones):
  // a refusal must still say what is wrong with which field, as it did with classic zod.
  it('says in English what is wrong with which field', async () => {
    const messages: [string, string][] = [
      ['{"firmware_version":301}', 'firmware_version: Invalid input: expected string, received number'],
      [
        JSON.stringify({ firmware_version: 'x'.repeat(65) }),
        'firmware_version: Too big: expected string to have <=64 characters',
      ],
      ['{"firmware_version":"latest"}', 'firmware_version: must be a semantic version such as 3.0.1'],
      ['{}', 'firmware_version: Invalid input: expected string, received undefined'],
      ['{"firmware_version":"3.0.1","admin":true}', 'body: unknown field(s) admin'],
    ];
    for (const [body, message] of messages)
      assert.equal((await call(body)).body.error.message, message, body);
    const status = await router(
      event('/updates/{vin}/status', 'POST', '{"status":"downloading","progress":101}', { vin: VIN }),
    );
    assert.deepEqual(JSON.parse(status.body), {
      error: { code: 'invalid_request', message: 'progress: Too big: expected number to be <=100' },
    });
  });

  it('refuses VINs that are not 17 valid characters', async () => {
    for (const vin of ['1HGCM82633A00435', '1HGCM82633A0043521', '1HGCM82633A00435I', '1hgcm82633a004352']) {
      const res = await call('{"firmware_version":"3.0.1"}', { vin });
      assert.equal(res.status, 400, vin);
      assert.equal(res.body.error.code, 'invalid_vin');
    }
  });

  it('maps domain errors to their status and hides internal ones', async () => {
    assert.equal((await call('{"firmware_version":"9.9.9"}')).status, 409);
    const internal = await call('{"firmware_version":"6.6.6"}');
    assert.equal(internal.status, 500);
    assert.deepEqual(internal.body, { error: { code: 'internal_error', message: 'Internal error' } });
  });

  it('answers 404 for a route of another function', async () => {
    const res = await router(event('/releases', 'GET', null));
    assert.equal(res.statusCode, 404);
  });
});

describe('OpenAPI document', { timeout: 60_000 }, () => {
  it('describes every route with its body schema', () => {
    const doc = openApiDocument();
    for (const r of ROUTES) {
      const op = (doc.paths[r.resource] as Record<string, { requestBody?: unknown }>)[r.method.toLowerCase()];
      assert.ok(op, `${r.method} ${r.resource}`);
      assert.equal(op.requestBody !== undefined, r.body !== undefined, `${r.method} ${r.resource} body`);
    }
    type Op = {
      requestBody: {
        content: Record<string, { schema: { required: string[]; additionalProperties: boolean } }>;
      };
    };
    const download = (doc.paths['/updates/{vin}/download'] as Record<string, Op>).post!;
    const schema = download.requestBody.content['application/json']!.schema;
    assert.deepEqual(schema.required, ['firmware_version']);
    assert.equal(schema.additionalProperties, false);
  });

  it('gives every route its success answers and the error body, as schemas in the document', () => {
    const doc = openApiDocument();
    type Response = { content: Record<string, { schema: { $ref: string } }> };
    const resolve = (ref: string) => {
      const name = ref.replace('#/components/schemas/', '');
      const schema = (doc.components.schemas as Record<string, { type?: string }>)[name];
      assert.ok(schema, `${ref} resolves`);
      return schema;
    };
    for (const r of ROUTES) {
      const op = (doc.paths[r.resource] as Record<string, { responses: Record<string, Response> }>)[
        r.method.toLowerCase()
      ]!;
      const success = Object.keys(r.responses);
      assert.ok(success.length > 0, `${r.method} ${r.resource} declares its answer`);
      for (const status of success) {
        const schema = resolve(op.responses[status]!.content['application/json']!.schema.$ref);
        assert.equal(schema.type, 'object', `${r.method} ${r.resource} ${status} is a typed object`);
      }
      for (const status of ['400', '401', '403', '404', '409', '413', '429', '500']) {
        const ref = op.responses[status]?.content['application/json']?.schema.$ref;
        assert.equal(ref, '#/components/schemas/Error', `${r.method} ${r.resource} ${status}`);
      }
    }
    assert.deepEqual(doc.components.schemas.Error, {
      type: 'object',
      properties: {
        error: {
          type: 'object',
          properties: { code: { type: 'string' }, message: { type: 'string' } },
          required: ['code', 'message'],
          additionalProperties: false,
        },
      },
      required: ['error'],
      additionalProperties: false,
    });
  });

  it('docs/openapi.json is up to date (npm run openapi)', () => {
    const committed = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8'));
    assert.deepEqual(committed, JSON.parse(JSON.stringify(openApiDocument())));
  });
});
