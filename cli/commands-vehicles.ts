import { type Command, id } from './command-table.js';

export const VEHICLE_COMMANDS: readonly Command[] = [
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
];
