/**
 * The operator console as it is served: index.html, styles.css and one minified ESM bundle (app.js) built by
 * esbuild from console/main.tsx. `npm run build:console` writes dist/console; the local cloud serves that folder
 * at /console/ and the CDK stack uploads it to the console bucket.
 */
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, type Plugin } from 'esbuild';

const SOURCE = fileURLToPath(new URL('../console', import.meta.url));
export const CONSOLE_DIST = fileURLToPath(new URL('../dist/console', import.meta.url));
/** The issue's budget for JavaScript shipped to the browser. */
export const CONSOLE_JS_BUDGET_GZIP = 300_000;

/**
 * The protocol's route table reaches modules that import node:crypto and node:fs for signing and hashing the
 * console never does (it uses the schemas, types and route roles only). Those imports resolve to a module whose
 * functions throw, so a call that should never happen in the browser fails loudly instead of bundling Node. The
 * stub exports every name the real Node module has (read at build time), so a new import in the protocol does not
 * break the console's build.
 */
const nodeStubs: Plugin = {
  name: 'node-stubs',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: 'node-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'node-stub' }, async (args) => {
      const names = Object.keys((await import(args.path)) as object).filter(
        (n) => n !== 'default' && n !== 'webcrypto' && /^[A-Za-z_$][\w$]*$/.test(n),
      );
      return {
        contents: `const unavailable = () => { throw new Error(${JSON.stringify(`${args.path} is not available in the browser`)}); };
export const ${names.map((n) => `${n} = unavailable`).join(', ')};
export const webcrypto = globalThis.crypto;
export default {};`,
        loader: 'js',
      };
    });
  },
};

export async function buildConsole(outDir = CONSOLE_DIST): Promise<{ jsBytes: number; jsGzipBytes: number }> {
  mkdirSync(outDir, { recursive: true });
  await build({
    entryPoints: [join(SOURCE, 'main.tsx')],
    outfile: join(outDir, 'app.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: false,
    jsx: 'automatic',
    jsxImportSource: 'preact',
    legalComments: 'none',
    logLevel: 'warning',
    plugins: [nodeStubs],
  });
  for (const f of ['index.html', 'styles.css']) copyFileSync(join(SOURCE, f), join(outDir, f));
  const js = readFileSync(join(outDir, 'app.js'));
  return { jsBytes: js.length, jsGzipBytes: gzipSync(js, { level: 9 }).length };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { jsBytes, jsGzipBytes } = await buildConsole();
  process.stdout.write(
    `${CONSOLE_DIST}/app.js: ${(jsBytes / 1024).toFixed(0)} KiB, ${(jsGzipBytes / 1024).toFixed(0)} KiB gzipped\n`,
  );
}
