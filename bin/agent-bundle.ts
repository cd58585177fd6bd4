/**
 * The vehicle agent as it ships to a TCU: one ESM file, bundled by esbuild, run by plain node (no TypeScript loader,
 * no node_modules on the vehicle). `npm run build:agent` writes dist/vehicle-agent.mjs; the download benchmark
 * bundles its worker with the same options so it measures what a vehicle runs.
 */
import { copyFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BuildOptions, build } from 'esbuild';

export const AGENT_BUNDLE_OPTIONS: BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: false,
  sourcemap: false,
  logLevel: 'warning',
  // CommonJS dependencies bundled into ESM still call require() for Node built-ins, and the zstd wasm loader looks
  // for zstd.wasm in __dirname (copied beside the bundle by copyZstdWasm).
  banner: {
    js: [
      "import { createRequire as __createRequire } from 'node:module';",
      "import { dirname as __pathDirname } from 'node:path';",
      "import { fileURLToPath as __fileURLToPath } from 'node:url';",
      'const require = __createRequire(import.meta.url);',
      'const __dirname = __pathDirname(__fileURLToPath(import.meta.url));',
    ].join(' '),
  },
};

/**
 * Copies libzstd's WebAssembly beside a bundle in `dir`: the agent decodes compressed releases with it on Node
 * versions without zstd in node:zlib (protocol/zstd.ts).
 */
export function copyZstdWasm(dir: string): void {
  const main = createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm');
  copyFileSync(join(dirname(main), 'zstd.wasm'), join(dir, 'zstd.wasm'));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const outfile = fileURLToPath(new URL('../dist/vehicle-agent.mjs', import.meta.url));
  const result = await build({
    ...AGENT_BUNDLE_OPTIONS,
    entryPoints: [fileURLToPath(new URL('./vehicle-agent.ts', import.meta.url))],
    outfile,
    metafile: true,
  });
  copyZstdWasm(dirname(outfile));
  const bytes = Object.values(result.metafile?.outputs ?? {}).reduce((n, o) => n + o.bytes, 0);
  process.stdout.write(`${outfile}: ${(bytes / 1024).toFixed(0)} KiB\n`);
}
