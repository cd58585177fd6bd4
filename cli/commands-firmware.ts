import { type Command, id, pagination } from './command-table.js';

/** The offline signing commands' --key: the release private key. */
const RELEASE_KEY = {
  type: 'string',
  required: true,
  placeholder: '<file>',
  description: 'release private key (PEM)',
} as const;

export const FIRMWARE_COMMANDS: readonly Command[] = [
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
      key: RELEASE_KEY,
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
      'frame-window': {
        type: 'string',
        placeholder: '<size>',
        description:
          'with --compressed-out: compress each frame with up to this much of the image before it (e.g. 1MiB; ' +
          'agents from this release on)',
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
      key: RELEASE_KEY,
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
      key: RELEASE_KEY,
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
];
