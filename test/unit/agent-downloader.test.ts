/** The downloader against an in-memory transport: ranges, resume, corrupt chunks, expiry, hard size stop, space. */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ReleaseManifest } from '../../protocol/manifest.js';
import { Downloader, type DownloadJob } from '../../vehicle/downloader.js';
import { DownloadError } from '../../vehicle/errors.js';
import { TransportError } from '../../vehicle/http-transport.js';
import { verifyImageFile } from '../../vehicle/image-file.js';
import { FakeRuntime, FakeTransport, pieces, rangeAnswer } from '../support/agent-fakes.js';

const CHUNK = 64 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'agent-dl-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(dir, { recursive: true, force: true }), HOOK_TIMEOUT);

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
function manifestOf(image: Buffer): ReleaseManifest {
  const chunks: string[] = [];
  for (let i = 0; i < image.length; i += CHUNK) chunks.push(sha(image.subarray(i, i + CHUNK)));
  return {
    schema: 'ota.release-manifest/v1',
    release_id: 'tcu-2.0.0',
    ecu: 'tcu',
    hardware_ids: ['TCU-HW-1'],
    version: '2.0.0',
    size: image.length,
    sha256: sha(image),
    chunk_size: CHUNK,
    chunks,
    created_at: '2026-11-27T00:00:00.000Z',
  };
}

let n = 0;
function job(
  image: Buffer,
  extra: Partial<DownloadJob> = {},
): DownloadJob & { offsets: number[]; urls: boolean[] } {
  const offsets: number[] = [];
  const urls: boolean[] = [];
  return {
    manifest: manifestOf(image),
    file: join(dir, `image-${++n}.part`),
    verifiedBytes: 0,
    source: {
      url: async (refresh) => {
        urls.push(refresh);
        return `https://s3.example/obj?v=${urls.length}`;
      },
    },
    signal: new AbortController().signal,
    onRequest: (r) => offsets.push(r.offset),
    offsets,
    urls,
    ...extra,
  };
}

const plenty = async () => 1024 ** 4;
const make = (t: FakeTransport, opts = {}) =>
  new Downloader(
    t,
    { backoff: { baseMs: 1, maxMs: 2 }, ...opts },
    { runtime: new FakeRuntime(), freeSpace: plenty },
  );

describe('Downloader', { timeout: 60_000 }, () => {
  it('fetches chunk-aligned ranges into the file and verifies every chunk', async () => {
    const image = randomBytes(5 * CHUNK + 123);
    const t = new FakeTransport((req) => rangeAnswer(image, req));
    const j = job(image);
    const stats = await make(t, { requestBytes: 2 * CHUNK + 5 }).download(j);
    assert.deepEqual(j.offsets, [0, 2 * CHUNK, 4 * CHUNK], 'windows rounded to whole chunks');
    assert.deepEqual(
      t.requests.map((r) => r.headers?.range),
      ['bytes=0-131071', 'bytes=131072-262143', 'bytes=262144-327802'],
    );
    assert.ok(readFileSync(j.file).equals(image), 'file holds the image');
    assert.equal(stats.bytesReceived, image.length);
    assert.equal(stats.sha256, sha(image));
    assert.deepEqual(await verifyImageFile(j.file, j.manifest), []);
  });

  it('resumes after the verified prefix and cuts whatever unverified tail the file had', async () => {
    const image = randomBytes(4 * CHUNK);
    const j = job(image, { verifiedBytes: 2 * CHUNK + 500 });
    writeFileSync(j.file, Buffer.concat([image.subarray(0, 2 * CHUNK), randomBytes(5000)]));
    const checkpoints: number[] = [];
    const t = new FakeTransport((req) => rangeAnswer(image, req));
    const stats = await make(t).download({ ...j, onCheckpoint: async (v) => void checkpoints.push(v) });
    assert.deepEqual(j.offsets, [2 * CHUNK], 'starts at the last whole verified chunk');
    assert.equal(stats.resumedFrom, 2 * CHUNK);
    assert.ok(readFileSync(j.file).equals(image));
    assert.equal(checkpoints.at(-1), image.length, 'the final resume point is the whole image');
  });

  it('resumes from the last intact chunk when the file is shorter than its checkpoint claims', async () => {
    const image = randomBytes(3 * CHUNK);
    const j = job(image, { verifiedBytes: 2 * CHUNK });
    writeFileSync(j.file, image.subarray(0, CHUNK + 100));
    const t = new FakeTransport((req) => rangeAnswer(image, req));
    const stats = await make(t).download(j);
    assert.deepEqual(j.offsets, [CHUNK]);
    assert.equal(stats.resumedFrom, CHUNK);
    assert.ok(readFileSync(j.file).equals(image));
    assert.equal(stats.sha256, sha(image));
  });

  it('re-verifies the checkpointed prefix on disk: pages lost or damaged before a power cut are fetched again', async () => {
    const image = randomBytes(4 * CHUNK);
    const j = job(image, { verifiedBytes: 3 * CHUNK });
    const damaged = Buffer.from(image.subarray(0, 3 * CHUNK));
    damaged.fill(0, CHUNK + 4096, CHUNK + 8192); // a page that never reached the disk
    writeFileSync(j.file, damaged);
    const t = new FakeTransport((req) => rangeAnswer(image, req));
    const stats = await make(t).download(j);
    assert.deepEqual(j.offsets, [CHUNK], 'resumes at the damaged chunk, keeps the intact one before it');
    assert.equal(stats.resumedFrom, CHUNK);
    assert.ok(readFileSync(j.file).equals(image));
    assert.equal(stats.sha256, sha(image), 'the whole-image digest covers the re-read prefix too');
  });

  it('answers the whole-image SHA-256 of what it wrote, also across corrupt chunks and cut responses', async () => {
    const image = randomBytes(4 * CHUNK + 7);
    const bad = Buffer.from(image);
    bad[2 * CHUNK + 3] = bad[2 * CHUNK + 3]! ^ 1;
    let calls = 0;
    const t = new FakeTransport((req) => {
      calls++;
      // 1st answer: cut in the middle of chunk 1; 2nd: chunk 2 corrupt; then the true bytes.
      if (calls === 1) return { ...rangeAnswer(image, req), body: pieces(image.subarray(0, CHUNK + 999)) };
      return rangeAnswer(calls === 2 ? bad : image, req);
    });
    const j = job(image);
    const stats = await make(t).download(j);
    assert.equal(stats.corruptChunks, 1);
    assert.ok(readFileSync(j.file).equals(image));
    assert.equal(stats.sha256, sha(image));
    // The same bytes with a manifest whose whole digest differs: the streamed digest tells them apart.
    assert.notEqual(stats.sha256, sha(bad));
  });

  it('re-fetches a corrupt chunk from its start, and gives up after the budget', async () => {
    const image = randomBytes(3 * CHUNK);
    const bad = Buffer.from(image);
    bad[CHUNK + 10] = bad[CHUNK + 10]! ^ 1;
    let corruptions = 1;
    const t = new FakeTransport((req, i) => rangeAnswer(i === 0 && corruptions-- > 0 ? bad : image, req));
    const j = job(image);
    const stats = await make(t).download(j);
    assert.deepEqual(j.offsets, [0, CHUNK], 'the second request starts at the corrupt chunk');
    assert.equal(stats.corruptChunks, 1);
    assert.ok(readFileSync(j.file).equals(image));

    const always = new FakeTransport((req) => rangeAnswer(bad, req));
    const j2 = job(image);
    await assert.rejects(make(always, { chunkRetries: 2 }).download(j2), (err: unknown) => {
      assert.ok(err instanceof DownloadError, String(err));
      assert.equal(err.failure, 'corrupt');
      assert.match(err.message, /chunk 1 failed verification 3 times/);
      return true;
    });
    assert.equal(statSync(j2.file).size, CHUNK, 'only the verified chunk stays on disk');
  });

  it('asks for a fresh URL on 403 and continues at the same offset', async () => {
    const image = randomBytes(3 * CHUNK);
    const t = new FakeTransport((req) =>
      req.url.endsWith('v=1') && req.headers?.range !== 'bytes=0-65535'
        ? { status: 403 }
        : rangeAnswer(image, req),
    );
    const j = job(image);
    await make(t, { requestBytes: CHUNK }).download(j);
    assert.deepEqual(j.urls, [false, true], 'one refresh');
    assert.deepEqual(j.offsets, [0, CHUNK, CHUNK, 2 * CHUNK]);
    assert.ok(readFileSync(j.file).equals(image));
  });

  it('gives up when fresh URLs keep being refused', async () => {
    const image = randomBytes(CHUNK);
    const t = new FakeTransport(() => ({ status: 403 }));
    await assert.rejects(
      make(t, { maxUrlRefreshes: 2 }).download(job(image)),
      (err: unknown) => err instanceof DownloadError && err.failure === 'forbidden',
    );
  });

  it('never reads past the signed size: an endless 200 response is cut there', async () => {
    const image = randomBytes(2 * CHUNK + 7);
    const t = new FakeTransport(() => ({
      status: 200,
      body: function* () {
        yield* pieces(image);
        for (;;) yield randomBytes(16 * 1024);
      },
    }));
    const j = job(image);
    await make(t).download(j);
    assert.equal(statSync(j.file).size, image.length);
    assert.ok(
      t.delivered <= image.length + 16 * 1024,
      `read at most one piece beyond the size (${t.delivered})`,
    );
    assert.equal(t.aborted[0], true, 'the response was cut');
  });

  it('skips the verified prefix when a server ignores Range', async () => {
    const image = randomBytes(3 * CHUNK);
    const j = job(image, { verifiedBytes: CHUNK });
    writeFileSync(j.file, image.subarray(0, CHUNK));
    const t = new FakeTransport(() => ({
      status: 200,
      headers: { 'content-length': String(image.length) },
      body: pieces(image, 10_000),
    }));
    await make(t).download(j);
    assert.ok(readFileSync(j.file).equals(image));
  });

  it('refuses an object smaller than the manifest, and unusable answers, without retrying', async () => {
    const image = randomBytes(2 * CHUNK);
    const short = new FakeTransport(() => ({
      status: 200,
      headers: { 'content-length': String(CHUNK) },
      body: image.subarray(0, CHUNK),
    }));
    await assert.rejects(
      make(short).download(job(image)),
      (e: unknown) => e instanceof DownloadError && e.failure === 'bad_response',
    );
    const missing = new FakeTransport(() => ({ status: 404 }));
    await assert.rejects(
      make(missing).download(job(image)),
      (e: unknown) => e instanceof DownloadError && e.failure === 'bad_response',
    );
    assert.equal(missing.requests.length, 1);
  });

  it('saves the bytes a failing run fetched with its last checkpoint, also a run that verified nothing', async () => {
    const image = randomBytes(3 * CHUNK);
    // The first response is cut 1000 bytes into the second chunk; every later one fails (the network is gone).
    const t = new FakeTransport((req, i) =>
      i === 0 ? { ...rangeAnswer(image, req), body: [image.subarray(0, CHUNK + 1000)] } : { status: 503 },
    );
    const saved: { at: number; received: number; reused: number }[] = [];
    const j = job(image, {
      onCheckpoint: async (at, run) =>
        void saved.push({ at, received: run.bytesReceived, reused: run.bytesReused }),
    });
    await assert.rejects(make(t, { maxAttempts: 2 }).download(j), DownloadError);
    assert.deepEqual(saved.at(-1), { at: CHUNK, received: CHUNK + 1000, reused: 0 });
    assert.equal(t.delivered, CHUNK + 1000, 'every byte delivered is counted');

    // The next run verifies nothing before it fails: its bytes are saved anyway, at the same resume point.
    const again = new FakeTransport((req) => ({
      ...rangeAnswer(image, req),
      body: [image.subarray(CHUNK, CHUNK + 500)],
    }));
    const next: { at: number; received: number }[] = [];
    await assert.rejects(
      make(again, { maxAttempts: 1 }).download({
        ...j,
        verifiedBytes: CHUNK,
        onCheckpoint: async (at, run) => void next.push({ at, received: run.bytesReceived }),
      }),
      DownloadError,
    );
    assert.deepEqual(next, [{ at: CHUNK, received: 500 }]);
  });

  it('takes a connection cut mid-body (the transport error) as a failed attempt and resumes after what verified', async () => {
    const image = randomBytes(4 * CHUNK);
    // The first response breaks off 1000 bytes into chunk 2 the way a real socket does: the body throws.
    const t = new FakeTransport((req, i) =>
      i === 0
        ? {
            ...rangeAnswer(image, req),
            body: function* () {
              yield* pieces(image.subarray(0, 2 * CHUNK + 1000));
              throw new TransportError(
                'connection_closed',
                'the connection closed before the whole body arrived',
              );
            },
          }
        : rangeAnswer(image, req),
    );
    const j = job(image);
    const stats = await make(t, { maxAttempts: 1 }).download(j);
    assert.deepEqual(j.offsets, [0, 2 * CHUNK], 'the second request starts after the verified chunks');
    assert.ok(readFileSync(j.file).equals(image));
    assert.equal(stats.sha256, sha(image));
    assert.equal(stats.bytesReceived, image.length + 1000, 'only the unverified tail was fetched twice');
  });

  it('retries server errors with backoff and gives up after the attempt budget', async () => {
    const image = randomBytes(CHUNK);
    const runtime = new FakeRuntime();
    const t = new FakeTransport(() => ({ status: 503 }));
    const d = new Downloader(
      t,
      { maxAttempts: 3, backoff: { baseMs: 100, maxMs: 1000 } },
      { runtime, freeSpace: plenty },
    );
    await assert.rejects(
      d.download(job(image)),
      (e: unknown) =>
        e instanceof DownloadError && e.failure === 'network' && /gave up after 3/.test(e.message),
    );
    assert.equal(t.requests.length, 3);
    assert.deepEqual(runtime.sleeps, [50, 100], 'exponential backoff with jitter (random 0.5)');
  });

  it('stops at the overall deadline', async () => {
    const image = randomBytes(CHUNK);
    const runtime = new FakeRuntime();
    const t = new FakeTransport(() => ({ status: 503 }));
    const d = new Downloader(
      t,
      { maxAttempts: 1000, deadlineMs: 10_000, backoff: { baseMs: 4000, maxMs: 4000 } },
      { runtime, freeSpace: plenty },
    );
    await assert.rejects(
      d.download(job(image)),
      (e: unknown) => e instanceof DownloadError && e.failure === 'deadline',
    );
    assert.ok(t.requests.length <= 6, `stopped after ${t.requests.length} requests`);
  });

  it('checks free space before writing anything', async () => {
    const image = randomBytes(2 * CHUNK);
    const t = new FakeTransport((req) => rangeAnswer(image, req));
    const d = new Downloader(
      t,
      { reserveBytes: 1000 },
      { runtime: new FakeRuntime(), freeSpace: async () => image.length },
    );
    const j = job(image);
    await assert.rejects(
      d.download(j),
      (e: unknown) => e instanceof DownloadError && e.failure === 'no_space',
    );
    assert.equal(t.requests.length, 0, 'nothing requested');
    assert.equal(statSync(j.file).size, 0);
  });

  it('verifyImageFile reports a changed byte and a wrong size', async () => {
    const image = randomBytes(2 * CHUNK + 1);
    const m = manifestOf(image);
    const file = join(dir, 'verify.img');
    const changed = Buffer.from(image);
    changed[CHUNK + 1] = changed[CHUNK + 1]! ^ 0x80;
    writeFileSync(file, changed);
    const problems = await verifyImageFile(file, m);
    assert.ok(
      problems.some((p) => /SHA-256/.test(p)),
      problems.join('; '),
    );
    assert.ok(
      problems.some((p) => /first at chunk 1/.test(p)),
      problems.join('; '),
    );
    writeFileSync(file, image.subarray(0, image.length - 1));
    assert.ok((await verifyImageFile(file, m)).some((p) => /size/.test(p)));
    writeFileSync(file, image);
    assert.deepEqual(await verifyImageFile(file, m), []);
  });
});
