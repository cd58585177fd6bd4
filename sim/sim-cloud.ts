/**
 * The private local cloud a fleet simulation runs against (sim/fleet.ts, sim/bundle-fleet.ts): a fresh OEM release
 * key, the cloud on free ports with the simulation's timings, and the trust anchors a factory would provision in
 * each vehicle (that release key and the backend's public key).
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FUNCTION_SETTINGS, INGEST_EVENT_SOURCE } from '../lambdas/core/functions.js';
import { type LocalCloud, startLocalCloud } from '../local/cloud.js';
import { KeyFileSigner, trustedKeysFromPems } from '../protocol/signatures.js';
import type { TrustAnchors } from '../vehicle/provisioning.js';

export interface SimCloud {
  readonly cloud: LocalCloud;
  readonly releaseSigner: KeyFileSigner;
  readonly trust: TrustAnchors;
}

export async function startSimCloud(root: string, log: (line: string) => void): Promise<SimCloud> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const releaseSigner = new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const releasePub = await releaseSigner.publicKeyPem();
  const cloud = await startLocalCloud({
    dataDir: join(root, 'cloud'),
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releasePub],
    campaignTickMs: 1000,
    // Vehicle messages reach ingest in batches as deployed (lib/fleet-ingest.ts), not one invocation each.
    ingestBatchWindowMs: INGEST_EVENT_SOURCE.maxBatchingWindowSeconds * 1000,
    throttle: { ratePerSecond: 100_000, burst: 100_000 },
    // Creating one campaign for the whole simulated fleet makes about 4 DynamoDB emulator calls per vehicle, which
    // outlasts the deployed 10 s on a loaded machine long before DynamoDB would: the operator function gets API
    // Gateway's 29 s here. Every other function keeps its deployed timeout and memory.
    functionSettings: { 'operator-api': { ...FUNCTION_SETTINGS['operator-api'], timeoutSeconds: 29 } },
    logger: { warn() {}, error: (m, e) => log(`gateway error: ${m} ${JSON.stringify(e)}`) },
  });
  try {
    const backendPub = createPublicKey(readFileSync(cloud.signingKeyFile, 'utf8'))
      .export({ type: 'spki', format: 'pem' })
      .toString();
    const trust = {
      releaseKeys: trustedKeysFromPems([releasePub]),
      backendKeys: trustedKeysFromPems([backendPub]),
    };
    return { cloud, releaseSigner, trust };
  } catch (err) {
    await cloud.stop();
    throw err;
  }
}
