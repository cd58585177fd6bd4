/** `ota`: parses the command line, runs the command, and turns any failure into one stderr line and an exit code. */
import { EXIT, parseCommandLine } from './args.js';
import { COMMANDS, GROUPS } from './commands.js';
import { Context, type Io } from './context.js';
import { formatError } from './errors.js';

export async function run(argv: readonly string[], io: Io): Promise<number> {
  let ctx: Context | undefined;
  try {
    const invocation = parseCommandLine(argv, GROUPS, COMMANDS);
    if (invocation.kind === 'help') {
      (invocation.exitCode === EXIT.ok ? io.stdout : io.stderr).write(invocation.text);
      return invocation.exitCode;
    }
    const command = COMMANDS.find((c) => c === invocation.command)!;
    ctx = new Context(io, invocation);
    const runner = await command.load();
    const code = await runner(ctx);
    return typeof code === 'number' ? code : EXIT.ok;
  } catch (err) {
    const formatted = formatError(err, {
      command: ctx?.args.command,
      secrets: ctx?.secrets(),
      debug: io.env.OTA_DEBUG === '1',
    });
    io.stderr.write(formatted.text);
    return formatted.exitCode;
  } finally {
    ctx?.close();
  }
}
