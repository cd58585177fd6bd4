/**
 * Fixtures for the agent integration tests: a private local cloud, releases signed by a test OEM key, vehicles
 * registered from the agent's own CSR, agents wired with fast test timings, offers published through the real
 * IoT Data Plane client, and readers for what a test asserts: the vehicle's state file and active slot, and the
 * backend's view in DynamoDB (GET /vehicles/{vin}).
 */
import assert from 'node:assert/strict';
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import type { AlertThresholds } from '../../lambdas/core/alerts.js';
import { LOCAL_REGION, type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import { type Assignment, type SignedAssignment, signAssignment } from '../../protocol/assignment.js';
import type { SignedManifest } from '../../protocol/manifest.js';
import type { FullOffer } from '../../protocol/offer.js';
import { KeyFileSigner, trustedKeysFromPems } from '../../protocol/signatures.js';
import { vehicleTopic } from '../../protocol/topics.js';
import type { AgentEvent, EcuConfig, VehicleAgent } from '../../vehicle/agent.js';
import { registerVehicle } from '../../vehicle/api-client.js';
import { NodeHttpsTransport } from '../../vehicle/http-transport.js';
import type { FileSlotInstaller } from '../../vehicle/installer.js';
import { type AgentLogger, jsonLinesLogger, silentLogger } from '../../vehicle/logger.js';
import { offerFromAnswer } from '../../vehicle/poller.js';
import { ensureIdentity, saveCertificate, type TrustAnchors } from '../../vehicle/provisioning.js';
import {
  type CreateAgentOptions,
  type CreatedAgent,
  createVehicleAgent,
  identityDir,
} from '../../vehicle/setup.js';
import { type AgentState, agentStateSchema } from '../../vehicle/state-store.js';
import { newReleaseKey, Operator, signedRelease } from './fleet.js';

export const TCU: EcuConfig = { ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' };
export const FACTORY_IMAGE = Buffer.from('factory image of tcu 1.0.0\n');
export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Agent logs go to stderr with AGENT_TEST_LOG=1 (debug with AGENT_TEST_LOG=debug); silent otherwise. */
export function testLogger(): AgentLogger {
  const flag = process.env.AGENT_TEST_LOG;
  if (!flag) return silentLogger;
  return jsonLinesLogger(process.stderr, { level: flag === 'debug' ? 'debug' : 'info' });
}

export interface AgentCloud {
  readonly cloud: LocalCloud;
  readonly root: string;
  readonly operator: Operator;
  readonly releaseKey: ReturnType<typeof newReleaseKey>;
  /** The backend's signing key, as a compromised backend (or the test) would use it. */
  readonly backendSigner: KeyFileSigner;
  readonly trust: TrustAnchors;
  /** PEM files of the trust anchors and the CA (for the CLI). */
  readonly files: { readonly releaseKey: string; readonly backendKey: string; readonly ca: string };
  readonly iotData: IoTDataPlaneClient;
  /** Registers something to close in stop(), even when a test timed out before its own cleanup ran. */
  track(close: () => Promise<unknown> | unknown): void;
  stop(): Promise<void>;
}

export async function startAgentCloud(
  opts: {
    presignTtlSeconds?: number;
    extraReleaseKeys?: readonly string[];
    freshnessPeriodMs?: number;
    alertThresholds?: Partial<AlertThresholds>;
  } = {},
): Promise<AgentCloud> {
  const root = mkdtempSync(join(tmpdir(), 'ota-agent-'));
  const releaseKey = newReleaseKey();
  const quiet = { warn() {}, error() {} };
  const cloud = await startLocalCloud({
    dataDir: join(root, 'cloud'),
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem, ...(opts.extraReleaseKeys ?? [])],
    presignTtlSeconds: opts.presignTtlSeconds ?? 300,
    ...(opts.freshnessPeriodMs !== undefined ? { freshnessPeriodMs: opts.freshnessPeriodMs } : {}),
    ...(opts.alertThresholds ? { alertThresholds: opts.alertThresholds } : {}),
    logger: process.env.AGENT_TEST_LOG ? undefined : quiet,
  });
  const backendPem = readFileSync(cloud.signingKeyFile, 'utf8');
  const backendPublic = createPublicKey(backendPem).export({ type: 'spki', format: 'pem' }).toString();
  const files = {
    releaseKey: join(root, 'release.pub.pem'),
    backendKey: join(root, 'backend.pub.pem'),
    ca: cloud.caFile,
  };
  writeFileSync(files.releaseKey, releaseKey.publicPem);
  writeFileSync(files.backendKey, backendPublic);
  const iotData = new IoTDataPlaneClient({
    region: LOCAL_REGION,
    endpoint: cloud.endpoints.iotData,
    credentials: cloud.credentials,
    maxAttempts: 1,
    // An Agent instance: the SDK drops a CA given as plain agent options on some requests.
    requestHandler: { httpsAgent: new HttpsAgent({ ca: cloud.caCertPem }) },
  });
  const closers: (() => Promise<unknown> | unknown)[] = [];
  return {
    cloud,
    root,
    track: (close) => void closers.push(close),
    operator: new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken),
    releaseKey,
    backendSigner: new KeyFileSigner(backendPem),
    trust: {
      releaseKeys: trustedKeysFromPems([releaseKey.publicPem]),
      backendKeys: trustedKeysFromPems([backendPublic]),
    },
    files,
    iotData,
    stop: async () => {
      for (const close of closers.splice(0).reverse()) {
        // At most 5 s each; the timer is cleared after, or it would hold the test process 5 s past its tests.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.resolve().then(close),
          new Promise((r) => (timer = setTimeout(r, 5000))),
        ]).catch(() => {});
        clearTimeout(timer);
      }
      iotData.destroy();
      await cloud.rules.idle().catch(() => {});
      await cloud.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface PublishedRelease {
  readonly image: Buffer;
  readonly signed: SignedManifest;
  /** The stored object of a compressed release. */
  readonly object?: Buffer;
}

/** Signs, uploads and publishes a release of random bytes (or the image given). */
export async function publishRelease(
  ac: AgentCloud,
  opts: {
    version: string;
    size?: number;
    image?: Buffer;
    hardwareIds?: string[];
    releaseId?: string;
    ecu?: string;
    /** @default the cloud's release key */
    signer?: KeyFileSigner;
    /** Store it compressed (zstd frames and frame table, protocol/frames.ts). */
    compressed?: boolean;
    /** With compressed: append a precomputed delta from each of these images (protocol/delta.ts). */
    deltaFrom?: { version: string; image: Buffer }[];
    /** With compressed: windowed frames (protocol/frame-window.ts). */
    window?: number;
  },
): Promise<PublishedRelease> {
  const image = opts.image ?? randomBytes(opts.size ?? 512 * 1024);
  const compressed: { object?: Buffer; deltaFrom?: { version: string; image: Buffer }[]; window?: number } = {
    ...(opts.deltaFrom ? { deltaFrom: opts.deltaFrom } : {}),
    ...(opts.window ? { window: opts.window } : {}),
  };
  const signed = await signedRelease(image, {
    releaseId: opts.releaseId ?? `${opts.ecu ?? 'tcu'}-${opts.version}`,
    version: opts.version,
    ...(opts.ecu ? { ecu: opts.ecu } : {}),
    ...(opts.hardwareIds ? { hardwareIds: opts.hardwareIds } : {}),
    signer: opts.signer ?? ac.releaseKey.signer,
    ...(opts.compressed ? { compressed } : {}),
  });
  const { created, published } = await ac.operator.publish(signed, compressed.object ?? image);
  assert.equal(created.status, 201, `create release ${opts.version}: ${created.raw.toString()}`);
  assert.equal(published?.status, 200, `publish release ${opts.version}: ${published?.raw.toString()}`);
  return { image, signed, ...(compressed.object ? { object: compressed.object } : {}) };
}

/** Makes the vehicle's identity in its state folder (the agent's own key and CSR) and registers it. */
export async function registerAgentVehicle(
  ac: AgentCloud,
  vin: string,
  registry: readonly EcuConfig[] = [TCU],
): Promise<string> {
  const stateDir = join(ac.root, 'vehicles', vin);
  const identity = await ensureIdentity(identityDir(stateDir), vin);
  const transport = new NodeHttpsTransport({ ca: ac.cloud.caCertPem });
  try {
    const cert = await registerVehicle(transport, ac.cloud.endpoints.api, ac.cloud.adminToken, {
      vin,
      model: 'Model T',
      ecus: registry.map((e) => ({ ...e })),
      csr: identity.csrPem,
    });
    await saveCertificate(identity, cert);
  } finally {
    transport.close();
  }
  return stateDir;
}

/** An agent with test timings: fast backoffs and polls, MQTT keep-alive of a few seconds. */
export function agentOptions(
  ac: AgentCloud,
  vin: string,
  stateDir: string,
  overrides: Partial<CreateAgentOptions> = {},
): CreateAgentOptions {
  return {
    vin,
    stateDir,
    trust: ac.trust,
    ecus: [TCU],
    apiUrl: ac.cloud.endpoints.api,
    mqttUrl: ac.cloud.endpoints.mqtt,
    apiCa: ac.cloud.caCertPem,
    factoryImage: () => FACTORY_IMAGE,
    mqttKeepaliveSeconds: 5,
    mqttBackoff: { baseMs: 100, maxMs: 1000 },
    polling: { intervalMs: 500, connectedIntervalMs: 0, mqttGraceMs: 2000 },
    safety: { pollMs: 50 },
    retryBackoff: { baseMs: 100, maxMs: 1000 },
    reportBackoff: { baseMs: 100, maxMs: 1000 },
    download: { backoff: { baseMs: 50, maxMs: 500 }, minBytesPerSecond: 0 },
    logger: testLogger(),
    // Our agent reports through IoT Basic Ingest, to the local rule (the seed topics stay open for other clients).
    basicIngestRule: ac.cloud.ingestRuleName,
    ...overrides,
  };
}

export async function startAgent(
  ac: AgentCloud,
  vin: string,
  stateDir: string,
  overrides: Partial<CreateAgentOptions> = {},
): Promise<CreatedAgent & { events: EventLog }> {
  const created = await createVehicleAgent(agentOptions(ac, vin, stateDir, overrides));
  ac.track(() => created.close());
  const events = new EventLog(created.agent);
  await created.agent.start();
  return { ...created, events };
}

/** Records an agent's events from the start, so a test can wait for one that may already have happened. */
export class EventLog {
  readonly events: AgentEvent[] = [];
  private waiters: { predicate: (e: AgentEvent) => boolean; resolve: (e: AgentEvent) => void }[] = [];

  constructor(agent: VehicleAgent) {
    agent.onEvent((e) => {
      this.events.push(e);
      for (const w of [...this.waiters]) {
        if (w.predicate(e)) {
          this.waiters = this.waiters.filter((x) => x !== w);
          w.resolve(e);
        }
      }
    });
  }

  waitFor<T extends AgentEvent>(
    predicate: (e: AgentEvent) => e is T,
    timeoutMs: number,
    what: string,
  ): Promise<T>;
  waitFor(predicate: (e: AgentEvent) => boolean, timeoutMs: number, what: string): Promise<AgentEvent>;
  waitFor(predicate: (e: AgentEvent) => boolean, timeoutMs: number, what: string): Promise<AgentEvent> {
    const seen = this.events.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        const recent = this.events
          .slice(-8)
          .map((e) => JSON.stringify(e))
          .join('\n  ');
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last events:\n  ${recent}`));
      }, timeoutMs);
      const done = (e: AgentEvent) => {
        clearTimeout(timer);
        resolve(e);
      };
      this.waiters.push({ predicate, resolve: done });
    });
  }

  outcome(firmwareVersion: string, timeoutMs = 30_000): Promise<Extract<AgentEvent, { type: 'outcome' }>> {
    return this.waitFor(
      (e): e is Extract<AgentEvent, { type: 'outcome' }> =>
        e.type === 'outcome' && e.firmware_version === firmwareVersion,
      timeoutMs,
      `the outcome of ${firmwareVersion}`,
    );
  }
}

/** An offer as the backend makes it: POST /updates/{vin}/initiate's manifest and assignment. */
export async function initiateOffer(created: Pick<CreatedAgent, 'api'>, version: string): Promise<FullOffer> {
  return offerFromAnswer(await created.api.initiate(version));
}

/** Publishes on vehicle/updates/{VIN}/issue_details through the real IoT Data Plane client. */
export async function publishOffer(ac: AgentCloud, vin: string, offer: unknown): Promise<void> {
  await ac.iotData.send(
    new PublishCommand({
      topic: vehicleTopic(vin, 'issue_details'),
      qos: 1,
      payload: Buffer.from(JSON.stringify(offer)),
    }),
  );
}

/** Re-signs an assignment with the backend key after changing it (expired, other VIN...): a valid signature. */
export async function resignAssignment(
  ac: AgentCloud,
  signed: SignedAssignment,
  change: Partial<Assignment>,
): Promise<SignedAssignment> {
  return signAssignment({ ...signed.assignment, ...change }, ac.backendSigner);
}

// --------------------------------------------------------------------------------------------------------------
// What the tests assert

/** The operator view of a vehicle (GET /vehicles/{vin}), as far as the tests read it. */
export interface BackendVehicleView {
  readonly vin: string;
  readonly ecus: { ecu: string; hardware_id: string; version: string }[];
  readonly updates: BackendUpdateView[];
  /** What the vehicle last reported it runs (issue 14), null before its first report. */
  readonly inventory: { ecus: { ecu: string; version: string; sha256: string }[] } | null;
}
export interface BackendUpdateView {
  readonly update_id: string;
  readonly firmware_version: string;
  readonly status: string;
  readonly progress: number;
  readonly reason?: string;
}

export async function backendVehicle(ac: AgentCloud, vin: string): Promise<BackendVehicleView> {
  await ac.cloud.rules.idle();
  const res = await ac.operator.call('GET', `/vehicles/${vin}`);
  assert.equal(res.status, 200, `GET /vehicles/${vin}: ${res.raw.toString()}`);
  return res.json as BackendVehicleView;
}

export function backendUpdate(vehicle: BackendVehicleView, version: string): BackendUpdateView | undefined {
  return vehicle.updates.find((u) => u.firmware_version === version);
}

export function readAgentState(stateDir: string): AgentState {
  return agentStateSchema.parse(JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')));
}

/** The active slot as the bootloader would see it: the pointer file's choice and the hash of that slot file. */
export function activeSlot(
  stateDir: string,
  ecu = 'tcu',
): { slot: string; version: string; state: string; contentSha256: string } {
  const dir = join(stateDir, 'ecus', ecu);
  const pointer = JSON.parse(readFileSync(join(dir, 'slots.json'), 'utf8'));
  const slot = pointer.active as 'a' | 'b';
  return {
    slot,
    version: pointer.slots[slot].version,
    state: pointer.state,
    contentSha256: sha256(readFileSync(join(dir, `slot-${slot}.img`))),
  };
}

export function downloadsLeft(stateDir: string): string[] {
  try {
    return readdirSync(join(stateDir, 'downloads'));
  } catch {
    return [];
  }
}

/**
 * The object file of a release inside the S3 emulator's folder (for tampering tests: bytes changed in storage
 * behind S3's back, since the published object itself is under a legal hold). Key: releases/<release id>/<sha256>.
 */
export function s3ObjectFile(ac: AgentCloud, manifest: { release_id: string; sha256: string }): string {
  return join(
    ac.cloud.dataDir,
    's3',
    ac.cloud.bucket,
    'releases',
    manifest.release_id,
    `${manifest.sha256}._S3rver_object`,
  );
}

/** Asserts the vehicle runs `version` with exactly `image` in its active slot, committed, with nothing left over. */
/** Inverts one byte of a stored object in place: an image tampered with in storage after publication. */
export function flipStoredByte(file: string, at: number): void {
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    writeSync(fd, byte, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

export function assertVehicleRuns(stateDir: string, version: string, image: Buffer, ecu = 'tcu'): void {
  const state = readAgentState(stateDir);
  assert.equal(state.ecus[ecu]?.version, version, 'state file: installed version');
  assert.equal(state.current, null, 'state file: no update in progress');
  assert.deepEqual(state.pending_reports, [], 'state file: every report acknowledged');
  const slot = activeSlot(stateDir, ecu);
  assert.equal(slot.version, version, 'slots.json: active slot version');
  assert.equal(slot.state, 'committed', 'slots.json: committed');
  assert.equal(slot.contentSha256, sha256(image), 'active slot content is exactly the expected image');
  assert.deepEqual(downloadsLeft(stateDir), [], 'no download or image files left behind');
}

export type { FileSlotInstaller };

/** Polls until the async predicate holds; throws with `what` after the timeout. */
export async function waitUntil(
  predicate: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
