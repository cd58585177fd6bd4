/**
 * The other CDK tests skip bundling; this one builds every function of the stack exactly as the stack bundles it
 * (entry and environment from the synthesised stack, esbuild options from OTA_BUNDLING through the translation the
 * cold-start benchmark uses too) and loads each bundle in a fresh node process with that environment, as Lambda
 * would. A broken build, banner, external or import, a missing `handler` export or a network call at init fails.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build } from 'esbuild';
import {
  esbuildOptions,
  INIT_RUNNER,
  lambdaRuntimeEnv,
  loadBundle,
  type StackFunction,
  stackFunctions,
} from '../../lib/function-bundles.js';
import { CREATE_REQUIRE_BANNER } from '../../lib/ota-function.js';
import { ALL_FUNCTIONS } from './fixtures.js';

let dir: string;
let runner: string;
let functions: StackFunction[];

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'ota-bundles-'));
  runner = join(dir, 'runner.mjs');
  writeFileSync(runner, INIT_RUNNER);
  functions = stackFunctions();
}, HOOK_TIMEOUT);

after(() => rmSync(dir, { recursive: true, force: true }), HOOK_TIMEOUT);

describe('Lambda bundles, built as the stack builds them', { timeout: 180_000 }, () => {
  it('the stack has every backend function, each with its entry point and environment', () => {
    assert.deepEqual(functions.map((f) => f.name).sort(), [...ALL_FUNCTIONS].sort());
    for (const f of functions) {
      assert.match(f.entry, /lambdas\/[a-z-]+\/handler\.ts$/);
      assert.equal(f.environment.POWERTOOLS_SERVICE_NAME, f.name);
      assert.ok(
        f.environment.TABLE_VEHICLES || f.environment.TABLE_CAMPAIGNS || f.environment.TABLE_AUDIT,
        `${f.name} has its tables`,
      );
    }
  });

  it('builds and loads every function: an ESM bundle with the banner, exporting handler, no network at init', async () => {
    for (const f of functions) {
      const outfile = join(dir, f.name, 'index.mjs');
      const result = await build(esbuildOptions(f.entry, outfile));
      assert.deepEqual(result.errors, [], `${f.name}: build errors`);
      const js = readFileSync(outfile, 'utf8');
      assert.ok(js.startsWith(CREATE_REQUIRE_BANNER), `${f.name}: starts with the createRequire banner`);
      assert.doesNotMatch(js, /from\s*["']@aws-sdk\//, `${f.name}: the AWS SDK is bundled, not imported`);
      // The SDK's default credential chain is aliased away (lambdas/adapters/lambda-credentials.ts).
      assert.doesNotMatch(js, /AssumeRoleWithWebIdentity|sso-oidc/, `${f.name}: no STS/SSO credential chain`);
      const sample = loadBundle(runner, outfile, {
        ...lambdaRuntimeEnv(f.name, dirname(outfile)),
        ...f.environment,
      });
      assert.deepEqual(sample.attempts, [], `${f.name}: no network call at init`);
    }
  });

  it('fails a bundle that does not load (the check can fail)', async () => {
    const broken = join(dir, 'broken', 'handler.ts');
    const missing = join(dir, 'missing', 'handler.ts');
    writeFileSync(
      join(dir, 'throws.ts'),
      "throw new Error('init failed');\nexport const handler = () => 1;\n",
    );
    for (const [file, source] of [
      [broken, "import '../throws.ts';\nexport const handler = async () => 1;\n"],
      [missing, 'export const handle = async () => 1;\n'],
    ] as const) {
      rmSync(dirname(file), { recursive: true, force: true });
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, source);
      const outfile = join(dirname(file), 'index.mjs');
      await build(esbuildOptions(file, outfile));
      assert.throws(
        () => loadBundle(runner, outfile, lambdaRuntimeEnv('broken', dirname(outfile))),
        /init of/,
      );
    }
  });

  it('a bundled SDK client signs with the credentials Lambda puts in the environment', async () => {
    // A real DynamoDB client bundled with the stack's options (the credential alias included), calling a local
    // HTTP endpoint that records the request's Authorization header.
    const entry = join(dir, 'signs', 'handler.ts');
    mkdirSync(dirname(entry), { recursive: true });
    writeFileSync(
      entry,
      "import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';\n" +
        'const client = new DynamoDBClient({ endpoint: process.argv[2], maxAttempts: 1 });\n' +
        'await client.send(new ListTablesCommand({}));\n',
    );
    const outfile = join(dirname(entry), 'index.mjs');
    await build({ ...esbuildOptions(entry, outfile), nodePaths: [join(process.cwd(), 'node_modules')] });
    let authorization: string | undefined;
    const server = createServer((req, res) => {
      authorization = req.headers.authorization;
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' }).end('{"TableNames":[]}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const env = { ...lambdaRuntimeEnv('signs', dirname(outfile)), AWS_ACCESS_KEY_ID: 'AKIDFROMENV' };
      const run = spawn(process.execPath, [outfile, `http://127.0.0.1:${port}`], { env, stdio: 'inherit' });
      const [code] = (await once(run, 'exit')) as [number];
      assert.equal(code, 0);
      assert.match(authorization ?? '', /Credential=AKIDFROMENV\//);
      // Without credentials in the environment the call fails instead of looking elsewhere.
      const bare = { ...env, AWS_ACCESS_KEY_ID: '' };
      const failed = spawn(process.execPath, [outfile, `http://127.0.0.1:${port}`], {
        env: bare,
        stdio: 'pipe',
      });
      const [failedCode] = (await once(failed, 'exit')) as [number];
      assert.notEqual(failedCode, 0);
    } finally {
      server.close();
    }
  });
});
