/**
 * Ingestion of vehicle MQTT messages delivered by the IoT topic rule (or the local rules router). Every message is
 * validated; anything a vehicle can get wrong (bad JSON, unknown VIN, wrong campaign, out-of-range progress) is
 * refused and reported as an outcome, never thrown, so one bad message cannot crash the function or be retried
 * forever. Only infrastructure failures throw (and reach the rule's dead-letter queue).
 */
import { VIN_PATTERN } from '../../protocol/schemas.js';
import { type mqttReportSchema, topicDefinition, topicRuleEventSchema } from '../../protocol/topics.js';
import { OtaError } from './errors.js';
import { type Clock, systemClock, type VehicleRepository } from './ports.js';
import type { VinRateLimiter } from './rate-limit.js';
import type { UpdateStatusService } from './vehicle-updates.js';

export type IngestOutcome =
  | {
      readonly result: 'applied' | 'ignored';
      readonly vin: string;
      readonly updateId: string;
      readonly status: string;
    }
  | { readonly result: 'rejected'; readonly code: string; readonly message: string; readonly vin?: string };

/**
 * The log fields of a refused message. The refusal's text goes under `reason`: `message` is a reserved key of the
 * Powertools logger, which drops it (the reason a message was refused would never reach the logs).
 */
export function rejectionLogFields(
  outcome: Extract<IngestOutcome, { result: 'rejected' }>,
): Record<string, unknown> {
  return { result: outcome.result, code: outcome.code, reason: outcome.message, vin: outcome.vin };
}

/** The rule event a queue message carries, or undefined when its body is not JSON (refused like any bad event). */
export function queuedEvent(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

/**
 * A batch's messages grouped by vehicle (the event's `vin`; anything without one in a group of its own), each group
 * in the batch's order. The ingest function records one vehicle's messages one after the other and different
 * vehicles' at once: on DynamoDB, where a call is mostly network latency, an invocation then lasts about as long as
 * its busiest vehicle's messages rather than the batch's sum (the local emulators spend CPU per call instead, so
 * the local cloud shows no such gain: BENCHMARKS.md, session 8).
 */
export function groupByVehicle<M>(messages: readonly M[], eventOf: (message: M) => unknown): M[][] {
  const groups = new Map<string | undefined, M[]>();
  for (const message of messages) {
    const vin = (eventOf(message) as { vin?: unknown } | undefined)?.vin;
    const key = typeof vin === 'string' ? vin : undefined;
    const group = groups.get(key);
    if (group) group.push(message);
    else groups.set(key, [message]);
  }
  return [...groups.values()];
}

export async function ingestVehicleMessage(
  raw: unknown,
  deps: {
    vehicles: VehicleRepository;
    updates: UpdateStatusService;
    /** Per-VIN budget, checked before anything is read: a flooding vehicle costs no table access. */
    limiter?: Pick<VinRateLimiter, 'take'>;
    clock?: Clock;
  },
): Promise<IngestOutcome> {
  const event = topicRuleEventSchema.safeParse(raw);
  if (!event.success) return { result: 'rejected', code: 'invalid_event', message: 'not a topic rule event' };
  const { vin, channel } = event.data;
  if (!VIN_PATTERN.test(vin))
    return { result: 'rejected', code: 'invalid_vin', message: 'topic VIN is malformed' };
  if (deps.limiter && !deps.limiter.take(vin, (deps.clock ?? systemClock).now().getTime())) {
    return {
      result: 'rejected',
      code: 'rate_limited',
      message: 'the vehicle sends faster than allowed',
      vin,
    };
  }

  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(event.data.payload, 'base64').toString('utf8'));
  } catch {
    return { result: 'rejected', code: 'malformed_json', message: 'payload is not JSON', vin };
  }
  const topic = topicDefinition(channel);
  const message = topic.payload.safeParse(json) as ReturnType<typeof mqttReportSchema.safeParse>;
  if (!message.success) {
    const issue = message.error.issues[0]!;
    return {
      result: 'rejected',
      code: 'invalid_message',
      message: `${issue.path.join('.') || 'payload'}: ${issue.message}`,
      vin,
    };
  }
  if (
    topic.requires !== undefined &&
    (message.data as Record<string, unknown>)[topic.requires] === undefined
  ) {
    return {
      result: 'rejected',
      code: 'invalid_message',
      message: `${topic.requires}: required on the ${channel} topic`,
      vin,
    };
  }

  const vehicle = await deps.vehicles.get(vin);
  if (!vehicle) return { result: 'rejected', code: 'unknown_vehicle', message: 'no such vehicle', vin };
  // A revoked vehicle's certificate may still have a live connection (or IoT may not have cut it yet).
  if (vehicle.revokedAt !== undefined) {
    return { result: 'rejected', code: 'vehicle_revoked', message: 'the vehicle has been revoked', vin };
  }
  try {
    const { timestamp: _t, ...report } = message.data;
    const { update, applied } = await deps.updates.reportStatus(vehicle, report, 'mqtt');
    return { result: applied ? 'applied' : 'ignored', vin, updateId: update.updateId, status: update.status };
  } catch (err) {
    if (err instanceof OtaError && err.statusCode < 500 && err.code !== 'concurrent_update') {
      return { result: 'rejected', code: err.code, message: err.message, vin };
    }
    throw err;
  }
}
