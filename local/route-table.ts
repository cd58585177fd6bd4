/**
 * The local gateway's route table: ROUTES compiled once, and a request's method and path matched against it as API
 * Gateway does (a literal segment beats a {param} at the same position; a known path with another method is 405; a
 * path parameter that does not decode is a bad path).
 */
import type { RouteDefinition } from '../protocol/routes.js';

export type RouteMatch =
  | { kind: 'not_found' }
  | { kind: 'bad_path' }
  | { kind: 'method_not_allowed'; allow: string[] }
  | { kind: 'ok'; route: RouteDefinition; pathParameters: Record<string, string> | null };

interface CompiledRoute {
  readonly segments: readonly ({ literal: string } | { param: string })[];
  readonly resource: string;
}

function compile(resource: string): CompiledRoute {
  const segments = resource
    .split('/')
    .slice(1)
    .map((s) => {
      const m = /^\{([A-Za-z0-9_]+)\}$/.exec(s);
      return m ? { param: m[1]! } : { literal: s };
    });
  return { resource, segments };
}

function compareScores(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return 0;
}

export class RouteTable {
  private readonly routes: readonly (RouteDefinition & { compiled: CompiledRoute })[];

  constructor(routes: readonly RouteDefinition[]) {
    this.routes = routes.map((r) => ({ ...r, compiled: compile(r.resource) }));
  }

  match(
    method: string,
    path: string,
  ):
    | { kind: 'not_found' }
    | { kind: 'bad_path' }
    | { kind: 'method_not_allowed'; allow: string[] }
    | { kind: 'ok'; route: RouteDefinition; pathParameters: Record<string, string> | null } {
    if (!path.startsWith('/')) return { kind: 'not_found' };
    const parts = path.split('/').slice(1);
    let best: { resource: string; score: number[]; raw: Record<string, string> } | undefined;
    for (const r of this.routes) {
      const segs = r.compiled.segments;
      if (segs.length !== parts.length) continue;
      const raw: Record<string, string> = {};
      const score: number[] = [];
      let ok = true;
      for (let i = 0; i < segs.length && ok; i++) {
        const seg = segs[i]!;
        const part = parts[i]!;
        if ('literal' in seg) {
          ok = seg.literal === part;
          score.push(1);
        } else {
          ok = part !== '';
          raw[seg.param] = part;
          score.push(0);
        }
      }
      // A literal segment beats a {param} at the same position, as in API Gateway.
      if (ok && (!best || compareScores(score, best.score) > 0)) best = { resource: r.resource, score, raw };
    }
    if (!best) return { kind: 'not_found' };
    const candidates = this.routes.filter((r) => r.resource === best.resource);
    const route = candidates.find((r) => r.method === method);
    if (!route) return { kind: 'method_not_allowed', allow: [...new Set(candidates.map((r) => r.method))] };
    const params: Record<string, string> = {};
    try {
      for (const [k, v] of Object.entries(best.raw)) params[k] = decodeURIComponent(v);
    } catch {
      return { kind: 'bad_path' };
    }
    return { kind: 'ok', route, pathParameters: Object.keys(params).length ? params : null };
  }
}
