/**
 * Operator alerts on the local cloud: a release whose stored image was tampered with after publication fails its
 * vehicles' verification, the campaign engine halts the campaign, and the local alarms (local/alarms.ts) raise a
 * campaign_halted alert and a failure_rate alert from the metrics the functions printed, as the CloudWatch alarms
 * do on AWS. Refused vehicle messages raise ingest_rejections. The test reads them the way an operator does:
 * `ota alerts` (GET /local/alerts), and the alerts file in the data directory.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../cli/main.js';
import type { AlertRecord } from '../../lambdas/core/alerts.js';
import { identityDir } from '../../vehicle/setup.js';
import {
  type AgentCloud,
  backendUpdate,
  backendVehicle,
  flipStoredByte,
  publishRelease,
  registerAgentVehicle,
  s3ObjectFile,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';
import { Operator } from '../support/fleet.js';
import { VehicleConnection } from '../support/mqtt-clients.js';

let ac: AgentCloud;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  ac = await startAgentCloud({
    alertThresholds: { failureRatePercent: 50, failureRateMinOutcomes: 2, ingestRejectionsPerPeriod: 3 },
  });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

/** `ota alerts --json` in this process, against the local cloud. */
async function otaAlerts(
  ...extra: string[]
): Promise<{ code: number; alerts: AlertRecord[]; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const tokenFile = join(ac.root, 'admin-token');
  writeFileSync(tokenFile, ac.cloud.adminToken, { mode: 0o600 });
  const code = await run(
    [
      'alerts',
      ...extra,
      '--json',
      '--endpoint',
      ac.cloud.endpoints.api,
      '--ca',
      ac.cloud.caFile,
      '--token-file',
      tokenFile,
    ],
    {
      stdout: { write: (t: string) => (stdout += t) },
      stderr: { write: (t: string) => (stderr += t) },
      env: {},
      cwd: ac.root,
      signal: new AbortController().signal,
    },
  );
  return { code, alerts: code === 0 ? (JSON.parse(stdout) as { alerts: AlertRecord[] }).alerts : [], stderr };
}

describe('operator alerts on the local cloud', { timeout: 120_000 }, () => {
  it('a tampered release halts its campaign and raises campaign_halted and failure_rate alerts', async () => {
    const before = await otaAlerts();
    assert.equal(before.code, 0, before.stderr);
    assert.deepEqual(before.alerts, [], 'a new cloud has no alerts');

    const rel = await publishRelease(ac, { version: '2.0.0', size: 256 * 1024 });
    const file = s3ObjectFile(ac, rel.signed.manifest);
    flipStoredByte(file, 100_000);

    const vins = ['1HGCM82633A800001', '1HGCM82633A800002'];
    const agents = [];
    for (const vin of vins) {
      const dir = await registerAgentVehicle(ac, vin);
      const v = await startAgent(ac, vin, dir);
      ac.track(() => v.close());
      agents.push(v);
      await v.events.waitFor((e) => e.type === 'connection' && e.connected === true, 10_000, 'MQTT');
    }
    const created = await ac.operator.createCampaign({
      campaign_id: 'tampered',
      name: 'tampered image',
      release_id: 'tcu-2.0.0',
      targets: { vins },
      policy: {
        waves: [100],
        skip_canary: true,
        halt_failure_count: 2,
        halt_min_outcomes: 2,
        retry_budget: 0,
      },
    });
    assert.equal(created.json.status, 'created', created.raw.toString());
    assert.equal((await ac.operator.call('POST', '/campaigns/tampered/start', {})).status, 200);

    for (const v of agents) assert.equal((await v.events.outcome('2.0.0')).status, 'verification_failed');
    for (const vin of vins)
      await waitUntil(
        async () => backendUpdate(await backendVehicle(ac, vin), '2.0.0')?.status === 'verification_failed',
        20_000,
        `the backend to record ${vin}'s failure`,
      );
    await waitUntil(
      async () => (await ac.operator.call('GET', '/campaigns/tampered')).json.status === 'halted',
      20_000,
      'the campaign to halt',
    );

    let alerts: AlertRecord[] = [];
    await waitUntil(
      async () => {
        alerts = (await otaAlerts()).alerts;
        // Each function's EMF output reaches the alarms on its own stream: the tick's halt may be read before
        // the report that caused it, so wait for both alerts.
        return ['campaign_halted', 'failure_rate'].every((k) => alerts.some((a) => a.kind === k));
      },
      10_000,
      'campaign_halted and failure_rate alerts',
    );
    const halted = alerts.filter((a) => a.kind === 'campaign_halted');
    assert.equal(halted.length, 1, JSON.stringify(alerts));
    assert.equal(halted[0]!.details.campaign_id, 'tampered');
    assert.match(halted[0]!.message, /Campaign tampered halted/);
    const rate = alerts.filter((a) => a.kind === 'failure_rate');
    assert.equal(rate.length, 1, `one failure_rate alert: ${JSON.stringify(alerts)}`);
    assert.deepEqual(
      { failed: rate[0]!.details.failed, outcomes: rate[0]!.details.outcomes },
      { failed: 2, outcomes: 2 },
    );
    // The same records are in the data directory's alert file, and --kind filters.
    const lines = readFileSync(join(ac.cloud.dataDir, 'alerts.jsonl'), 'utf8').trim().split('\n');
    assert.equal(lines.length, alerts.length);
    const only = await otaAlerts('list', '--kind', 'campaign_halted');
    assert.deepEqual(
      only.alerts.map((a) => a.alert_id),
      halted.map((a) => a.alert_id),
    );
  });

  it('vehicle messages refused by ingest above the configured number raise one ingest_rejections alert', async () => {
    const count = () => ac.cloud.alarms.list().filter((a) => a.kind === 'ingest_rejections').length;
    assert.equal(count(), 0);
    // A registered car's connection sends messages that are not JSON: ingest refuses each (malformed_json).
    const vin = '1HGCM82633A800009';
    const dir = await registerAgentVehicle(ac, vin);
    const ids = identityDir(dir);
    const car = await VehicleConnection.connect({
      url: ac.cloud.endpoints.mqtt,
      caPem: ac.cloud.caCertPem,
      clientId: vin,
      identity: {
        keyPem: readFileSync(join(ids, 'device.key.pem'), 'utf8'),
        certPem: readFileSync(join(ids, 'device.cert.pem'), 'utf8'),
      },
      clean: true,
    });
    ac.track(() => car.end());
    const send = (_: number) => car.publish(`vehicle/updates/${vin}/status`, '{"status": ');
    // Three refusals are at the threshold (3 per period): no alert yet.
    for (let i = 1; i <= 3; i++) await send(i);
    await ac.cloud.rules.idle();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(count(), 0, 'three refusals are not above 3');
    for (let i = 4; i <= 6; i++) await send(i);
    await waitUntil(async () => count() === 1, 10_000, 'an ingest_rejections alert');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(count(), 1, 'raised once while the alarm stays in ALARM');
  });

  it('an operator without the admin token cannot list alerts', async () => {
    const stranger = new Operator(
      ac.cloud.endpoints.api,
      ac.cloud.caCertPem,
      'not-the-admin-token-0123456789',
    );
    const res = await stranger.call('GET', '/local/alerts');
    assert.equal(res.status, 401);
    assert.equal(res.json.error.code, 'unauthorized');
  });
});
