/**
 * The agent's narrow logger. Library code never writes to the console: whoever runs an agent passes a logger
 * (the CLI one writes JSON lines to stderr, tests pass a silent or recording one). Powertools' Logger fits too.
 */
export interface AgentLogger {
  debug(message: string, extra?: Record<string, unknown>): void;
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

export const silentLogger: AgentLogger = { debug() {}, info() {}, warn() {}, error() {} };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** JSON lines on a writable (stderr in the CLI), one object per entry, with level, time and bound fields. */
export function jsonLinesLogger(
  out: { write(line: string): unknown },
  opts: { level?: LogLevel; fields?: Record<string, unknown>; now?: () => Date } = {},
): AgentLogger {
  const min = RANK[opts.level ?? 'info'];
  const now = opts.now ?? (() => new Date());
  const emit = (level: LogLevel) => (message: string, extra?: Record<string, unknown>) => {
    if (RANK[level] < min) return;
    out.write(`${JSON.stringify({ level, time: now().toISOString(), message, ...opts.fields, ...extra })}\n`);
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/** Adds fixed fields (e.g. the VIN) to every entry of another logger. */
export function withFields(logger: AgentLogger, fields: Record<string, unknown>): AgentLogger {
  return {
    debug: (m, e) => logger.debug(m, { ...fields, ...e }),
    info: (m, e) => logger.info(m, { ...fields, ...e }),
    warn: (m, e) => logger.warn(m, { ...fields, ...e }),
    error: (m, e) => logger.error(m, { ...fields, ...e }),
  };
}

/** A short, loggable description of any thrown value. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
