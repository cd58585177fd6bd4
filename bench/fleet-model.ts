/**
 * `npm run bench:fleet-model -- [counts.json] [--rate 2000] [--fleet 1000000] [--image-mb 500]`: the
 * 1,000,000-vehicle model computed from a fleet run's counted operations (`npm run fleet -- --vehicles N --light
 * --counts-out counts.json`, which counts every AWS operation the backend made: lambdas/adapters/
 * operation-counter.ts). Prints Markdown: the per-vehicle operations, the load on each AWS quota when vehicles
 * flow through at --rate per second, whether --fleet vehicles are notified in 10 minutes within the default
 * quotas (and otherwise exactly which increase is needed), and the cost per vehicle at list prices. Nothing here
 * is a measured number except what the counts file holds; the quotas and prices are AWS's, cited by URL.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type OperationDelta, shapeOperations } from '../lambdas/adapters/operation-counter.js';

/** Default quotas, us-east-1 (check the account's Service Quotas console before a rollout). */
export const QUOTAS = {
  dynamoTableWru: {
    value: 40_000,
    what: 'DynamoDB on-demand table, write request units/s (default maximum per table)',
    url: 'https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html',
  },
  dynamoTableRru: {
    value: 40_000,
    what: 'DynamoDB on-demand table, read request units/s (default maximum per table)',
    url: 'https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html',
  },
  dynamoPartitionWru: {
    value: 1_000,
    what: 'DynamoDB partition (one item lives in one), WRU/s',
    url: 'https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html',
  },
  kmsEccSign: {
    value: 1_000,
    what: 'KMS cryptographic operations (ECC) request rate, per account and Region (older accounts: 300)',
    url: 'https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html',
  },
  iotInboundPublish: {
    value: 20_000,
    what: 'IoT Core inbound publish requests/s per account (device messages and Data Plane Publish)',
    url: 'https://docs.aws.amazon.com/general/latest/gr/iot-core.html',
  },
  iotOutboundPublish: {
    value: 20_000,
    what: 'IoT Core outbound publish requests/s per account (deliveries to devices)',
    url: 'https://docs.aws.amazon.com/general/latest/gr/iot-core.html',
  },
  iotConnect: {
    value: 500,
    what: 'IoT Core CONNECT requests/s per account',
    url: 'https://docs.aws.amazon.com/general/latest/gr/iot-core.html',
  },
  iotRules: {
    value: 20_000,
    what: 'IoT Core rules engine inbound messages/s per account',
    url: 'https://docs.aws.amazon.com/general/latest/gr/iot-core.html',
  },
  lambdaConcurrency: {
    value: 1_000,
    what: 'Lambda concurrent executions per Region',
    url: 'https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html',
  },
  apiGateway: {
    value: 10_000,
    what: 'API Gateway requests/s per account and Region (throttle)',
    url: 'https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html',
  },
  s3GetPerPrefix: {
    value: 5_500,
    what: 'S3 GET requests/s per prefix (every vehicle reads the one release object)',
    url: 'https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html',
  },
} as const;

/** List prices, us-east-1, USD. */
export const PRICES = {
  dynamoWru: { value: 0.625 / 1e6, url: 'https://aws.amazon.com/dynamodb/pricing/on-demand/' },
  dynamoRru: { value: 0.125 / 1e6, url: 'https://aws.amazon.com/dynamodb/pricing/on-demand/' },
  kmsAsymmetric: { value: 0.15 / 1e4, url: 'https://aws.amazon.com/kms/pricing/' },
  kmsOther: { value: 0.03 / 1e4, url: 'https://aws.amazon.com/kms/pricing/' },
  iotMessage: { value: 1.0 / 1e6, url: 'https://aws.amazon.com/iot-core/pricing/' },
  iotRuleAndAction: { value: 0.3 / 1e6, url: 'https://aws.amazon.com/iot-core/pricing/' },
  lambdaRequest: { value: 0.2 / 1e6, url: 'https://aws.amazon.com/lambda/pricing/' },
  lambdaGbSecond: { value: 0.0000133334, url: 'https://aws.amazon.com/lambda/pricing/' },
  apiRequest: { value: 3.5 / 1e6, url: 'https://aws.amazon.com/api-gateway/pricing/' },
  sqsRequest: { value: 0.4 / 1e6, url: 'https://aws.amazon.com/sqs/pricing/' },
  s3Get: { value: 0.0004 / 1e3, url: 'https://aws.amazon.com/s3/pricing/' },
  /** Transfer out to the internet, per GB, tiers of 10 TB, 40 TB, 100 TB, beyond. */
  s3TransferTiers: { value: [0.09, 0.085, 0.07, 0.05], url: 'https://aws.amazon.com/s3/pricing/' },
} as const;

export interface ModelInput {
  readonly vehicles: number;
  readonly operations: OperationDelta;
}

export interface ModelOptions {
  /** Vehicles per second flowing through the campaign. */
  readonly rate: number;
  readonly fleet: number;
  readonly imageMb: number;
  /**
   * Range request size of the agent's download, MiB, to compute image GETs from instead of counting them. The agent
   * sends one request for the rest of the image by default (vehicle/downloader.ts `requestBytes`).
   * @default - the GETs the run counted (presigned downloads), or one per vehicle when the counts have none
   */
  readonly rangeMb?: number;
  /**
   * Lambda duration assumed for concurrency and cost (not measured on AWS), ms: vehicle-api's, the others scaled by
   * their counted local time (lambdaTime), or every function's when the run counted no time.
   */
  readonly lambdaMs: number;
  readonly lambdaMb: number;
  /** Size of an offer message, KB (IoT meters 5 KB increments). */
  readonly offerKb: number;
}

/** What going over a limit takes: a quota increase (adjustable), or a design change (fixed per partition/prefix). */
const FIXED: ReadonlySet<keyof typeof QUOTAS> = new Set(['dynamoPartitionWru', 's3GetPerPrefix']);

/** A new on-demand table sustains this many WRU/s until it has scaled up or been pre-warmed (warm throughput). */
export const NEW_TABLE_WRU = {
  value: 4_000,
  url: 'https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/pre-warming-on-demand-capacity-mode.html',
};

export interface QuotaLoad {
  readonly quota: keyof typeof QUOTAS;
  readonly detail: string;
  readonly perVehicle: number;
  readonly load: number;
  readonly limit: number;
}

/** Load on each quota at options.rate vehicles/s, from the counted operations per vehicle. */
export function quotaLoads(input: ModelInput, o: ModelOptions): QuotaLoad[] {
  const s = shapeOperations(input.operations);
  const per = (n: number) => n / input.vehicles;
  const loads: QuotaLoad[] = [];
  const add = (quota: keyof typeof QUOTAS, detail: string, perVehicle: number) =>
    loads.push({ quota, detail, perVehicle, load: perVehicle * o.rate, limit: QUOTAS[quota].value });
  const txExtra = per(s.dynamodb.transactionalWrites); // a transactional write costs 2 WRU
  for (const [table, c] of Object.entries(s.dynamodb.byTable).sort()) {
    if (c.writes > 0) add('dynamoTableWru', `${table} writes (1 KB items)`, per(c.writes));
    if (c.reads > 0) add('dynamoTableRru', `${table} reads (1 RRU each, upper bound)`, per(c.reads));
  }
  if (txExtra > 0) add('dynamoTableWru', 'transactional writes, second WRU (all tables)', txExtra);
  const hottest = s.dynamodb.hottestItems[0];
  if (hottest) add('dynamoPartitionWru', `hottest item ${hottest.item}`, per(hottest.writes));
  add('kmsEccSign', 'Sign', per(s.kms.sign));
  const publishes = s.iot.publish;
  add('iotInboundPublish', 'device messages + Data Plane Publish', per(s.iot.inbound + publishes));
  add('iotOutboundPublish', 'deliveries to devices', per(s.iot.delivered));
  add('iotConnect', 'connections during the campaign', per(s.iot.connects));
  add('iotRules', 'messages to the topic rule', per(s.iot.ruleActions));
  add('lambdaConcurrency', lambdaTime(input, o).detail, lambdaTime(input, o).msPerVehicle / 1000);
  add('apiGateway', 'API requests', per(s.apigateway.requests));
  const gets = imageGets(input, o);
  add('s3GetPerPrefix', gets.detail, gets.perVehicle);
  return loads;
}

/** The function whose duration --lambda-ms gives; the others are scaled by their local time against it. */
const REFERENCE_FUNCTION = 'vehicle-api';

/**
 * Lambda time per vehicle, ms: each function's invocations times its duration. A duration on AWS is not measured
 * here: --lambda-ms is vehicle-api's, and when the run counted the time each function spent in its local instances,
 * every other function's is scaled by its mean local time against vehicle-api's (an ingest batch of ten messages is
 * not one API request's time); without those counts every invocation is --lambda-ms.
 */
export function lambdaTime(input: ModelInput, o: ModelOptions): { msPerVehicle: number; detail: string } {
  const s = shapeOperations(input.operations);
  const per = (n: number) => n / input.vehicles;
  const mean = (fn: string) => {
    const ms = s.lambda.byFunction[fn]?.ms;
    const n = s.lambda.invocations[fn] ?? 0;
    return ms !== undefined && n > 0 ? ms / n : undefined;
  };
  const reference = mean(REFERENCE_FUNCTION);
  if (reference === undefined || reference <= 0) {
    return {
      msPerVehicle: per(s.lambda.total) * o.lambdaMs,
      detail: `invocations x ${o.lambdaMs} ms (assumed)`,
    };
  }
  let ms = 0;
  for (const [fn, n] of Object.entries(s.lambda.invocations)) {
    ms += per(n) * o.lambdaMs * ((mean(fn) ?? reference) / reference);
  }
  return {
    msPerVehicle: ms,
    detail: `invocations x duration (${REFERENCE_FUNCTION} ${o.lambdaMs} ms assumed, others scaled by their local time)`,
  };
}

/** Image GETs per vehicle: computed from --range-mb when given, else counted in the run (or one when not counted). */
export function imageGets(input: ModelInput, o: ModelOptions): { perVehicle: number; detail: string } {
  if (o.rangeMb !== undefined) {
    return {
      perVehicle: Math.ceil((o.imageMb * 1e6) / (o.rangeMb * 1024 * 1024)),
      detail: `image GETs (${o.imageMb} MB in ${o.rangeMb} MiB ranges)`,
    };
  }
  const counted = shapeOperations(input.operations).s3.downloads.gets;
  if (counted > 0) {
    return {
      perVehicle: counted / input.vehicles,
      detail: "image GETs (counted: the agents' Range requests, resumes included)",
    };
  }
  return {
    perVehicle: 1,
    detail: 'image GETs (not counted in this run: one Range request per download assumed)',
  };
}

function transferCost(gb: number): number {
  const tiers = [10_240, 40_960, 102_400, Number.POSITIVE_INFINITY];
  let left = gb;
  let cost = 0;
  tiers.forEach((size, i) => {
    const take = Math.min(left, size);
    cost += take * PRICES.s3TransferTiers.value[i]!;
    left -= take;
  });
  return cost;
}

export interface CostLine {
  readonly item: string;
  readonly perVehicle: number;
}

/** Cost per vehicle at list prices, from the counted operations. */
export function costPerVehicle(input: ModelInput, o: ModelOptions): CostLine[] {
  const s = shapeOperations(input.operations);
  const per = (n: number) => n / input.vehicles;
  const metered = Math.max(1, Math.ceil(o.offerKb / 5));
  const lambdaGbS = (lambdaTime(input, o).msPerVehicle * o.lambdaMb) / 1000 / 1024;
  const sqs = Object.values(s.sqs.byOperation).reduce((n, v) => n + v, 0);
  const kmsOther = Object.entries(s.kms.byOperation)
    .filter(([op]) => op !== 'Sign')
    .reduce((n, [, v]) => n + v, 0);
  return [
    {
      item: 'DynamoDB writes',
      perVehicle: per(s.dynamodb.writes + s.dynamodb.transactionalWrites) * PRICES.dynamoWru.value,
    },
    { item: 'DynamoDB reads', perVehicle: per(s.dynamodb.reads) * PRICES.dynamoRru.value },
    {
      item: 'KMS',
      perVehicle: per(s.kms.sign) * PRICES.kmsAsymmetric.value + per(kmsOther) * PRICES.kmsOther.value,
    },
    {
      item: `IoT messages (offers metered x${metered})`,
      perVehicle:
        (per(s.iot.inbound - s.iot.basicIngest) +
          per(s.iot.publish) * metered +
          per(s.iot.delivered) * metered) *
        PRICES.iotMessage.value,
    },
    { item: 'IoT rules + actions', perVehicle: per(s.iot.ruleActions) * PRICES.iotRuleAndAction.value },
    {
      item: `Lambda (requests; ${lambdaTime(input, o).detail} x ${o.lambdaMb} MB)`,
      perVehicle: per(s.lambda.total) * PRICES.lambdaRequest.value + lambdaGbS * PRICES.lambdaGbSecond.value,
    },
    { item: 'API Gateway', perVehicle: per(s.apigateway.requests) * PRICES.apiRequest.value },
    { item: 'SQS', perVehicle: per(sqs) * PRICES.sqsRequest.value },
    { item: 'S3 GET', perVehicle: imageGets(input, o).perVehicle * PRICES.s3Get.value },
    {
      item: `S3 transfer out (${o.imageMb} MB, tiered over the fleet)`,
      perVehicle: transferCost((o.fleet * o.imageMb) / 1024) / o.fleet,
    },
  ];
}

const fmt = (n: number, digits = 2) =>
  n === 0 ? '0' : Math.abs(n) >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);

/** The model as Markdown. */
export function renderModel(input: ModelInput & { source: string }, o: ModelOptions): string {
  const s = shapeOperations(input.operations);
  const per = (n: number) => n / input.vehicles;
  const loads = quotaLoads(input, o);
  const costs = costPerVehicle(input, o);
  const backend = costs.filter((c) => !c.item.startsWith('S3')).reduce((n, c) => n + c.perVehicle, 0);
  const total = costs.reduce((n, c) => n + c.perVehicle, 0);
  const over = loads.filter((l) => l.load > l.limit);
  const warm = loads.filter(
    (l) =>
      l.quota === 'dynamoTableWru' && l.load > NEW_TABLE_WRU.value && !l.detail.startsWith('transactional'),
  );
  const notifySeconds = o.fleet / o.rate;
  const lines = [
    `Model from ${input.source}: ${input.vehicles} vehicles counted; ${o.fleet.toLocaleString('en-US')} vehicles at ${o.rate.toLocaleString('en-US')}/s.`,
    '',
    '| per vehicle (counted) | value |',
    '|---|---|',
    `| DynamoDB writes (items) / reads | ${fmt(per(s.dynamodb.writes))} / ${fmt(per(s.dynamodb.reads))} |`,
    `| DynamoDB transactional writes (2 WRU each) | ${fmt(per(s.dynamodb.transactionalWrites))} |`,
    ...Object.entries(s.dynamodb.byTable)
      .sort()
      .map(([t, c]) => `| &nbsp;&nbsp;${t}: writes / reads | ${fmt(per(c.writes))} / ${fmt(per(c.reads))} |`),
    `| hottest item (writes per campaign vehicle) | ${s.dynamodb.hottestItems[0] ? `${s.dynamodb.hottestItems[0].item}: ${fmt(per(s.dynamodb.hottestItems[0].writes), 3)}` : '-'} |`,
    `| KMS Sign (by key) | ${fmt(per(s.kms.sign), 4)} (${Object.entries(s.kms.signByKey)
      .map(([k, v]) => `${k} ${fmt(per(v), 4)}`)
      .join(', ')}) |`,
    `| IoT Data Plane Publish / device messages (of which Basic Ingest) / deliveries | ${fmt(per(s.iot.publish))} / ${fmt(per(s.iot.inbound))} (${fmt(per(s.iot.basicIngest))}) / ${fmt(per(s.iot.delivered))} |`,
    `| IoT rule actions | ${fmt(per(s.iot.ruleActions))} |`,
    `| Lambda invocations | ${fmt(per(s.lambda.total))} (${Object.entries(s.lambda.invocations)
      .sort()
      .map(([f, v]) => `${f} ${fmt(per(v))}`)
      .join(', ')}) |`,
    `| API Gateway requests | ${fmt(per(s.apigateway.requests))} |`,
    `| SQS requests | ${fmt(per(Object.values(s.sqs.byOperation).reduce((n, v) => n + v, 0)), 3)} |`,
    `| S3 calls by the backend | ${fmt(per(Object.values(s.s3.byOperation).reduce((n, v) => n + v, 0)), 3)} |`,
    `| S3 GETs by vehicles (presigned downloads) / bytes per GET | ${fmt(per(s.s3.downloads.gets), 3)} / ${s.s3.downloads.gets > 0 ? fmt(s.s3.downloads.bytes / s.s3.downloads.gets, 0) : '-'} |`,
    '',
    `| quota (default) | what | per vehicle | load at ${o.rate.toLocaleString('en-US')}/s | limit | use |`,
    '|---|---|---|---|---|---|',
    ...loads.map(
      (l) =>
        `| [${QUOTAS[l.quota].what}](${QUOTAS[l.quota].url}) | ${l.detail} | ${fmt(l.perVehicle, 3)} | ${fmt(l.load)} | ${l.limit.toLocaleString('en-US')} | ${l.load > l.limit ? '**' : ''}${fmt((100 * l.load) / l.limit, 1)}%${l.load > l.limit ? '**' : ''} |`,
    ),
    '',
    `Notifying ${o.fleet.toLocaleString('en-US')} vehicles at ${o.rate.toLocaleString('en-US')}/s takes ${fmt(notifySeconds / 60, 1)} min (${notifySeconds <= 600 ? 'within' : 'over'} 10 min), if every limit below holds that rate.`,
    '',
    over.length === 0
      ? '- Every default quota holds that rate: no increase is needed.'
      : over
          .map((l) =>
            FIXED.has(l.quota)
              ? `- **Design limit, not adjustable:** ${QUOTAS[l.quota].what}, ${l.detail}: ${fmt(l.load)}/s against ${l.limit.toLocaleString('en-US')}; at most ${fmt(l.limit / l.perVehicle)} vehicles/s as it is.`
              : `- **Quota increase needed:** ${QUOTAS[l.quota].what}, ${l.detail}: from ${l.limit.toLocaleString('en-US')} to at least ${fmt(Math.ceil(l.load))} (or at most ${fmt(l.limit / l.perVehicle)} vehicles/s).`,
          )
          .join('\n'),
    ...(warm.length > 0
      ? [
          `- **Pre-warm (warm throughput) or ramp up over 30 min:** a new on-demand table sustains [${NEW_TABLE_WRU.value.toLocaleString('en-US')} WRU/s](${NEW_TABLE_WRU.url}) until it has scaled: ${warm.map((l) => `${l.detail.split(' ')[0]} ${fmt(l.load)}/s`).join(', ')}.`,
        ]
      : []),
    '',
    '| function (local instances; counts per campaign vehicle) | invocations | DynamoDB reads | DynamoDB writes | KMS Sign | IoT Publish | ms per invocation (local emulators) |',
    '|---|---|---|---|---|---|---|',
    ...Object.entries(s.lambda.invocations)
      .sort()
      .map(([fn, n]) => {
        const b = s.lambda.byFunction[fn] ?? {};
        const ms = b.ms === undefined ? '-' : fmt(b.ms / n, 0);
        return `| ${fn} | ${fmt(per(n))} | ${fmt(per(b.dynamodbReads ?? 0))} | ${fmt(per(b.dynamodbWrites ?? 0))} | ${fmt(per(b.kmsSigns ?? 0), 3)} | ${fmt(per(b.iotPublishes ?? 0))} | ${ms} |`;
      }),
    '',
    '| cost per vehicle (list prices, us-east-1) | USD |',
    '|---|---|',
    ...costs.map((c) => `| ${c.item} | ${c.perVehicle.toFixed(6)} |`),
    `| **backend, without the image transfer** | **${backend.toFixed(6)}** |`,
    `| **total** | **${total.toFixed(6)}** |`,
    '',
    `Prices: ${[...new Set(Object.values(PRICES).map((p) => p.url))].join(', ')}.`,
  ];
  return lines.join('\n');
}

const isMain = import.meta.url === `file://${process.argv[1]}`;
if (isMain) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      rate: { type: 'string', default: '2000' },
      fleet: { type: 'string', default: '1000000' },
      'image-mb': { type: 'string', default: '500' },
      'range-mb': { type: 'string' },
      'lambda-ms': { type: 'string', default: '60' },
      'lambda-mb': { type: 'string', default: '512' },
      'offer-kb': { type: 'string', default: '9' },
    },
  });
  const file = positionals[0] ?? new URL('./fleet-counts.json', import.meta.url).pathname;
  const counts = JSON.parse(readFileSync(file, 'utf8')) as {
    vehicles: number;
    operations: { total: OperationDelta };
  };
  process.stdout.write(
    `${renderModel(
      { vehicles: counts.vehicles, operations: counts.operations.total, source: file },
      {
        rate: Number(values.rate),
        fleet: Number(values.fleet),
        imageMb: Number(values['image-mb']),
        rangeMb: values['range-mb'] === undefined ? undefined : Number(values['range-mb']),
        lambdaMs: Number(values['lambda-ms']),
        lambdaMb: Number(values['lambda-mb']),
        offerKb: Number(values['offer-kb']),
      },
    )}\n`,
  );
}
