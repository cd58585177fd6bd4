/**
 * Checks real HTTP answers against the committed API document (docs/openapi.json), with a JSON Schema validator
 * that knows nothing of zod: the document itself is what is checked, not the schemas it was generated from. Each
 * answer must have a status the operation documents and a JSON body valid against that status's schema; the
 * checker remembers which operations answered successfully, so a test can require every route to have been.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { HttpResponse } from './https.js';

const DOC_ID = 'openapi.json';

interface Operation {
  readonly responses: Record<
    string,
    { content?: Record<string, { schema: unknown }>; headers?: Record<string, { required?: boolean }> }
  >;
}
interface OpenApiDocument {
  readonly openapi: string;
  readonly paths: Record<string, Record<string, Operation>>;
}

export function committedDocument(): OpenApiDocument {
  return JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8'));
}

/** JSON pointer escaping of one reference token (RFC 6901). */
const pointer = (token: string) => token.replace(/~/g, '~0').replace(/\//g, '~1');

export class OpenApiConformance {
  private readonly ajv: Ajv2020;
  private readonly templates: { resource: string; pattern: RegExp; literals: number }[];
  private readonly validators = new Map<string, ValidateFunction>();
  private readonly answered = new Map<string, Set<number>>();

  constructor(private readonly doc: OpenApiDocument = committedDocument()) {
    assert.match(doc.openapi, /^3\.1\./, 'OpenAPI 3.1: its schemas are JSON Schema 2020-12');
    this.ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true });
    addFormats.default(this.ajv);
    // The document's own fields are not schema keywords; declaring them keeps strict mode for everything else.
    this.ajv.addVocabulary(['openapi', 'info', 'paths', 'components']);
    this.ajv.addSchema(doc as object, DOC_ID);
    this.templates = Object.keys(doc.paths)
      .map((resource) => ({
        resource,
        pattern: new RegExp(`^${resource.replace(/\{\w+\}/g, '[^/]+')}$`),
        literals: resource.split('/').filter((s) => s && !s.startsWith('{')).length,
      }))
      // A literal segment wins over a parameter, as in API Gateway.
      .sort((a, b) => b.literals - a.literals);
  }

  /** The documented resource a concrete path (query string allowed) belongs to. */
  resourceOf(path: string): string {
    const bare = path.split('?')[0]!;
    const t = this.templates.find((c) => c.pattern.test(bare));
    assert.ok(t, `${bare} is not a path of the API document`);
    return t.resource;
  }

  /**
   * Asserts the answer conforms to the document: a documented status for that operation, a JSON body valid
   * against its schema, and the documented headers present. Answers the response, for chaining.
   */
  check(method: string, path: string, res: HttpResponse): HttpResponse {
    const resource = this.resourceOf(path);
    const m = method.toLowerCase();
    const op = this.doc.paths[resource]![m];
    assert.ok(op, `${method} ${resource} is not an operation of the API document`);
    const status = String(res.status);
    const documented = op.responses[status];
    assert.ok(
      documented,
      `${method} ${path} answered ${status}, which the document does not list (${Object.keys(op.responses).join(', ')}): ${res.raw.toString().slice(0, 300)}`,
    );
    assert.ok(
      documented.content?.['application/json'],
      `${method} ${resource} ${status} documents no JSON body`,
    );
    assert.notEqual(res.json, undefined, `${method} ${path} ${status}: the body is not JSON`);
    const validate = this.validator(resource, m, status);
    if (!validate(res.json)) {
      assert.fail(
        `${method} ${path} ${status} does not conform to docs/openapi.json: ${(validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`).join('; ')}\nbody: ${res.raw.toString().slice(0, 500)}`,
      );
    }
    for (const [name, h] of Object.entries(documented.headers ?? {})) {
      if (h.required)
        assert.ok(res.headers[name.toLowerCase()], `${method} ${path} ${status}: no ${name} header`);
    }
    const key = `${method.toUpperCase()} ${resource}`;
    if (!this.answered.has(key)) this.answered.set(key, new Set());
    this.answered.get(key)!.add(res.status);
    return res;
  }

  /** "METHOD /resource" of every operation that has answered a success (2xx or 3xx) that conformed. */
  succeeded(): Set<string> {
    return new Set(
      [...this.answered].filter(([, statuses]) => [...statuses].some((s) => s < 400)).map(([key]) => key),
    );
  }

  /** "METHOD /resource" of every operation in the document. */
  operations(): Set<string> {
    return new Set(
      Object.entries(this.doc.paths).flatMap(([resource, ops]) =>
        Object.keys(ops).map((m) => `${m.toUpperCase()} ${resource}`),
      ),
    );
  }

  private validator(resource: string, method: string, status: string): ValidateFunction {
    const ref = `${DOC_ID}#/paths/${pointer(resource)}/${method}/responses/${status}/content/${pointer('application/json')}/schema`;
    let v = this.validators.get(ref);
    if (!v) {
      v = this.ajv.getSchema(ref);
      assert.ok(v, `no schema at ${ref}`);
      this.validators.set(ref, v);
    }
    return v;
  }
}
