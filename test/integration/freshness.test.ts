/**
 * Freshness end to end on a private local cloud with real agents (issue 17): the backend's signed statement tells a
 * vehicle that an offer was withheld from it (it reports it and fetches the offer over HTTPS), an older statement
 * served again is refused (also after a restart), a vehicle whose clock was set back still refuses an assignment
 * that signed time says has expired, and a vehicle that gets no statement for the configured time reports it.
 * The statement is published on demand here (cloud.publishFreshness(), the job its schedule runs).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import mqtt, { type IPublishPacket } from 'mqtt';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import type { AgentEvent } from '../../vehicle/agent.js';
import { FRESHNESS_FILE } from '../../vehicle/freshness.js';
import type { MqttClientFactory } from '../../vehicle/mqtt-session.js';
import { systemRuntime } from '../../vehicle/runtime.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  backendVehicle,
  initiateOffer,
  type PublishedRelease,
  publishOffer,
  publishRelease,
  registerAgentVehicle,
  resignAssignment,
  startAgent,
  startAgentCloud,
  waitUntil,
} from '../support/agent-cloud.js';

let ac: AgentCloud;
let v2: PublishedRelease;
let vinSerial = 0;
const nextVin = () => `1HGCM82633A3${String(++vinSerial).padStart(5, '0')}`;
const DAY = 86_400_000;

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  // No schedule: each test publishes statements when it needs them.
  ac = await startAgentCloud({ freshnessPeriodMs: 0 });
  v2 = await publishRelease(ac, { version: '2.0.0', size: 128 * 1024 });
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

type Freshness = Extract<AgentEvent, { type: 'freshness' }>;
const freshness =
  (status: Freshness['status'], more: (e: Freshness) => boolean = () => true) =>
  (e: AgentEvent): e is Freshness =>
    e.type === 'freshness' && e.status === status && more(e);

/**
 * An MQTT client that loses every offer on the way (an attacker or a broken path withholding offers): the message
 * is acknowledged, so the broker never sends it again, and the agent never sees it.
 */
const droppingOffers: MqttClientFactory = (url, options) => {
  const client = mqtt.connect(url, options);
  let handler = client.handleMessage;
  Object.defineProperty(client, 'handleMessage', {
    get: () => (packet: IPublishPacket, callback: (err?: Error) => void) =>
      packet.topic.endsWith('/issue_details') ? callback() : handler.call(client, packet, callback),
    set: (h: typeof handler) => {
      handler = h;
    },
  });
  return client;
};

async function publishStatement(): Promise<number> {
  const result = (await ac.cloud.publishFreshness()) as { sequence: number };
  return result.sequence;
}

describe('freshness statements on the local cloud', { timeout: 180_000 }, () => {
  it('notices an offer withheld from the vehicle, reports it and fetches it over HTTPS', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const v = await startAgent(ac, vin, dir, {
      mqttClientFactory: droppingOffers,
      // Connected MQTT and no safety-net polling: without the statement nothing would make it poll.
      polling: { intervalMs: 500, connectedIntervalMs: 0, mqttGraceMs: 2000 },
      freshness: { checkIntervalMs: 300, maxSilenceMs: 600_000 },
    });
    try {
      await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
      const first = await publishStatement();
      await v.events.waitFor(
        freshness('fresh', (e) => e.sequence === first),
        10_000,
        'statement 1',
      );

      const campaignId = `withheld-${vinSerial}`;
      const created = await ac.operator.createCampaign({
        campaign_id: campaignId,
        name: 'withheld offer',
        release_id: 'tcu-2.0.0',
        targets: { vins: [vin] },
      });
      assert.equal(created.json.status, 'created', created.raw.toString());
      assert.equal((await ac.operator.call('POST', `/campaigns/${campaignId}/start`, {})).status, 200);
      await waitUntil(
        async () =>
          (await backendVehicle(ac, vin)).updates.some(
            (u) => u.update_id === `campaign#${campaignId}` && u.status === 'offered',
          ),
        10_000,
        'the backend offered the update',
      );
      // The offer was sent and lost: the vehicle knows nothing of it, even after several freshness checks of the
      // statement it already holds.
      await sleep(1500);
      assert.equal(
        v.events.events.filter((e) => e.type === 'offer').length,
        0,
        'no offer reached the vehicle',
      );
      assert.equal(v.events.events.filter(freshness('withheld')).length, 0);

      const second = await publishStatement();
      const withheld = await v.events.waitFor(freshness('withheld'), 10_000, 'the withheld offer noticed');
      assert.equal(withheld.sequence, second);
      await v.events.waitFor(
        freshness('reported', (e) => e.reason === 'withheld_offer'),
        10_000,
        'the alert reported',
      );
      const offer = await v.events.waitFor((e) => e.type === 'offer', 10_000, 'the offer fetched');
      assert.equal(offer.type === 'offer' && offer.source, 'poll');
      const outcome = await v.events.outcome('2.0.0');
      assert.equal(outcome.status, 'completed', outcome.reason);
      await v.agent.whenIdle();
      assertVehicleRuns(dir, '2.0.0', v2.image);
      const backend = (await backendVehicle(ac, vin)) as unknown as {
        freshness_alert: { kind: string; sequence: number; detail: string } | null;
      };
      assert.equal(backend.freshness_alert?.kind, 'withheld_offer', JSON.stringify(backend.freshness_alert));
      assert.equal(backend.freshness_alert?.sequence, second);
    } finally {
      await v.close();
    }
  });

  it('refuses an older statement served again, also after a restart', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const options = { freshness: { checkIntervalMs: 3_600_000, maxSilenceMs: 3_600_000 } };
    const db = documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
    const table = ac.cloud.tables.freshness;
    let v = await startAgent(ac, vin, dir, options);
    try {
      const older = await publishStatement();
      const olderItem = (await db.send(new GetCommand({ TableName: table, Key: { key: 'statement' } }))).Item;
      await v.agent.checkFreshnessOnce();
      const newer = await publishStatement();
      await v.agent.checkFreshnessOnce();
      await v.events.waitFor(
        freshness('fresh', (e) => e.sequence === newer),
        5000,
        'the newer statement',
      );

      // The backend serves the older statement again (a replay, or a table restored from a backup).
      await db.send(new PutCommand({ TableName: table, Item: olderItem }));
      await v.agent.checkFreshnessOnce();
      const refused = await v.events.waitFor(freshness('refused'), 5000, 'the older statement refused');
      assert.match(
        refused.reason ?? '',
        new RegExp(`^stale_sequence: statement ${older} is older than ${newer}`),
      );
      await v.close();

      v = await startAgent(ac, vin, dir, options);
      await v.agent.checkFreshnessOnce();
      await v.events.waitFor(freshness('refused'), 5000, 'refused after the restart');
      assert.equal(v.events.events.filter(freshness('fresh')).length, 0);
      const held = JSON.parse(readFileSync(join(dir, FRESHNESS_FILE), 'utf8')) as {
        held: { sequence: number };
      };
      assert.equal(held.held.sequence, newer);
    } finally {
      await v.close();
    }
  });

  it('judges an assignment expired by signed time when the vehicle clock was set back', async () => {
    const results: Record<string, AgentEvent> = {};
    for (const withFreshness of [true, false]) {
      const vin = nextVin();
      const dir = await registerAgentVehicle(ac, vin);
      let offset = 0;
      const runtime = { ...systemRuntime, now: () => Date.now() + offset };
      const v = await startAgent(ac, vin, dir, {
        runtime,
        freshness: withFreshness ? { checkIntervalMs: 3_600_000, maxSilenceMs: 3_600_000 } : false,
      });
      try {
        await v.events.waitFor((e) => e.type === 'connection' && e.connected, 10_000, 'MQTT connection');
        const offer = await initiateOffer(v, '2.0.0');
        const expiresAt = new Date(Date.now() - 1000).toISOString();
        const expired = {
          ...offer,
          assignment: await resignAssignment(ac, offer.assignment, { expires_at: expiresAt }),
        };
        await sleep(20);
        await publishStatement();
        await v.agent.checkFreshnessOnce();
        // The clock goes two days back: by its own clock the assignment has two days to run.
        offset = -2 * DAY;
        assert.ok(runtime.now() < Date.parse(expiresAt), 'the vehicle clock says the assignment is valid');
        await publishOffer(ac, vin, expired);
        results[String(withFreshness)] = await v.events.waitFor(
          (e) => (e.type === 'outcome' || e.type === 'accepted') && e.firmware_version === '2.0.0',
          15_000,
          'the offer judged',
        );
      } finally {
        await v.close();
      }
    }
    const judged = results.true!;
    assert.equal(judged.type, 'outcome', JSON.stringify(judged));
    assert.equal(judged.type === 'outcome' && judged.status, 'rejected');
    assert.match((judged.type === 'outcome' && judged.reason) || '', /^expired/);
    // The control: the same vehicle without signed time trusts its clock and accepts the expired assignment.
    assert.equal(results.false!.type, 'accepted', JSON.stringify(results.false));
  });

  it('reports when no new statement arrived for the configured time', async () => {
    const vin = nextVin();
    const dir = await registerAgentVehicle(ac, vin);
    const v = await startAgent(ac, vin, dir, { freshness: { checkIntervalMs: 200, maxSilenceMs: 1500 } });
    try {
      const sequence = await publishStatement();
      await v.events.waitFor(
        freshness('fresh', (e) => e.sequence === sequence),
        5000,
        'a statement',
      );
      const freshAt = Date.now();
      const silent = await v.events.waitFor(freshness('silent'), 10_000, 'the silence noticed');
      assert.ok(Date.now() - freshAt >= 1000, 'not before the configured time');
      assert.match(silent.reason ?? '', new RegExp(`no freshness statement newer than ${sequence}`));
      await v.events.waitFor(
        freshness('reported', (e) => e.reason === 'no_statement'),
        10_000,
        'reported',
      );
      const backend = (await backendVehicle(ac, vin)) as unknown as {
        freshness_alert: { kind: string } | null;
      };
      assert.equal(backend.freshness_alert?.kind, 'no_statement');
      // Reported once per silence, not at every check.
      await sleep(600);
      assert.equal(v.events.events.filter(freshness('silent')).length, 1);
    } finally {
      await v.close();
    }
  });
});
