/**
 * Every `ota` command: its arguments, options and examples (help is generated from this table) and the module
 * that runs it, loaded only when that command runs so `--help` and the small commands start fast.
 */

import type { CommandSpec, GroupSpec } from './args.js';
import { CONDITION_FLAGS } from './conditions-flags.js';
import type { Context } from './context.js';

/** Runs a command; a number answered is the exit code (anything else: 0). */
export type Runner = (ctx: Context) => Promise<unknown>;

export interface Command extends CommandSpec {
  readonly load: () => Promise<Runner>;
}

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

const id = (name: string, description: string) => [{ name, description, required: true }] as const;
/** Listings are read a page at a time (the API never answers an unbounded list); the CLI follows every page. */
const pagination = {
  limit: { type: 'string', placeholder: '<n>', description: 'items per API page, 1-1000 (default 100)' },
} as const;

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
  {
    group: 'keys',
    name: 'create',
    summary: 'Create an ECDSA P-256 release key pair; prints its key id',
    details: [
      'Writes <dir>/release.key.pem (private, mode 0600) and <dir>/release.pub.pem. The backend trusts the public',
      'key (npm start -- --release-public-key <file>, or cdk deploy -c releasePublicKeysFile=<file>).',
    ],
    api: false,
    options: {
      out: {
        type: 'string',
        required: true,
        placeholder: '<dir>',
        description: 'folder for the two key files',
      },
      force: { type: 'boolean', description: 'replace existing key files' },
    },
    examples: ['ota keys create --out keys'],
    load: async () => (await import('./keys.js')).create,
  },
  {
    group: 'keys',
    name: 'set',
    summary: 'Write the release-key set vehicles trust, as an image for the release-keys pseudo-ECU',
    details: [
      'Vehicles that list the pseudo-ECU release-keys (hardware id OTA-RELEASE-KEYS) trust exactly the keys of',
      'the set they run. Sign this file as firmware for that ECU with a key they trust now, publish it and roll',
      'it out: the new set replaces the old (leave a compromised key out to revoke it; add one to trust it).',
    ],
    api: false,
    options: {
      key: {
        type: 'string',
        multiple: true,
        required: true,
        placeholder: '<file>',
        description: 'public key (PEM) to trust; repeat for each',
      },
      out: { type: 'string', required: true, placeholder: '<file>', description: 'the key-set document' },
    },
    examples: [
      'ota keys set --key keys2/release.pub.pem --out release-keys.json',
      'ota firmware sign release-keys.json --release-id release-keys-1.1.0 --ecu release-keys \\',
      '    --hardware-id OTA-RELEASE-KEYS --version 1.1.0 --key keys/release.key.pem --out keys-manifest.json',
    ],
    load: async () => (await import('./keys.js')).keySet,
  },
  {
    group: 'keys',
    name: 'backend',
    summary: "Write the deployed stack's backend public key (from KMS), the PEM vehicles trust",
    details: [
      'The backend signs assignments with a KMS key whose private half never leaves KMS (directly, or by certifying',
      "each function instance's short-lived online key). This fetches its public half (kms:GetPublicKey, default",
      'AWS credential chain) and writes it as PEM. The stack output BackendPublicKeyCommand holds the exact command.',
    ],
    api: false,
    options: {
      'key-id': {
        type: 'string',
        required: true,
        placeholder: '<arn>',
        description: 'the signing key (stack output SigningKeyArn)',
      },
      region: { type: 'string', placeholder: '<region>', description: 'default: from the key ARN' },
      out: { type: 'string', required: true, placeholder: '<file>', description: 'PEM file to write' },
    },
    examples: ['ota keys backend --key-id arn:aws:kms:eu-west-1:111122223333:key/abcd --out backend.pub.pem'],
    load: async () => (await import('./keys.js')).backend,
  },
  {
    group: 'firmware',
    name: 'sign',
    summary: 'Hash an image (streamed) and write its signed release manifest',
    details: [
      'Computes size, SHA-256 and per-chunk SHA-256 in one streaming pass (memory stays bounded for any image',
      "size) and signs the manifest with the release key. Only --delta-auto calls the API (the fleet's versions).",
    ],
    api: true,
    positionals: id('image', 'firmware image file'),
    options: {
      'release-id': {
        type: 'string',
        required: true,
        placeholder: '<id>',
        description: 'release id, e.g. tcu-3.0.1',
      },
      ecu: { type: 'string', required: true, placeholder: '<name>', description: 'target ECU, e.g. tcu' },
      'hardware-id': {
        type: 'string',
        multiple: true,
        required: true,
        placeholder: '<id>',
        description: 'compatible hardware id',
      },
      version: {
        type: 'string',
        required: true,
        placeholder: '<semver>',
        description: 'firmware version, e.g. 3.0.1',
      },
      key: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'release private key (PEM)',
      },
      out: { type: 'string', required: true, placeholder: '<file>', description: 'manifest file to write' },
      'chunk-size': {
        type: 'string',
        placeholder: '<size>',
        description: 'chunk size, 64KiB-64MiB (default 4MiB)',
      },
      'compressed-out': {
        type: 'string',
        placeholder: '<file>',
        description:
          'also write the compressed object (zstd frames + frame table) to upload instead of the image',
      },
      'compression-level': {
        type: 'string',
        placeholder: '<1-19>',
        description: 'zstd level with --compressed-out (default 19)',
      },
      'delta-from': {
        type: 'string',
        multiple: true,
        placeholder: '<version>=<image>',
        description:
          'with --compressed-out: append a precomputed delta from this installed version (its exact image file)',
      },
      'delta-auto': {
        type: 'string',
        placeholder: '<dir>',
        description:
          'with --compressed-out: ask the fleet which versions the targets run (GET /fleet/versions) and append ' +
          'deltas from the most common ones whose images (<version>.* or <ecu>-<version>.*) are in <dir>',
      },
      'delta-top': {
        type: 'string',
        placeholder: '<n>',
        description: 'with --delta-auto: at most this many bases (default 3)',
      },
      'delta-cover': {
        type: 'string',
        placeholder: '<percent>',
        description:
          'with --delta-auto: stop adding bases once they cover this share of targets (default 90)',
      },
    },
    examples: [
      'ota firmware sign tcu.bin --release-id tcu-3.0.1 --ecu tcu --hardware-id TCU-HW-1 --version 3.0.1 \\',
      '    --key keys/release.key.pem --out manifest.json',
      'ota firmware sign tcu.bin --release-id tcu-3.0.1 --ecu tcu --hardware-id TCU-HW-1 --version 3.0.1 \\',
      '    --key keys/release.key.pem --out manifest.json --compressed-out tcu.frames --delta-auto old-images/',
    ],
    load: async () => (await import('./firmware.js')).sign,
  },
  {
    group: 'firmware',
    name: 'upload',
    summary: 'Create the release, upload the image (single or multipart) and publish it',
    details: [
      'POST /releases with the signed manifest, then streams the image to the presigned URL(s) answered (a',
      'progress bar on a terminal, a line every 10% otherwise), then POST /releases/{id}/publish, which verifies the',
      'stored image against the manifest. Running it again after a failure starts a fresh upload.',
    ],
    api: true,
    positionals: id(
      'image',
      'firmware image file, as signed (the --compressed-out file of a compressed release)',
    ),
    options: {
      manifest: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'signed manifest (firmware sign)',
      },
      concurrency: {
        type: 'string',
        placeholder: '<n>',
        description: 'parts uploaded at once, 1-16 (default 4)',
      },
    },
    examples: ['ota firmware upload tcu.bin --manifest manifest.json'],
    load: async () => (await import('./firmware.js')).upload,
  },
  {
    group: 'firmware',
    name: 'publish',
    summary: 'Verify an uploaded image and publish its release',
    details: ['For an image already uploaded with a single PUT; `firmware upload` publishes by itself.'],
    api: true,
    positionals: id('release-id', 'release id'),
    examples: ['ota firmware publish tcu-3.0.1'],
    load: async () => (await import('./firmware.js')).publish,
  },
  {
    group: 'firmware',
    name: 'withdraw',
    summary: 'Kill switch: withdraw a release for good',
    details: [
      'The release is never offered or answered again; its campaigns are cancelled and every update of it not yet',
      'being installed is withdrawn (agents stand down before installing). Cannot be undone: publish a new release.',
    ],
    api: true,
    positionals: id('release-id', 'release id'),
    options: { reason: { type: 'string', placeholder: '<text>', description: 'why, kept with the release' } },
    examples: ['ota firmware withdraw tcu-3.0.1 --reason "bricks TCU-HW-2"'],
    load: async () => (await import('./firmware.js')).withdraw,
  },
  {
    group: 'firmware',
    name: 'list',
    summary: 'List releases',
    api: true,
    options: pagination,
    examples: ['ota firmware list', 'ota firmware list --json'],
    load: async () => (await import('./firmware.js')).list,
  },
  {
    group: 'firmware',
    name: 'show',
    summary: 'Show a release and its manifest summary',
    api: true,
    positionals: id('release-id', 'release id'),
    examples: ['ota firmware show tcu-3.0.1'],
    load: async () => (await import('./firmware.js')).show,
  },
  {
    group: 'bundles',
    name: 'sign',
    summary: 'Sign a bundle of release manifests with the release key (offline)',
    details: [
      'Members are the signed manifests `ota firmware sign` wrote, one per ECU, installed in the order given. A',
      'constraint <member>:<ecu>>=<min><<below> says which versions another ECU must run alongside a member.',
    ],
    api: false,
    options: {
      'bundle-id': {
        type: 'string',
        required: true,
        placeholder: '<id>',
        description: 'bundle id, e.g. body-2-0',
      },
      version: { type: 'string', required: true, placeholder: '<semver>', description: 'bundle version' },
      manifest: {
        type: 'string',
        multiple: true,
        required: true,
        placeholder: '<file>',
        description: 'a member: signed release manifest (repeat, in install order)',
      },
      constraint: {
        type: 'string',
        multiple: true,
        placeholder: '<rule>',
        description: 'e.g. ivi:gw>=2.0.0<3.0.0',
      },
      key: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'release private key (PEM)',
      },
      out: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'signed bundle file to write',
      },
    },
    examples: [
      'ota bundles sign --bundle-id body-2-0 --version 2.0.0 --manifest gw.json --manifest bcm.json --manifest ivi.json --key keys/release.key.pem --out body-2-0.json',
    ],
    load: async () => (await import('./bundles.js')).sign,
  },
  {
    group: 'bundles',
    name: 'publish',
    summary: 'Store a signed bundle (its members must be published releases)',
    api: true,
    positionals: id('file', 'signed bundle file'),
    examples: ['ota bundles publish body-2-0.json'],
    load: async () => (await import('./bundles.js')).publish,
  },
  {
    group: 'bundles',
    name: 'show',
    summary: 'Show a stored bundle: members, install order, digest',
    api: true,
    positionals: id('bundle-id', 'bundle id'),
    examples: ['ota bundles show body-2-0'],
    load: async () => (await import('./bundles.js')).show,
  },
  {
    group: 'rollbacks',
    name: 'sign',
    summary: 'Sign a rollback authorisation with the release key (offline)',
    details: [
      'Names campaign --campaign and, per ECU that --to lowers below --from, both versions and the manifest of the',
      'release it returns to. Valid --valid-days (default 7, at most 30); --vin limits it to those vehicles.',
    ],
    api: false,
    options: {
      campaign: {
        type: 'string',
        required: true,
        placeholder: '<id>',
        description: 'the campaign taken back',
      },
      from: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'signed bundle the vehicles run',
      },
      to: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'signed bundle they return to',
      },
      vin: {
        type: 'string',
        multiple: true,
        placeholder: '<vin>',
        description: 'only this vehicle (repeat)',
      },
      'valid-days': { type: 'string', placeholder: '<days>', description: 'validity (default 7)' },
      'authorisation-id': { type: 'string', placeholder: '<id>', description: 'choose the id' },
      key: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'release private key (PEM)',
      },
      out: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'authorisation file to write',
      },
    },
    examples: [
      'ota rollbacks sign --campaign body-2-0-fleet --from body-2-0.json --to body-1-0.json --key keys/release.key.pem --out rollback.json',
    ],
    load: async () => (await import('./bundles.js')).signRollback,
  },
  {
    group: 'vehicles',
    name: 'register',
    summary: 'Register a vehicle from its CSR; answers its device certificate',
    details: ['The vehicle makes its key and a CSR with CN = its VIN; the key never leaves the vehicle.'],
    api: true,
    options: {
      vin: {
        type: 'string',
        required: true,
        placeholder: '<vin>',
        description: 'vehicle identification number',
      },
      model: { type: 'string', required: true, placeholder: '<model>', description: 'vehicle model' },
      ecu: {
        type: 'string',
        multiple: true,
        required: true,
        placeholder: '<name:hardware_id:version>',
        description: 'an ECU of the inventory, e.g. tcu:TCU-HW-1:1.0.0',
      },
      csr: {
        type: 'string',
        required: true,
        placeholder: '<file>',
        description: 'PEM certificate request of the vehicle',
      },
      out: {
        type: 'string',
        placeholder: '<file>',
        description: 'write the device certificate here (default: print it)',
      },
    },
    examples: [
      'ota vehicles register --vin 1HGCM82633A004352 --model "Model T" --ecu tcu:TCU-HW-1:1.0.0 \\',
      '    --csr vehicle.csr.pem --out vehicle.cert.pem',
    ],
    load: async () => (await import('./vehicles.js')).register,
  },
  {
    group: 'vehicles',
    name: 'versions',
    summary: 'Installed versions of an ECU across the fleet (the delta bases a release could use)',
    details: [
      'Counts the vehicles a campaign of a release for the ECU would target (not revoked, a compatible hardware id,',
      'below --below) by installed version, walking GET /fleet/versions in 8 scan segments a page at a time.',
    ],
    api: true,
    options: {
      ecu: { type: 'string', required: true, placeholder: '<name>', description: 'the ECU, e.g. tcu' },
      'hardware-id': {
        type: 'string',
        multiple: true,
        placeholder: '<id>',
        description: 'compatible hardware id (default: any)',
      },
      model: { type: 'string', placeholder: '<model>', description: 'vehicle model' },
      below: { type: 'string', placeholder: '<semver>', description: 'only vehicles below this version' },
    },
    examples: ['ota vehicles versions --ecu tcu --hardware-id TCU-HW-1 --below 3.0.1'],
    load: async () => (await import('./firmware-bases.js')).versions,
  },
  {
    group: 'vehicles',
    name: 'show',
    summary: 'Show a vehicle, its ECU inventory and its updates',
    api: true,
    positionals: id('vin', 'vehicle identification number'),
    examples: ['ota vehicles show 1HGCM82633A004352'],
    load: async () => (await import('./vehicles.js')).show,
  },
  {
    group: 'vehicles',
    name: 'revoke',
    summary: 'Kill switch: revoke a vehicle',
    details: [
      'Its certificate is revoked (MQTT refused), its tokens and logins are refused, its messages are dropped and its',
      'updates not yet being installed are withdrawn. Cannot be undone: register the vehicle again with a new key.',
    ],
    api: true,
    positionals: id('vin', 'vehicle identification number'),
    options: { reason: { type: 'string', placeholder: '<text>', description: 'why, kept with the vehicle' } },
    examples: ['ota vehicles revoke 1HGCM82633A004352 --reason "stolen"'],
    load: async () => (await import('./vehicles.js')).revoke,
  },
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
