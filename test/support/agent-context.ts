/** A started agent's shared context for unit tests of its parts: a real state store and reporter, a fake clock. */
import { randomBytes } from 'node:crypto';
import { manifestDigest, signAssignment } from '../../protocol/assignment.js';
import type { FullOffer } from '../../protocol/offer.js';
import { trustedKeysFromPems } from '../../protocol/signatures.js';
import type { AgentContext } from '../../vehicle/agent-context.js';
import type { AgentEvent, VehicleAgentOptions } from '../../vehicle/agent-options.js';
import type { VehicleApi } from '../../vehicle/api-client.js';
import { silentLogger } from '../../vehicle/logger.js';
import type { TrustAnchors } from '../../vehicle/provisioning.js';
import { Reporter } from '../../vehicle/reporter.js';
import { initialState, StateStore } from '../../vehicle/state-store.js';
import { FakeRuntime } from './agent-fakes.js';
import { newReleaseKey, signedRelease } from './fleet.js';

export const TEST_VIN = '1HGCM82633A004352';

/** No route answers unless a test gives it one. */
export function unusedApi(over: Partial<VehicleApi> = {}): VehicleApi {
  const none = () => Promise.reject(new Error('not expected in this test'));
  return { initiate: none, download: none, listUpdates: none, reportStatus: none, ...over };
}

export interface TestContext extends AgentContext {
  readonly runtime: FakeRuntime;
  readonly events: AgentEvent[];
  /** Aborts ctx.signal (the agent stopping). */
  readonly abort: AbortController;
}

/** A context over a fresh state folder; the reporter only queues (it is never started). */
export async function testContext(
  dir: string,
  options: Partial<VehicleAgentOptions> = {},
): Promise<TestContext> {
  const store = await StateStore.open(dir, () =>
    initialState(TEST_VIN, { tcu: { hardware_id: 'TCU-HW-1', version: '1.0.0' } }),
  );
  const runtime = new FakeRuntime();
  const api = options.api ?? unusedApi();
  const events: AgentEvent[] = [];
  const abort = new AbortController();
  return {
    options: {
      vin: TEST_VIN,
      stateDir: dir,
      ecus: [],
      installers: {},
      api,
      trust: testTrust(),
      ...options,
    } as VehicleAgentOptions,
    store,
    reporter: new Reporter({ vin: TEST_VIN, store, api, runtime }),
    runtime,
    expiryNow: () => runtime.now(),
    logger: silentLogger,
    signal: abort.signal,
    killed: () => false,
    emit: (e) => void events.push(e),
    events,
    abort,
  };
}

const releaseKey = newReleaseKey();
const backendKey = newReleaseKey();

/** The trust anchors testOffer's signatures verify against. */
export function testTrust(): TrustAnchors {
  return {
    releaseKeys: trustedKeysFromPems([releaseKey.publicPem]),
    backendKeys: trustedKeysFromPems([backendKey.publicPem]),
  };
}

/** A well-formed signed offer (the inbox checks form, not trust: acceptance verifies signatures). */
export async function testOffer(version: string, counter: number, updateId = `release#tcu-${version}`) {
  const manifest = await signedRelease(randomBytes(10_000), {
    releaseId: `tcu-${version}`,
    version,
    signer: releaseKey.signer,
  });
  const m = manifest.manifest;
  const assignment = await signAssignment(
    {
      schema: 'ota.assignment/v1',
      vin: TEST_VIN,
      update_id: updateId,
      campaign_id: null,
      release_id: m.release_id,
      version,
      ecu: 'tcu',
      manifest_sha256: manifestDigest(m),
      counter,
      issued_at: '2026-11-27T00:00:00.000Z',
      expires_at: '2026-11-28T00:00:00.000Z',
    },
    backendKey.signer,
  );
  const offer: FullOffer = {
    type: 'update_offer',
    campaign_id: null,
    update_id: updateId,
    firmware_version: version,
    ecu: 'tcu',
    size: m.size,
    release_id: m.release_id,
    manifest_sha256: manifestDigest(m),
    manifest,
    assignment,
  };
  return offer;
}
