/**
 * Child process of local-cloud-start.test.ts. Occupies each port of the local cloud in turn, asks startLocalCloud
 * for it and prints one JSON line per attempt; then starts a cloud with the defaults on the same data folder and
 * prints its endpoints. It never calls process.exit: it ends by itself only if every failed start closed what it
 * had opened, which is what the parent checks.
 */
import { createServer, type Server } from 'node:net';
import { startLocalCloud } from '../../local/cloud.js';

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: cloud-start-probe.ts <dataDir>');
const SERVICES = ['s3', 'dynamodb', 'mqtt', 'iotData', 'api'] as const;
const quiet = { warn() {}, error() {} };

function occupy(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error('no TCP address'));
      resolve({ server, port: address.port });
    });
  });
}

for (const service of SERVICES) {
  const { server, port } = await occupy();
  const began = performance.now();
  let line: Record<string, unknown>;
  try {
    const cloud = await startLocalCloud({ dataDir, ports: { [service]: port }, logger: quiet });
    await cloud.stop();
    line = { service, port, started: true };
  } catch (err) {
    line = { service, port, started: false, ms: Math.round(performance.now() - began), message: String(err) };
  }
  await new Promise((r) => server.close(r));
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// The same data folder again, all defaults: the failed starts released the LevelDB lock and the one-cloud guard.
const cloud = await startLocalCloud({ dataDir, logger: quiet, campaignTickMs: 0 });
const endpoints = cloud.endpoints;
await cloud.stop();
const bare = await startLocalCloud({ logger: quiet, campaignTickMs: 0 });
const temporary = bare.dataDir;
await bare.stop();
process.stdout.write(`${JSON.stringify({ endpoints, temporary, done: true })}\n`);
