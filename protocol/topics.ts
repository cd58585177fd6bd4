/**
 * MQTT in one place, as ROUTES is for HTTP: every topic a vehicle and the backend exchange, its direction, its
 * payload schema and who may publish or subscribe. The IoT policy and topic rule (lib/), the local broker's ACL,
 * rules router and data-plane shim (local/), ingest (lambdas/) and the agent's session and reporter (vehicle/)
 * all derive their topic names, filters and checks from TOPICS, so a new topic is one row and nothing can drift.
 */

import { offerSchema } from './offer.js';
import { statusReportSchema, VIN_PATTERN } from './schemas.js';
import { plainText, storableNumber } from './text.js';
import * as z from './zod.js';

/** Every vehicle topic is `vehicle/updates/{VIN}/{channel}`. */
export const TOPIC_ROOT = 'vehicle/updates';

/** IoT Core's largest message payload (128 KB); the local broker and data-plane shim refuse larger ones too. */
export const MAX_MQTT_PAYLOAD_BYTES = 128 * 1024;

/** A status or progress report as a vehicle publishes it: the HTTPS status body plus an informational timestamp. */
export const mqttReportSchema = z.extend(statusReportSchema, {
  /** Vehicle-side timestamp; informational, never trusted. */
  timestamp: z.optional(z.union([storableNumber(), plainText(40)])),
});
export type MqttReport = z.infer<typeof mqttReportSchema>;

export interface TopicDefinition {
  /** The last topic level. */
  readonly channel: string;
  /** backend_to_vehicle: the backend publishes (IoT Data Plane), the vehicle subscribes; vehicle_to_backend: the vehicle publishes, a topic rule delivers to ingest. */
  readonly direction: 'backend_to_vehicle' | 'vehicle_to_backend';
  readonly payload: z.ZodMiniType;
  /** A field the payload must carry on this topic (beyond the schema's own required fields). */
  readonly requires?: string;
  /**
   * A vehicle may also publish it through IoT Basic Ingest, `$aws/rules/<rule>/vehicle/updates/{VIN}/{channel}`:
   * straight to the topic rule, without the message broker (no messaging charge), and no subscriber can receive it.
   */
  readonly basicIngest?: boolean;
  readonly summary: string;
}

export const TOPICS = [
  {
    channel: 'issue_details',
    direction: 'backend_to_vehicle',
    payload: offerSchema,
    summary:
      'Update offer: the backend-signed assignment for this VIN and the digest of the OEM-signed manifest it binds (fetched over HTTPS)',
  },
  {
    channel: 'progress',
    direction: 'vehicle_to_backend',
    payload: mqttReportSchema,
    requires: 'progress',
    basicIngest: true,
    summary: 'Progress of the active update: {"progress": 0-100, "status": "..."}',
  },
  {
    channel: 'status',
    direction: 'vehicle_to_backend',
    payload: mqttReportSchema,
    basicIngest: true,
    summary: 'Status or outcome of an update: {"status": "...", ...}',
  },
] as const satisfies readonly TopicDefinition[];

export type TopicChannel = (typeof TOPICS)[number]['channel'];
export type VehicleChannel = Extract<(typeof TOPICS)[number], { direction: 'vehicle_to_backend' }>['channel'];
export type BackendChannel = Extract<(typeof TOPICS)[number], { direction: 'backend_to_vehicle' }>['channel'];

/** Channels a vehicle publishes on (the topic rule's WHERE, the broker's publish ACL). */
export const VEHICLE_CHANNELS = TOPICS.filter((t) => t.direction === 'vehicle_to_backend').map(
  (t) => t.channel,
) as readonly VehicleChannel[];
/** Channels a vehicle may publish on through Basic Ingest (the IoT policy, the broker's ACL, the rules router). */
export const BASIC_INGEST_CHANNELS = TOPICS.filter(
  (t): t is Extract<(typeof TOPICS)[number], { basicIngest: true }> => 'basicIngest' in t && t.basicIngest,
).map((t) => t.channel) as readonly VehicleChannel[];
/** Channels the backend publishes on and a vehicle subscribes to. */
export const BACKEND_CHANNELS = TOPICS.filter((t) => t.direction === 'backend_to_vehicle').map(
  (t) => t.channel,
) as readonly BackendChannel[];

export function topicDefinition(channel: TopicChannel): TopicDefinition {
  return TOPICS.find((t) => t.channel === channel)!;
}

/** The topic name of one vehicle's channel. */
export function vehicleTopic(vin: string, channel: TopicChannel): string {
  return `${TOPIC_ROOT}/${vin}/${channel}`;
}

/**
 * The VIN and channel of a topic name, or undefined when the name is not exactly
 * `vehicle/updates/{valid VIN}/{known channel}` (no wildcards, no extra levels).
 */
export function parseVehicleTopic(topic: string): { vin: string; channel: TopicChannel } | undefined {
  const levels = topic.split('/');
  if (levels.length !== 4 || `${levels[0]}/${levels[1]}` !== TOPIC_ROOT) return undefined;
  const vin = levels[2]!;
  const channel = TOPICS.find((t) => t.channel === levels[3])?.channel;
  if (!VIN_PATTERN.test(vin) || channel === undefined) return undefined;
  return { vin, channel };
}

/** The reserved prefix of IoT Basic Ingest topics: `$aws/rules/<rule name>/<topic the rule selects on>`. */
export const BASIC_INGEST_PREFIX = '$aws/rules';

/** The Basic Ingest topic of one vehicle's channel, for the topic rule `ruleName`. */
export function basicIngestTopic(ruleName: string, vin: string, channel: VehicleChannel): string {
  return `${BASIC_INGEST_PREFIX}/${ruleName}/${vehicleTopic(vin, channel)}`;
}

/**
 * The topic a rule sees for a message: a Basic Ingest topic of `ruleName` loses its prefix (IoT evaluates the rule's
 * FROM and topic(n) on the rest), another topic is itself. Undefined for a Basic Ingest topic of another rule or of
 * a channel not open to Basic Ingest.
 */
export function ruleTopic(topic: string, ruleName: string | undefined): string | undefined {
  if (!topic.startsWith(`${BASIC_INGEST_PREFIX}/`)) return topic;
  const prefix = `${BASIC_INGEST_PREFIX}/${ruleName}/`;
  if (ruleName === undefined || !topic.startsWith(prefix)) return undefined;
  const inner = topic.slice(prefix.length);
  const channel = inner.split('/').at(-1);
  return (BASIC_INGEST_CHANNELS as readonly string[]).includes(channel ?? '') ? inner : undefined;
}

/**
 * A topic of `vin` that the vehicle itself may publish on: its own progress and status topics, directly or through
 * Basic Ingest to the rule `ruleName` (when given).
 */
export function isVehiclePublishTopic(vin: string, topic: string, ruleName?: string): boolean {
  const inner = ruleTopic(topic, ruleName);
  const parsed = inner === undefined ? undefined : parseVehicleTopic(inner);
  return parsed?.vin === vin && (VEHICLE_CHANNELS as readonly string[]).includes(parsed.channel);
}

/** A topic the backend may publish on (for any VIN). */
export function isBackendPublishTopic(topic: string): boolean {
  const parsed = parseVehicleTopic(topic);
  return parsed !== undefined && (BACKEND_CHANNELS as readonly string[]).includes(parsed.channel);
}

/**
 * The IoT topic rule's SQL: every vehicle-published channel, each message as base64 with its VIN and channel.
 * The rules router runs the same selection locally.
 */
export function topicRuleSql(): string {
  const where = VEHICLE_CHANNELS.map((c) => `topic(4) = '${c}'`).join(' OR ');
  return (
    "SELECT encode(*, 'base64') AS payload, topic(3) AS vin, topic(4) AS channel, timestamp() AS received_at " +
    `FROM '${TOPIC_ROOT}/+/+' WHERE ${where}`
  );
}

/**
 * The topic rule's selection for one topic name: `vin` is topic(3) and `channel` topic(4), matched only on the
 * vehicle-published channels. Like the rule's `+`, the VIN level is not validated here (ingest does that). A Basic
 * Ingest topic of the rule `ruleName` is matched on what follows its prefix, as IoT does.
 */
export function matchTopicRule(
  topic: string,
  ruleName?: string,
): { vin: string; channel: VehicleChannel } | undefined {
  const inner = ruleTopic(topic, ruleName);
  if (inner === undefined) return undefined;
  const levels = inner.split('/');
  if (levels.length !== 4 || `${levels[0]}/${levels[1]}` !== TOPIC_ROOT || levels[2] === '') return undefined;
  const channel = VEHICLE_CHANNELS.find((c) => c === levels[3]);
  return channel === undefined ? undefined : { vin: levels[2]!, channel };
}

/** What the topic rule (or the local rules router) delivers to the ingest function. */
export const topicRuleEventSchema = z.object({
  payload: z.string().check(z.maxLength(256 * 1024)),
  vin: z.string(),
  channel: z.enum(VEHICLE_CHANNELS as [VehicleChannel, ...VehicleChannel[]]),
  received_at: z.number(),
});
export type TopicRuleEvent = z.infer<typeof topicRuleEventSchema>;
