/**
 * The operator CLI as an operator runs it: `node bin/ota.ts ...` in a child process against a private local
 * cloud, checking exit codes, stdout (human and --json) and stderr. Release key, signing, single and multipart
 * uploads, vehicles, the campaign lifecycle with a live watch, and the error paths an operator meets.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startLocalCloud } from '../../local/cloud.js';
import { verifyManifestSignatures } from '../../protocol/manifest.js';
import { keyIdOf, trustedKeysFromPems } from '../../protocol/signatures.js';
import { parseTrustDocument } from '../../protocol/trust-document.js';
import { generateKeyAndCsr } from '../../protocol/x509.js';
import { https, jsonRequest } from '../support/https.js';

const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const OTA = join(ROOT, 'bin', 'ota.ts');
// Resolved here: the CLI runs in a temporary folder, where a bare `--import tsx` would not resolve.
const TSX = import.meta.resolve('tsx');
const VINS = ['1HGCM82633A004352', '5YJSA1E26HF000337', 'WDBRF61J43F123456'] as const;
const UNKNOWN_VIN = '2T1BURHE0JC000001';
const TIMEOUT = { timeout: 60_000 };

let work: string;
let cloud: Awaited<ReturnType<typeof startLocalCloud>> | undefined;
let cliEnv: Record<string, string>;
let keysCreated: Result;
const transcript: string[] = [];

interface Result {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

interface Running {
  readonly child: ChildProcess;
  readonly result: Promise<Result>;
  /** Resolves once stdout matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  stdout(): string;
}

function start(args: readonly string[], env: Record<string, string> = {}, preload: string[] = []): Running {
  const child = spawn(
    process.execPath,
    [...preload.flatMap((p) => ['--import', p]), '--import', TSX, OTA, ...args],
    {
      cwd: work,
      env: { PATH: process.env.PATH ?? '', HOME: work, ...cliEnv, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const l of listeners) l();
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  const result = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      transcript.push(stdout, stderr);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    result,
    stdout: () => stdout,
    waitFor: (pattern, timeoutMs = 20_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(stdout)) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`stdout never matched ${pattern}: ${stdout} / ${stderr}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      }),
  };
}

function ota(...args: string[]): Promise<Result> {
  return start(args).result;
}

function otaWith(env: Record<string, string>, ...args: string[]): Promise<Result> {
  return start(args, env).result;
}

function ok(r: Result, what: string): Result {
  assert.equal(r.code, 0, `${what} should succeed: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

// biome-ignore lint/suspicious/noExplicitAny: tests inspect arbitrary JSON output
function json(r: Result, what: string): any {
  ok(r, what);
  try {
    return JSON.parse(r.stdout);
  } catch {
    assert.fail(`${what}: stdout is not JSON: ${r.stdout}`);
  }
}

/** A failure as the operator sees it: the exit code, one error line on stderr, no stack trace, nothing on stdout. */
function failed(r: Result, code: number, pattern: RegExp, what: string): void {
  assert.equal(r.code, code, `${what}: exit code\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, pattern, `${what}: stderr`);
  assert.match(r.stderr, /^error: /, `${what}: stderr starts with error:`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  assert.equal(r.stdout, '', `${what}: nothing on stdout`);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const smallImage = randomBytes(300 * 1024 + 123);
const bigImage = randomBytes(11 * MiB + 123);

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'ota-cli-'));
  cliEnv = {};
  // The release key comes from the CLI itself; the cloud is then started trusting it.
  keysCreated = await ota('keys', 'create', '--out', 'keys');
  const publicPem = readFileSync(join(work, 'keys', 'release.pub.pem'), 'utf8');
  // Read by the operator function at its cold start: an ~11 MiB image goes multipart in 5 MiB parts.
  process.env.MULTIPART_THRESHOLD_BYTES = String(5 * MiB);
  process.env.MULTIPART_PART_BYTES = String(5 * MiB);
  cloud = await startLocalCloud({
    dataDir: join(work, 'cloud'),
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [publicPem],
  });
  cliEnv = {
    OTA_ENDPOINT: cloud.endpoints.api,
    OTA_CA_FILE: cloud.caFile,
    OTA_ADMIN_TOKEN_FILE: cloud.adminTokenFile!,
  };
  writeFileSync(join(work, 'small.bin'), smallImage);
  writeFileSync(join(work, 'big.bin'), bigImage);
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(work, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('release keys and firmware', { timeout: 300_000 }, () => {
  it('keys create writes a P-256 pair (private key 0600) and prints its key id', TIMEOUT, async () => {
    const r = ok(keysCreated, 'keys create');
    const publicPem = readFileSync(join(work, 'keys', 'release.pub.pem'), 'utf8');
    assert.match(r.stdout, new RegExp(`key id +${keyIdOf(publicPem)}`));
    assert.equal(statSync(join(work, 'keys', 'release.key.pem')).mode & 0o777, 0o600, 'private key is 0600');
    const again = await ota('keys', 'create', '--out', 'keys');
    failed(again, 1, /release\.key\.pem exists.*--force/, 'keys create over an existing key');
  });

  it(
    'keys set writes the release-key set document vehicles install (and refuses a file that is no key)',
    TIMEOUT,
    async () => {
      ok(await ota('keys', 'set', '--key', 'keys/release.pub.pem', '--out', 'release-keys.json'), 'keys set');
      const publicPem = readFileSync(join(work, 'keys', 'release.pub.pem'), 'utf8');
      const keys = parseTrustDocument(readFileSync(join(work, 'release-keys.json')));
      assert.deepEqual(
        keys.map((k) => k.keyId),
        [keyIdOf(publicPem)],
      );
      const wrong = await ota('keys', 'set', '--key', 'keys/release.key.pem', '--out', 'nope.json');
      failed(wrong, 1, /not an ECDSA P-256 public key/, 'keys set with a private key');
    },
  );

  it('firmware sign streams the image and writes a manifest signed by that key', TIMEOUT, async () => {
    const small = json(
      await ota(
        'firmware',
        'sign',
        'small.bin',
        '--release-id',
        'tcu-3.0.1',
        '--ecu',
        'tcu',
        '--hardware-id',
        'TCU-HW-1',
        '--version',
        '3.0.1',
        '--key',
        'keys/release.key.pem',
        '--out',
        'small.json',
        '--json',
      ),
      'sign small',
    );
    assert.equal(small.sha256, sha256(smallImage));
    assert.equal(small.size, smallImage.length);
    assert.equal(small.chunk_size, 4 * MiB);
    const signed = JSON.parse(readFileSync(join(work, 'small.json'), 'utf8'));
    const trusted = trustedKeysFromPems([readFileSync(join(work, 'keys', 'release.pub.pem'), 'utf8')]);
    assert.ok(verifyManifestSignatures(signed, trusted), 'the manifest verifies against the public key');
    assert.equal(signed.signatures[0].key_id, small.key_id);

    const big = ok(
      await ota(
        'firmware',
        'sign',
        'big.bin',
        '--release-id',
        'tcu-4.0.0',
        '--ecu',
        'tcu',
        '--hardware-id',
        'TCU-HW-1',
        '--hardware-id',
        'TCU-HW-2',
        '--version',
        '4.0.0',
        '--key',
        'keys/release.key.pem',
        '--out',
        'big.json',
      ),
      'sign big',
    );
    assert.match(big.stdout, /signed tcu-4\.0\.0 \(tcu 4\.0\.0\)/);
    assert.match(big.stderr, /hashing big\.bin: 100%/, 'progress lines on stderr when not a terminal');
    assert.equal(JSON.parse(readFileSync(join(work, 'big.json'), 'utf8')).manifest.chunks.length, 3);
  });

  it('firmware upload publishes with a single PUT, then with a multipart upload', TIMEOUT, async () => {
    const single = ok(
      await ota('firmware', 'upload', 'small.bin', '--manifest', 'small.json'),
      'upload small',
    );
    assert.match(single.stdout, /^published tcu-3\.0\.1: tcu 3\.0\.1, sha256 [0-9a-f]{64}$/m);
    assert.match(single.stderr, /uploading tcu-3\.0\.1: 100%/);

    const multi = ok(await ota('firmware', 'upload', 'big.bin', '--manifest', 'big.json'), 'upload big');
    assert.match(
      multi.stdout,
      /uploading 11534459 bytes in 3 parts/,
      'the server answered a multipart upload',
    );
    assert.match(multi.stdout, /^published tcu-4\.0\.0/m);
    const steps = multi.stderr.match(/^uploading tcu-4\.0\.0: \d+%/gm) ?? [];
    assert.ok(steps.length >= 8, `a progress line about every 10%: ${multi.stderr}`);
    assert.match(multi.stderr, /uploading tcu-4\.0\.0: 100% \(11\.0 MiB of 11\.0 MiB\)/);

    const shown = json(await ota('firmware', 'show', 'tcu-4.0.0', '--json'), 'show');
    assert.equal(shown.status, 'published');
    assert.equal(
      shown.sha256,
      sha256(bigImage),
      'the backend verified the multipart object against the manifest',
    );
    assert.deepEqual(shown.hardware_ids, ['TCU-HW-1', 'TCU-HW-2']);
  });

  it('firmware list and show, for people and for scripts', TIMEOUT, async () => {
    const listed = ok(await ota('firmware', 'list'), 'list');
    assert.match(listed.stdout, /^RELEASE +ECU +VERSION +SIZE +STATUS +CREATED$/m);
    assert.match(listed.stdout, /^tcu-4\.0\.0 +tcu +4\.0\.0 +11\.0 MiB +published /m);
    assert.match(listed.stdout, /^tcu-3\.0\.1 +tcu +3\.0\.1 +300\.1 KiB +published /m);
    // Pages of one release: the CLI follows next_token to the end, so every release is listed once.
    const all = json(await ota('firmware', 'list', '--json', '--limit', '1'), 'list --json');
    const ids = all.releases.map((r: { release_id: string }) => r.release_id);
    assert.ok(ids.includes('tcu-4.0.0') && ids.includes('tcu-3.0.1'), ids.join(','));
    assert.equal(new Set(ids).size, ids.length, 'no release twice');
    assert.equal(all.releases[0].manifest, undefined, 'listings leave the manifests out');
    const shown = ok(await ota('firmware', 'show', 'tcu-3.0.1'), 'show');
    assert.match(shown.stdout, /^status +published$/m);
    assert.match(shown.stdout, /^size +300\.1 KiB \(307323 bytes\)$/m);
  });

  it('firmware publish verifies an image uploaded separately', TIMEOUT, async () => {
    json(
      await ota(
        'firmware',
        'sign',
        'small.bin',
        '--release-id',
        'gw-1.0.0',
        '--ecu',
        'gw',
        '--hardware-id',
        'GW-1',
        '--version',
        '1.0.0',
        '--key',
        'keys/release.key.pem',
        '--out',
        'gw.json',
        '--json',
      ),
      'sign gw',
    );
    const signed = JSON.parse(readFileSync(join(work, 'gw.json'), 'utf8'));
    const created = await jsonRequest(
      cloud!.endpoints.api,
      'POST',
      '/releases',
      cloud!.caCertPem,
      signed,
      cloud!.adminToken,
    );
    assert.equal(created.status, 201, created.raw.toString());
    const put = await https(created.json.upload.url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(smallImage.length) },
      body: smallImage,
      ca: cloud!.caCertPem,
    });
    assert.equal(put.status, 200);
    const published = ok(await ota('firmware', 'publish', 'gw-1.0.0'), 'publish');
    assert.equal(published.stdout, 'gw-1.0.0 is published (gw 1.0.0)\n');
  });
});

describe('error paths', { timeout: 300_000 }, () => {
  it('an unknown release: exit 1 and the API error code', TIMEOUT, async () => {
    failed(
      await ota('firmware', 'show', 'no-such-release'),
      1,
      /^error: unknown_release: No release no-such-release\n$/,
      'show',
    );
    failed(
      await ota('firmware', 'publish', 'no-such-release', '--json'),
      1,
      /^error: unknown_release: /,
      'publish',
    );
  });

  it('a tampered manifest is refused by the backend before any upload', TIMEOUT, async () => {
    const signed = JSON.parse(readFileSync(join(work, 'small.json'), 'utf8'));
    signed.manifest.release_id = 'tcu-3.0.2';
    signed.manifest.version = '3.0.2';
    writeFileSync(join(work, 'tampered.json'), JSON.stringify(signed));
    const r = await ota('firmware', 'upload', 'small.bin', '--manifest', 'tampered.json');
    failed(
      r,
      1,
      /^error: invalid_signature: The manifest is not signed by a trusted release key\n$/,
      'tampered',
    );
    failed(await ota('firmware', 'show', 'tcu-3.0.2'), 1, /unknown_release/, 'no release was created');
  });

  it('an image that is not the one signed is refused locally', TIMEOUT, async () => {
    const r = await ota('firmware', 'upload', 'big.bin', '--manifest', 'small.json');
    failed(r, 1, /big\.bin is 11534459 bytes but the manifest describes 307323/, 'wrong image');
  });

  it('a missing required flag is a usage error with a pointer to --help', TIMEOUT, async () => {
    const r = await ota(
      'firmware',
      'sign',
      'small.bin',
      '--ecu',
      'tcu',
      '--hardware-id',
      'TCU-HW-1',
      '--version',
      '3.0.1',
      '--key',
      'keys/release.key.pem',
      '--out',
      'x.json',
    );
    failed(
      r,
      2,
      /^error: --release-id is required\nRun 'ota firmware sign --help' for usage\.\n$/,
      'missing flag',
    );
    failed(
      await ota('campaigns', 'frobnicate', 'x'),
      2,
      /unknown command 'campaigns frobnicate'/,
      'unknown command',
    );
    const help = ok(await ota('firmware', 'sign', '--help'), 'help');
    assert.match(help.stdout, /^Usage: ota firmware sign <image> --release-id <id>/);
  });

  it('a wrong admin token is shown as a 401 naming the token file, never the token', TIMEOUT, async () => {
    const bad = join(work, 'wrong-token');
    writeFileSync(bad, 'this-is-not-the-admin-token\n');
    const r = await otaWith({ OTA_ADMIN_TOKEN_FILE: bad }, 'firmware', 'list');
    failed(
      r,
      1,
      /^error: unauthorized: .*\(HTTP 401: the admin token in .*wrong-token was refused/,
      'wrong token',
    );
    assert.ok(!r.stderr.includes('this-is-not-the-admin-token'), 'the refused token is not printed');
    ok(
      await otaWith(
        { OTA_ADMIN_TOKEN_FILE: bad },
        'firmware',
        'list',
        '--token-file',
        cloud!.adminTokenFile!,
      ),
      'flag wins',
    );
    const missing = await otaWith({ OTA_ADMIN_TOKEN_FILE: join(work, 'nope') }, 'firmware', 'list');
    failed(missing, 1, /no admin token file at .*nope; start the local cloud/, 'missing token file');
  });

  it('an unreachable endpoint and an untrusted certificate say what to check', TIMEOUT, async () => {
    failed(
      await otaWith({ OTA_ENDPOINT: 'https://127.0.0.1:9' }, 'firmware', 'list'),
      1,
      /cannot connect to https:\/\/127\.0\.0\.1:9 \(connection refused\)/,
      'refused',
    );
    failed(
      await otaWith({ OTA_CA_FILE: '' }, 'firmware', 'list'),
      1,
      /TLS: the certificate of https:\/\/127\.0\.0\.1:\d+ is not trusted .*--ca/,
      'untrusted',
    );
  });
});

describe('vehicles and campaigns', { timeout: 300_000 }, () => {
  it('vehicles register from a CSR and show', TIMEOUT, async () => {
    for (const [i, vin] of VINS.entries()) {
      const { csrPem } = await generateKeyAndCsr(vin);
      writeFileSync(join(work, `${vin}.csr`), csrPem);
      const args = [
        'vehicles',
        'register',
        '--vin',
        vin,
        '--model',
        'Model T',
        '--ecu',
        'tcu:TCU-HW-1:1.0.0',
      ];
      args.push('--ecu', 'bcm:BCM-1:2.0.0', '--csr', `${vin}.csr`);
      if (i === 0) {
        const r = ok(await ota(...args, '--out', `${vin}.crt`), 'register --out');
        assert.match(r.stdout, new RegExp(`^registered ${vin} \\(Model T\\), certificate [0-9a-f]+$`, 'm'));
        const cert = new X509Certificate(readFileSync(join(work, `${vin}.crt`)));
        assert.match(cert.subject, new RegExp(`CN=${vin}`));
      } else {
        const r = json(await ota(...args, '--json'), 'register --json');
        assert.equal(new X509Certificate(r.certificate_pem).subject, `CN=${vin}`);
      }
    }
    failed(
      await ota(
        'vehicles',
        'register',
        '--vin',
        VINS[0],
        '--model',
        'M',
        '--ecu',
        'tcu:TCU-HW-1:1.0.0',
        '--csr',
        `${VINS[0]}.csr`,
      ),
      1,
      /^error: vehicle_exists: /,
      'register twice',
    );
    failed(
      await ota('vehicles', 'register', '--vin', VINS[0], '--model', 'M', '--ecu', 'tcu-1.0.0', '--csr', 'x'),
      2,
      /--ecu must be name:hardware_id:version/,
      'bad --ecu',
    );
    const shown = ok(await ota('vehicles', 'show', VINS[0]), 'show');
    assert.match(shown.stdout, /^model +Model T$/m);
    assert.match(shown.stdout, /^tcu +TCU-HW-1 +1\.0\.0$/m);
    assert.equal(json(await ota('vehicles', 'show', VINS[1], '--json'), 'show --json').ecus.length, 2);
    failed(await ota('vehicles', 'show', UNKNOWN_VIN), 1, /^error: unknown_vehicle: /, 'unknown vehicle');
  });

  it('campaigns create, start, status, vehicles, pause, resume, list', TIMEOUT, async () => {
    failed(
      await ota(
        'campaigns',
        'create',
        '--name',
        'x',
        '--release-id',
        'no-such-release',
        '--model',
        'Model T',
      ),
      1,
      /^error: unknown_release: No release no-such-release\n$/,
      'campaign of an unknown release',
    );
    writeFileSync(join(work, 'vins.txt'), `# the rest of the pilot\n${VINS[2]}\n${UNKNOWN_VIN}\n`);
    const created = json(
      await ota(
        'campaigns',
        'create',
        '--name',
        'TCU 4.0.0',
        '--release-id',
        'tcu-4.0.0',
        '--campaign-id',
        'cli-rollout',
        '--vin',
        VINS[0],
        '--vin',
        VINS[1],
        '--vins-file',
        'vins.txt',
        '--waves',
        '50,100',
        '--halt-failure-count',
        '1',
        '--json',
      ),
      'create',
    );
    assert.equal(created.campaign_id, 'cli-rollout');
    assert.equal(created.status, 'created');
    assert.equal(created.target_count, 3);
    assert.deepEqual(created.excluded, { count: 1, by_reason: { unknown_vehicle: 1 } });
    assert.deepEqual(
      json(await ota('campaigns', 'excluded', 'cli-rollout', '--json', '--limit', '1'), 'excluded').excluded,
      [{ vin: UNKNOWN_VIN, reason: 'unknown_vehicle' }],
    );
    assert.deepEqual(created.policy.waves, [50, 100]);
    assert.equal(created.policy.haltFailureCount, 1);

    assert.equal(
      ok(await ota('campaigns', 'start', 'cli-rollout'), 'start').stdout,
      'cli-rollout: running\n',
    );
    const status = json(await ota('campaigns', 'status', 'cli-rollout', '--json'), 'status --json');
    assert.equal(status.status, 'running');
    assert.equal(typeof status.waves[0].started_at, 'string');

    // The engine ticks every second: wave 0 (2 of 3 vehicles) gets its offers over MQTT.
    let wave0: { vehicles: { vin: string; status: string }[] } = { vehicles: [] };
    const allOffered = () => wave0.vehicles.length > 0 && wave0.vehicles.every((v) => v.status === 'offered');
    for (let i = 0; i < 40 && !allOffered(); i++) {
      await new Promise((r) => setTimeout(r, 250));
      wave0 = json(
        await ota('campaigns', 'vehicles', 'cli-rollout', '--wave', '0', '--json'),
        'vehicles --json',
      );
    }
    assert.equal(wave0.vehicles.length, 2);
    assert.ok(
      wave0.vehicles.every((v) => v.status === 'offered'),
      `wave 0 offered: ${JSON.stringify(wave0.vehicles)}`,
    );
    const human = ok(await ota('campaigns', 'status', 'cli-rollout'), 'status');
    assert.match(human.stdout, /^status +running$/m);
    assert.match(human.stdout, /^WAVE +SIZE +SCHEDULED +OFFERED +OK +FAILED +STARTED$/m);
    assert.match(human.stdout, /^0\* +2 +0 +2 +0 +0 +\d{4}-/m);
    assert.match(human.stdout, /^1 +1 +1 +0 +0 +0 +-$/m);
    assert.match(human.stdout, /^ +unknown_vehicle +1$/m, 'exclusions are counted per reason');
    assert.match(
      human.stdout,
      /ota campaigns excluded cli-rollout/,
      'and the command that lists them is named',
    );
    const wave1 = ok(await ota('campaigns', 'vehicles', 'cli-rollout', '--wave', '1'), 'vehicles');
    // A wave takes its vehicles when it starts (the targets wait unassigned until then), so wave 1 lists nobody
    // yet, while the status above counts its one place as scheduled.
    assert.equal(wave1.stdout, 'campaign cli-rollout, wave 1\nno vehicles in wave 1\n');
    failed(
      await ota('campaigns', 'vehicles', 'cli-rollout', '--wave', '2'),
      1,
      /^error: invalid_wave: /,
      'wave 2',
    );

    assert.equal(ok(await ota('campaigns', 'pause', 'cli-rollout'), 'pause').stdout, 'cli-rollout: paused\n');
    failed(
      await ota('campaigns', 'pause', 'cli-rollout'),
      1,
      /^error: invalid_transition: Cannot pause a campaign that is paused\n$/,
      'pause twice',
    );
    assert.equal(json(await ota('campaigns', 'resume', 'cli-rollout', '--json'), 'resume').status, 'running');
    const listed = ok(await ota('campaigns', 'list'), 'list');
    assert.match(listed.stdout, /^cli-rollout +TCU 4\.0\.0 +tcu-4\.0\.0 +running +0 \(of 0-1\) +3 +/m);
    assert.equal(json(await ota('campaigns', 'list', '--json'), 'list --json').campaigns.length, 1);
  });

  it('campaigns status --watch follows the campaign until it is cancelled (exit 3)', TIMEOUT, async () => {
    const watch = start(['campaigns', 'status', 'cli-rollout', '--watch', '--interval', '0.3']);
    await watch.waitFor(/cli-rollout running wave 0/);
    assert.equal(
      ok(await ota('campaigns', 'cancel', 'cli-rollout'), 'cancel').stdout,
      'cli-rollout: cancelled\n',
    );
    const r = await watch.result;
    assert.equal(r.code, 3, `watch exit code; stderr: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^\d\d:\d\d:\d\d cli-rollout running wave 0 \(of 0-1\): /);
    assert.match(lines.at(-1) ?? '', /^\d\d:\d\d:\d\d cli-rollout cancelled /);
    assert.match(r.stderr, /^campaign cli-rollout cancelled/);
    failed(
      await ota('campaigns', 'resume', 'cli-rollout'),
      1,
      /invalid_transition/,
      'resume a cancelled campaign',
    );
  });

  it('campaigns status --watch --json stops cleanly on Ctrl-C (exit 130)', TIMEOUT, async () => {
    json(
      await ota(
        'campaigns',
        'create',
        '--name',
        'again',
        '--release-id',
        'tcu-4.0.0',
        '--campaign-id',
        'cli-again',
        '--model',
        'Model T',
        '--json',
      ),
      'create by filter',
    );
    const watch = start(['campaigns', 'status', 'cli-again', '--watch', '--json', '--interval', '0.3']);
    await watch.waitFor(/\n/);
    const first = JSON.parse(watch.stdout().split('\n')[0]!);
    assert.equal(first.campaign_id, 'cli-again');
    assert.equal(first.status, 'created');
    assert.equal(first.target_count, 3, 'the filter found the vehicles the cancelled campaign released');
    watch.child.kill('SIGINT');
    const r = await watch.result;
    assert.equal(r.code, 130, `exit code after Ctrl-C; stderr: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    ok(await ota('campaigns', 'cancel', 'cli-again'), 'cancel');
  });
});

describe('kill switches (issue 18 #4)', { timeout: 300_000 }, () => {
  it('vehicles revoke and firmware withdraw, for people and for scripts', TIMEOUT, async () => {
    const revoked = ok(await ota('vehicles', 'revoke', VINS[2], '--reason', 'stolen'), 'revoke');
    assert.match(
      revoked.stdout,
      new RegExp(
        `^revoked ${VINS[2]} at \\S+: certificate [0-9a-f]+ revoked, \\d+ open update\\(s\\) withdrawn$`,
        'm',
      ),
    );
    assert.notEqual(json(await ota('vehicles', 'show', VINS[2], '--json'), 'show revoked').revoked_at, null);
    failed(await ota('vehicles', 'revoke', UNKNOWN_VIN), 1, /^error: unknown_vehicle: /, 'revoke unknown');
    assert.equal((await ota('vehicles', 'revoke', 'not-a-vin')).code, 2, 'a malformed VIN is a usage error');

    const withdrawn = json(
      await ota('firmware', 'withdraw', 'tcu-4.0.0', '--reason', 'bad batch', '--json'),
      'withdraw --json',
    );
    assert.equal(withdrawn.status, 'withdrawn');
    assert.equal(withdrawn.campaigns_cancelled, 0, 'its campaigns were all cancelled already');
    const again = ok(await ota('firmware', 'withdraw', 'tcu-4.0.0'), 'withdraw again');
    assert.match(
      again.stdout,
      /^tcu-4\.0\.0 is withdrawn: 0 campaign\(s\) cancelled, 0 open update\(s\) withdrawn$/m,
    );
    failed(
      await ota('firmware', 'withdraw', 'nope-9.9.9'),
      1,
      /^error: unknown_release: /,
      'withdraw unknown',
    );
  });
});

describe('large images', { timeout: 300_000 }, () => {
  it('signs a 2 GiB image with bounded memory', { timeout: 180_000 }, async () => {
    const size = 2 * 1024 * MiB + 1;
    const fd = openSync(join(work, 'huge.bin'), 'w');
    // Sparse: the size of a 2 GiB image without writing 2 GiB to disk.
    writeSync(fd, Buffer.from([7]), 0, 1, size - 1);
    closeSync(fd);
    const reportRss = `data:text/javascript,process.on('exit',()=>process.stderr.write('maxrss_kb='+process.resourceUsage().maxRSS+'\\n'))`;
    const r = await start(
      [
        'firmware',
        'sign',
        'huge.bin',
        '--release-id',
        'huge-1.0.0',
        '--ecu',
        'tcu',
        '--hardware-id',
        'TCU-HW-1',
        '--version',
        '9.0.0',
        '--key',
        'keys/release.key.pem',
        '--out',
        'huge.json',
        '--json',
      ],
      {},
      [reportRss],
    ).result;
    const out = json(r, 'sign 2 GiB');
    assert.equal(out.size, size);
    assert.equal(out.chunks, 513);
    const rssMiB = Number(/maxrss_kb=(\d+)/.exec(r.stderr)?.[1]) / 1024;
    assert.ok(rssMiB > 0 && rssMiB < 400, `peak memory ${rssMiB.toFixed(0)} MiB for a 2 GiB image`);
    rmSync(join(work, 'huge.bin'));
  });
});

describe('secrets', { timeout: 300_000 }, () => {
  it('never printed the admin token in any output', () => {
    assert.ok(transcript.length > 40, 'the commands above ran');
    const token = cloud!.adminToken;
    assert.ok(!transcript.some((t) => t.includes(token)), 'the admin token appears in no stdout or stderr');
  });
});
