/**
 * Operator roles and the audit log on the local cloud: each local account signs with SigV4, the gateway applies
 * the route's roles (ROUTES) as IAM does on AWS, and every mutation, allowed or refused, is in the audit log.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sigV4Authorizer } from '../../cli/aws-auth.js';
import { startLocalCloud } from '../../local/cloud.js';
import { OPERATOR_ROLES } from '../../protocol/roles.js';
import { newReleaseKey, signedRelease, TestVehicle } from '../support/fleet.js';
import { https } from '../support/https.js';
import { SignedOperator } from '../support/signed-operator.js';

const HOOK_TIMEOUT = { timeout: 60_000 };
const VIN = '1HGCM82633A004352';
let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
const releaseKey = newReleaseKey();
const as: Record<string, SignedOperator> = {};

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-roles-'));
  cloud = await startLocalCloud({ dataDir, releasePublicKeys: [releaseKey.publicPem], campaignTickMs: 0 });
  for (const role of OPERATOR_ROLES) as[role] = await SignedOperator.as(cloud, role);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

async function auditEntries(query = '') {
  const res = await as.viewer!.call('GET', `/audit?limit=100${query}`);
  assert.equal(res.status, 200, res.raw.toString());
  return res.json.entries as Record<string, unknown>[];
}

describe('operator roles and the audit log', { timeout: 180_000 }, () => {
  it('makes one account per role on first start, kept private, and the same ones on a restart', async () => {
    assert.deepEqual(cloud.operators.map((a) => a.role).sort(), [...OPERATOR_ROLES].sort());
    assert.equal(statSync(cloud.operatorsFile).mode & 0o777, 0o600);
    const onDisk = JSON.parse(readFileSync(cloud.operatorsFile, 'utf8'));
    assert.deepEqual(onDisk, cloud.operators);
    assert.equal(new Set(cloud.operators.map((a) => a.accessKeyId)).size, 4, 'distinct credentials');
    assert.ok(existsSync(cloud.operatorsFile));
  });

  it('release-manager publishes a release; operator may not; the refusal is audited', async () => {
    const image = randomBytes(64 * 1024);
    const signed = await signedRelease(image, {
      releaseId: 'tcu-2.0.0',
      version: '2.0.0',
      signer: releaseKey.signer,
    });
    const refusedCreate = await as.operator!.call('POST', '/releases', signed);
    assert.equal(refusedCreate.status, 403, refusedCreate.raw.toString());
    assert.equal(refusedCreate.json.error.code, 'forbidden');

    const created = await as['release-manager']!.call('POST', '/releases', signed);
    assert.equal(created.status, 201, created.raw.toString());
    const put = await https(created.json.upload.url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(image.length) },
      body: image,
      ca: cloud.caCertPem,
    });
    assert.equal(put.status, 200);
    assert.equal((await as.operator!.call('POST', '/releases/tcu-2.0.0/publish', {})).status, 403);
    const publishing = await as['release-manager']!.call('POST', '/releases/tcu-2.0.0/publish', {});
    assert.equal(publishing.status, 202, publishing.raw.toString());
    for (let i = 0; ; i++) {
      const r = await as.viewer!.call('GET', '/releases/tcu-2.0.0');
      if (r.json.status === 'published') break;
      assert.ok(i < 200, `release still ${r.json.status}`);
      await sleep(100);
    }

    const refused = await auditEntries('&outcome=refused&role=operator');
    assert.deepEqual(
      refused.map((e) => [e.action, e.target, e.status, e.actor]),
      [
        ['POST /releases/{releaseId}/publish', 'tcu-2.0.0', 403, 'operator'],
        ['POST /releases', null, 403, 'operator'],
      ],
      'newest first',
    );
    const allowed = await auditEntries('&role=release-manager');
    assert.deepEqual(
      allowed.map((e) => [e.action, e.target, e.outcome, e.status]),
      [
        ['POST /releases/{releaseId}/publish', 'tcu-2.0.0', 'allowed', 202],
        ['POST /releases', 'tcu-2.0.0', 'allowed', 201],
      ],
    );
    assert.equal(allowed[0]!.source_ip, '127.0.0.1');
    assert.ok(Math.abs(Date.parse(String(allowed[0]!.at)) - Date.now()) < 60_000);
  });

  it('operator creates and starts a campaign; release-manager may not; viewer only reads', async () => {
    const car = await TestVehicle.create(VIN);
    const reg = await as['release-manager']!.call('POST', '/vehicles', car.registration());
    assert.equal(reg.status, 201, reg.raw.toString());
    assert.equal((await as.operator!.call('POST', '/vehicles', car.registration())).status, 403);

    const body = {
      campaign_id: 'roles-1',
      name: 'roles',
      release_id: 'tcu-2.0.0',
      targets: { vins: [VIN] },
      policy: { waves: [100], skip_canary: true },
    };
    assert.equal((await as['release-manager']!.call('POST', '/campaigns', body)).status, 403);
    assert.equal((await as.viewer!.call('POST', '/campaigns', body)).status, 403);
    const created = await as.operator!.call('POST', '/campaigns', body);
    assert.equal(created.status, 202, created.raw.toString());
    // 202 preparing: the targets are written in the background; wait for it.
    let status = created.json.status;
    for (let i = 0; status === 'preparing'; i++) {
      assert.ok(i < 200, 'the campaign never left preparing');
      await sleep(100);
      status = (await as.viewer!.call('GET', '/campaigns/roles-1')).json.status;
    }
    assert.equal(status, 'created');
    const viewerStart = await as.viewer!.call('POST', '/campaigns/roles-1/start', {});
    assert.equal(viewerStart.status, 403);
    assert.match(
      viewerStart.json.error.message,
      /Role viewer may not call POST \/campaigns\/\{campaignId\}\/start/,
    );
    const started = await as.operator!.call('POST', '/campaigns/roles-1/start', {});
    assert.equal(started.status, 200, started.raw.toString());
    // Every role reads.
    for (const role of OPERATOR_ROLES) {
      assert.equal((await as[role]!.call('GET', '/campaigns/roles-1')).status, 200, role);
      assert.equal((await as[role]!.call('GET', `/vehicles/${VIN}`)).status, 200, role);
    }

    const viewerRefusals = await auditEntries('&actor=viewer');
    assert.deepEqual(
      viewerRefusals.map((e) => [e.action, e.target, e.outcome, e.status, e.role]),
      [
        ['POST /campaigns/{campaignId}/start', 'roles-1', 'refused', 403, 'viewer'],
        ['POST /campaigns', null, 'refused', 403, 'viewer'],
      ],
      'reads are not audited, refusals are',
    );
    const forCampaign = await auditEntries('&target=roles-1');
    assert.deepEqual(
      forCampaign.map((e) => [e.actor, e.action, e.outcome]),
      [
        ['operator', 'POST /campaigns/{campaignId}/start', 'allowed'],
        ['viewer', 'POST /campaigns/{campaignId}/start', 'refused'],
        ['operator', 'POST /campaigns', 'allowed'],
      ],
    );

    // The vehicle registry's mutations run in registry-api (the function with the IoT rights): audited there.
    const revoked = await as['release-manager']!.call('POST', `/vehicles/${VIN}/revoke`, {
      reason: 'roles test',
    });
    assert.equal(revoked.status, 200, revoked.raw.toString());
    assert.equal(
      (await as.operator!.call('POST', `/vehicles/${VIN}/revoke`, { reason: 'roles test' })).status,
      403,
    );
    const forVehicle = await auditEntries(`&target=${VIN}`);
    assert.deepEqual(
      forVehicle.map((e) => [e.actor, e.role, e.action, e.outcome, e.status]),
      [
        ['operator', 'operator', 'POST /vehicles/{vin}/revoke', 'refused', 403],
        ['release-manager', 'release-manager', 'POST /vehicles/{vin}/revoke', 'allowed', 200],
        ['release-manager', 'release-manager', 'POST /vehicles', 'allowed', 201],
      ],
    );
  });

  it('refuses unknown keys and bad signatures with 403, and does not audit who it cannot identify', async () => {
    const before = (await auditEntries()).length;
    const viewer = cloud.operators.find((a) => a.role === 'viewer')!;
    for (const credentials of [
      { accessKeyId: 'LOCALNOSUCHKEY00000', secretAccessKey: viewer.secretAccessKey },
      { accessKeyId: viewer.accessKeyId, secretAccessKey: `${viewer.secretAccessKey}x` },
    ]) {
      const sign = await sigV4Authorizer({ region: 'us-east-1', credentials: async () => credentials });
      const url = new URL(`${cloud.endpoints.api}/campaigns/roles-1/pause`);
      const headers = { 'content-type': 'application/json' };
      const res = await https(url.toString(), {
        method: 'POST',
        headers: { ...headers, ...(await sign.headers({ method: 'POST', url, headers, body: '{}' })) },
        body: '{}',
        ca: cloud.caCertPem,
      });
      assert.equal(res.status, 403, res.raw.toString());
    }
    assert.equal((await auditEntries()).length, before);
  });

  it('the CLI acts as a role with --as: lists the audit log, and is refused what the role may not do', async () => {
    const ota = (...args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'bin/ota.ts', ...args], {
          env: {
            PATH: process.env.PATH ?? '',
            OTA_ENDPOINT: cloud.endpoints.api,
            OTA_CA_FILE: cloud.caFile,
            OTA_OPERATORS_FILE: cloud.operatorsFile,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
        });
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
        });
        child.on('error', fail);
        child.on('close', (code) => done({ code, stdout, stderr }));
      });
    const listed = await ota('audit', 'list', '--as', 'viewer', '--outcome', 'refused', '--json');
    assert.equal(listed.code, 0, listed.stderr);
    const page = JSON.parse(listed.stdout) as { entries: { outcome: string; status: number }[] };
    assert.ok(page.entries.length >= 4, 'the refusals above');
    assert.ok(page.entries.every((e) => e.outcome === 'refused' && e.status === 403));
    const refused = await ota('firmware', 'withdraw', 'tcu-2.0.0', '--as', 'operator');
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /forbidden: Role operator may not call POST \/releases\/\{releaseId\}\/withdraw/,
    );
    assert.match(refused.stderr, /local operator account/, 'the hint names the account');
    const bad = await ota('audit', 'list', '--as', 'root');
    assert.equal(bad.code, 2);
  });

  it('pages the log newest first and refuses malformed filters', async () => {
    const all = await auditEntries();
    const first = await as.admin!.call('GET', '/audit?limit=2');
    assert.equal(first.status, 200);
    assert.equal(first.json.entries.length, 2);
    const second = await as.admin!.call('GET', `/audit?limit=2&next_token=${first.json.next_token}`);
    assert.deepEqual(
      [...first.json.entries, ...second.json.entries].map((e: { event_id: string }) => e.event_id),
      all.slice(0, 4).map((e) => e.event_id),
    );
    const ids = all.map((e) => String(e.event_id));
    assert.deepEqual(ids, [...ids].sort().reverse(), 'newest first');
    assert.equal((await as.admin!.call('GET', '/audit?role=nobody')).status, 400);
    assert.equal((await as.admin!.call('GET', '/audit?colour=red')).status, 400);
  });
});
