/**
 * Runs one TCU agent for a VIN against the local cloud (npm start) or a deployed backend. Wiring only: the
 * agent lives in vehicle/. `npm run agent -- --help`.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_PORTS, LOCAL_INGEST_RULE } from '../local/ports.js';
import { trustedKeysFromPems } from '../protocol/signatures.js';
import { autoDriver, HeadUnitClient } from '../vehicle/head-unit-client.js';
import { startHeadUnitServer } from '../vehicle/head-unit-server.js';
import {
  type AgentEvent,
  ensureIdentity,
  FileVehicleState,
  identityDir,
  jsonLinesLogger,
  type LogLevel,
  NodeHttpsTransport,
  registerVehicle,
  StaticVehicleState,
  saveCertificate,
  type TrustAnchors,
} from '../vehicle/index.js';
import { createVehicleAgent } from '../vehicle/setup.js';

const HELP = `Usage: npm run agent -- --vin <VIN> [options]

Runs one vehicle TCU agent: receives update offers over MQTT (or polls the API), verifies them against its
trust anchors, downloads with resume, installs into A/B slots and reports progress and outcome.

Connection
  --local [dir]             use the local cloud kept in <dir> (default .ota-local): its default endpoints,
                            CA, development release key and backend key
  --api <url>               vehicle API base URL (https://...)
  --mqtt <url|none>         MQTT broker (mqtts://...); "none" polls the API only
  --basic-ingest-rule <name|none>
                            report progress and status through IoT Basic Ingest to this topic rule (the stack
                            output IngestRuleName; --local: the local rule); "none": vehicle/updates/{VIN}/...
  --ca <file>               CA certificate(s) to trust for the API, downloads and MQTT
  --release-key <file>      trusted OEM release public key, PEM (repeatable)
  --backend-key <file>      trusted backend assignment public key, PEM (repeatable)

Vehicle
  --vin <VIN>               the vehicle (required)
  --state-dir <dir>         agent state, identity and ECU slots (default .ota-vehicles/<VIN>)
  --ecu <ecu:hw:version>    ECU inventory on first run (repeatable; default tcu:TCU-HW-1:1.0.0)
  --register                register the vehicle first if it has no certificate (local cloud: admin token)
  --admin-token-file <file> operator token for --register (default <local dir>/admin-token)
  --csr-out <file>          write the device's CSR (its key is made on first run and stays here) and exit;
                            on AWS the operator registers it: ota vehicles register --aws --csr <file> ...
  --certificate <file>      the device certificate the operator got for that CSR: checked against the
                            device key and VIN, stored, then the agent starts
  --model <name>            model name for --register (default "Model T")
  --vehicle-state <file>    JSON {"parked": true, "battery_percent": 80}, read before installing
  --min-battery <percent>   least battery charge to install (default 50)
  --fail-health-check       make the post-install health check fail (shows the rollback)

Behaviour
  --poll-interval <s>       poll GET /updates/{vin} this often (jittered x0.5-1.5) while MQTT is down
                            (default 900) or when --mqtt none (default 60)
  --max-rate <bytes/s>      download bandwidth cap
  --head-unit <path|port|none>
                            serve the head-unit API (consent, progress, outcome, retry) on this Unix socket
                            (mode 0600) or loopback port (default <state-dir>/head-unit.sock); npm run head-unit
  --driver <accept|postpone|decline>
                            act as the head unit: answer every consent question this way
  --time-zone <IANA zone>   the vehicle's zone for maintenance windows (default the system's)
  --network-file <file>     holds "metered" or "unmetered": the link type, read before each download run
  --once                    exit after the first update outcome is acknowledged (exit 0 if completed)
  --log-level <level>       debug | info | warn | error (default info)
  --help                    this text
`;

function fail(message: string): never {
  process.stderr.write(`vehicle-agent: ${message}\n(see --help)\n`);
  process.exit(64);
}

function publicPemOf(file: string): string {
  const text = readFileSync(file, 'utf8');
  // The local cloud keeps the backend's private key; a vehicle is only ever given the public half.
  const key = text.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(text)) : createPublicKey(text);
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

function parseEcu(spec: string) {
  const [ecu, hardware_id, version] = spec.split(':');
  if (!ecu || !hardware_id || !version) fail(`--ecu wants ecu:hardware_id:version, got ${spec}`);
  return { ecu, hardware_id, version };
}

/** A one-line progress bar on a TTY; plain log lines otherwise. */
function progressRenderer(out: NodeJS.WriteStream, vin: string): (e: AgentEvent) => void {
  let open = false;
  const line = (text: string) => {
    out.write(`\r\x1b[2K${text}`);
    open = true;
  };
  const end = (text: string) => {
    out.write(`${open ? '\r\x1b[2K' : ''}${text}\n`);
    open = false;
  };
  return (e) => {
    switch (e.type) {
      case 'progress': {
        const width = 30;
        const filled = Math.min(width, Math.round((e.percent / 100) * width));
        const speed = e.bytesPerSecond > 0 ? ` ${(e.bytesPerSecond / 1024 / 1024).toFixed(1)} MiB/s` : '';
        line(
          `${vin} ${e.phase} ${e.firmware_version} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${e.percent.toFixed(1)}%${speed}`,
        );
        return;
      }
      case 'phase':
        end(`${vin} ${e.phase} ${e.firmware_version}`);
        return;
      case 'deferred':
        end(`${vin} installation deferred: ${e.reason}`);
        return;
      case 'outcome':
        end(`${vin} ${e.firmware_version}: ${e.status}${e.reason ? ` (${e.reason})` : ''}`);
        return;
      case 'connection':
        end(`${vin} MQTT ${e.connected ? 'connected' : 'disconnected'}`);
        return;
      default:
        return;
    }
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      help: { type: 'boolean' },
      local: { type: 'string' },
      api: { type: 'string' },
      mqtt: { type: 'string' },
      'basic-ingest-rule': { type: 'string' },
      ca: { type: 'string' },
      'release-key': { type: 'string', multiple: true },
      'backend-key': { type: 'string', multiple: true },
      vin: { type: 'string' },
      'state-dir': { type: 'string' },
      ecu: { type: 'string', multiple: true },
      register: { type: 'boolean' },
      'csr-out': { type: 'string' },
      certificate: { type: 'string' },
      'admin-token-file': { type: 'string' },
      model: { type: 'string' },
      'vehicle-state': { type: 'string' },
      'min-battery': { type: 'string' },
      'fail-health-check': { type: 'boolean' },
      'poll-interval': { type: 'string' },
      'max-rate': { type: 'string' },
      once: { type: 'boolean' },
      'head-unit': { type: 'string' },
      driver: { type: 'string' },
      'time-zone': { type: 'string' },
      'network-file': { type: 'string' },
      'log-level': { type: 'string' },
    },
    // `--local` alone means the default folder.
    args: process.argv
      .slice(2)
      .flatMap((a, i, all) =>
        a === '--local' && (all[i + 1] ?? '--').startsWith('--') ? ['--local', '.ota-local'] : [a],
      ),
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const vin = values.vin ?? fail('--vin is required');
  const level = (values['log-level'] ?? 'info') as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(level)) fail(`unknown log level ${level}`);
  const logger = jsonLinesLogger(process.stderr, { level });

  const local = values.local ? resolve(values.local) : undefined;
  const apiUrl =
    values.api ?? (local ? `https://127.0.0.1:${DEFAULT_PORTS.api}` : fail('--api or --local is required'));
  const mqttArg = values.mqtt ?? (local ? `mqtts://127.0.0.1:${DEFAULT_PORTS.mqtt}` : 'none');
  const mqttUrl = mqttArg === 'none' ? undefined : mqttArg;
  const ruleArg = values['basic-ingest-rule'] ?? (local ? LOCAL_INGEST_RULE : 'none');
  const basicIngestRule = ruleArg === 'none' ? undefined : ruleArg;
  const caFile = values.ca ?? (local ? join(local, 'ca', 'ca.cert.pem') : undefined);
  const ca = caFile ? readFileSync(caFile, 'utf8') : undefined;
  const releaseKeyFiles = values['release-key'] ?? (local ? [join(local, 'keys', 'release.pub.pem')] : []);
  const backendKeyFiles =
    values['backend-key'] ?? (local ? [join(local, 'keys', 'backend-signing.key.pem')] : []);
  if (releaseKeyFiles.length === 0) fail('at least one --release-key is required');
  if (backendKeyFiles.length === 0) fail('at least one --backend-key is required');
  const trust: TrustAnchors = {
    releaseKeys: trustedKeysFromPems(releaseKeyFiles.map(publicPemOf)),
    backendKeys: trustedKeysFromPems(backendKeyFiles.map(publicPemOf)),
  };
  const ecus = (values.ecu ?? ['tcu:TCU-HW-1:1.0.0']).map(parseEcu);
  const stateDir = resolve(values['state-dir'] ?? join('.ota-vehicles', vin));

  let identity = await ensureIdentity(identityDir(stateDir), vin);
  if (values['csr-out']) {
    // The AWS path: operator routes are IAM-authorised, so the vehicle cannot register itself with a token. It
    // hands its CSR to an operator, who registers it with SigV4 and gives back the certificate.
    const out = resolve(values['csr-out']);
    writeFileSync(out, identity.csrPem);
    process.stdout.write(
      `CSR for ${vin} written to ${out}\nRegister it: npm run ota -- vehicles register --aws --vin ${vin} ` +
        `--model <model> --ecu <ecu:hw:version> --csr ${out} --out ${vin}.cert.pem\n` +
        `Then start the agent with --certificate ${vin}.cert.pem\n`,
    );
    return;
  }
  if (values.certificate) {
    identity = await saveCertificate(identity, readFileSync(values.certificate, 'utf8'));
    logger.info('device certificate installed', { vin });
  }
  if (!identity.certPem && !values.register) {
    fail(
      'the vehicle has no certificate: --csr-out <file> for an operator to register (AWS), then --certificate, ' +
        'or --register on the local cloud',
    );
  }
  if (!identity.certPem && values.register) {
    const tokenFile =
      values['admin-token-file'] ??
      (local ? join(local, 'admin-token') : fail('--register needs --admin-token-file'));
    const transport = new NodeHttpsTransport(ca ? { ca } : {});
    try {
      const cert = await registerVehicle(transport, apiUrl, readFileSync(tokenFile, 'utf8').trim(), {
        vin,
        model: values.model ?? 'Model T',
        ecus,
        csr: identity.csrPem,
      });
      await saveCertificate(identity, cert);
      logger.info('vehicle registered', { vin });
    } finally {
      transport.close();
    }
  }

  // With MQTT the interval is the fallback for a broker outage (15 min unless given); without it, the only channel.
  const pollSeconds = Number(values['poll-interval'] ?? (mqttUrl ? 900 : 60));
  const maxRate = values['max-rate'] === undefined ? undefined : Number(values['max-rate']);
  const minBattery = Number(values['min-battery'] ?? 50);
  if (
    !(pollSeconds > 0) ||
    (maxRate !== undefined && !(maxRate > 0)) ||
    !(minBattery >= 0 && minBattery <= 100)
  ) {
    fail('--poll-interval, --max-rate and --min-battery take positive numbers');
  }
  const created = await createVehicleAgent({
    vin,
    stateDir,
    trust,
    ecus,
    apiUrl,
    ...(mqttUrl ? { mqttUrl } : {}),
    ...(basicIngestRule ? { basicIngestRule } : {}),
    ...(ca ? { apiCa: ca } : {}),
    vehicleState: values['vehicle-state']
      ? new FileVehicleState(values['vehicle-state'])
      : new StaticVehicleState(),
    safety: { minBatteryPercent: minBattery },
    polling: { intervalMs: pollSeconds * 1000 },
    ...(maxRate ? { download: { maxBytesPerSecond: maxRate } } : {}),
    ...(values['fail-health-check'] ? { healthCheck: () => false } : {}),
    conditions: {
      ...(values['time-zone'] ? { timeZone: values['time-zone'] } : {}),
      ...(values['network-file'] ? { network: networkFrom(values['network-file']) } : {}),
    },
    logger,
  });
  const { agent } = created;
  if (process.stderr.isTTY) agent.onEvent(progressRenderer(process.stderr, vin));

  let exitCode = 0;
  const shutdown = async (code: number) => {
    await created.close();
    process.exit(code);
  };
  process.once('SIGINT', () => void shutdown(130));
  process.once('SIGTERM', () => void shutdown(143));
  if (values.once) {
    agent.onEvent((e) => {
      if (e.type !== 'outcome') return;
      exitCode = e.status === 'completed' ? 0 : 2;
      void agent.whenIdle().then(() => shutdown(exitCode));
    });
  }
  await agent.start();
  const headUnit = values['head-unit'] ?? join(stateDir, 'head-unit.sock');
  if (headUnit !== 'none') {
    const server = await startHeadUnitServer(
      agent,
      /^\d+$/.test(headUnit) ? { port: Number(headUnit) } : { socket: headUnit },
    );
    logger.info('head-unit API listening', { address: server.address });
    const driver = values.driver;
    if (driver === 'accept' || driver === 'postpone' || driver === 'decline') {
      const client = new HeadUnitClient(
        server.address.startsWith('http') ? { url: server.address } : { socket: server.address },
      );
      autoDriver(client, driver, (line) => logger.info(line, {}));
    } else if (driver !== undefined) fail('--driver takes accept, postpone or decline');
  }
  logger.info('agent started', {
    vin,
    state_dir: stateDir,
    api: apiUrl,
    mqtt: mqttUrl ?? 'none (polling)',
    ecus: agent.state?.ecus,
  });
}

/** The link type as a file says it (an integrator's bridge to the modem writes it); unreadable: metered. */
function networkFrom(file: string): () => 'metered' | 'unmetered' {
  return () => {
    try {
      return readFileSync(file, 'utf8').trim() === 'unmetered' ? 'unmetered' : 'metered';
    } catch {
      return 'metered';
    }
  };
}

main().catch((err: unknown) => {
  process.stderr.write(`vehicle-agent: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
