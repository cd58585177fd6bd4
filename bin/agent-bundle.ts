/**
 * The vehicle agent as it ships to a TCU: one ESM file, bundled by esbuild, run by plain node (no TypeScript loader,
 * no node_modules on the vehicle). `npm run build:agent` writes dist/vehicle-agent.mjs; the download benchmark
 * bundles its worker with the same options so it measures what a vehicle runs.
 */
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
  // CommonJS dependencies bundled into ESM still call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
};

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const outfile = fileURLToPath(new URL('../dist/vehicle-agent.mjs', import.meta.url));
  const result = await build({
    ...AGENT_BUNDLE_OPTIONS,
    entryPoints: [fileURLToPath(new URL('./vehicle-agent.ts', import.meta.url))],
    outfile,
    metafile: true,
  });
  const bytes = Object.values(result.metafile?.outputs ?? {}).reduce((n, o) => n + o.bytes, 0);
  process.stdout.write(`${outfile}: ${(bytes / 1024).toFixed(0)} KiB\n`);
}
