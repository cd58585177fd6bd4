/**
 * The shared trust helper: an agent given the private CA as one prebuilt secure context still verifies exactly as
 * the `ca` option did (the private CA's server is trusted, another CA's is refused, the host name is checked), and
 * every request on it shares one connection-pool key without the roots' text in it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CliError } from '../../cli/errors.js';
import { createAgent } from '../../cli/http.js';
import { trustingAgent } from '../../protocol/tls-trust.js';
import { createCa, issueServerCertificate } from '../../protocol/x509.js';

let server: Server;
let port: number;
let caPem: string;
let otherCaPem: string;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

before(async () => {
  const ca = await createCa('tls trust test CA');
  const other = await createCa('another CA');
  caPem = ca.certPem;
  otherCaPem = other.certPem;
  const tls = await issueServerCertificate({ caKeyPem: ca.keyPem, caCertPem: ca.certPem });
  server = createServer({ key: tls.keyPem, cert: tls.certPem }, (_req, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
}, HOOK_TIMEOUT);

after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
}, HOOK_TIMEOUT);

/** GET / on the test server; `servername` names the host the certificate must be for (its own by default). */
function get(agent: ReturnType<typeof trustingAgent>, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent, servername }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('trustingAgent', { timeout: 30_000 }, () => {
  it('trusts a server certified by the given CA, over one kept-alive connection', async () => {
    const agent = trustingAgent(caPem, { keepAlive: true, maxSockets: 1 });
    try {
      assert.equal(await get(agent), 'ok');
      assert.equal(await get(agent), 'ok');
      const pools = Object.keys(agent.freeSockets);
      assert.equal(pools.length, 1);
      assert.ok(pools[0]!.length < 200, `pool key of ${pools[0]!.length} characters`);
    } finally {
      agent.destroy();
    }
  });

  it('refuses a server certified by another CA', async () => {
    const agent = trustingAgent(otherCaPem);
    try {
      await assert.rejects(get(agent), (err: NodeJS.ErrnoException) => {
        assert.match(String(err.code), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
        return true;
      });
    } finally {
      agent.destroy();
    }
  });

  it('still checks the host name against the certificate', async () => {
    const agent = trustingAgent([otherCaPem, caPem]);
    try {
      await assert.rejects(get(agent, 'updates.example.com'), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
        return true;
      });
    } finally {
      agent.destroy();
    }
  });
});

describe("the CLI's agent from --ca", { timeout: 30_000 }, () => {
  it('trusts the CA in the file, and names a file it cannot read or that is not a certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ota-tls-trust-'));
    try {
      const caFile = join(dir, 'ca.pem');
      writeFileSync(caFile, caPem);
      const agent = createAgent(caFile);
      try {
        assert.equal(await get(agent), 'ok');
      } finally {
        agent.destroy();
      }
      const missing = join(dir, 'missing.pem');
      assert.throws(
        () => createAgent(missing),
        (err: unknown) =>
          err instanceof CliError && err.message === `cannot read the CA file ${missing} (ENOENT)`,
      );
      const notPem = join(dir, 'token.txt');
      writeFileSync(notPem, 'not a certificate');
      assert.throws(
        () => createAgent(notPem),
        (err: unknown) => err instanceof CliError && err.message === `${notPem} is not a PEM certificate`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
