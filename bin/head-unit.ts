/**
 * Example head unit on the command line: talks to a running agent's head-unit API (vehicle/head-unit-server.ts)
 * with the example client (vehicle/head-unit-client.ts). `npm run head-unit -- --help`.
 */
import { parseArgs } from 'node:util';
import { autoDriver, HeadUnitClient, HeadUnitError } from '../vehicle/head-unit-client.js';

const HELP = `Usage: npm run head-unit -- (--socket <path> | --url http://127.0.0.1:<port>) <command>

Commands:
  status      the pending update, the versions the car runs, the last outcome (JSON)
  accept      accept the pending update
  postpone    ask again after the campaign's interval
  decline     decline the pending update
  retry       after a failed update: try it again
  watch       print progress and outcomes as they happen (Ctrl-C to stop)
  auto <accept|postpone|decline>
              answer every question this way and print what happens (a head unit without a screen)

The agent serves the API on <state-dir>/head-unit.sock unless started with --head-unit none.`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { socket: { type: 'string' }, url: { type: 'string' }, help: { type: 'boolean' } },
  });
  const [command, arg] = positionals;
  if (values.help || !command || (!values.socket && !values.url)) {
    process.stdout.write(`${HELP}\n`);
    return values.help ? 0 : 2;
  }
  const client = new HeadUnitClient(values.socket ? { socket: values.socket } : { url: values.url! });
  const print = (x: unknown) => process.stdout.write(`${JSON.stringify(x, null, 2)}\n`);
  switch (command) {
    case 'status':
      print(await client.view());
      return 0;
    case 'accept':
    case 'postpone':
    case 'decline':
      print(await client[command]());
      return 0;
    case 'retry':
      print(await client.retry());
      return 0;
    case 'watch':
    case 'auto': {
      if (command === 'auto' && arg !== 'accept' && arg !== 'postpone' && arg !== 'decline') {
        process.stderr.write('auto wants accept, postpone or decline\n');
        return 2;
      }
      const stop =
        command === 'auto'
          ? autoDriver(client, arg as 'accept', (line) => process.stdout.write(`${line}\n`))
          : client.events((e) => process.stdout.write(`${e.type} ${JSON.stringify(e.data)}\n`));
      await new Promise<void>((done) => process.once('SIGINT', done));
      stop();
      return 0;
    }
    default:
      process.stderr.write(`unknown command ${command}\n${HELP}\n`);
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as Error;
    process.stderr.write(
      `head-unit: ${err instanceof HeadUnitError ? `${e.message} (${err.code})` : e.message}\n`,
    );
    process.exit(1);
  },
);
