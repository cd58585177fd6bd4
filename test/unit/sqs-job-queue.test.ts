/**
 * The SQS adapter's one retry: a kept-alive connection that the server closes as a request goes out (its idle
 * timeout) is sent again on a new connection, as the SDK clients do; any other failure is not retried. Against a
 * small HTTPS server standing in for SQS.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SqsJobQueue } from '../../lambdas/adapters/sqs-job-queue.js';
import { createCa, issueServerCertificate } from '../../protocol/x509.js';

let server: Server;
let dir: string;
let queueUrl: string;
/** Bodies of the requests the server answered, and how many it dropped unanswered. */
const answered: string[] = [];
let dropped = 0;
/** Requests to drop by closing their connection: on a reused connection only, or on any. */
let drop: 'none' | 'reused' | 'any' = 'none';

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ota-sqs-'));
  const ca = await createCa('sqs adapter test CA');
  const tls = await issueServerCertificate({ caKeyPem: ca.keyPem, caCertPem: ca.certPem });
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  process.env.OTA_ENDPOINT_CA_FILE = join(dir, 'ca.pem');
  process.env.AWS_ACCESS_KEY_ID = 'AKIDTEST';
  process.env.AWS_SECRET_ACCESS_KEY = 'test-secret';
  const served = new WeakMap<object, number>();
  server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const n = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, n);
    if (drop === 'any' || (drop === 'reused' && n > 1)) {
      drop = 'none';
      dropped++;
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      answered.push(Buffer.concat(chunks).toString());
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
      res.end('{"MessageId":"m"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  queueUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}/000000000000/jobs`;
}, HOOK_TIMEOUT);

after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('SQS job queue adapter', { timeout: 30_000 }, () => {
  it('sends again, once, when a kept-alive connection is closed under the request', async () => {
    const queue = new SqsJobQueue(queueUrl, 'us-east-1');
    await queue.send({ type: 'verify_release', release_id: 'r-1' });
    drop = 'reused';
    await queue.send({ type: 'verify_release', release_id: 'r-2' });
    assert.equal(dropped, 1, 'the second request went out on the kept-alive connection and was dropped');
    assert.deepEqual(
      answered.map((b) => JSON.parse(JSON.parse(b).MessageBody).release_id),
      ['r-1', 'r-2'],
      'each job arrived once',
    );
  });

  it('does not retry a connection closed on a request that did not reuse one', async () => {
    // No kept-alive connection left to reuse: the client's pool has seen its connection close.
    server.closeAllConnections();
    await new Promise((r) => setTimeout(r, 100));
    const before = answered.length;
    drop = 'any';
    const queue = new SqsJobQueue(queueUrl, 'us-east-1');
    await assert.rejects(queue.send({ type: 'verify_release', release_id: 'r-3' }), /socket hang up/);
    assert.equal(answered.length, before, 'nothing was sent again');
  });
});
