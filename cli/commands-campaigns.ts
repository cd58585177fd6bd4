/** `ota campaigns`: staged rollouts. */

import { type Command, id, pagination } from './command-table.js';
import { CONDITION_FLAGS } from './conditions-flags.js';

export const CAMPAIGN_COMMANDS: readonly Command[] = [
  {
    group: 'campaigns',
    name: 'create',
    summary: 'Create a staged campaign for a published release',
    details: [
      'Targets: any of --vin, --vins-file and a filter (--model, --hardware-id, --current-version); incompatible',
      'vehicles are excluded with a reason. Policy flags left out take the backend defaults (waves 1,10,50,100;',
      'advance at 90% success; halt at 10% failures once a wave has 5 outcomes; 24 h vehicle timeout; 1 retry).',
      'The targets are prepared in the background: it waits until the campaign is created (exit 0) or failed',
      '(exit 3), showing progress, unless --no-wait. A file of more than 10,000 VINs (up to 1,000,000) is uploaded',
      'through a presigned URL.',
    ],
    api: true,
    options: {
      name: { type: 'string', required: true, placeholder: '<text>', description: 'campaign name' },
      'release-id': {
        type: 'string',
        placeholder: '<id>',
        description: 'published release to roll out (or --bundle-id)',
      },
      'bundle-id': {
        type: 'string',
        placeholder: '<id>',
        description: 'stored bundle to roll out, all or nothing per vehicle (ota bundles publish)',
      },
      'campaign-id': {
        type: 'string',
        placeholder: '<id>',
        description: 'choose the id (default: generated)',
      },
      vin: { type: 'string', multiple: true, placeholder: '<vin>', description: 'target vehicle' },
      'vins-file': {
        type: 'string',
        placeholder: '<file>',
        description: 'target VINs, whitespace or comma separated; # comments',
      },
      model: { type: 'string', placeholder: '<model>', description: 'filter: vehicle model' },
      'hardware-id': {
        type: 'string',
        placeholder: '<id>',
        description: "filter: hardware id of the release's ECU",
      },
      'current-version': {
        type: 'string',
        placeholder: '<semver>',
        description: 'filter: current version of that ECU',
      },
      runs: {
        type: 'string',
        placeholder: '<ecu>=<version>',
        description: 'filter: the reported inventory has this ECU at this version or pattern (bcm=2.x)',
      },
      all: { type: 'boolean', description: 'target every registered vehicle (instead of --vin or a filter)' },
      'no-wait': {
        type: 'boolean',
        description:
          'answer as soon as the campaign is accepted (preparing); follow it with ota campaigns status',
      },
      waves: {
        type: 'string',
        placeholder: '<list>',
        description: 'cumulative percent per wave, e.g. 1,10,50,100 (the first at most 50)',
      },
      'skip-canary': {
        type: 'boolean',
        description: 'allow a first wave above 50%, e.g. a single 100% wave',
      },
      'advance-success-percent': {
        type: 'string',
        placeholder: '<pct>',
        description: 'success needed to start the next wave',
      },
      'soak-seconds': {
        type: 'string',
        placeholder: '<s>',
        description: 'least time a wave runs before the next',
      },
      'halt-failure-percent': {
        type: 'string',
        placeholder: '<pct>',
        description: 'halt when this share of outcomes failed',
      },
      'halt-failure-count': {
        type: 'string',
        placeholder: '<n>',
        description: 'halt when a wave has this many failures',
      },
      'halt-min-outcomes': {
        type: 'string',
        placeholder: '<n>',
        description: 'outcomes needed before the percent applies',
      },
      'vehicle-timeout-seconds': {
        type: 'string',
        placeholder: '<s>',
        description: 'time out a silent vehicle after this',
      },
      'retry-budget': {
        type: 'string',
        placeholder: '<n>',
        description: 're-offers to a timed-out vehicle, 0-10',
      },
      'notify-per-second': { type: 'string', placeholder: '<n>', description: 'offers sent per second' },
      ...CONDITION_FLAGS,
    },
    examples: [
      'ota campaigns create --name "TCU 3.0.1" --release-id tcu-3.0.1 --model "Model T" --waves 10,50,100',
      'ota campaigns create --name "Body 2.0" --bundle-id body-2-0 --runs bcm=1.x --waves 1,10,100',
      'ota campaigns create --name night --release-id tcu-3.0.1 --all --consent-deadline 604800 --max-postponements 3 --postpone-seconds 86400 --maintenance-window 01:00-05:00 --network unmetered',
      'ota campaigns create --name pilot --release-id tcu-3.0.1 --vins-file pilot.txt --halt-failure-count 1',
    ],
    load: async () => (await import('./campaigns.js')).create,
  },
  ...(
    [
      ['start', 'Start a created campaign: offers go out wave by wave'],
      ['pause', 'Pause a running campaign: no new offers'],
      ['resume', 'Resume a paused or halted campaign'],
      ['cancel', 'Cancel a campaign: offers not yet acted on are withdrawn'],
    ] as const
  ).map(
    ([name, summary]): Command => ({
      group: 'campaigns',
      name,
      summary,
      api: true,
      positionals: id('campaign-id', 'campaign id'),
      examples: [`ota campaigns ${name} c-1a2b3c4d5e6f`],
      load: async () => (await import('./campaigns.js')).action(name),
    }),
  ),
  {
    group: 'campaigns',
    name: 'rollback',
    summary: 'Take a campaign back: its vehicles return to a bundle under an OEM rollback authorisation',
    details: [
      'Targets every vehicle that completed <campaign-id> and offers them --bundle-id (the bundle they ran before)',
      'with --authorisation (ota rollbacks sign, signed by the OEM release key). Each vehicle lowers an ECU only if',
      'the authorisation names it with exactly the version it runs and the release it returns to: the backend alone',
      'cannot downgrade a vehicle. Start it like any campaign.',
    ],
    api: true,
    positionals: id('campaign-id', 'the campaign to take back'),
    options: {
      'bundle-id': {
        type: 'string',
        required: true,
        placeholder: '<id>',
        description: 'the stored bundle to return to',
      },
      authorisation: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'signed rollback authorisation (ota rollbacks sign)',
      },
      name: {
        type: 'string',
        placeholder: '<text>',
        description: 'campaign name (default: rollback of <id>)',
      },
      'campaign-id': {
        type: 'string',
        placeholder: '<id>',
        description: 'choose the id (default: generated)',
      },
      waves: { type: 'string', placeholder: '<list>', description: 'cumulative percent per wave' },
      'skip-canary': { type: 'boolean', description: 'allow a first wave above 50%' },
    },
    examples: ['ota campaigns rollback body-2-0-fleet --bundle-id body-1-0 --authorisation rollback.json'],
    load: async () => (await import('./campaigns.js')).rollback,
  },
  {
    group: 'campaigns',
    name: 'status',
    summary: 'Show a campaign: status, halt reason, counts per wave and state',
    details: [
      'With --watch, refreshes until the campaign is completed (exit 0), halted or cancelled (exit 3), or Ctrl-C',
      '(exit 130): redrawn in place on a terminal, one line per change otherwise, one JSON per line with --json.',
    ],
    api: true,
    positionals: id('campaign-id', 'campaign id'),
    options: {
      watch: { type: 'boolean', description: 'keep refreshing until the campaign ends' },
      interval: {
        type: 'string',
        placeholder: '<s>',
        description: 'seconds between refreshes with --watch (default 2)',
      },
    },
    examples: [
      'ota campaigns status c-1a2b3c4d5e6f',
      'ota campaigns status c-1a2b3c4d5e6f --watch --interval 5',
    ],
    load: async () => (await import('./campaigns.js')).status,
  },
  {
    group: 'campaigns',
    name: 'list',
    summary: 'List campaigns',
    api: true,
    options: pagination,
    examples: ['ota campaigns list'],
    load: async () => (await import('./campaigns.js')).list,
  },
  {
    group: 'campaigns',
    name: 'vehicles',
    summary: 'Per-vehicle states of one wave',
    api: true,
    positionals: id('campaign-id', 'campaign id'),
    options: {
      wave: { type: 'string', placeholder: '<n>', description: 'wave number, from 0 (default 0)' },
      ...pagination,
    },
    examples: ['ota campaigns vehicles c-1a2b3c4d5e6f --wave 1'],
    load: async () => (await import('./campaigns.js')).vehicles,
  },
  {
    group: 'campaigns',
    name: 'excluded',
    summary: 'Targets a campaign left out, with the reason',
    api: true,
    positionals: id('campaign-id', 'campaign id'),
    options: pagination,
    examples: ['ota campaigns excluded c-1a2b3c4d5e6f'],
    load: async () => (await import('./campaigns.js')).excluded,
  },
];
