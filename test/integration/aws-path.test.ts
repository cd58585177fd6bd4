/**
 * The documented way onto AWS, run against the local cloud: operator routes are IAM-authorised there, so a vehicle
 * cannot register itself with a token. The agent writes its CSR (--csr-out), the operator registers it with SigV4
 * (`ota vehicles register --aws`), and the agent starts with the certificate it got (--certificate).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LOCAL_REGION, type LocalCloud, startLocalCloud } from '../../local/cloud.js';

/** Starting or stopping the local cloud on a loaded machine. */
const HOOK_TIMEOUT = { timeout: 120_000 };

const ROOT = join(import.meta.dirname, '..', '..');
const VIN = '1HGCM82633A004352';
let cloud: LocalCloud;
let dir: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a project entry point; `until` stops it (SIGTERM) once its stderr matches. */
function run(script: string, args: string[], env: Record<string, string> = {}, until?: RegExp): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: ROOT,
      // No admin token anywhere: --aws must sign, the agent must not need one.
      env: { ...process.env, OTA_ADMIN_TOKEN_FILE: join(dir, 'no-such-token'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = { stdout: '', stderr: '' };
    child.stdout.on('data', (d: Buffer) => {
      out.stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out.stderr += d.toString();
      if (until?.test(out.stderr)) child.kill('SIGTERM');
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, ...out }));
  });
}

const register = (env: Record<string, string>) =>
  run(
    'bin/ota.ts',
    [
      ...['vehicles', 'register', '--aws', '--endpoint', cloud.endpoints.api, '--region', LOCAL_REGION],
      ...['--ca', cloud.caFile, '--vin', VIN, '--model', 'Model T', '--ecu', 'tcu:TCU-HW-1:1.0.0'],
      ...['--csr', join(dir, 'vehicle.csr.pem'), '--out', join(dir, 'vehicle.cert.pem')],
    ],
    env,
  );

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ota-aws-path-'));
  cloud = await startLocalCloud({
    dataDir: join(dir, 'cloud'),
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    campaignTickMs: 0,
  });
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('first vehicle, the AWS way (SigV4 operator, CSR from the agent)', { timeout: 120_000 }, () => {
  const agentArgs = () => [
    ...['--vin', VIN, '--state-dir', join(dir, 'car'), '--api', cloud.endpoints.api, '--mqtt', 'none'],
    ...['--ca', cloud.caFile, '--release-key', cloud.releaseKeyFiles!.publicKey],
    ...['--backend-key', cloud.signingKeyFile],
  ];

  it('the agent writes its CSR and refuses to start without a certificate', async () => {
    const csr = await run('bin/vehicle-agent.ts', [
      ...agentArgs(),
      '--csr-out',
      join(dir, 'vehicle.csr.pem'),
    ]);
    assert.equal(csr.code, 0, csr.stderr);
    assert.match(readFileSync(join(dir, 'vehicle.csr.pem'), 'utf8'), /BEGIN CERTIFICATE REQUEST/);
    assert.match(csr.stdout, /vehicles register --aws/);
    assert.ok(!existsSync(join(dir, 'car', 'identity', 'device.cert.pem')));

    const refused = await run('bin/vehicle-agent.ts', agentArgs());
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /no certificate: --csr-out/);
  });

  it('the operator registers it with SigV4 (--aws), and a wrong secret is refused with 403', async () => {
    const aws = { AWS_ACCESS_KEY_ID: cloud.credentials.accessKeyId, AWS_REGION: LOCAL_REGION };
    const wrong = await register({ ...aws, AWS_SECRET_ACCESS_KEY: 'not-the-secret-key' });
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /forbidden/);

    const ok = await register({ ...aws, AWS_SECRET_ACCESS_KEY: cloud.credentials.secretAccessKey });
    assert.equal(ok.code, 0, ok.stderr);
    const cert = new X509Certificate(readFileSync(join(dir, 'vehicle.cert.pem')));
    assert.equal(cert.subject, `CN=${VIN}`);
  });

  it('the agent installs the certificate the operator got and starts', async () => {
    const started = await run(
      'bin/vehicle-agent.ts',
      [...agentArgs(), '--certificate', join(dir, 'vehicle.cert.pem'), '--poll-interval', '0.2'],
      {},
      /agent started/,
    );
    assert.match(started.stderr, /device certificate installed/);
    assert.match(started.stderr, /agent started/);
    assert.equal(
      readFileSync(join(dir, 'car', 'identity', 'device.cert.pem'), 'utf8'),
      readFileSync(join(dir, 'vehicle.cert.pem'), 'utf8'),
    );
  });
});
