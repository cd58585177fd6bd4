/** Flags to API bodies: ECU specs, waves, VIN files, sizes, the campaign body; and the connection settings. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../cli/args.js';
import { DEFAULT_ENDPOINT, regionFromHost, resolveConnection } from '../../cli/config.js';
import {
  campaignBody,
  parseByteSize,
  parseChunkSize,
  parseEcuSpec,
  parseVinList,
  parseWaves,
} from '../../cli/inputs.js';

const VIN = '1HGCM82633A004352';

function usageError(fn: () => unknown, pattern: RegExp) {
  assert.throws(
    fn,
    (err: unknown) => err instanceof UsageError && pattern.test(err.message),
    `expected a usage error matching ${pattern}`,
  );
}

describe('value parsers', { timeout: 60_000 }, () => {
  it('reads ECU specs name:hardware_id:version', () => {
    assert.deepEqual(parseEcuSpec('tcu:TCU-HW-1:1.0.0'), {
      ecu: 'tcu',
      hardware_id: 'TCU-HW-1',
      version: '1.0.0',
    });
    usageError(() => parseEcuSpec('tcu:TCU-HW-1'), /name:hardware_id:version/);
    usageError(() => parseEcuSpec('tcu::1.0.0'), /name:hardware_id:version/);
    usageError(() => parseEcuSpec('tcu:HW:1.0'), /semantic version/);
  });

  it('reads waves as strictly increasing cumulative percentages ending at 100', () => {
    assert.deepEqual(parseWaves('1,10,50,100'), [1, 10, 50, 100]);
    assert.deepEqual(parseWaves(' 0.5, 100 '), [0.5, 100]);
    usageError(() => parseWaves('10,5,100'), /strictly increasing/);
    usageError(() => parseWaves('10,50'), /end at 100/);
    usageError(() => parseWaves('0,100'), /above 0/);
    usageError(() => parseWaves('a,100'), /must be a number/);
  });

  it('reads VIN files with comments, commas and blank lines', () => {
    assert.deepEqual(parseVinList(`# pilot fleet\n${VIN}\n\n5yjsa1e26hf000337, WDBRF61J43F123456 # two\n`), [
      VIN,
      '5YJSA1E26HF000337',
      'WDBRF61J43F123456',
    ]);
  });

  it('reads byte sizes with binary units and bounds the chunk size', () => {
    assert.equal(parseByteSize('65536', '--x'), 65536);
    assert.equal(parseByteSize('4MiB', '--x'), 4 * 1024 * 1024);
    assert.equal(parseByteSize('64k', '--x'), 65536);
    usageError(() => parseByteSize('4 MB', '--x'), /size such as 4MiB/);
    assert.equal(parseChunkSize(undefined, 123), 123);
    usageError(() => parseChunkSize('1KiB', 1), /between 64KiB and 64MiB/);
    usageError(() => parseChunkSize('128MiB', 1), /between 64KiB and 64MiB/);
  });
});

describe('campaignBody', { timeout: 60_000 }, () => {
  it('builds targets and only the policy fields given', () => {
    const body = campaignBody(
      {
        name: 'TCU rollout',
        'release-id': 'tcu-3.0.1',
        vin: [VIN.toLowerCase(), VIN],
        model: 'Model T',
        waves: '10,100',
        'halt-failure-count': '2',
        'soak-seconds': '0',
      },
      ['5YJSA1E26HF000337'],
    );
    assert.deepEqual(body, {
      name: 'TCU rollout',
      release_id: 'tcu-3.0.1',
      targets: { vins: [VIN, '5YJSA1E26HF000337'], filter: { model: 'Model T' } },
      policy: { waves: [10, 100], soak_seconds: 0, halt_failure_count: 2 },
    });
  });

  it('targets every vehicle only with --all, alone; --skip-canary allows a single wave', () => {
    const body = campaignBody({ name: 'x', 'release-id': 'r', all: true, waves: '100', 'skip-canary': true });
    assert.deepEqual(body.targets, { all: true });
    assert.deepEqual(body.policy, { skip_canary: true, waves: [100] });
    usageError(() => campaignBody({ name: 'x', 'release-id': 'r', all: true, model: 'm' }), /--all targets/);
    usageError(() => campaignBody({ name: 'x', 'release-id': 'r' }), /or --all/);
    usageError(() => campaignBody({ name: 'x\x1b[2J', 'release-id': 'r', model: 'm' }), /^--name: .*control/);
  });

  it('maps the condition flags to policy.conditions and refuses postponements without a consent deadline', () => {
    const body = campaignBody({
      name: 'night',
      'release-id': 'r',
      all: true,
      'consent-deadline': '86400',
      'max-postponements': '2',
      'postpone-seconds': '3600',
      'maintenance-window': '22:00-05:00',
      network: 'unmetered',
    });
    assert.deepEqual(body.policy?.conditions, {
      consent: { deadline_seconds: 86400, max_postponements: 2, postpone_seconds: 3600 },
      maintenance_window: { start: '22:00', end: '05:00' },
      network: 'unmetered',
    });
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', all: true, 'max-postponements': '2' }),
      /need --consent-deadline/,
    );
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', all: true, 'maintenance-window': '25:00-01:00' }),
      /HH:MM/,
    );
  });

  it('refuses a campaign without targets, and names the flag at fault', () => {
    usageError(() => campaignBody({ name: 'x', 'release-id': 'r' }), /choose the targets/);
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', vin: ['NOTAVIN'] }),
      /VIN 'NOTAVIN': must be 17/,
    );
    usageError(() => campaignBody({ name: 'x', 'release-id': 'R!', model: 'm' }), /^--release-id: /);
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', model: 'm', 'campaign-id': 'X' }),
      /^--campaign-id: /,
    );
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', model: 'm', 'current-version': 'v1' }),
      /^--current-version: must be a semantic version/,
    );
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', model: 'm', 'halt-failure-percent': '0' }),
      /--halt-failure-percent must be a number above 0/,
    );
    usageError(
      () => campaignBody({ name: 'x', 'release-id': 'r', model: 'm', 'notify-per-second': '2.5' }),
      /--notify-per-second must be an integer/,
    );
  });
});

describe('resolveConnection', { timeout: 60_000 }, () => {
  const cwd = '/work/project';
  const none = () => false;

  it('defaults to the local cloud, using the local CA only where it exists', () => {
    const c = resolveConnection({ values: {}, env: {}, cwd, fileExists: none });
    assert.equal(c.endpoint.href, `${DEFAULT_ENDPOINT}/`);
    assert.equal(c.caFile, undefined);
    assert.deepEqual(c.credentials, { kind: 'admin-token', file: '/work/project/.ota-local/admin-token' });
    const withCa = resolveConnection({ values: {}, env: {}, cwd, fileExists: () => true });
    assert.equal(withCa.caFile, '/work/project/.ota-local/ca/ca.cert.pem');
  });

  it('takes flags over environment variables', () => {
    const env = {
      OTA_ENDPOINT: 'https://env.example',
      OTA_CA_FILE: 'env-ca.pem',
      OTA_ADMIN_TOKEN_FILE: '/secrets/token',
    };
    const fromEnv = resolveConnection({ values: {}, env, cwd, fileExists: none });
    assert.equal(fromEnv.endpoint.origin, 'https://env.example');
    assert.equal(fromEnv.caFile, '/work/project/env-ca.pem');
    assert.deepEqual(fromEnv.credentials, { kind: 'admin-token', file: '/secrets/token' });
    const fromFlags = resolveConnection({
      values: { endpoint: 'https://flag.example/prod/', ca: '/ca.pem', 'token-file': 't' },
      env,
      cwd,
      fileExists: none,
    });
    assert.equal(fromFlags.endpoint.href, 'https://flag.example/prod/');
    assert.equal(fromFlags.caFile, '/ca.pem');
    assert.deepEqual(fromFlags.credentials, { kind: 'admin-token', file: '/work/project/t' });
  });

  it('--aws needs an explicit endpoint and a region, and takes no token', () => {
    usageError(() => resolveConnection({ values: { aws: true }, env: {}, cwd }), /--aws needs the API URL/);
    const api = 'https://abc123.execute-api.eu-west-1.amazonaws.com/prod/';
    const c = resolveConnection({
      values: { aws: true, endpoint: api },
      env: {},
      cwd,
      fileExists: () => true,
    });
    assert.deepEqual(c.credentials, { kind: 'aws', region: 'eu-west-1' });
    assert.equal(c.caFile, undefined, 'the local CA is not used for AWS');
    const envRegion = resolveConnection({
      values: { aws: true },
      env: { OTA_ENDPOINT: 'https://api.example', AWS_REGION: 'us-east-2' },
      cwd,
    });
    assert.deepEqual(envRegion.credentials, { kind: 'aws', region: 'us-east-2' });
    usageError(
      () => resolveConnection({ values: { aws: true, endpoint: 'https://api.example' }, env: {}, cwd }),
      /needs a region/,
    );
    usageError(
      () => resolveConnection({ values: { aws: true, endpoint: api, 'token-file': 't' }, env: {}, cwd }),
      /exclude each other/,
    );
  });

  it('refuses endpoints that would send credentials in clear text or are not URLs', () => {
    usageError(
      () => resolveConnection({ values: { endpoint: 'http://127.0.0.1:8443' }, env: {}, cwd }),
      /https:\/\//,
    );
    usageError(
      () => resolveConnection({ values: { endpoint: '127.0.0.1:8443' }, env: {}, cwd }),
      /https:\/\/|must be a URL/,
    );
    usageError(() => resolveConnection({ values: { endpoint: 'https://x?y=1' }, env: {}, cwd }), /query/);
  });

  it('reads the region of an API Gateway host name', () => {
    assert.equal(regionFromHost('abc.execute-api.ap-southeast-2.amazonaws.com'), 'ap-southeast-2');
    assert.equal(regionFromHost('api.example.com'), undefined);
  });
});
