/** Test fixtures over real sockets: signed releases, operator calls, vehicle identities and tokens. */
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { Readable } from 'node:stream';
import { challengeSigningInput } from '../../protocol/challenge.js';
import { loadDictCodec } from '../../protocol/delta.js';
import { writeDelta } from '../../protocol/delta-publisher.js';
import { writeFramedObject } from '../../protocol/frame-publisher.js';
import {
  digestStream,
  type ReleaseManifest,
  type SignedManifest,
  signManifest,
} from '../../protocol/manifest.js';
import { KeyFileSigner } from '../../protocol/signatures.js';
import { generateKeyAndCsr } from '../../protocol/x509.js';
import { loadZstd } from '../../protocol/zstd.js';
import { https, jsonRequest } from './https.js';

export const TEST_CHUNK = 64 * 1024;

/** A small release manifest for unit tests of what binds to it (assignments); not signed. */
export const SAMPLE_MANIFEST: ReleaseManifest = {
  schema: 'ota.release-manifest/v1',
  release_id: 'tcu-3.0.1',
  ecu: 'tcu',
  hardware_ids: ['TCU-HW-1'],
  version: '3.0.1',
  size: 10,
  sha256: 'a'.repeat(64),
  chunk_size: 65536,
  chunks: ['a'.repeat(64)],
  created_at: '2026-11-27T00:00:00.000Z',
};

export function newReleaseKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return {
    signer: new KeyFileSigner(privatePem),
    privatePem,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

export async function signedRelease(
  image: Buffer,
  opts: {
    releaseId: string;
    version: string;
    ecu?: string;
    hardwareIds?: string[];
    signer: KeyFileSigner;
    /** Frames the image (protocol/frames.ts); the object to upload is written to it. */
    compressed?: {
      object?: Buffer;
      level?: number;
      deltaFrom?: { version: string; image: Buffer }[];
      /** Windowed frames (protocol/frame-window.ts): the most bytes before a frame it is compressed with. */
      window?: number;
    };
  },
): Promise<SignedManifest> {
  const d = await digestStream(Readable.from([image]), TEST_CHUNK);
  let compression: ReleaseManifest['compression'];
  if (opts.compressed) {
    const parts: Uint8Array[] = [];
    const framed = await writeFramedObject(
      Readable.from([image]),
      {
        chunkSize: TEST_CHUNK,
        codec: await loadZstd(),
        level: opts.compressed.level ?? 3,
        // Frames well below the test's 64 KiB manifest chunks, as 64 KiB frames are below 4 MiB ones in production.
        cdc: { min: 2 * 1024, avg: 8 * 1024, max: 32 * 1024 },
        ...(opts.compressed.window
          ? { window: opts.compressed.window, dictCodec: await loadDictCodec() }
          : {}),
      },
      (data) => void parts.push(Buffer.from(data)),
    );
    compression = framed.compression;
    const deltas: NonNullable<ReleaseManifest['compression']>['deltas'] = [];
    for (const base of opts.compressed.deltaFrom ?? []) {
      const {
        frames: _f,
        rawFrames: _r,
        ...entry
      } = await writeDelta(
        () => Readable.from([image]),
        {
          version: base.version,
          size: base.image.length,
          stream: () => Readable.from([base.image]),
          read: async (at, length) => base.image.subarray(at, at + length),
        },
        {
          chunkSize: TEST_CHUNK,
          codec: await loadDictCodec(),
          offset: compression.object_size,
          cdc: { min: 2 * 1024, avg: 8 * 1024, max: 32 * 1024 },
        },
        (data) => void parts.push(Buffer.from(data)),
      );
      deltas.push(entry);
      compression = { ...compression, object_size: compression.object_size + entry.size };
    }
    if (deltas.length) compression = { ...compression, deltas };
    opts.compressed.object = Buffer.concat(parts);
  }
  const manifest: ReleaseManifest = {
    schema: 'ota.release-manifest/v1',
    release_id: opts.releaseId,
    ecu: opts.ecu ?? 'tcu',
    hardware_ids: opts.hardwareIds ?? ['TCU-HW-1'],
    version: opts.version,
    size: d.size,
    sha256: d.sha256,
    chunk_size: TEST_CHUNK,
    chunks: d.chunks,
    created_at: new Date().toISOString(),
    ...(compression ? { compression } : {}),
  };
  return signManifest(manifest, [opts.signer]);
}

export class Operator {
  constructor(
    readonly api: string,
    readonly ca: string,
    readonly adminToken: string,
  ) {}

  call(method: string, path: string, body?: unknown) {
    return jsonRequest(this.api, method, path, this.ca, body, this.adminToken);
  }

  /**
   * POST /campaigns, then, while its targets are prepared in the background (202, preparing), GET /campaigns/{id}
   * until it is created (or failed, or cancelled): answers that last GET, or the refusal of the create.
   */
  async createCampaign(body: unknown, timeoutMs = 120_000) {
    let res = await this.call('POST', '/campaigns', body);
    if (res.status !== 202) return res;
    const id = res.json.campaign_id as string;
    const deadline = Date.now() + timeoutMs;
    while (res.json.status === 'preparing') {
      if (Date.now() > deadline) throw new Error(`campaign ${id} still preparing after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
      res = await this.call('GET', `/campaigns/${id}`);
    }
    return res;
  }

  /** Creates, uploads and publishes a release; asserts nothing, returns each response for the caller to check. */
  async publish(signed: SignedManifest, image: Buffer) {
    const created = await this.call('POST', '/releases', signed);
    if (created.status !== 201) return { created };
    const upload = await https(created.json.upload.url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(image.length) },
      body: image,
      ca: this.ca,
    });
    const published = await this.publishAndWait(signed.manifest.release_id, {});
    return { created, upload, published };
  }

  /**
   * POST /releases/{id}/publish, then, while the background verification runs (202, verifying), GET /releases/{id}
   * until it ends: answers that last GET (status 200, json.status published or failed) or the refusal of publish.
   * Records the bytes verified seen on the way.
   */
  async publishAndWait(releaseId: string, body: unknown, timeoutMs = 120_000) {
    const seen: number[] = [];
    let res = await this.call('POST', `/releases/${releaseId}/publish`, body);
    if (res.status !== 202) return Object.assign(res, { seen });
    const deadline = Date.now() + timeoutMs;
    while (res.json.status === 'verifying') {
      seen.push(res.json.verification?.bytes_verified ?? 0);
      if (Date.now() > deadline)
        throw new Error(`release ${releaseId} still verifying after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
      res = await this.call('GET', `/releases/${releaseId}`);
    }
    return Object.assign(res, { seen });
  }
}

export class TestVehicle {
  private constructor(
    readonly vin: string,
    readonly keyPem: string,
    readonly csrPem: string,
  ) {}

  static async create(vin: string): Promise<TestVehicle> {
    const { privateKeyPem, csrPem } = await generateKeyAndCsr(vin);
    return new TestVehicle(vin, privateKeyPem, csrPem);
  }

  registration(ecus = [{ ecu: 'tcu', hardware_id: 'TCU-HW-1', version: '1.0.0' }]) {
    return { vin: this.vin, model: 'Model T', ecus, csr: this.csrPem };
  }

  signChallenge(nonce: string): string {
    return sign('sha256', challengeSigningInput(this.vin, nonce), {
      key: createPrivateKey(this.keyPem),
      dsaEncoding: 'der',
    }).toString('base64');
  }

  async token(api: string, ca: string): Promise<string> {
    const challenge = await jsonRequest(api, 'POST', '/auth/challenge', ca, { vin: this.vin });
    const res = await jsonRequest(api, 'POST', '/auth/token', ca, {
      vin: this.vin,
      nonce: challenge.json.nonce,
      signature: this.signChallenge(challenge.json.nonce),
    });
    if (res.status !== 200) throw new Error(`token refused: ${res.status} ${res.raw.toString()}`);
    return res.json.token;
  }
}
