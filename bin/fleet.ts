/**
 * `npm run fleet -- --vehicles N [--faults] [--image-kb 256] [--seed n] [--json]`: the fleet simulation (see
 * sim/fleet.ts). Prints a summary and exits non-zero unless every check holds:
 *   - the main campaign completed and the backend's view equals every vehicle's view,
 *   - every vehicle runs the old or the new version, never anything else,
 *   - with --faults: each injected fault had its effect in the system (sim/fault-probes.ts: cut downloads resumed,
 *     power cuts recovered from the state files, every vehicle reconnected after the broker restart and offers
 *     caught up, duplicated messages reached the backend twice and were applied once), failures were counted as
 *     such, and the campaign of the tampered release halted itself with every vehicle refusing it.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { reportBundleFleet, runBundleFleet } from '../sim/bundle-fleet.js';
import { type FaultCheck, faultChecks } from '../sim/fault-probes.js';
import { runFleet } from '../sim/fleet.js';
import { runScaleFleet, type ScaleSummary } from '../sim/scale.js';

const { values } = parseArgs({
  options: {
    vehicles: { type: 'string', default: '50' },
    faults: { type: 'boolean', default: false },
    'image-kb': { type: 'string', default: '256' },
    seed: { type: 'string' },
    'timeout-s': { type: 'string', default: '900' },
    json: { type: 'boolean', default: false },
    light: { type: 'boolean' },
    workers: { type: 'string', default: '4' },
    'notify-per-second': { type: 'string', default: '1000' },
    waves: { type: 'string', default: '10,100' },
    'tick-s': { type: 'string', default: '60' },
    campaigns: { type: 'string', default: '1' },
    'counts-out': { type: 'string' },
    'ingest-batch-size': { type: 'string' },
    bundles: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: npm run fleet -- --vehicles N [--faults] [--image-kb 256] [--seed n] [--timeout-s 900] [--json]\n' +
      '       npm run fleet -- --vehicles N --light [--workers 4] [--notify-per-second 1000] [--waves 10,100] [--tick-s 60] [--campaigns 1]\n' +
      '                        [--counts-out counts.json] [--ingest-batch-size 10]   (light vehicles in worker processes; the default above 1000)\n' +
      '       npm run fleet -- --bundles --vehicles N [--faults] [--image-kb 128]   (3-ECU bundle campaign, then a rollback campaign)\n',
  );
  process.exit(0);
}
const vehicles = Number(values.vehicles);
if (!Number.isInteger(vehicles) || vehicles < 1) {
  process.stderr.write('error: --vehicles must be a positive integer\n');
  process.exit(2);
}

const began = Date.now();
const stamp = (line: string) =>
  process.stderr.write(`[fleet +${((Date.now() - began) / 1000).toFixed(1)}s] ${line}\n`);
if (values.bundles) {
  const summary = await runBundleFleet({
    vehicles,
    faults: values.faults ?? false,
    imageBytes: Number(values['image-kb']) * 1024,
    timeoutMs: Number(values['timeout-s']) * 1000,
    log: stamp,
  });
  process.exit(reportBundleFleet(summary, values.json ?? false));
}
const light = values.light ?? (vehicles > 1000 && !values.faults);
if (light && values.faults) {
  process.stderr.write('error: --faults needs the full agent; leave out --light\n');
  process.exit(2);
}
if (light) {
  const summary = await runScaleFleet({
    vehicles,
    workers: Number(values.workers),
    imageBytes: Number(values['image-kb']) * 1024,
    timeoutMs: Number(values['timeout-s']) * 1000,
    notifyPerSecond: Number(values['notify-per-second']),
    waves: String(values.waves).split(',').map(Number),
    tickSeconds: Number(values['tick-s']),
    campaigns: Number(values.campaigns),
    ...(values['ingest-batch-size'] ? { ingestBatchSize: Number(values['ingest-batch-size']) } : {}),
    // Written as soon as counted, so a failure in the comparisons after it does not lose the counts.
    onCounted: (counts) => {
      if (values['counts-out'])
        writeFileSync(
          values['counts-out'],
          `${JSON.stringify({ schema: 'ota.fleet-counts/v1', ...counts }, null, 2)}\n`,
        );
    },
    log: stamp,
  });
  if (values['counts-out'])
    writeFileSync(values['counts-out'], `${JSON.stringify(countsFile(summary), null, 2)}\n`);
  reportScale(summary);
}

const summary = await runFleet({
  vehicles,
  faults: values.faults ?? false,
  imageBytes: Number(values['image-kb']) * 1024,
  timeoutMs: Number(values['timeout-s']) * 1000,
  ...(values.seed ? { seed: Number(values.seed) } : {}),
  log: stamp,
});

const checks: [string, boolean][] = [
  ['main campaign completed', summary.campaign.status === 'completed'],
  ['backend and vehicles agree on every vehicle', summary.disagreements.length === 0],
  [
    'every vehicle runs the old or the new version',
    Object.keys(summary.versions).every((v) => v === '1.0.0' || v === '2.0.0'),
  ],
  [
    'every vehicle has an outcome (no status lost)',
    Object.entries(summary.campaign.counts)
      .filter(([s]) =>
        ['completed', 'failed', 'verification_failed', 'rolled_back', 'rejected', 'timed_out'].includes(s),
      )
      .reduce((n, [, c]) => n + c, 0) === vehicles,
  ],
];
let details: FaultCheck[] = [];
if (summary.faults) {
  const failures = ['failed', 'verification_failed', 'rolled_back', 'rejected', 'timed_out'].reduce(
    (n, s) => n + (summary.campaign.counts[s] ?? 0),
    0,
  );
  const evidence = summary.faultEvidence;
  details = evidence ? faultChecks(evidence, 'campaign#fleet-main') : [];
  checks.push(
    ...details.map((c): [string, boolean] => [c.name, c.ok]),
    ['fault evidence was gathered', evidence !== undefined],
    [
      'health-check failures were counted as failures',
      failures > 0 && (summary.campaign.counts.rolled_back ?? 0) === failures,
    ],
    ['the tampered release halted its campaign', summary.tamperedCampaign?.status === 'halted'],
    ['no vehicle installed the tampered release', (summary.tamperedCampaign?.counts.completed ?? 0) === 0],
  );
}

const bytesRatio =
  summary.bytesServed / (summary.imageBytes * Math.max(1, summary.campaign.counts.completed ?? 0));
if (values.json) {
  process.stdout.write(`${JSON.stringify({ ...summary, checks: Object.fromEntries(checks) }, null, 2)}\n`);
} else {
  const lines = [
    `Fleet simulation: ${summary.vehicles} vehicles, faults ${summary.faults ? 'on' : 'off'}`,
    `  main campaign      ${summary.campaign.status}  ${JSON.stringify(summary.campaign.counts)}`,
    `  halt reason        ${summary.campaign.haltReason ?? '-'}`,
    ...Object.entries(summary.campaign.reasons).map(([r, n]) => `    ${n} x ${r}`),
    `  time to notify all ${(summary.timings.notifyAllMs / 1000).toFixed(1)} s`,
    `  time to complete   ${(summary.timings.completeMs / 1000).toFixed(1)} s`,
    `  offer -> installed p50 ${(summary.timings.p50InstallMs / 1000).toFixed(2)} s, p99 ${(summary.timings.p99InstallMs / 1000).toFixed(2)} s`,
    `  bytes served       ${summary.bytesServed} (${bytesRatio.toFixed(3)} x image size per completed vehicle, image ${summary.imageBytes} B)`,
    `  versions running   ${JSON.stringify(summary.versions)}`,
    `  injected faults    ${JSON.stringify(summary.injected)}`,
    ...(summary.tamperedCampaign
      ? [
          `  tampered release   ${summary.tamperedCampaign.status}: ${summary.tamperedCampaign.haltReason ?? ''} ${JSON.stringify(summary.tamperedCampaign.counts)}`,
        ]
      : []),
    `  backend vs vehicles ${summary.disagreements.length === 0 ? 'agree exactly' : `${summary.disagreements.length} disagreements`}`,
    ...summary.disagreements.slice(0, 20).map((d) => `    ${d}`),
    ...details.map((c) => `  ${c.ok ? 'fault' : 'FAULT'} ${c.name}: ${c.detail}`),
    ...checks.map(([name, ok]) => `  ${ok ? 'ok  ' : 'FAIL'} ${name}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
const failed = checks.filter(([, ok]) => !ok).length;
process.stdout.write(`${checks.length - failed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);

/** What bench/fleet-model.ts reads: the counted operations of the run and its figures. */
function countsFile(s: ScaleSummary) {
  return {
    schema: 'ota.fleet-counts/v1',
    generated_at: new Date().toISOString(),
    vehicles: s.vehicles,
    campaigns: s.campaigns,
    image_bytes: s.imageBytes,
    campaign: s.campaign,
    timings_ms: s.timings,
    peak_rss_bytes: s.peakRssBytes,
    per_vehicle: s.perVehicle,
    operations: s.operations,
  };
}

function reportScale(s: ScaleSummary): never {
  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MB`;
  const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const completed = s.vehicleStatuses.completed ?? 0;
  const checks: [string, boolean][] = [
    ['campaign(s) completed', s.campaign.status === 'completed'],
    ['every vehicle completed the update (every chunk verified)', completed === s.vehicles],
    ['backend and vehicles agree on every vehicle', s.disagreements.length === 0],
    ['every vehicle downloaded the image once', s.bytesDownloaded === s.vehicles * s.imageBytes],
  ];
  const f = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2));
  const pv = s.perVehicle;
  const lines = [
    `Fleet simulation (light vehicles): ${s.vehicles} vehicles in ${s.workers} worker processes, ${s.campaigns} campaign(s), image ${s.imageBytes} B`,
    `  campaign            ${s.campaign.status}  ${JSON.stringify(s.campaign.counts)}${s.campaign.haltReason ? ` (${s.campaign.haltReason})` : ''}`,
    `  vehicles            ${JSON.stringify(s.vehicleStatuses)}`,
    `  register / connect  ${sec(s.timings.registerMs)} / ${sec(s.timings.connectMs)}`,
    `  campaign creation   ${sec(s.timings.createMs)}`,
    `  time to notify all  ${sec(s.timings.notifyAllMs)}`,
    `  time to complete    ${sec(s.timings.completeMs)} (last outcome acknowledged ${sec(s.timings.lastOutcomeMs)})`,
    `  peak RSS            parent ${mb(s.peakRssBytes.parent)}, cloud ${mb(s.peakRssBytes.cloud)}, workers ${s.peakRssBytes.workers.map(mb).join(', ')}`,
    `  per vehicle (counted) DynamoDB ${f(pv.dynamodbReads)} reads, ${f(pv.dynamodbWrites)} writes; KMS ${f(pv.kmsSigns)} Sign; IoT ${f(pv.iotPublishes)} Publish, ${f(pv.iotInbound)} device messages; Lambda ${f(pv.lambdaInvocations)} invocations (${f(pv.apiRequests)} API requests)`,
    `  resumed downloads   ${s.resumedDownloads}`,
    ...s.notCompleted.map((d) => `    not completed: ${d}`),
    ...s.disagreements.slice(0, 10).map((d) => `    ${d}`),
    ...checks.map(([name, ok]) => `  ${ok ? 'ok  ' : 'FAIL'} ${name}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (values.json) process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
  const failed = checks.filter(([, ok]) => !ok).length;
  process.stdout.write(`${checks.length - failed} passed, ${failed} failed\n`);
  process.exit(failed === 0 ? 0 : 1);
}
