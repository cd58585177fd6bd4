/**
 * Issue 18, findings 2, 7, 12 and 13, each attack replayed against a private local cloud over real HTTPS and MQTT
 * (mutual TLS, broker, rules router, ingest handler):
 * - 2: a vehicle reported outcomes on a campaign update never offered to it (registry version set, campaign
 *   counted, even halted); reports must name an offered update and, when they carry one, its current counter;
 * - 13: progress 5e-324 passed validation and DynamoDB refused it (500 over HTTPS, dead letter over MQTT);
 * - 7: terminal escape sequences in a reason were stored and printed raw by the CLI;
 * - 12: the reason a vehicle message was refused never reached the logs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { DynamoUpdateRepository } from '../../lambdas/adapters/dynamo-updates.js';
import { startLocalCloud } from '../../local/cloud.js';
import { vehicleTopic } from '../../protocol/topics.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';
import { VehicleConnection, waitFor } from '../support/mqtt-clients.js';

const [A, B] = ['1HGCM82633A004352', '5YJSA1E26HF000337'] as const;
const CAMPAIGN = 'guarded';
const ESC_REASON = '\x1b[2J\x1b[32mcompleted OK\x1b[0m\x1b]0;owned\x07';

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let operator: Operator;
let updates: DynamoUpdateRepository;
const releaseKey = newReleaseKey();
const cars = new Map<string, { vehicle: TestVehicle; certPem: string; mqtt?: VehicleConnection }>();
/** Every line the process wrote to stdout or stderr while captured (the functions' structured logs). */
const logLines: string[] = [];

async function asVehicle(vin: string, method: string, path: string, body?: unknown) {
  const token = await cars.get(vin)!.vehicle.token(cloud.endpoints.api, cloud.caCertPem);
  return jsonRequest(cloud.endpoints.api, method, path, cloud.caCertPem, body, token);
}

const report = (vin: string, body: unknown) => asVehicle(vin, 'POST', `/updates/${vin}/status`, body);

/** Publishes on the vehicle's own topic over MQTT and waits until ingest has handled it; answers the new stats. */
async function publish(vin: string, channel: 'status' | 'progress', payload: string) {
  const before = cloud.rules.stats();
  await cars.get(vin)!.mqtt!.publish(vehicleTopic(vin, channel), payload);
  assert.ok(
    await waitFor(
      () => cloud.rules.stats().delivered + cloud.rules.stats().failed > before.delivered + before.failed,
      10000,
    ),
    'the rules router handed the message on',
  );
  await cloud.rules.idle();
  return cloud.rules.stats();
}

async function campaign() {
  const res = await operator.call('GET', `/campaigns/${CAMPAIGN}`);
  assert.equal(res.status, 200, res.raw.toString());
  return res.json;
}

async function ecuVersion(vin: string): Promise<string> {
  const res = await operator.call('GET', `/vehicles/${vin}`);
  return res.json.ecus.find((e: { ecu: string }) => e.ecu === 'tcu').version;
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-report-guards-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 300,
    throttle: { ratePerSecond: 10000, burst: 10000 },
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  for (const [id, version] of [
    ['tcu-1.5.0', '1.5.0'],
    ['tcu-2.0.0', '2.0.0'],
  ] as const) {
    const image = randomBytes(64 * 1024);
    const signed = await signedRelease(image, { releaseId: id, version, signer: releaseKey.signer });
    assert.equal((await operator.publish(signed, image)).published?.status, 200);
  }
  for (const vin of [A, B]) {
    const vehicle = await TestVehicle.create(vin);
    const reg = await operator.call('POST', '/vehicles', vehicle.registration());
    assert.equal(reg.status, 201, reg.raw.toString());
    const car: { vehicle: TestVehicle; certPem: string; mqtt?: VehicleConnection } = {
      vehicle,
      certPem: reg.json.certificate_pem,
    };
    car.mqtt = await VehicleConnection.connect({
      url: cloud.endpoints.mqtt,
      caPem: cloud.caCertPem,
      clientId: vin,
      identity: { keyPem: vehicle.keyPem, certPem: car.certPem },
    });
    cars.set(vin, car);
  }
  // A direct update of another release first, so the campaign's offer has a later assignment counter than 1.
  for (const vin of [A, B]) {
    const res = await asVehicle(vin, 'POST', `/updates/${vin}/initiate`, { firmware_version: '1.5.0' });
    assert.equal(res.status, 200, res.raw.toString());
  }
  updates = new DynamoUpdateRepository(
    documentClient(new DynamoDBClient(clientConfig('DYNAMODB'))),
    cloud.tables.updates,
  );
  const created = await operator.createCampaign({
    campaign_id: CAMPAIGN,
    name: 'guarded rollout',
    release_id: 'tcu-2.0.0',
    targets: { vins: [A, B] },
    policy: { waves: [50, 100], halt_failure_count: 1 },
  });
  assert.equal(created.json.status, 'created', created.raw.toString());
}, HOOK_TIMEOUT);

after(async () => {
  for (const car of cars.values()) await car.mqtt?.end();
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('reports on updates never offered (finding 2)', { timeout: 120_000 }, () => {
  it('refuses an outcome for a created, not started campaign over HTTPS (409) and changes nothing', async () => {
    const completed = await report(A, { status: 'completed', firmware_version: '2.0.0' });
    assert.equal(completed.status, 409, completed.raw.toString());
    assert.equal(completed.json.error.code, 'not_offered');
    const failed = await report(B, { status: 'failed', campaign_id: CAMPAIGN, reason: 'boom' });
    assert.equal(failed.status, 409, failed.raw.toString());
    assert.equal(failed.json.error.code, 'not_offered');

    assert.equal(await ecuVersion(A), '1.0.0', 'the registry still has the version the car runs');
    const c = await campaign();
    assert.equal(c.status, 'created');
    assert.deepEqual(c.counts, { scheduled: 2 });
    assert.equal((await updates.get(A, `campaign#${CAMPAIGN}`))?.status, 'scheduled');
  });

  it('refuses the same report over MQTT, with the reason in the structured logs (finding 12)', async () => {
    // Powertools writes warnings through console.warn: stderr (and other levels to stdout). Capture both.
    const streams = [process.stdout, process.stderr] as const;
    const writes = streams.map((stream) => stream.write.bind(stream));
    streams.forEach((stream, i) => {
      stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
        logLines.push(...String(chunk).split('\n').filter(Boolean));
        return (writes[i] as (...a: unknown[]) => boolean)(chunk, ...rest);
      }) as typeof stream.write;
    });
    const refusal = () =>
      logLines
        .filter((l) => l.startsWith('{"'))
        .map((l) => JSON.parse(l))
        .find((l) => l.message === 'vehicle message rejected' && l.vin === B);
    let stats: ReturnType<typeof cloud.rules.stats>;
    try {
      stats = await publish(B, 'status', JSON.stringify({ status: 'failed', campaign_id: CAMPAIGN }));
      // The log line is written after the outcome; give it a moment rather than racing it.
      await waitFor(() => refusal() !== undefined, 5000);
    } finally {
      streams.forEach((stream, i) => {
        stream.write = writes[i]!;
      });
    }
    assert.equal(stats.failed, 0, 'refused, not dead-lettered');
    const refused = refusal();
    assert.ok(refused, `a structured log line for the refusal: ${logLines.join('\n')}`);
    assert.equal(refused.code, 'not_offered');
    assert.equal(refused.reason, 'This update has not been offered to the vehicle');
    assert.equal((await campaign()).status, 'created');
    assert.equal((await updates.get(B, `campaign#${CAMPAIGN}`))?.status, 'scheduled');
  });

  it('once started, accepts minimal reports for the offered car, refuses stale counters and the later wave', async () => {
    assert.equal((await operator.call('POST', `/campaigns/${CAMPAIGN}/start`, {})).status, 200);
    const deadline = Date.now() + 15000;
    while ((await campaign()).waves[0].counts.offered !== 1 && Date.now() < deadline) await sleep(100);
    const wave0 = (await operator.call('GET', `/campaigns/${CAMPAIGN}/vehicles?wave=0`)).json.vehicles[0].vin;
    const later = wave0 === A ? B : A;
    const offered = await updates.get(wave0, `campaign#${CAMPAIGN}`);
    assert.equal(offered?.status, 'offered');
    assert.ok((offered?.offerCounter ?? 0) > 1, `the offer recorded its counter (${offered?.offerCounter})`);

    // The later wave's car is still only scheduled: its failure neither counts nor halts the running campaign.
    const lateFail = await report(later, { status: 'failed', campaign_id: CAMPAIGN });
    assert.equal(lateFail.status, 409);
    const mqttStats = await publish(later, 'status', JSON.stringify({ status: 'failed' }));
    assert.equal(mqttStats.failed, 0);
    assert.equal((await updates.get(later, `campaign#${CAMPAIGN}`))?.status, 'scheduled');

    // A report naming the counter of an earlier offer (the 1.5.0 assignment) is about that offer, not this one.
    const stale = await report(wave0, {
      status: 'downloading',
      progress: 5,
      campaign_id: CAMPAIGN,
      assignment_counter: offered!.offerCounter! - 1,
    });
    assert.equal(stale.status, 409, stale.raw.toString());
    assert.equal(stale.json.error.code, 'stale_offer');

    // Minimal payloads, without campaign id or sequence, are attributed to the car's active offered update.
    await publish(wave0, 'progress', JSON.stringify({ status: 'downloading', progress: 10 }));
    assert.equal((await updates.get(wave0, `campaign#${CAMPAIGN}`))?.progress, 10);
    const current = await report(wave0, {
      status: 'downloading',
      progress: 20,
      assignment_counter: offered!.offerCounter!,
    });
    assert.equal(current.status, 200, current.raw.toString());
    assert.equal(current.json.applied, true);
    const done = await report(wave0, { status: 'completed' });
    assert.equal(done.status, 200, done.raw.toString());
    assert.equal(await ecuVersion(wave0), '2.0.0');
    assert.equal(await ecuVersion(later), '1.0.0');
    const c = await campaign();
    assert.notEqual(c.status, 'halted', c.halt_reason);
    assert.equal(c.waves[0].counts.completed, 1);
    // The refused failure was never counted in wave 1. Its one place is still scheduled, or already offered: with
    // wave 0 complete the tick may advance, and the pacer offers the next wave at once (not a tick later).
    const entries = Object.entries(c.waves[1].counts as Record<string, number>);
    assert.equal(entries.length, 1, JSON.stringify(c.waves[1].counts));
    const [status, n] = entries[0]!;
    assert.equal(n, 1);
    assert.ok(
      status === 'scheduled' || (status === 'offered' && c.current_wave === 1),
      JSON.stringify({ wave: c.current_wave, counts: c.waves[1].counts }),
    );
  });
});

describe('numbers the store cannot hold (finding 13)', { timeout: 60_000 }, () => {
  for (const progress of [5e-324, 1e-131]) {
    it(`refuses progress ${progress} with 400 over HTTPS and as a refused (not dead-lettered) MQTT message`, async () => {
      const body = `{"status":"downloading","progress":${progress}}`;
      const res = await report(A, body);
      assert.equal(res.status, 400, res.raw.toString());
      assert.match(res.json.error.message, /progress/);
      const stats = await publish(A, 'progress', body);
      assert.equal(stats.failed, 0, 'no dead letter');
      assert.deepEqual(cloud.rules.deadLetters(), []);
    });
  }
});

describe('control characters (finding 7)', { timeout: 60_000 }, () => {
  it('refuses a reason with escape sequences over HTTPS and MQTT, and a campaign name with one', async () => {
    const res = await report(B, { status: 'failed', reason: ESC_REASON });
    assert.equal(res.status, 400, res.raw.toString());
    assert.match(res.json.error.message, /control characters/);
    const stats = await publish(B, 'status', JSON.stringify({ status: 'failed', reason: ESC_REASON }));
    assert.equal(stats.failed, 0);
    const named = await operator.call('POST', '/campaigns', {
      name: 'ok\x1b]0;title\x07',
      release_id: 'tcu-2.0.0',
      targets: { vins: [B] },
    });
    assert.equal(named.status, 400, named.raw.toString());
  });

  it('the CLI prints a stored escape sequence escaped, never raw', async () => {
    // Stored before input was checked (or by any other path): what the CLI prints must still be inert. The car
    // whose update completed is written: nothing in the engine touches a finished update again.
    const finished = (await Promise.all([A, B].map((vin) => updates.get(vin, `campaign#${CAMPAIGN}`)))).find(
      (u) => u?.status === 'completed',
    )!;
    await documentClient(new DynamoDBClient(clientConfig('DYNAMODB'))).send(
      new UpdateCommand({
        TableName: cloud.tables.updates,
        Key: { vin: finished.vin, updateId: finished.updateId },
        UpdateExpression: 'SET reason = :r',
        ExpressionAttributeValues: { ':r': `${ESC_REASON}\u009b31m\u202e` },
      }),
    );
    const { run } = await import('../../cli/main.js');
    const wave = String(finished.wave);
    for (const json of [false, true]) {
      let out = '';
      const sink = {
        write: (t: string) => {
          out += t;
          return true;
        },
        isTTY: false,
        columns: 200,
      };
      const code = await run(
        ['campaigns', 'vehicles', CAMPAIGN, '--wave', wave, ...(json ? ['--json'] : [])],
        {
          stdout: sink,
          stderr: sink,
          env: {
            OTA_ENDPOINT: cloud.endpoints.api,
            OTA_CA_FILE: cloud.caFile,
            OTA_ADMIN_TOKEN_FILE: cloud.adminTokenFile!,
          },
          cwd: dataDir,
          signal: new AbortController().signal,
        },
      );
      assert.equal(code, 0, out);
      for (const raw of ['\x1b', '\x07', '\u009b', '\u202e'])
        assert.ok(!out.includes(raw), `no raw ${JSON.stringify(raw)} in the output`);
      assert.ok(out.includes(json ? '\\u001b[2J' : '\\x1b[2J'), `the sequence is shown, escaped: ${out}`);
    }
  });
});

describe('campaign guardrails (finding 10)', { timeout: 60_000 }, () => {
  const create = (body: Record<string, unknown>) =>
    operator.call('POST', '/campaigns', { name: 'guardrail', release_id: 'tcu-2.0.0', ...body });

  it('refuses an empty filter without all, a first wave above the canary share, and unreachable halts', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ targets: { filter: {} } }, 'explicit_all_required'],
      [{ targets: { all: true, filter: { model: 'Model T' } } }, 'invalid_targets'],
      [{ targets: { vins: [A] }, policy: { waves: [100] } }, 'canary_required'],
      [{ targets: { vins: [A] }, policy: { waves: [60, 100] } }, 'canary_required'],
      [{ targets: { vins: [A, B] }, policy: { waves: [50, 100], halt_min_outcomes: 2 } }, 'unreachable_halt'],
      [
        { targets: { vins: [A, B] }, policy: { waves: [50, 100], halt_failure_count: 3 } },
        'unreachable_halt',
      ],
    ];
    for (const [body, code] of cases) {
      const res = await create(body);
      assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.raw.toString()}`);
      assert.equal(res.json.error.code, code, JSON.stringify(body));
      assert.ok(res.json.error.message.length > 20);
    }
  });

  it('accepts all and skip_canary when said explicitly (here it fails only because the cars are taken)', async () => {
    const res = await operator.createCampaign({
      name: 'guardrail',
      release_id: 'tcu-2.0.0',
      targets: { all: true },
      policy: { waves: [100], skip_canary: true },
    });
    assert.equal(res.json.status, 'failed', res.raw.toString());
    assert.match(res.json.preparation.failure_reason, /^no_targets/);
    // One car completed its update above (its campaign lock released with the completion, its version now 2.0.0),
    // the other is still held by its campaign: neither can be targeted, each for its own reason.
    assert.deepEqual(res.json.excluded.by_reason, { already_at_or_above_version: 1, in_other_campaign: 1 });
  });
});
