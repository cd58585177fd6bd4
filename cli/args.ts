/**
 * Command-line parsing for `ota`: commands are declared once in a table (cli/commands.ts), parsed with
 * node:util parseArgs, and their help text is generated from the same table, so usage and parsing cannot drift.
 */
import { parseArgs } from 'node:util';

/** Exit codes, documented in `ota --help`. */
export const EXIT = {
  ok: 0,
  /** The API refused the request, a file could not be read, the network failed. */
  failed: 1,
  /** The command line is wrong: unknown command or option, missing or malformed value. */
  usage: 2,
  /** `campaigns status --watch` saw the campaign end halted or cancelled. */
  stopped: 3,
  /** Ctrl-C. */
  interrupted: 130,
} as const;

/** A wrong command line; `command` names the command whose --help to point at. */
export class UsageError extends Error {
  override readonly name = 'UsageError';

  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly multiple?: boolean;
  readonly short?: string;
  readonly required?: boolean;
  /** Shown in help after the flag, e.g. `<file>`. */
  readonly placeholder?: string;
  readonly description: string;
}

export interface PositionalSpec {
  readonly name: string;
  readonly description: string;
  readonly required?: boolean;
}

export interface CommandSpec {
  readonly group: string;
  readonly name: string;
  readonly summary: string;
  /** Lines of a paragraph shown by --help. */
  readonly details?: readonly string[];
  readonly positionals?: readonly PositionalSpec[];
  readonly options?: Readonly<Record<string, OptionSpec>>;
  /** The command calls the API, so the connection options apply. */
  readonly api: boolean;
  readonly examples?: readonly string[];
}

export interface GroupSpec {
  readonly name: string;
  readonly summary: string;
  /** The command `ota <group>` alone runs (`ota alerts` lists the alerts). @default - group help */
  readonly defaultCommand?: string;
}

export type OptionValues = Readonly<Record<string, string | boolean | string[] | undefined>>;

export interface ParsedCommand {
  readonly command: CommandSpec;
  readonly values: OptionValues;
  readonly positionals: readonly string[];
}

export type Invocation =
  | { readonly kind: 'help'; readonly text: string; readonly exitCode: 0 | 2 }
  | ({ readonly kind: 'command' } & ParsedCommand);

export const CONNECTION_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  endpoint: {
    type: 'string',
    placeholder: '<url>',
    description: 'API base URL (env OTA_ENDPOINT; default https://127.0.0.1:8443, the local cloud)',
  },
  ca: {
    type: 'string',
    placeholder: '<file>',
    description:
      'extra CA certificate to trust (env OTA_CA_FILE; default .ota-local/ca/ca.cert.pem if present)',
  },
  'token-file': {
    type: 'string',
    placeholder: '<file>',
    description: 'admin token file (env OTA_ADMIN_TOKEN_FILE; default .ota-local/admin-token)',
  },
  as: {
    type: 'string',
    placeholder: '<role>',
    description:
      'local cloud: act as its viewer, operator, release-manager or admin account (SigV4 with that account from .ota-local/operators.json, env OTA_OPERATORS_FILE)',
  },
  aws: {
    type: 'boolean',
    description: 'deployed stack: sign requests with SigV4 and the default AWS credential chain, no token',
  },
  region: {
    type: 'string',
    placeholder: '<region>',
    description: 'AWS region for --aws (default AWS_REGION, else read from the endpoint host name)',
  },
};

export const OUTPUT_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  json: { type: 'boolean', description: 'machine-readable JSON on stdout' },
  help: { type: 'boolean', short: 'h', description: 'show help for the command' },
};

const HELP_FLAGS = new Set(['-h', '--help', 'help']);

export function commandTitle(c: CommandSpec): string {
  return `${c.group} ${c.name}`;
}

/** All options a command accepts: its own, then connection (API commands only), then output. */
export function optionsOf(c: CommandSpec): Record<string, OptionSpec> {
  return { ...c.options, ...(c.api ? CONNECTION_OPTIONS : {}), ...OUTPUT_OPTIONS };
}

/**
 * Reads `ota <group> <command> [args]`. Help requests come back as text; anything wrong throws UsageError.
 * Pure: no I/O, so every rule here is unit-tested.
 */
export function parseCommandLine(
  argv: readonly string[],
  groups: readonly GroupSpec[],
  commands: readonly CommandSpec[],
): Invocation {
  const [first, second, ...rest] = argv;
  if (first === undefined) return { kind: 'help', text: topHelp(groups, commands), exitCode: EXIT.usage };
  if (HELP_FLAGS.has(first)) {
    // `ota help firmware sign` reads like `ota firmware sign --help`.
    if (first === 'help' && second !== undefined)
      return parseCommandLine([second, ...rest, '--help'], groups, commands);
    return { kind: 'help', text: topHelp(groups, commands), exitCode: EXIT.ok };
  }
  const group = groups.find((g) => g.name === first);
  if (!group) {
    throw new UsageError(
      first.startsWith('-') ? `expected a command before ${first}` : `unknown command '${first}'`,
    );
  }
  const inGroup = commands.filter((c) => c.group === group.name);
  if (
    group.defaultCommand &&
    (second === undefined || second.startsWith('--')) &&
    !HELP_FLAGS.has(second ?? '')
  )
    return parseCommandLine(
      [first, group.defaultCommand, ...(second === undefined ? [] : [second]), ...rest],
      groups,
      commands,
    );
  if (second === undefined || HELP_FLAGS.has(second)) {
    return {
      kind: 'help',
      text: groupHelp(group, inGroup),
      exitCode: second === undefined ? EXIT.usage : EXIT.ok,
    };
  }
  const command = inGroup.find((c) => c.name === second);
  if (!command) throw new UsageError(`unknown command '${group.name} ${second}'`, group.name);
  const title = commandTitle(command);

  const options = optionsOf(command);
  let parsed: {
    values: Record<string, string | boolean | (string | boolean)[] | undefined>;
    positionals: string[];
  };
  try {
    parsed = parseArgs({
      args: [...rest],
      options: Object.fromEntries(
        Object.entries(options).map(([name, o]) => [
          name,
          { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) },
        ]),
      ),
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(describeParseError(err), title);
  }
  if (parsed.values.help === true) return { kind: 'help', text: commandHelp(command), exitCode: EXIT.ok };

  const values = parsed.values as OptionValues;
  for (const [name, o] of Object.entries(options)) {
    if (o.required && values[name] === undefined) throw new UsageError(`--${name} is required`, title);
    const v = values[name];
    if (o.type === 'string' && (typeof v === 'string' ? v === '' : Array.isArray(v) && v.includes(''))) {
      throw new UsageError(`--${name} needs a non-empty value`, title);
    }
  }
  const specs = command.positionals ?? [];
  const missing = specs.slice(parsed.positionals.length).find((p) => p.required);
  if (missing) throw new UsageError(`missing argument <${missing.name}>`, title);
  const extra = parsed.positionals[specs.length];
  if (extra !== undefined) throw new UsageError(`unexpected argument '${extra}'`, title);
  return { kind: 'command', command, values, positionals: parsed.positionals };
}

function describeParseError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  const quoted = /'([^']+)'/.exec(message)?.[1];
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && quoted) return `unknown option '${quoted}'`;
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && quoted) {
    const flag = quoted.split(' ')[0]!;
    if (/argument missing|ambiguous/.test(message)) {
      return `${flag} needs a value (for a value starting with '-', write ${flag}=<value>)`;
    }
    if (/does not take an argument/.test(message)) return `${flag} takes no value`;
  }
  return message.split('\n')[0]!;
}

// ---- help text ----

function columns(rows: readonly (readonly [string, string])[], indent = 2): string[] {
  const width = Math.min(32, Math.max(0, ...rows.map(([left]) => left.length)));
  return rows.map(([left, right]) =>
    left.length > width
      ? `${' '.repeat(indent)}${left}\n${' '.repeat(indent + width + 2)}${right}`
      : `${' '.repeat(indent)}${left.padEnd(width)}  ${right}`,
  );
}

function flagLabel(name: string, o: OptionSpec): string {
  const short = o.short ? `-${o.short}, ` : '';
  return `${short}--${name}${o.placeholder ? ` ${o.placeholder}` : ''}`;
}

function flagNotes(o: OptionSpec): string {
  const notes = [o.required ? 'required' : '', o.multiple ? 'repeatable' : ''].filter(Boolean);
  return notes.length ? ` (${notes.join(', ')})` : '';
}

function usageLine(c: CommandSpec): string {
  const parts = [`ota ${commandTitle(c)}`];
  for (const p of c.positionals ?? []) parts.push(p.required ? `<${p.name}>` : `[<${p.name}>]`);
  for (const [name, o] of Object.entries(c.options ?? {})) {
    if (o.required)
      parts.push(`--${name}${o.placeholder ? ` ${o.placeholder}` : ''}${o.multiple ? '...' : ''}`);
  }
  parts.push('[options]');
  return parts.join(' ');
}

export function commandHelp(c: CommandSpec): string {
  const out = [`Usage: ${usageLine(c)}`, '', c.summary];
  if (c.details?.length) out.push('', ...c.details);
  if (c.positionals?.length) {
    out.push('', 'Arguments:', ...columns(c.positionals.map((p) => [`<${p.name}>`, p.description])));
  }
  const own = Object.entries(c.options ?? {});
  if (own.length) {
    out.push(
      '',
      'Options:',
      ...columns(own.map(([name, o]) => [flagLabel(name, o), `${o.description}${flagNotes(o)}`])),
    );
  }
  if (c.api) {
    out.push(
      '',
      'Connection:',
      ...columns(Object.entries(CONNECTION_OPTIONS).map(([n, o]) => [flagLabel(n, o), o.description])),
    );
  }
  out.push(
    '',
    'Output:',
    ...columns(Object.entries(OUTPUT_OPTIONS).map(([n, o]) => [flagLabel(n, o), o.description])),
  );
  if (c.examples?.length) out.push('', 'Examples:', ...c.examples.map((e) => `  ${e}`));
  return `${out.join('\n')}\n`;
}

export function groupHelp(g: GroupSpec, commands: readonly CommandSpec[]): string {
  return `${[
    `Usage: ota ${g.name} <command> [options]`,
    '',
    g.summary,
    '',
    'Commands:',
    ...columns(commands.map((c) => [c.name, c.summary])),
    '',
    `Run 'ota ${g.name} <command> --help' for a command's options.`,
  ].join('\n')}\n`;
}

export function topHelp(groups: readonly GroupSpec[], commands: readonly CommandSpec[]): string {
  return `${[
    'Usage: ota <group> <command> [options]',
    '',
    'Operator CLI of the fleet OTA platform: release keys, signed firmware, vehicles and staged campaigns.',
    'Talks to the local cloud (npm start) by default; --endpoint and --aws reach a deployed stack.',
    '',
    'Commands:',
    ...columns(commands.map((c) => [commandTitle(c), c.summary])),
    '',
    'Every command takes --help and --json. Errors are one line on stderr: error: <code>: <message>.',
    'Exit codes: 0 ok; 1 refused by the API or failed (file, network); 2 wrong command line;',
    '3 a watched campaign ended halted or cancelled; 130 interrupted (Ctrl-C).',
    '',
    `Groups: ${groups.map((g) => g.name).join(', ')}. Run 'ota <group> <command> --help' for details.`,
  ].join('\n')}\n`;
}

// ---- typed access to parsed values ----

export function stringOption(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function requireString(values: OptionValues, name: string): string {
  const v = stringOption(values, name);
  if (v === undefined) throw new UsageError(`--${name} is required`);
  return v;
}

export function stringList(values: OptionValues, name: string): string[] {
  const v = values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

export function booleanOption(values: OptionValues, name: string): boolean {
  return values[name] === true;
}

export interface NumberRule {
  readonly integer?: boolean;
  readonly min?: number;
  readonly max?: number;
  /** The minimum itself is not allowed (e.g. a percentage above 0). */
  readonly exclusiveMin?: boolean;
}

function describeRule(rule: NumberRule): string {
  const kind = rule.integer ? 'an integer' : 'a number';
  const lower =
    rule.min === undefined ? undefined : `${rule.exclusiveMin ? 'above' : 'at least'} ${rule.min}`;
  const upper = rule.max === undefined ? undefined : `at most ${rule.max}`;
  return [kind, [lower, upper].filter(Boolean).join(' and ')].filter(Boolean).join(' ');
}

/** Parses a number flag strictly: "10", "2.5"; not "10x", "", "0x10". */
export function parseNumber(raw: string, label: string, rule: NumberRule = {}): number {
  const n = /^-?\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  const ok =
    Number.isFinite(n) &&
    (!rule.integer || Number.isInteger(n)) &&
    (rule.min === undefined || (rule.exclusiveMin ? n > rule.min : n >= rule.min)) &&
    (rule.max === undefined || n <= rule.max);
  if (!ok) throw new UsageError(`${label} must be ${describeRule(rule)} (got '${raw}')`);
  return n;
}

export function numberOption(values: OptionValues, name: string, rule: NumberRule = {}): number | undefined {
  const raw = stringOption(values, name);
  return raw === undefined ? undefined : parseNumber(raw, `--${name}`, rule);
}
