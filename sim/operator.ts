/**
 * The operator's side of the fleet simulations (sim/fleet.ts, sim/scale.ts): admin-token JSON calls to the local
 * cloud's API trusting exactly its CA, publishing a signed release (create, upload, background verification), and
 * campaign creation that follows both the synchronous (201) and the asynchronous (202, `preparing`) answer.
 */
import { request } from 'node:https';
import { Readable } from 'node:stream';
import {
  digestStream,
  type ReleaseManifest,
  type SignedManifest,
  signManifest,
} from '../protocol/manifest.js';
import type { UpdateStatus } from '../protocol/schemas.js';
import type { Signer } from '../protocol/signatures.js';

export const SIM_CHUNK = 64 * 1024;

// biome-ignore lint/suspicious/noExplicitAny: the simulations read arbitrary JSON answers
type Json = any;

/** A plain HTTPS request trusting exactly the given CA. */
export function httpsCall(
  method: string,
  url: string,
  ca: string,
  headers: Record<string, string>,
  body?: string | Buffer,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, ca }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Runs fn over items with at most limit at once. */
export async function pool<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** Peak resident set of this process so far, bytes (its worker threads included). */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

export class SimOperator {
  constructor(
    readonly api: string,
    readonly ca: string,
    readonly adminToken: string,
  ) {}

  /** The answer's status and JSON body, whatever the status. */
  async request(method: string, path: string, body?: unknown): Promise<{ status: number; json: Json }> {
    const res = await httpsCall(
      method,
      `${this.api}${path}`,
      this.ca,
      { authorization: `Bearer ${this.adminToken}`, 'content-type': 'application/json' },
      body === undefined ? undefined : JSON.stringify(body),
    );
    const text = res.body.toString('utf8');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = { raw: text };
    }
    return { status: res.status, json };
  }

  /** The JSON answer; throws on any status of 300 and above. */
  async call(method: string, path: string, body?: unknown): Promise<Json> {
    const res = await this.request(method, path, body);
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.json)}`);
    return res.json;
  }

  /**
   * Warms the operator function: `concurrency` requests at once until all are answered below 500. On a loaded
   * machine a cold start can outlast API Gateway's 29 s, and a registration whose answer was lost cannot be
   * repeated (the VIN is taken), so the instances are started before the registrations need them.
   */
  async warmUp(concurrency: number, deadline: number): Promise<void> {
    for (;;) {
      const answers = await Promise.all(
        Array.from({ length: concurrency }, () =>
          this.request('GET', '/vehicles/WARMUP00000000000').then((r) => r.status),
        ),
      );
      if (answers.every((s) => s < 500)) return;
      if (Date.now() > deadline) throw new Error(`the operator API still answers ${answers.join(', ')}`);
    }
  }

  /** Signs, creates, uploads and publishes a release of the TCU image, waiting out the background verification. */
  async publishRelease(
    signer: Signer,
    version: string,
    image: Buffer,
    /** The ECU it is for (bundle simulations have several). @default the TCU */
    target: { ecu: string; hardwareId: string } = { ecu: 'tcu', hardwareId: 'TCU-HW-1' },
  ): Promise<SignedManifest> {
    const d = await digestStream(Readable.from([image]), SIM_CHUNK);
    const id = `${target.ecu}-${version}`;
    const manifest: ReleaseManifest = {
      schema: 'ota.release-manifest/v1',
      release_id: id,
      ecu: target.ecu,
      hardware_ids: [target.hardwareId],
      version,
      size: d.size,
      sha256: d.sha256,
      chunk_size: SIM_CHUNK,
      chunks: d.chunks,
      created_at: new Date().toISOString(),
    };
    const signed = await signManifest(manifest, [signer]);
    const created = await this.call('POST', '/releases', signed);
    const put = await httpsCall(
      'PUT',
      created.upload.url,
      this.ca,
      { 'content-type': 'application/octet-stream', 'content-length': String(image.length) },
      image,
    );
    if (put.status !== 200) throw new Error(`upload of ${version} failed: ${put.status}`);
    // Publishing verifies in the background (202): wait until the release is published.
    let release = await this.call('POST', `/releases/${id}/publish`, {});
    const deadline = Date.now() + 120_000;
    while (release.status === 'verifying') {
      if (Date.now() > deadline) throw new Error(`release ${version} still verifying after 120 s`);
      await sleep(100);
      release = await this.call('GET', `/releases/${id}`);
    }
    if (release.status !== 'published') {
      throw new Error(
        `release ${version} was not published: ${release.status} ${release.failure_reason ?? ''}`,
      );
    }
    return signed;
  }

  /**
   * POST /campaigns, and when the answer is 202 (asynchronous creation), GET the campaign until it leaves
   * `preparing`; answers the campaign as it then is (`created` when all went well).
   */
  async createCampaign(
    body: { campaign_id: string; [field: string]: unknown },
    timeoutMs = 600_000,
    log?: (line: string) => void,
  ): Promise<Json> {
    const res = await this.request('POST', '/campaigns', body);
    if (res.status >= 300) throw new Error(`POST /campaigns: ${res.status} ${JSON.stringify(res.json)}`);
    let campaign = res.json;
    const deadline = Date.now() + timeoutMs;
    let lastLog = Date.now();
    while (campaign.status === 'preparing') {
      if (Date.now() > deadline)
        throw new Error(`campaign ${body.campaign_id} still preparing after ${timeoutMs} ms`);
      await sleep(500);
      campaign = await this.call('GET', `/campaigns/${body.campaign_id}`);
      if (log && Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        log(
          `campaign ${body.campaign_id} preparing: ${JSON.stringify(campaign.preparation ?? campaign.counts ?? {})}`,
        );
      }
    }
    if (campaign.status === 'failed')
      throw new Error(`campaign ${body.campaign_id} failed: ${campaign.preparation?.failure_reason ?? ''}`);
    return campaign;
  }

  /** Every vehicle of a campaign wave, all pages. */
  async waveVehicles(campaignId: string, wave: number): Promise<WaveVehicle[]> {
    const all: WaveVehicle[] = [];
    let token: string | null = null;
    do {
      const next: string = token ? `&next_token=${encodeURIComponent(token)}` : '';
      const page = await this.call('GET', `/campaigns/${campaignId}/vehicles?wave=${wave}&limit=1000${next}`);
      all.push(...page.vehicles);
      token = page.next_token;
    } while (token);
    return all;
  }
}

export interface WaveVehicle {
  vin: string;
  status: UpdateStatus;
  attempt: number;
  reason: string | null;
  offered_at: string | null;
  updated_at: string;
}
