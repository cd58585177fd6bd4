/**
 * Image uploads of the operator CLI against a small HTTPS server standing in for S3: each part carries exactly
 * its byte range with its length, a 5xx is retried with progress taken back, a 4xx is not retried.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CliError } from '../../cli/errors.js';
import { uploadImage } from '../../cli/upload.js';
import { createCa, issueServerCertificate } from '../../protocol/x509.js';

interface Received {
  readonly path: string;
  readonly length: string | undefined;
  readonly contentType: string | undefined;
  readonly body: Buffer;
}

let server: Server;
let agent: Agent;
let base: string;
let dir: string;
const received: Received[] = [];
/** Status to answer per path, consumed in order; 200 once exhausted. */
const script = new Map<string, number[]>();
const image = randomBytes(23 * 1024 + 7);
let file: string;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

before(async () => {
  const ca = await createCa('cli upload test CA');
  const tls = await issueServerCertificate({ caKeyPem: ca.keyPem, caCertPem: ca.certPem });
  server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const path = req.url ?? '';
      received.push({
        path,
        length: req.headers['content-length'],
        contentType: req.headers['content-type'],
        body: Buffer.concat(parts),
      });
      const status = script.get(path)?.shift() ?? 200;
      if (status === 200) {
        res.writeHead(200, { etag: `"etag-${path.slice(1)}"` }).end();
      } else {
        res
          .writeHead(status, { 'content-type': 'application/xml' })
          .end(`<Error><Code>Code${status}</Code><Message>status ${status}</Message></Error>`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  agent = new Agent({ ca: ca.certPem, keepAlive: true });
  dir = mkdtempSync(join(tmpdir(), 'ota-cli-upload-'));
  file = join(dir, 'image.bin');
  writeFileSync(file, image);
}, HOOK_TIMEOUT);

after(async () => {
  agent.destroy();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

function progress() {
  const deltas: number[] = [];
  return {
    deltas,
    onProgress: (d: number) => deltas.push(d),
    total: () => deltas.reduce((a, b) => a + b, 0),
  };
}

describe('uploadImage', { timeout: 60_000 }, () => {
  it('sends a single PUT of the whole image with its length and content type', async () => {
    received.length = 0;
    const p = progress();
    const body = await uploadImage({
      file,
      size: image.length,
      target: { method: 'PUT', url: `${base}/single`, expires_at: '' },
      agent,
      onProgress: p.onProgress,
    });
    assert.deepEqual(body, {});
    assert.equal(received.length, 1);
    assert.equal(received[0]!.length, String(image.length));
    assert.equal(
      received[0]!.contentType,
      'application/octet-stream',
      'the presigned PUT signs the content type',
    );
    assert.ok(received[0]!.body.equals(image), 'the exact image bytes');
    assert.equal(p.total(), image.length);
  });

  it('uploads parts as byte ranges, retries a 5xx, and answers the ETags in part order', async () => {
    received.length = 0;
    script.set('/p2', [503]);
    const p = progress();
    const partSize = 10 * 1024;
    const body = await uploadImage({
      file,
      size: image.length,
      target: {
        method: 'MULTIPART',
        upload_id: 'up-1',
        part_size: partSize,
        parts: [3, 1, 2].map((n) => ({ part_number: n, url: `${base}/p${n}` })),
        expires_at: '',
      },
      agent,
      concurrency: 2,
      backoffMs: () => 1,
      onProgress: p.onProgress,
    });
    assert.deepEqual(body, {
      upload_id: 'up-1',
      parts: [1, 2, 3].map((n) => ({ part_number: n, etag: `"etag-p${n}"` })),
    });
    const last = (path: string) => received.filter((r) => r.path === path).at(-1)!;
    for (const n of [1, 2, 3]) {
      const expected = image.subarray((n - 1) * partSize, n * partSize);
      assert.ok(last(`/p${n}`).body.equals(expected), `part ${n} carries its byte range`);
      assert.equal(last(`/p${n}`).length, String(expected.length));
    }
    assert.equal(received.filter((r) => r.path === '/p2').length, 2, 'part 2 was sent twice');
    assert.equal(p.total(), image.length, 'progress ends at the image size, the failed attempt taken back');
    assert.ok(
      p.deltas.some((d) => d < 0),
      'the failed attempt was taken back',
    );
  });

  it('does not retry a refusal and says why', async () => {
    script.set('/denied', [403]);
    await assert.rejects(
      uploadImage({
        file,
        size: image.length,
        target: { method: 'PUT', url: `${base}/denied`, expires_at: '' },
        agent,
        backoffMs: () => 1,
      }),
      (err: unknown) =>
        err instanceof CliError &&
        /upload of the image refused: HTTP 403 Code403: status 403/.test(err.message),
      'a 403 fails at once with the S3 error',
    );
    assert.equal(received.filter((r) => r.path === '/denied').length, 1, 'sent once');
  });

  it('gives up after the attempts allowed', async () => {
    script.set('/flaky', [500, 500, 500]);
    await assert.rejects(
      uploadImage({
        file,
        size: image.length,
        target: { method: 'PUT', url: `${base}/flaky`, expires_at: '' },
        agent,
        backoffMs: () => 1,
      }),
      (err: unknown) => err instanceof CliError && /HTTP 500/.test(err.message),
      'three 500s fail the upload',
    );
  });
});
