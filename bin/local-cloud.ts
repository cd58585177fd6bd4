/**
 * `npm start`: the local cloud on its default ports until Ctrl-C.
 *   --data-dir <dir>               state folder (default .ota-local)
 *   --release-public-key <file>    trust this OEM release public key instead of the development one (repeatable)
 */

import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import { INGEST_EVENT_SOURCE } from '../lambdas/core/functions.js';
import { DEFAULT_PORTS, startLocalCloud } from '../local/cloud.js';
import { buildConsole } from './console-bundle.js';

const { values } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    'release-public-key': { type: 'string', multiple: true },
  },
});

const began = performance.now();
// The console is built from source on every start (about a second), so it never lags behind the API it calls.
await buildConsole();
// The fixed ports and the .ota-local folder are asked for here only: the library's defaults are free ports and a
// temporary folder, so tests run beside this process.
const cloud = await startLocalCloud({
  dataDir: values['data-dir'] ?? '.ota-local',
  ports: DEFAULT_PORTS,
  releasePublicKeys: values['release-public-key']?.map((f) => readFileSync(f, 'utf8')),
  // Vehicle messages reach ingest in batches as deployed (lib/fleet-ingest.ts), not one invocation each.
  ingestBatchWindowMs: INGEST_EVENT_SOURCE.maxBatchingWindowSeconds * 1000,
});
const show = (path: string) => {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') ? rel : path;
};

const lines = [
  `Local cloud ready in ${Math.round(performance.now() - began)} ms (state in ${show(cloud.dataDir)})`,
  `  API        ${cloud.endpoints.api}`,
  `  Console    ${cloud.endpoints.console}  (sign in with an operator account below)`,
  `  S3         ${cloud.endpoints.s3}  (bucket ${cloud.bucket})`,
  `  DynamoDB   ${cloud.endpoints.dynamodb}`,
  `  MQTT       ${cloud.endpoints.mqtt}  (mutual TLS; client id = VIN = certificate CN)`,
  `  IoT data   ${cloud.endpoints.iotData}  (IoT Data Plane Publish)`,
  `  CA         ${show(cloud.caFile)}  (export NODE_EXTRA_CA_CERTS=${show(cloud.caFile)})`,
  cloud.adminTokenFile
    ? `  Admin token file  ${show(cloud.adminTokenFile)}  (Authorization: Bearer $(cat ${show(cloud.adminTokenFile)}))`
    : '  Admin token  given in the options',
  `  Operators  ${show(cloud.operatorsFile)}  (one account per role: ${cloud.operators.map((a) => a.name).join(', ')};`,
  `             ota --as <role> ...; the console's sign-in takes an account's access key id and secret)`,
  cloud.releaseKeyFiles
    ? `  Dev release key   ${show(cloud.releaseKeyFiles.privateKey)} (public: ${show(cloud.releaseKeyFiles.publicKey)})`
    : '  Release keys  from --release-public-key',
  'Ctrl-C stops it.',
];
process.stdout.write(`${lines.join('\n')}\n`);

let stopping = false;
const shutdown = (signal: NodeJS.Signals) => {
  if (stopping) {
    process.stderr.write(`${signal} again: exiting without waiting\n`);
    process.exit(1);
  }
  stopping = true;
  process.stdout.write(`${signal}: stopping...\n`);
  cloud.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`stop failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
