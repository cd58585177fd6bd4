/**
 * The layering the folders promise, checked on every import of every source file: the wire protocol and the
 * backend domain are pure (no AWS SDK), the vehicle agent stands beside the backend (never on it), and the CLI
 * and the CDK app reach the backend only through the protocol and the domain, never through its AWS adapters.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const path = join(ROOT, dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(relative(ROOT, path)));
    else if (name.endsWith('.ts') || name.endsWith('.tsx')) out.push(path);
  }
  return out;
}

/** Every module specifier a file imports (static, dynamic, re-exports), resolved to a repo path when relative. */
export function importsOf(file: string, source: string): string[] {
  const specs = [
    ...source.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s*'([^']+)'/g),
    ...source.matchAll(/(?:^|\n)\s*import\s*'([^']+)'/g),
    ...source.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g),
  ].map((m) => m[1]!);
  return specs.map((s) => (s.startsWith('.') ? relative(ROOT, resolve(dirname(file), s)) : s));
}

interface Rule {
  readonly folder: string;
  readonly forbidden: RegExp;
  readonly why: string;
}

const RULES: readonly Rule[] = [
  {
    folder: 'protocol',
    forbidden: /^@aws-sdk\/|^aws-cdk-lib|^(lambdas|vehicle|local|lib|cli|sim|bin)\//,
    why: 'the protocol imports only itself and pure libraries',
  },
  {
    folder: 'lambdas/core',
    forbidden: /^@aws-sdk\/|^aws-cdk-lib|^lambdas\/adapters\/|^(vehicle|local|lib|cli)\//,
    why: 'the domain is pure: no AWS SDK, no adapters',
  },
  {
    folder: 'vehicle',
    forbidden: /^@aws-sdk\/|^aws-cdk-lib|^(lambdas|local|lib|cli)\//,
    why: 'the agent stands beside the backend on the protocol',
  },
  {
    folder: 'cli',
    forbidden: /^lambdas\/adapters\/|^(local|lib|vehicle)\//,
    why: 'the CLI speaks the protocol, not the backend adapters',
  },
  {
    folder: 'console',
    // The browser app reaches the backend through the API only: it reads the contract (protocol/) and the pure
    // rollout rules it previews (lambdas/core/campaign-policy.ts), nothing that runs on a server.
    forbidden:
      /^@aws-sdk\/|^aws-cdk-lib|^lambdas\/(adapters|[a-z-]+-api|ingest|jobs-worker|campaign-tick)\/|^(local|lib|cli|vehicle|sim|bin)\//,
    why: 'the console calls the API and reads the contract, never the backend',
  },
  {
    folder: 'lib',
    forbidden: /^lambdas\/adapters\/|^(local|vehicle|cli)\//,
    why: 'constructs take names from the protocol and domain, not adapters',
  },
];

describe('layering', { timeout: 30_000 }, () => {
  for (const rule of RULES) {
    test(`${rule.folder}/: ${rule.why}`, () => {
      const files = sourceFiles(rule.folder);
      assert.ok(files.length > 0, `no sources under ${rule.folder}`);
      const offences = files.flatMap((file) =>
        importsOf(file, readFileSync(file, 'utf8'))
          .filter((spec) => rule.forbidden.test(spec))
          .map((spec) => `${relative(ROOT, file)} imports ${spec}`),
      );
      assert.deepEqual(offences, []);
    });
  }

  test('the import scanner sees static, dynamic and re-exported imports (a rule that sees nothing checks nothing)', () => {
    const file = join(ROOT, 'vehicle', 'x.ts');
    const found = importsOf(
      file,
      "import { a } from '../lambdas/core/x.js';\nexport { b } from '@aws-sdk/client-s3';\nconst c = await import('../local/y.js');\nimport 'reflect-metadata';\n",
    );
    assert.deepEqual(found, ['lambdas/core/x.js', '@aws-sdk/client-s3', 'reflect-metadata', 'local/y.js']);
    assert.ok(RULES.find((r) => r.folder === 'vehicle')!.forbidden.test(found[0]!));
  });
});
