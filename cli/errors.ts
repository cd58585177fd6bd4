/**
 * Failures the CLI expects, and how each becomes one line on stderr and an exit code. Anything else is a bug and
 * still gets one line; OTA_DEBUG=1 adds the stack.
 */

import { readFileSync } from 'node:fs';
import { escapeUnsafe } from '../protocol/text.js';
import { commandTitle, EXIT, type ParsedCommand, UsageError } from './args.js';

/** An expected failure with a message fit for the operator (file missing, bad input file, network). */
export class CliError extends Error {
  override readonly name = 'CliError';

  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A text file the operator named; a file that cannot be read is a CliError naming `what` and the error code. */
export function readTextFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${what} ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** The API answered an error: {"error": {"code", "message"}} (or API Gateway's own {"message"}). */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Where the credentials came from, for 401/403 hints; never the secret itself. */
    readonly credentialHint?: string,
  ) {
    super(message);
  }
}

/** The operation was interrupted (Ctrl-C). */
export class InterruptedError extends Error {
  override readonly name = 'InterruptedError';
}

export interface FormattedError {
  readonly text: string;
  readonly exitCode: number;
}

function isAbort(err: unknown): boolean {
  const e = err as { name?: string; code?: string };
  return e?.name === 'AbortError' || e?.code === 'ABORT_ERR' || err instanceof InterruptedError;
}

/**
 * The stderr text and exit code for a failure. `secrets` are masked wherever they would appear (the admin token
 * is never printed, even if a server were to echo it).
 */
export function formatError(
  err: unknown,
  opts: { command?: ParsedCommand['command']; secrets?: readonly string[]; debug?: boolean } = {},
): FormattedError {
  const mask = (text: string) =>
    (opts.secrets ?? []).filter((s) => s.length >= 8).reduce((t, s) => t.split(s).join('[redacted]'), text);
  if (err instanceof UsageError) {
    const title = err.command ?? (opts.command ? commandTitle(opts.command) : undefined);
    return {
      text: mask(`error: ${err.message}\nRun 'ota ${title ? `${title} ` : ''}--help' for usage.\n`),
      exitCode: EXIT.usage,
    };
  }
  if (err instanceof ApiError) {
    let hint = '';
    if (err.status === 401) hint = ` (HTTP 401: ${err.credentialHint ?? 'credentials refused'})`;
    else if (err.status === 403) hint = ` (HTTP 403${err.credentialHint ? `: ${err.credentialHint}` : ''})`;
    return { text: mask(`error: ${err.code}: ${oneLine(err.message)}${hint}\n`), exitCode: EXIT.failed };
  }
  if (isAbort(err)) return { text: 'interrupted\n', exitCode: EXIT.interrupted };
  if (err instanceof CliError)
    return { text: mask(`error: ${oneLine(err.message)}\n`), exitCode: err.exitCode };
  const message = err instanceof Error ? err.message : String(err);
  const stack = opts.debug && err instanceof Error && err.stack ? `\n${err.stack}` : '';
  return { text: mask(`error: ${oneLine(message)}${stack}\n`), exitCode: EXIT.failed };
}

/** One line, with any control character from the server's message shown escaped rather than sent raw. */
function oneLine(text: string): string {
  return escapeUnsafe(text.replace(/\s*\n\s*/g, ' ').trim());
}
