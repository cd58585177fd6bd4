#!/usr/bin/env tsx
/**
 * `ota`, the operator CLI (npm run ota -- <group> <command>; `ota --help` lists the commands). Wiring only: the
 * commands live in cli/. The first Ctrl-C aborts the running command cleanly; a second one exits at once.
 */
import { run } from '../cli/main.js';

const interrupt = new AbortController();
process.on('SIGINT', () => {
  if (interrupt.signal.aborted) process.exit(130);
  interrupt.abort(Object.assign(new Error('interrupted'), { name: 'AbortError' }));
});

// `ota firmware list | head`: a reader that stops early is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  signal: interrupt.signal,
});
