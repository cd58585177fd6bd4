/**
 * Bundle member downloads (vehicle/bundle-downloads.ts) against an in-memory transport: a failed run keeps its
 * resume point and the next run (or a new agent on the same folder) continues after it; failed runs spend one budget
 * across restarts while an unreachable backend spends none; corrupt bytes are dropped; another offer's downloads
 * are not trusted; the outcome removes everything.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ReleaseManifest, SignedManifest } from '../../protocol/manifest.js';
import { type AgentContext, RetryLater } from '../../vehicle/agent-context.js';
import { BundleDownloads } from '../../vehicle/bundle-downloads.js';
import { Downloader, type DownloadSource } from '../../vehicle/downloader.js';
import { EcuBases } from '../../vehicle/ecu-bases.js';
import { DownloadError } from '../../vehicle/errors.js';
import { silentLogger } from '../../vehicle/logger.js';
import { FakeRuntime, FakeTransport, rangeAnswer } from '../support/agent-fakes.js';

const CHUNK = 64 * 1024;
const root = mkdtempSync(join(tmpdir(), 'agent-bundle-dl-'));
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
function signedOf(image: Buffer, ecu: string): SignedManifest {
  const chunks: string[] = [];
  for (let i = 0; i < image.length; i += CHUNK) chunks.push(sha(image.subarray(i, i + CHUNK)));
  const manifest: ReleaseManifest = {
    schema: 'ota.release-manifest/v1',
    release_id: `${ecu}-3.0.0`,
    ecu,
    hardware_ids: [`${ecu}-HW`],
    version: '3.0.0',
    size: image.length,
    sha256: sha(image),
    chunk_size: CHUNK,
    chunks,
    created_at: '2026-11-27T00:00:00.000Z',
  };
  return { manifest, signatures: [] };
}

let n = 0;
/** A BundleDownloads on its own folder (or `dir`), with a fake clock, the transport given and a download budget. */
function members(transport: FakeTransport, opts: { dir?: string; budget?: number } = {}) {
  const dir = opts.dir ?? join(root, `members-${++n}`);
  const runtime = new FakeRuntime();
  const ctx = {
    options: { budgets: { downloadRuns: opts.budget ?? 3 }, retryBackoff: { baseMs: 100, maxMs: 1000 } },
    runtime,
    logger: silentLogger,
    killed: () => false,
    emit: () => {},
    store: { dir },
  } as unknown as AgentContext;
  const downloader = new Downloader(
    transport,
    { maxAttempts: 1, backoff: { baseMs: 1, maxMs: 2 } },
    { runtime, freeSpace: async () => 1024 ** 4 },
  );
  return { dir, runtime, downloads: new BundleDownloads(ctx, downloader, dir, new EcuBases(ctx)) };
}

const source: DownloadSource = { url: async () => 'https://s3.example/member' };
const fetchOf = (d: BundleDownloads, sm: SignedManifest) =>
  d.fetch(sm, new AbortController().signal, () => {}, { update_id: 'campaign#c', source });
const resumeOf = (dir: string) =>
  JSON.parse(readFileSync(join(dir, 'resume.json'), 'utf8')) as {
    runs: number;
    verified: Record<string, number>;
  };

describe('bundle member downloads', { timeout: 60_000 }, () => {
  it('a failed run keeps its resume point; the next run, and a new agent on the same folder, continue after it', async () => {
    const image = randomBytes(6 * CHUNK);
    const sm = signedOf(image, 'bcm');
    // Each answer breaks off two chunks and a bit after where it started; every second one fails outright.
    const offsets: number[] = [];
    const cutting = new FakeTransport((req, i) => {
      const a = rangeAnswer(image, req);
      const start = Number(/bytes=(\d+)-/.exec(req.headers?.range ?? '')?.[1] ?? 0);
      offsets.push(start);
      if (i % 2 === 1) return { status: 503 };
      return { ...a, body: [image.subarray(start, Math.min(image.length, start + 2 * CHUNK + 100))] };
    });
    const first = members(cutting, { budget: 2 });
    await first.downloads.begin('offer-1');
    await assert.rejects(fetchOf(first.downloads, sm), (e) => e instanceof DownloadError && e.resumable);
    assert.deepEqual(
      offsets,
      [0, 2 * CHUNK, 2 * CHUNK, 4 * CHUNK],
      'each run went on where the last stopped',
    );
    assert.deepEqual(resumeOf(first.dir), {
      offer_digest: 'offer-1',
      runs: 2,
      verified: { [sm.manifest.sha256]: 4 * CHUNK },
      // Both runs' bytes, the 100 of each broken chunk included: what the fleet paid for.
      transfer: { [sm.manifest.sha256]: { fetched: 2 * (2 * CHUNK + 100), reused: 0, image: 6 * CHUNK } },
    });

    // A restart: a new instance on the folder, the same offer. It resumes at 4 chunks; the budget it has is spent.
    const rest = new FakeTransport((req) => rangeAnswer(image, req));
    const again = members(rest, { dir: first.dir, budget: 3 });
    await again.downloads.begin('offer-1');
    const file = await fetchOf(again.downloads, sm);
    assert.ok(readFileSync(file).equals(image));
    assert.deepEqual(
      rest.requests.map((r) => r.headers?.range),
      [`bytes=${4 * CHUNK}-${image.length - 1}`],
    );
    // Verified before: checked on disk, not fetched again.
    assert.equal(await fetchOf(again.downloads, sm), file);
    assert.equal(rest.requests.length, 1);
    // What the outcome report carries: every run of the member, across the restart.
    assert.deepEqual(again.downloads.transfer(), { fetched: 6 * CHUNK + 200, reused: 0, image: 6 * CHUNK });
    await again.downloads.clear();
    assert.ok(!existsSync(first.dir), 'the outcome removes every member download');
  });

  it('failed runs spend the budget across restarts; waiting for an unreachable backend spends none', async () => {
    const image = randomBytes(2 * CHUNK);
    const sm = signedOf(image, 'gw');
    const down = new FakeTransport(() => ({ status: 503 }));
    const a = members(down, { budget: 3 });
    await a.downloads.begin('offer-1');
    let unreachable = 3;
    const flaky: DownloadSource = {
      url: async () => {
        if (unreachable-- > 0) throw new RetryLater('unreachable', 'the backend is unreachable');
        return 'https://s3.example/member';
      },
    };
    const run = (d: BundleDownloads) =>
      d.fetch(sm, new AbortController().signal, () => {}, { update_id: 'u', source: flaky });
    await assert.rejects(run(a.downloads), (e) => e instanceof DownloadError && e.failure === 'network');
    assert.equal(down.requests.length, 3, 'three download runs, after three waits for a URL');
    assert.equal(a.runtime.sleeps.length, 3 + 2, 'a wait before each later try');
    assert.equal(resumeOf(a.dir).runs, 3);

    const b = members(down, { dir: a.dir, budget: 4 });
    await b.downloads.begin('offer-1');
    await assert.rejects(
      b.downloads.fetch(sm, new AbortController().signal, () => {}, { update_id: 'u', source }),
    );
    assert.equal(down.requests.length, 4, 'one run left of the budget after the restart');
  });

  it('corrupt bytes are dropped with their resume point, never resumed from', async () => {
    const image = randomBytes(3 * CHUNK);
    const sm = signedOf(image, 'ivi');
    const bad = Buffer.from(image);
    bad[CHUNK + 7] = bad[CHUNK + 7]! ^ 1;
    const t = new FakeTransport((req) => rangeAnswer(bad, req));
    const m = members(t);
    await m.downloads.begin('offer-1');
    await assert.rejects(
      fetchOf(m.downloads, sm),
      (e) => e instanceof DownloadError && e.failure === 'corrupt',
    );
    assert.deepEqual(resumeOf(m.dir).verified, {});
    assert.ok(!existsSync(join(m.dir, `${sm.manifest.sha256}.part`)));
  });

  it("another offer's member downloads are not trusted: begin() drops them", async () => {
    const image = randomBytes(2 * CHUNK);
    const sm = signedOf(image, 'gw');
    const t = new FakeTransport((req) => rangeAnswer(image, req));
    const m = members(t);
    await m.downloads.begin('offer-1');
    await fetchOf(m.downloads, sm);
    writeFileSync(join(m.dir, 'stray.part'), 'left behind');
    await m.downloads.begin('offer-2');
    assert.ok(!existsSync(join(m.dir, 'stray.part')));
    await fetchOf(m.downloads, sm);
    assert.equal(t.requests.length, 2, 'fetched again for the other offer');
  });
});
