/**
 * What the operator CLI shows: one-line errors and exit codes (never a secret), API error bodies, status views,
 * upload part ranges, and SigV4 headers for --aws checked against an independent implementation.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { toApiError } from '../../cli/api.js';
import { EXIT, UsageError } from '../../cli/args.js';
import { sigV4Authorizer } from '../../cli/aws-auth.js';
import { COMMANDS } from '../../cli/commands.js';
import { Context } from '../../cli/context.js';
import { ApiError, CliError, formatError } from '../../cli/errors.js';
import { describeNetworkError } from '../../cli/http.js';
import {
  campaignLine,
  campaignVehicleRows,
  countsText,
  renderCampaign,
  table,
  terminalJson,
  terminalText,
} from '../../cli/render.js';
import { describeS3Error, partRanges } from '../../cli/upload.js';
import { campaignView } from '../../lambdas/core/campaigns.js';
import type { CampaignRecord } from '../../lambdas/core/ports.js';

describe('formatError', { timeout: 60_000 }, () => {
  const sign = COMMANDS.find((c) => c.group === 'firmware' && c.name === 'sign')!;

  it('usage errors: exit 2 and a pointer to the command help', () => {
    const f = formatError(new UsageError('--release-id is required'), { command: sign });
    assert.equal(f.exitCode, EXIT.usage);
    assert.equal(f.text, "error: --release-id is required\nRun 'ota firmware sign --help' for usage.\n");
  });

  it('API errors: exit 1, code and message on one line', () => {
    const f = formatError(new ApiError(409, 'release_exists', 'Release x already exists'));
    assert.deepEqual(f, { text: 'error: release_exists: Release x already exists\n', exitCode: EXIT.failed });
  });

  it('a 401 says where the refused credentials came from, and never prints a secret', () => {
    const token = 'tok_0123456789abcdef';
    const f = formatError(
      new ApiError(
        401,
        'unauthorized',
        `bad token ${token}`,
        'the admin token in /x/admin-token was refused',
      ),
      { secrets: [token] },
    );
    assert.equal(f.exitCode, EXIT.failed);
    assert.match(
      f.text,
      /^error: unauthorized: .*\(HTTP 401: the admin token in \/x\/admin-token was refused\)\n$/,
    );
    assert.ok(!f.text.includes(token), 'the token is masked');
    assert.match(f.text, /\[redacted\]/);
  });

  it('expected failures are one line; unexpected ones too, with the stack only under OTA_DEBUG', () => {
    assert.deepEqual(formatError(new CliError('cannot read x\n(ENOENT)')), {
      text: 'error: cannot read x (ENOENT)\n',
      exitCode: 1,
    });
    const bug = new TypeError('boom');
    assert.equal(formatError(bug).text, 'error: boom\n');
    assert.match(formatError(bug, { debug: true }).text, /TypeError: boom\n\s+at /);
    const abort = Object.assign(new Error('interrupted'), { name: 'AbortError' });
    assert.deepEqual(formatError(abort), { text: 'interrupted\n', exitCode: EXIT.interrupted });
  });

  it('describes network failures with what to check', () => {
    const url = new URL('https://127.0.0.1:8443/releases');
    const refused = describeNetworkError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), url);
    assert.match(refused.message, /connection refused.*npm start/);
    const tls = describeNetworkError(
      Object.assign(new Error('x'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }),
      url,
    );
    assert.match(tls.message, /not trusted.*--ca/);
  });
});

describe('toApiError', { timeout: 60_000 }, () => {
  it('reads the API error body, API Gateway bodies and anything else', () => {
    const body = { error: { code: 'unknown_release', message: 'No release x' } };
    const e = toApiError(404, body, Buffer.from(JSON.stringify(body)));
    assert.deepEqual([e.status, e.code, e.message], [404, 'unknown_release', 'No release x']);
    const gw = toApiError(403, { message: 'Missing Authentication Token' }, Buffer.alloc(0), 'check IAM');
    assert.deepEqual(
      [gw.code, gw.message, gw.credentialHint],
      ['http_403', 'Missing Authentication Token', 'check IAM'],
    );
    const html = toApiError(502, undefined, Buffer.from('<html>Bad gateway</html>'));
    assert.deepEqual([html.code, html.message], ['http_502', '<html>Bad gateway</html>']);
    assert.equal(toApiError(500, undefined, Buffer.alloc(0)).message, 'the API answered with no body');
  });
});

describe('render', { timeout: 60_000 }, () => {
  it('aligns table columns without trailing blanks', () => {
    assert.deepEqual(
      table(
        ['A', 'LONGER'],
        [
          ['xx', 'y'],
          ['x', ''],
        ],
      ),
      ['A   LONGER', 'xx  y', 'x'],
    );
  });

  const record: CampaignRecord = {
    campaignId: 'c-1',
    name: 'TCU rollout',
    releaseId: 'tcu-3.0.1',
    version: '3.0.1',
    ecu: 'tcu',
    status: 'halted',
    policy: {
      waves: [50, 100],
      advanceSuccessPercent: 90,
      soakSeconds: 0,
      haltFailurePercent: 10,
      haltMinOutcomes: 1,
      vehicleTimeoutSeconds: 60,
      retryBudget: 0,
      notifyPerSecond: 10,
    },
    waves: [{ size: 2, startedAt: '2030-01-01T00:00:00.000Z' }, { size: 2 }],
    currentWave: 0,
    targetCount: 4,
    excludedByReason: { incompatible_hardware: 1 },
    haltReason: 'wave 0: 1 of 2 outcomes failed',
    createdAt: '2030-01-01T00:00:00.000Z',
    updatedAt: '2030-01-01T00:01:00.000Z',
    revision: 3,
  };

  // Per wave, as summed from the counter shards (campaign-counters.ts waveCounts).
  const counts: Record<string, number>[] = [{ completed: 1, failed: 1 }, { scheduled: 2 }];

  it('shows status, halt reason and a wave x state matrix in lifecycle order', () => {
    const text = renderCampaign(campaignView(record, counts)).join('\n');
    assert.match(text, /^status +halted$/m);
    assert.match(text, /^halt reason +wave 0: 1 of 2 outcomes failed$/m);
    assert.match(text, /^targets +4 \(1 excluded\)$/m);
    assert.match(text, /^WAVE +SIZE +SCHEDULED +COMPLETED +FAILED +OK +FAILED +STARTED$/m);
    assert.match(text, /^0\* +2 +0 +1 +1 +1 +1 +2030-01-01T00:00:00.000Z$/m);
    assert.match(text, /^1 +2 +2 +0 +0 +0 +0 +-$/m);
    assert.match(text, /^ +incompatible_hardware +1$/m);
    assert.doesNotMatch(text, /^transfer/m, 'no download reported yet');
  });

  it('counts the drivers apart: waiting, postponed, declined, expired are not failures', () => {
    const text = renderCampaign(
      campaignView(record, [
        { completed: 1, awaiting_consent: 1 },
        { declined: 1, postponed: 1 },
      ]),
    ).join('\n');
    assert.match(text, /^drivers +awaiting consent 1, postponed 1, declined 1 \(not failures\)$/m);
    assert.doesNotMatch(renderCampaign(campaignView(record, counts)).join('\n'), /^drivers/m);
  });

  it('shows the bytes the downloads fetched and saved across the fleet', () => {
    // Summed from the campaign's counter shards (loadCampaignTotals).
    const view = campaignView(record, [], undefined, {
      downloads: 2,
      fetched: 30_000_000,
      reused: 150_000_000,
      image: 200_000_000,
    });
    assert.deepEqual(view.transfer, {
      downloads: 2,
      bytes_fetched: 30_000_000,
      bytes_reused: 150_000_000,
      bytes_image: 200_000_000,
      bytes_saved: 170_000_000,
    });
    assert.match(
      renderCampaign(view).join('\n'),
      /^transfer +2 download\(s\): fetched 30\.0 MB for 200\.0 MB of images, saved 170\.0 MB \(85\.0%\), 150\.0 MB rebuilt from installed images$/m,
    );
  });

  it('one log line per change', () => {
    assert.equal(
      campaignLine(campaignView(record, counts), new Date('2030-01-01T12:34:56Z')),
      '12:34:56 c-1 halted wave 0 (of 0-1): scheduled 2, completed 1, failed 1; halt reason: wave 0: 1 of 2 outcomes failed',
    );
    assert.equal(countsText({}), 'none');
  });
});

describe('upload parts', { timeout: 60_000 }, () => {
  it('maps part numbers to byte ranges covering the image exactly', () => {
    const parts = [3, 1, 2].map((n) => ({ part_number: n, url: `https://s3/p${n}` }));
    assert.deepEqual(
      partRanges(11, 5, parts).map((r) => [r.partNumber, r.start, r.end]),
      [
        [1, 0, 5],
        [2, 5, 10],
        [3, 10, 11],
      ],
    );
    assert.throws(() => partRanges(11, 5, parts.slice(1)), CliError, 'a missing part is refused');
    assert.throws(() => partRanges(10, 5, parts), CliError, 'an extra part is refused');
  });

  it('reads S3 error documents', () => {
    const xml =
      '<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>';
    assert.equal(describeS3Error(403, Buffer.from(xml)), 'HTTP 403 AccessDenied: Request has expired');
  });
});

describe('--aws SigV4', { timeout: 60_000 }, () => {
  const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
  const hex = (data: string) => createHash('sha256').update(data).digest('hex');

  it('signs the exact method, stage path, query and body that are sent (checked independently)', async () => {
    const credentials = {
      accessKeyId: 'AKIDEXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
    };
    const auth = await sigV4Authorizer({
      region: 'eu-west-1',
      credentials: async () => credentials,
      signingDate: new Date('2030-01-02T03:04:05Z'),
    });
    const url = new URL('https://abc.execute-api.eu-west-1.amazonaws.com/prod/releases?limit=5&cursor=a%2Fb');
    const body = '{"x":1}';
    const base = { 'content-type': 'application/json', 'content-length': String(body.length) };
    const headers: Record<string, string> = {
      ...base,
      ...(await auth.headers({ method: 'POST', url, headers: base, body })),
    };
    assert.equal(headers['x-amz-date'], '20300102T030405Z');
    const m =
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/20300102\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(
        headers.authorization ?? '',
      );
    assert.ok(m, `authorization header: ${headers.authorization}`);
    const signedHeaders = m[1]!.split(';');
    assert.ok(
      signedHeaders.includes('host') && signedHeaders.includes('x-amz-date'),
      'host and date are signed',
    );
    const all: Record<string, string> = { ...headers, host: url.host };
    const canonical = [
      'POST',
      '/prod/releases',
      'cursor=a%2Fb&limit=5',
      ...signedHeaders.map((h) => `${h}:${all[h]!.trim()}`),
      '',
      m[1],
      hex(body),
    ].join('\n');
    const scope = '20300102/eu-west-1/execute-api/aws4_request';
    const toSign = ['AWS4-HMAC-SHA256', '20300102T030405Z', scope, hex(canonical)].join('\n');
    let key: Buffer = hmac(`AWS4${credentials.secretAccessKey}`, '20300102');
    for (const part of ['eu-west-1', 'execute-api', 'aws4_request']) key = hmac(key, part);
    assert.equal(m[2], hmac(key, toSign).toString('hex'), 'signature matches the request as sent');
    assert.ok(
      !('host' in (await auth.headers({ method: 'GET', url, headers: {}, body: '' }))),
      'Node sets host',
    );
  });
});

describe('escape sequences from the API (issue 18, finding 7)', { timeout: 10_000 }, () => {
  const hostile = '\x1b[2J\x1b[32mcompleted OK\x1b[0m\x1b]0;owned\x07\u009b31m\u202e';
  const RAW = ['\x1b', '\x07', '\u009b', '\u202e'];

  it('terminalText shows controls escaped and keeps line breaks; terminalJson stays valid JSON', () => {
    const text = terminalText(`line one ${hostile}\nline two`);
    for (const raw of RAW) assert.ok(!text.includes(raw), JSON.stringify(raw));
    assert.equal(text.split('\n').length, 2);
    assert.ok(text.includes('\\x1b[2J'));
    const json = terminalJson({ reason: hostile }, 2);
    for (const raw of RAW) assert.ok(!json.includes(raw), JSON.stringify(raw));
    assert.equal(JSON.parse(json).reason, hostile);
  });

  it('what a command prints, as text, JSON or a note, never carries a raw control character', () => {
    let out = '';
    const stream = {
      write: (t: string) => {
        out += t;
        return true;
      },
    };
    for (const json of [false, true]) {
      const ctx = new Context(
        { stdout: stream, stderr: stream, env: {}, cwd: '/', signal: new AbortController().signal },
        { values: json ? { json: true } : {}, positionals: [] } as never,
      );
      const view = {
        campaign_id: 'c-1',
        wave: 0,
        next_token: null,
        vehicles: [
          {
            vin: '1HGCM82633A004352',
            status: 'failed' as const,
            progress: 0,
            attempt: 1,
            reason: hostile,
            offered_at: null,
            deadline: null,
            updated_at: 't',
          },
        ],
      };
      ctx.print(campaignVehicleRows(view).join('\n'));
      ctx.printJson(view);
      ctx.note(`warning: ${hostile}`);
    }
    for (const raw of RAW) assert.ok(!out.includes(raw), `${JSON.stringify(raw)} in ${out}`);
    assert.ok(out.includes('completed OK'), 'the text itself is still shown');
  });

  it('an API error message is printed escaped', () => {
    const f = formatError(new ApiError(409, 'conflict', `bad ${hostile}`));
    for (const raw of RAW) assert.ok(!f.text.includes(raw), JSON.stringify(raw));
  });
});
