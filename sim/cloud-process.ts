/**
 * The local cloud in a process of its own for the scale-out fleet run (sim/scale.ts forks it), so its memory and
 * CPU are measured apart from the vehicles' and the operator's. Answers requests from the parent over IPC:
 * `operations` (the flat counts of every AWS operation the backend made, operation-counter.ts), `stats` (rules
 * router, queue, peak RSS) and `stop`.
 */
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FUNCTION_SETTINGS, INGEST_EVENT_SOURCE } from '../lambdas/core/functions.js';
import { startLocalCloud } from '../local/cloud.js';
import { peakRssBytes } from './operator.js';

export interface CloudProcessOptions {
  readonly dataDir: string;
  readonly releasePublicKey: string;
  readonly mqttMaxConnections: number;
  readonly rulesMaxQueued: number;
  readonly maxInstancesPerFunction: number;
  /** Vehicle messages per ingest invocation. @default as deployed */
  readonly ingestBatchSize?: number;
  /** Period of the campaign tick, ms (the stack schedules it every minute). */
  readonly campaignTickMs: number;
}

export interface CloudProcessInfo {
  readonly api: string;
  readonly mqtt: string;
  readonly ca: string;
  readonly adminToken: string;
  readonly backendPublicKey: string;
  /** The topic rule vehicles report to through IoT Basic Ingest. */
  readonly ingestRule: string;
}

export type CloudRequest = { id: number; op: 'operations' | 'stats' | 'stop' };
export type CloudMessage =
  | { type: 'ready'; info: CloudProcessInfo }
  | { type: 'failed'; error: string }
  | { type: 'reply'; id: number; result: unknown };

// Orphaned (the run was stopped): stop too.
process.on('disconnect', () => process.exit(1));

async function main() {
  const options = JSON.parse(process.argv[2] ?? '{}') as CloudProcessOptions;
  const send = (m: CloudMessage) => process.send?.(m);
  const cloud = await startLocalCloud({
    dataDir: options.dataDir,
    releasePublicKeys: [options.releasePublicKey],
    campaignTickMs: options.campaignTickMs,
    throttle: { ratePerSecond: 1_000_000, burst: 1_000_000 },
    mqttMaxConnections: options.mqttMaxConnections,
    rulesMaxQueued: options.rulesMaxQueued,
    // Vehicle messages reach ingest in batches as deployed (lib/fleet-ingest.ts), not one invocation each.
    ingestBatchWindowMs: INGEST_EVENT_SOURCE.maxBatchingWindowSeconds * 1000,
    maxInstancesPerFunction: options.maxInstancesPerFunction,
    ...(options.ingestBatchSize !== undefined ? { ingestBatchSize: options.ingestBatchSize } : {}),
    // As sim/fleet.ts: campaign creation for the whole fleet in one request gets API Gateway's 29 s, not the
    // deployed 10 s; every other function keeps its deployed timeout and memory.
    functionSettings: { 'operator-api': { ...FUNCTION_SETTINGS['operator-api'], timeoutSeconds: 29 } },
    logger: {
      warn() {},
      error: (m, e) => process.stderr.write(`[cloud] gateway error: ${m} ${JSON.stringify(e)}\n`),
    },
  });
  process.on('message', async (req: CloudRequest) => {
    let result: unknown;
    if (req.op === 'operations') result = cloud.operationCounts();
    else if (req.op === 'stats') {
      result = {
        rules: cloud.rules.stats(),
        jobs: { ...cloud.jobs.stats },
        lambdas: cloud.lambdas.stats(),
        peakRssBytes: peakRssBytes(),
      };
    } else if (req.op === 'stop') {
      await cloud.rules.idle().catch(() => {});
      result = { peakRssBytes: peakRssBytes() };
      await cloud.stop();
      send({ type: 'reply', id: req.id, result });
      process.exit(0);
    }
    send({ type: 'reply', id: req.id, result });
  });
  send({
    type: 'ready',
    info: {
      api: cloud.endpoints.api,
      mqtt: cloud.endpoints.mqtt,
      ca: cloud.caCertPem,
      adminToken: cloud.adminToken,
      ingestRule: cloud.ingestRuleName,
      backendPublicKey: createPublicKey(readFileSync(cloud.signingKeyFile, 'utf8'))
        .export({ type: 'spki', format: 'pem' })
        .toString(),
    },
  });
}

main().catch((err: unknown) => {
  process.send?.({ type: 'failed', error: err instanceof Error ? err.stack : String(err) });
  process.exit(1);
});
