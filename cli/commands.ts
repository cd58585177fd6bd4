/**
 * Every `ota` command: its arguments, options and examples (help is generated from this table) and the module
 * that runs it, loaded only when that command runs so `--help` and the small commands start fast.
 */

import type { GroupSpec } from './args.js';
import type { Command } from './command-table.js';
import { CAMPAIGN_COMMANDS } from './commands-campaigns.js';
import { FIRMWARE_COMMANDS } from './commands-firmware.js';
import { VEHICLE_COMMANDS } from './commands-vehicles.js';

export const GROUPS: readonly GroupSpec[] = [
  { name: 'keys', summary: 'OEM release keys that sign firmware manifests.' },
  { name: 'firmware', summary: 'Signed firmware releases: sign, upload and publish, inspect.' },
  { name: 'vehicles', summary: 'The vehicle registry: register a vehicle from its CSR, inspect it.' },
  { name: 'bundles', summary: 'OEM-signed bundles: several ECUs updated together, all or nothing.' },
  {
    name: 'rollbacks',
    summary: 'OEM-signed rollback authorisations: the only way a vehicle goes down a version.',
  },
  { name: 'campaigns', summary: 'Staged rollouts of a published release or bundle to targeted vehicles.' },
  {
    name: 'alerts',
    summary: 'Operator alerts raised by the local cloud (on AWS they go to the SNS topic).',
    defaultCommand: 'list',
  },
  { name: 'audit', summary: 'The operator audit log: who did what, when, from where, and the outcome.' },
];

export const COMMANDS: readonly Command[] = [
  {
    group: 'alerts',
    name: 'list',
    summary:
      'List the alerts the local cloud raised: halted campaigns, failure rate, dead letters, ingest refusals',
    details: [
      'Reads GET /local/alerts of the local cloud (its alarms evaluate the same metrics the CloudWatch alarms do on',
      'AWS). On AWS alerts are delivered by the stack\'s SNS topic (README "Operator alerts"); there is no such route.',
      '`ota alerts` alone runs this command.',
    ],
    api: true,
    options: {
      kind: {
        type: 'string',
        placeholder: '<kind>',
        description: 'only campaign_halted, failure_rate, dead_letters or ingest_rejections',
      },
    },
    examples: ['ota alerts list', 'ota alerts list --kind campaign_halted --json'],
    load: async () => (await import('./alerts.js')).list,
  },
  ...FIRMWARE_COMMANDS,
  ...VEHICLE_COMMANDS,
  ...CAMPAIGN_COMMANDS,
  {
    group: 'audit',
    name: 'list',
    summary: 'List audit log entries, newest first, one page at a time',
    api: true,
    options: {
      actor: {
        type: 'string',
        placeholder: '<who>',
        description: 'only this actor (account, cognito:<sub>, ARN)',
      },
      role: { type: 'string', placeholder: '<role>', description: 'only this role' },
      outcome: { type: 'string', placeholder: '<outcome>', description: 'allowed, refused or failed' },
      target: {
        type: 'string',
        placeholder: '<id>',
        description: 'only this release id, VIN or campaign id',
      },
      'next-token': {
        type: 'string',
        placeholder: '<token>',
        description: 'the next page, from the previous one',
      },
      limit: { type: 'string', placeholder: '<n>', description: 'entries per page, 1-1000 (default 50)' },
    },
    examples: ['ota audit list', 'ota audit list --outcome refused --role viewer'],
    load: async () => (await import('./audit.js')).list,
  },
];
