/**
 * IoT Basic Ingest topics from the TOPICS table (protocol/topics.ts): which a vehicle may publish, and what the topic
 * rule (and the local rules router) selects from them, as IoT does: the `$aws/rules/<rule>/` prefix is dropped
 * before the rule's FROM and topic(n) apply.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { toTopicRuleEvent } from '../../local/rules-router.js';
import {
  BASIC_INGEST_CHANNELS,
  basicIngestTopic,
  isVehiclePublishTopic,
  matchTopicRule,
  ruleTopic,
} from '../../protocol/topics.js';

const VIN = '1HGCM82633A004352';
const OTHER = '5YJSA1E26HF000337';
const RULE = 'Ota_vehicle_messages';

describe('Basic Ingest topics', { timeout: 10_000 }, () => {
  it('opens the vehicle-published channels, not the offers', () => {
    assert.deepEqual(BASIC_INGEST_CHANNELS, ['progress', 'status']);
    assert.equal(basicIngestTopic(RULE, VIN, 'status'), `$aws/rules/${RULE}/vehicle/updates/${VIN}/status`);
  });

  it('lets a vehicle publish its own reports directly or to the rule, nothing else', () => {
    for (const channel of ['progress', 'status'] as const) {
      assert.ok(isVehiclePublishTopic(VIN, `vehicle/updates/${VIN}/${channel}`, RULE), 'seed topic');
      assert.ok(isVehiclePublishTopic(VIN, basicIngestTopic(RULE, VIN, channel), RULE), 'Basic Ingest');
      assert.ok(!isVehiclePublishTopic(VIN, basicIngestTopic(RULE, OTHER, channel), RULE), "another VIN's");
      assert.ok(
        !isVehiclePublishTopic(VIN, basicIngestTopic('other_rule', VIN, channel), RULE),
        'another rule',
      );
      assert.ok(!isVehiclePublishTopic(VIN, basicIngestTopic(RULE, VIN, channel)), 'no rule configured');
    }
    for (const topic of [
      `$aws/rules/${RULE}/vehicle/updates/${VIN}/issue_details`,
      `$aws/rules/${RULE}/vehicle/updates/${VIN}/status/extra`,
      `$aws/rules/${RULE}/vehicle/updates/+/status`,
      `$aws/rules/${RULE}`,
      `$aws/rules/${RULE}/`,
      '$aws/rules/#',
      `$aws/things/${VIN}/shadow/update`,
    ]) {
      assert.ok(!isVehiclePublishTopic(VIN, topic, RULE), topic);
    }
  });

  it('selects a Basic Ingest message for the rule as its seed topic, and refuses another rule', () => {
    assert.deepEqual(matchTopicRule(basicIngestTopic(RULE, VIN, 'progress'), RULE), {
      vin: VIN,
      channel: 'progress',
    });
    assert.deepEqual(matchTopicRule(`vehicle/updates/${VIN}/status`, RULE), { vin: VIN, channel: 'status' });
    assert.equal(matchTopicRule(basicIngestTopic('other_rule', VIN, 'status'), RULE), undefined);
    assert.equal(ruleTopic(`$aws/rules/${RULE}/vehicle/updates/${VIN}/issue_details`, RULE), undefined);
    const event = toTopicRuleEvent(
      { topic: basicIngestTopic(RULE, VIN, 'status'), payload: Buffer.from('{}'), receivedAt: 7 } as never,
      RULE,
    );
    assert.deepEqual(event, {
      payload: Buffer.from('{}').toString('base64'),
      vin: VIN,
      channel: 'status',
      received_at: 7,
    });
  });
});
