/** `ota firmware sign|upload|publish|list|show`: signed release manifests and their images. */
import { createReadStream, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReleaseManifest } from '../protocol/manifest.js';
import type { ReleaseCreated } from '../protocol/operator-responses.js';
import { PAGE_LIMITS } from '../protocol/routes.js';
import { MAX_FRAME_WINDOW, releaseManifestSchema, signedManifestSchema } from '../protocol/schemas.js';
import { numberOption, requireString, stringList, stringOption, UsageError } from './args.js';
import type { Context } from './context.js';
import { CliError, readTextFile } from './errors.js';
import { appendDeltas, parseDeltaFrom } from './firmware-delta.js';
import { checkReleaseId, parseByteSize, parseChunkSize } from './inputs.js';
import { Progress } from './progress.js';
import { type ReleaseSummary, type ReleaseView, releaseRows, renderRelease } from './render.js';
import { uploadImage } from './upload.js';

const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
const PLACEHOLDER_DIGEST = '0'.repeat(64);

function imageFile(ctx: Context): { path: string; size: number } {
  const path = ctx.path(ctx.args.positionals[0]!);
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(path);
  } catch (err) {
    throw new CliError(`cannot read the image ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!stat.isFile()) throw new CliError(`${path} is not a file`);
  if (stat.size === 0) throw new CliError(`${path} is empty`);
  return { path, size: stat.size };
}

const MANIFEST_FLAGS: Record<string, string> = {
  release_id: '--release-id',
  ecu: '--ecu',
  hardware_ids: '--hardware-id',
  version: '--version',
  chunk_size: '--chunk-size',
};

/** Checks the manifest fields that come from flags, before hashing a possibly large image. */
function checkManifestFlags(m: ReleaseManifest): void {
  const r = releaseManifestSchema.safeParse(m);
  if (r.success) return;
  const issue = r.error.issues[0]!;
  const field = String(issue.path[0] ?? '');
  const flag = MANIFEST_FLAGS[field];
  if (!flag) return;
  const index = issue.path[1];
  const given = typeof index === 'number' ? ` '${m.hardware_ids[index]}'` : '';
  throw new UsageError(`${flag}${given} ${issue.message}`);
}

export async function sign(ctx: Context): Promise<void> {
  const v = ctx.args.values;
  const hardwareIds = stringList(v, 'hardware-id');
  const duplicate = hardwareIds.find((h, i) => hardwareIds.indexOf(h) !== i);
  if (duplicate) throw new UsageError(`--hardware-id ${duplicate} is given twice`);
  const chunkSize = parseChunkSize(stringOption(v, 'chunk-size'), DEFAULT_CHUNK_SIZE);
  const draft: ReleaseManifest = {
    schema: 'ota.release-manifest/v1',
    release_id: checkReleaseId(requireString(v, 'release-id')),
    ecu: requireString(v, 'ecu'),
    hardware_ids: hardwareIds,
    version: requireString(v, 'version'),
    size: 1,
    sha256: PLACEHOLDER_DIGEST,
    chunk_size: chunkSize,
    chunks: [PLACEHOLDER_DIGEST],
    created_at: new Date().toISOString(),
  };
  checkManifestFlags(draft);
  const keyFile = ctx.path(requireString(v, 'key'));
  const out = ctx.path(requireString(v, 'out'));
  const image = imageFile(ctx);

  const compressedOut = stringOption(v, 'compressed-out');
  const level = numberOption(v, 'compression-level', { integer: true, min: 1, max: 19 }) ?? 19;
  const window = parseFrameWindow(stringOption(v, 'frame-window'), compressedOut !== undefined);
  let deltaBases = parseDeltaFrom(ctx, stringList(v, 'delta-from'), compressedOut !== undefined);
  const deltaAuto = stringOption(v, 'delta-auto');
  if (deltaAuto !== undefined) {
    if (compressedOut === undefined) throw new UsageError('--delta-auto needs --compressed-out');
    const { autoDeltaBases } = await import('./firmware-bases.js');
    const release = { ecu: draft.ecu, version: draft.version, hardwareIds };
    deltaBases = [...deltaBases, ...(await autoDeltaBases(ctx, ctx.path(deltaAuto), release, deltaBases))];
  }
  const [{ ImageHasher, signManifest }, { KeyFileSigner, keyIdOf }] = await Promise.all([
    import('../protocol/manifest.js'),
    import('../protocol/signatures.js'),
  ]);
  const keyPem = readTextFile(keyFile, 'the release key');
  let signer: InstanceType<typeof KeyFileSigner>;
  try {
    signer = new KeyFileSigner(keyPem);
  } catch {
    throw new CliError(
      `${keyFile} is not an ECDSA P-256 private key (PEM); make one with: ota keys create --out <dir>`,
    );
  }

  const expectedChunks = Math.ceil(image.size / chunkSize);
  if (expectedChunks > 8192) {
    throw new UsageError(
      `the image needs ${expectedChunks} chunks of ${chunkSize} bytes; a manifest lists at most 8192: use a larger --chunk-size`,
    );
  }
  const progress = new Progress(ctx.io.stderr, `hashing ${basename(image.path)}`, image.size, {
    quiet: ctx.json,
  });
  const stream = createReadStream(image.path, { highWaterMark: 1024 * 1024 });
  const counted = (async function* () {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      progress.add(chunk.length);
      yield chunk;
    }
  })();
  ctx.signal.addEventListener('abort', () => stream.destroy(ctx.signal.reason as Error), { once: true });
  const hasher = new ImageHasher(chunkSize);
  const hashed = (async function* () {
    for await (const chunk of counted) {
      hasher.update(chunk);
      yield chunk;
    }
  })();
  let digest: ReturnType<typeof hasher.digest>;
  let compression: ReleaseManifest['compression'];
  try {
    if (compressedOut === undefined) {
      for await (const _ of hashed);
    } else {
      compression = await writeCompressed(ctx.path(compressedOut), hashed, chunkSize, level, window);
    }
    digest = hasher.digest();
    if (compression && deltaBases.length > 0) {
      compression = await appendDeltas(ctx, ctx.path(compressedOut!), image.path, compression, deltaBases, {
        chunkSize,
        sha256: digest.sha256,
      });
    }
  } catch (err) {
    progress.finish(false);
    if (ctx.signal.aborted) throw ctx.signal.reason;
    if (err instanceof CliError) throw err;
    throw new CliError(`reading ${image.path} failed: ${(err as Error).message}`);
  }
  progress.finish();
  if (digest.size !== image.size)
    throw new CliError(`${image.path} changed while it was read; sign it again`);

  const manifest: ReleaseManifest = {
    ...draft,
    size: digest.size,
    sha256: digest.sha256,
    chunks: digest.chunks,
    created_at: new Date().toISOString(),
    ...(compression ? { compression } : {}),
  };
  const r = releaseManifestSchema.safeParse(manifest);
  if (!r.success) throw new CliError(`the manifest is not valid: ${r.error.issues[0]?.message ?? 'invalid'}`);
  const signed = await signManifest(manifest, [signer]);
  try {
    writeFileSync(out, `${JSON.stringify(signed, null, 2)}\n`);
  } catch (err) {
    throw new CliError(`cannot write ${out}: ${(err as Error).message}`);
  }
  const keyId = keyIdOf(await signer.publicKeyPem());
  ctx.printJson({
    release_id: manifest.release_id,
    version: manifest.version,
    ecu: manifest.ecu,
    size: manifest.size,
    sha256: manifest.sha256,
    chunk_size: manifest.chunk_size,
    chunks: manifest.chunks.length,
    key_id: keyId,
    manifest_file: out,
    ...(compression
      ? { compressed_file: ctx.path(compressedOut!), compressed_size: compression.object_size }
      : {}),
    ...(compression?.deltas
      ? { deltas: compression.deltas.map((d) => ({ from_version: d.from_version, size: d.size })) }
      : {}),
  });
  ctx.print(
    [
      `signed ${manifest.release_id} (${manifest.ecu} ${manifest.version}) with key ${keyId}`,
      `  image     ${formatImage(manifest)}`,
      `  sha256    ${manifest.sha256}`,
      `  manifest  ${ctx.display(out)}`,
      ...(compression
        ? [
            `  upload    ${ctx.display(ctx.path(compressedOut!))} (${compression.object_size} bytes, ` +
              `${((compression.object_size * 100) / manifest.size).toFixed(1)}% of the image)`,
          ]
        : []),
      ...(compression?.deltas ?? []).map(
        (d) =>
          `  delta     from ${d.from_version}: ${d.size} bytes (${((d.size * 100) / manifest.size).toFixed(1)}% of the image)`,
      ),
    ].join('\n'),
  );
}

/** Writes the compressed object (frames.ts) while the image is hashed: one read of the image. */
async function writeCompressed(
  path: string,
  image: AsyncIterable<Uint8Array>,
  chunkSize: number,
  level: number,
  window: number | undefined,
): Promise<NonNullable<ReleaseManifest['compression']>> {
  const [{ writeFramedObject }, { loadZstd }, { loadDictCodec }] = await Promise.all([
    import('../protocol/frame-publisher.js'),
    import('../protocol/zstd.js'),
    import('../protocol/delta.js'),
  ]);
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, 'w');
  } catch (err) {
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`);
  }
  try {
    const framed = await writeFramedObject(
      image,
      {
        chunkSize,
        level,
        codec: await loadZstd(),
        ...(window ? { window, dictCodec: await loadDictCodec() } : {}),
      },
      async (data) => {
        await fh.write(data);
      },
    );
    return framed.compression;
  } finally {
    await fh.close();
  }
}

function formatImage(m: ReleaseManifest): string {
  return `${m.size} bytes, ${m.chunks.length} chunk(s) of ${m.chunk_size}`;
}

function readManifest(path: string) {
  const text = readTextFile(path, 'the manifest');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CliError(`${path} is not JSON`);
  }
  const r = signedManifestSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new CliError(
      `${path} is not a signed release manifest: ${issue.path.join('.') || 'document'}: ${issue.message}`,
    );
  }
  return r.data;
}

export async function upload(ctx: Context): Promise<void> {
  const manifestFile = ctx.path(requireString(ctx.args.values, 'manifest'));
  const concurrency = numberOption(ctx.args.values, 'concurrency', { integer: true, min: 1, max: 16 }) ?? 4;
  const signed = readManifest(manifestFile);
  const image = imageFile(ctx);
  const m = signed.manifest;
  const stored = m.compression?.object_size ?? m.size;
  if (image.size !== stored) {
    throw new CliError(
      m.compression
        ? `${image.path} is ${image.size} bytes but the manifest describes a compressed object of ${stored}: ` +
            'upload the --compressed-out file that firmware sign wrote'
        : `${image.path} is ${image.size} bytes but the manifest describes ${m.size}: wrong image or manifest`,
    );
  }
  const api = await ctx.api();
  const created = await api.post<ReleaseCreated>('/releases', signed);
  const target = created.upload;
  ctx.print(
    `created ${created.release_id} (${created.ecu} ${created.version}); uploading ${image.size} bytes` +
      (target.method === 'MULTIPART' ? ` in ${target.parts.length} parts` : ''),
  );
  const progress = new Progress(ctx.io.stderr, `uploading ${created.release_id}`, image.size, {
    quiet: ctx.json,
  });
  let publishBody: Awaited<ReturnType<typeof uploadImage>>;
  let uploaded = false;
  try {
    publishBody = await uploadImage({
      file: image.path,
      size: image.size,
      target,
      agent: ctx.agent(concurrency),
      signal: ctx.signal,
      concurrency,
      onProgress: (n) => progress.add(n),
    });
    uploaded = true;
  } finally {
    progress.finish(uploaded);
  }
  ctx.print(`verifying and publishing ${created.release_id}...`);
  const published = await publishAndWait(ctx, api, created.release_id, publishBody);
  ctx.printJson(published);
  ctx.print(
    `published ${published.release_id}: ${published.ecu} ${published.version}, sha256 ${published.sha256}`,
  );
}

/**
 * POST /releases/{id}/publish answers at once (202) while a background job verifies the stored image; this follows
 * the job on GET /releases/{id}, with its bytes verified as a progress bar, until the release is published. A
 * failed verification is an error with the backend's reason.
 */
async function publishAndWait(
  ctx: Context,
  api: Awaited<ReturnType<Context['api']>>,
  id: string,
  body: unknown,
): Promise<ReleaseView> {
  const path = `/releases/${encodeURIComponent(id)}`;
  let release = await api.post<ReleaseView>(`${path}/publish`, body);
  const progress = new Progress(ctx.io.stderr, `verifying ${id}`, release.size, { quiet: ctx.json });
  let shown = 0;
  try {
    while (release.status === 'verifying') {
      const done = release.verification?.bytes_verified ?? 0;
      progress.add(done - shown);
      shown = done;
      await sleep(1000, undefined, { signal: ctx.signal });
      release = await api.get<ReleaseView>(path);
    }
    if (release.status === 'published') progress.add(release.size - shown);
  } finally {
    progress.finish(release.status === 'published');
  }
  if (release.status !== 'published') {
    throw new CliError(`${id} was not published: ${release.failure_reason ?? release.status}`);
  }
  return release;
}

export async function publish(ctx: Context): Promise<void> {
  const id = ctx.args.positionals[0]!;
  const api = await ctx.api();
  const published = await publishAndWait(ctx, api, id, {});
  ctx.printJson(published);
  ctx.print(`${published.release_id} is ${published.status} (${published.ecu} ${published.version})`);
}

export async function withdraw(ctx: Context): Promise<void> {
  const id = ctx.args.positionals[0]!;
  const reason = stringOption(ctx.args.values, 'reason');
  const api = await ctx.api();
  const withdrawn = await api.post<ReleaseView & { campaigns_cancelled: number; updates_withdrawn: number }>(
    `/releases/${encodeURIComponent(id)}/withdraw`,
    reason === undefined ? {} : { reason },
  );
  ctx.printJson(withdrawn);
  ctx.print(
    `${withdrawn.release_id} is ${withdrawn.status}: ${withdrawn.campaigns_cancelled} campaign(s) cancelled, ` +
      `${withdrawn.updates_withdrawn} open update(s) withdrawn`,
  );
}

export async function list(ctx: Context): Promise<void> {
  const api = await ctx.api();
  const { items } = await api.getAll<ReleaseSummary>('/releases', 'releases', {
    limit: numberOption(ctx.args.values, 'limit', { integer: true, min: 1, max: PAGE_LIMITS.max }),
  });
  ctx.printJson({ releases: items });
  ctx.print(releaseRows(items).join('\n'));
}

export async function show(ctx: Context): Promise<void> {
  const api = await ctx.api();
  const release = await api.get<ReleaseView>(`/releases/${encodeURIComponent(ctx.args.positionals[0]!)}`);
  ctx.printJson(release);
  ctx.print(renderRelease(release).join('\n'));
}

/** --frame-window: windowed frames (protocol/frame-window.ts), 4 KiB up to MAX_FRAME_WINDOW. */
function parseFrameWindow(raw: string | undefined, compressed: boolean): number | undefined {
  if (raw === undefined) return undefined;
  if (!compressed) throw new UsageError('--frame-window needs --compressed-out');
  const n = parseByteSize(raw, '--frame-window');
  if (n < 4096 || n > MAX_FRAME_WINDOW) {
    throw new UsageError(
      `--frame-window must be between 4KiB and ${MAX_FRAME_WINDOW / 1024 ** 2}MiB (got '${raw}')`,
    );
  }
  return n;
}
