/** The operator CLI's command line: parsing, usage errors, help generated from the command table. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  commandHelp,
  EXIT,
  type Invocation,
  numberOption,
  parseCommandLine,
  parseNumber,
  stringList,
  UsageError,
} from '../../cli/args.js';
import { COMMANDS, GROUPS } from '../../cli/commands.js';

const parse = (...argv: string[]) => parseCommandLine(argv, GROUPS, COMMANDS);

function command(inv: Invocation) {
  assert.equal(inv.kind, 'command', 'expected a command, got help');
  if (inv.kind !== 'command') throw new Error('unreachable');
  return inv;
}

function usageError(fn: () => unknown, pattern: RegExp, helpFor?: string) {
  assert.throws(
    fn,
    (err: unknown) => {
      assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
      assert.match(err.message, pattern);
      if (helpFor !== undefined) assert.equal(err.command, helpFor, 'points at the right --help');
      return true;
    },
    `expected a usage error matching ${pattern}`,
  );
}

describe('parseCommandLine', { timeout: 60_000 }, () => {
  it('finds the command and reads positionals, repeatable and boolean options', () => {
    const inv = command(
      parse(
        'firmware',
        'sign',
        'tcu.bin',
        '--release-id',
        'tcu-3.0.1',
        '--ecu=tcu',
        '--hardware-id',
        'A',
        '--hardware-id',
        'B',
        '--version',
        '3.0.1',
        '--key',
        'k.pem',
        '--out',
        'm.json',
        '--json',
      ),
    );
    assert.equal(inv.command.group, 'firmware');
    assert.equal(inv.command.name, 'sign');
    assert.deepEqual(inv.positionals, ['tcu.bin']);
    assert.equal(inv.values['release-id'], 'tcu-3.0.1');
    assert.equal(inv.values.ecu, 'tcu');
    assert.deepEqual(stringList(inv.values, 'hardware-id'), ['A', 'B']);
    assert.equal(inv.values.json, true);
  });

  it('runs the default command of a group followed by options only (ota alerts --json)', () => {
    for (const argv of [['alerts'], ['alerts', '--json'], ['alerts', 'list', '--kind', 'failure_rate']]) {
      const inv = command(parse(...argv));
      assert.equal(`${inv.command.group} ${inv.command.name}`, 'alerts list', argv.join(' '));
    }
    assert.equal(command(parse('alerts', '--kind', 'dead_letters')).values.kind, 'dead_letters');
    const help = parse('alerts', '--help');
    assert.equal(help.kind, 'help');
    // Groups without a default still answer their help.
    assert.equal(parse('campaigns').kind, 'help');
  });

  it('accepts the connection options on API commands only', () => {
    const inv = command(
      parse('firmware', 'list', '--endpoint', 'https://x.example', '--aws', '--region', 'eu-west-1'),
    );
    assert.equal(inv.values.aws, true);
    usageError(
      () => parse('keys', 'create', '--out', 'k', '--endpoint', 'https://x'),
      /unknown option '--endpoint'/,
    );
  });

  it('names the missing required flag and the command whose help to read', () => {
    usageError(
      () =>
        parse(
          'firmware',
          'sign',
          'img',
          '--ecu',
          'tcu',
          '--hardware-id',
          'A',
          '--version',
          '1.0.0',
          '--key',
          'k',
          '--out',
          'o',
        ),
      /^--release-id is required$/,
      'firmware sign',
    );
    usageError(() => parse('vehicles', 'show'), /missing argument <vin>/, 'vehicles show');
    usageError(() => parse('firmware', 'show', 'a', 'b'), /unexpected argument 'b'/, 'firmware show');
  });

  it('turns parseArgs errors into short messages', () => {
    usageError(() => parse('firmware', 'list', '--bogus'), /^unknown option '--bogus'$/, 'firmware list');
    usageError(
      () => parse('firmware', 'show', 'x', '--endpoint'),
      /^--endpoint needs a value/,
      'firmware show',
    );
    usageError(() => parse('firmware', 'list', '--json=yes'), /^--json takes no value$/);
    usageError(() => parse('keys', 'create', '--out', ''), /--out needs a non-empty value/);
  });

  it('answers help: top level, per group and per command, with the right exit codes', () => {
    const top = parse('--help');
    assert.equal(top.kind, 'help');
    assert.equal(top.kind === 'help' && top.exitCode, EXIT.ok);
    assert.match(top.kind === 'help' ? top.text : '', /campaigns status/);
    const none = parse();
    assert.equal(none.kind === 'help' && none.exitCode, EXIT.usage, 'no command at all is a usage error');
    const group = parse('campaigns');
    assert.equal(group.kind === 'help' && group.exitCode, EXIT.usage);
    assert.match(group.kind === 'help' ? group.text : '', /vehicles {2}Per-vehicle states/);
    const cmd = parse('campaigns', 'status', '--help');
    assert.equal(cmd.kind === 'help' && cmd.exitCode, EXIT.ok);
    assert.match(cmd.kind === 'help' ? cmd.text : '', /--watch/);
    const viaHelp = parse('help', 'firmware', 'upload');
    assert.match(
      viaHelp.kind === 'help' ? viaHelp.text : '',
      /^Usage: ota firmware upload <image> --manifest <file>/,
    );
    usageError(() => parse('fleet'), /unknown command 'fleet'/);
    usageError(() => parse('firmware', 'delete'), /unknown command 'firmware delete'/, 'firmware');
  });

  it('help for a command lists required flags in the usage line and connection options for API commands', () => {
    const sign = COMMANDS.find((c) => c.group === 'firmware' && c.name === 'sign')!;
    const text = commandHelp(sign);
    assert.match(text, /--hardware-id <id>\.\.\./);
    assert.match(text, /compatible hardware id \(required, repeatable\)/);
    // Signing calls the API only for --delta-auto (the fleet's versions), so it takes the connection options.
    assert.match(text, /--token-file <file>/);
    const keys = COMMANDS.find((c) => c.group === 'keys' && c.name === 'create')!;
    assert.doesNotMatch(commandHelp(keys), /--token-file/, 'making keys is offline: no connection options');
    const list = COMMANDS.find((c) => c.group === 'firmware' && c.name === 'list')!;
    assert.match(commandHelp(list), /--token-file <file>.*OTA_ADMIN_TOKEN_FILE/);
  });

  it('every command has a summary and an example that starts with its own name', () => {
    for (const c of COMMANDS) {
      assert.ok(c.summary.length > 0, `${c.group} ${c.name} has a summary`);
      assert.ok(
        c.examples?.[0]?.startsWith(`ota ${c.group} ${c.name}`),
        `${c.group} ${c.name} has an example of itself`,
      );
    }
  });
});

describe('numbers', { timeout: 60_000 }, () => {
  it('parses strictly and explains the accepted range', () => {
    assert.equal(parseNumber('10', '--x', { integer: true }), 10);
    assert.equal(parseNumber('2.5', '--x'), 2.5);
    usageError(() => parseNumber('10x', '--x'), /--x must be a number \(got '10x'\)/);
    usageError(() => parseNumber('1.5', '--n', { integer: true }), /must be an integer/);
    usageError(
      () => parseNumber('0', '--pct', { min: 0, max: 100, exclusiveMin: true }),
      /above 0 and at most 100/,
    );
    usageError(() => parseNumber('', '--x'), /must be a number/);
    assert.equal(numberOption({ limit: '5' }, 'limit', { integer: true, min: 1 }), 5);
    assert.equal(numberOption({}, 'limit'), undefined);
  });
});
