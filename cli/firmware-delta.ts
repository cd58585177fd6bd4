/**
 * `ota firmware sign --delta-from <version>=<image>`: precomputed deltas (protocol/delta.ts) appended to the
 * compressed object after the frame table and listed in the manifest before it is signed. Built at publish because
 * that is where both images and the release key are: the backend never reads images to build anything, and the
 * delta is covered by the release signature like the frame table.
 */
import { createReadStream, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { ReleaseManifest } from '../protocol/manifest.js';
import { UsageError } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';
import { checkVersion } from './inputs.js';

export interface DeltaBaseFile {
  readonly version: string;
  readonly path: string;
  readonly size: number;
}

export function parseDeltaFrom(
  ctx: Context,
  values: readonly string[],
  compressed: boolean,
): DeltaBaseFile[] {
  if (values.length > 0 && !compressed) throw new UsageError('--delta-from needs --compressed-out');
  const bases = values.map((raw) => {
    const eq = raw.indexOf('=');
    if (eq < 1 || eq === raw.length - 1)
      throw new UsageError(`--delta-from ${raw}: expected <version>=<image file>`);
    const version = checkVersion(raw.slice(0, eq), '--delta-from version');
    const path = ctx.path(raw.slice(eq + 1));
    let size: number;
    try {
      size = statSync(path).size;
    } catch (err) {
      throw new CliError(
        `cannot read the base image ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
    if (size < 1) throw new CliError(`the base image ${path} is empty`);
    return { version, path, size };
  });
  const twice = bases.find((b, i) => bases.findIndex((o) => o.version === b.version) !== i);
  if (twice) throw new UsageError(`--delta-from ${twice.version} is given twice`);
  return bases;
}

/** Appends one delta per base to the compressed object; answers the compression with its deltas listed. */
export async function appendDeltas(
  ctx: Context,
  objectPath: string,
  imagePath: string,
  compression: NonNullable<ReleaseManifest['compression']>,
  bases: readonly DeltaBaseFile[],
  image: { chunkSize: number; sha256: string },
): Promise<NonNullable<ReleaseManifest['compression']>> {
  const [{ writeDelta }, { loadDictCodec }] = await Promise.all([
    import('../protocol/delta-publisher.js'),
    import('../protocol/delta.js'),
  ]);
  const codec = await loadDictCodec();
  const out = await open(objectPath, 'a');
  const deltas: NonNullable<ReleaseManifest['compression']>['deltas'] = [];
  let offset = compression.object_size;
  try {
    for (const b of bases) {
      ctx.io.stderr.write(`delta from ${b.version} (${b.path})\n`);
      const baseFile = await open(b.path, 'r');
      try {
        const entry = await writeDelta(
          () => createReadStream(imagePath, { highWaterMark: 1024 * 1024, signal: ctx.signal }),
          {
            version: b.version,
            size: b.size,
            stream: () => createReadStream(b.path, { highWaterMark: 1024 * 1024, signal: ctx.signal }),
            read: async (at, length) => {
              const buf = Buffer.alloc(length);
              const { bytesRead } = await baseFile.read(buf, 0, length, at);
              if (bytesRead !== length) throw new CliError(`${b.path} changed while it was read`);
              return buf;
            },
          },
          { chunkSize: image.chunkSize, codec, offset },
          async (data) => {
            await out.write(data);
          },
        );
        if (entry.base_sha256 === image.sha256) {
          throw new CliError(`--delta-from ${b.version} is the image being signed`);
        }
        const { frames: _f, rawFrames: _r, ...listed } = entry;
        deltas.push(listed);
        offset += entry.size;
      } finally {
        await baseFile.close();
      }
    }
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    if (err instanceof CliError) throw err;
    throw new CliError(`building a delta failed: ${(err as Error).message}`);
  } finally {
    await out.close();
  }
  return { ...compression, object_size: offset, deltas };
}
