/**
 * Which bases deserve a precomputed delta: the installed versions of the release's ECU among the vehicles a
 * campaign of it would target (GET /fleet/versions, walked segment by segment and page by page), the most common
 * first until they cover enough of the fleet. `ota firmware sign --delta-auto <dir>` builds deltas from the images
 * of those versions found in <dir>; a vehicle on any other base falls back to chunk reuse. `ota vehicles versions`
 * prints the same distribution.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { InstalledVersions } from '../protocol/fleet-view.js';
import type { ReleaseSummary } from '../protocol/operator-responses.js';
import { compareVersions } from '../protocol/versions.js';
import { numberOption, requireString, stringList, stringOption, UsageError } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';
import type { DeltaBaseFile } from './firmware-delta.js';
import { checkVersion } from './inputs.js';

type Api = Awaited<ReturnType<Context['api']>>;

export interface VersionQuery {
  readonly ecu: string;
  readonly hardwareIds: readonly string[];
  readonly model?: string;
  /** Vehicles at or above this version are not targets. */
  readonly below?: string;
}

/** Scan segments walked at once: a million vehicles is ~2,000 pages, ~125 per segment. */
const SEGMENTS = 8;

/** Vehicles per installed version, most first, over the whole registry. */
export async function installedVersions(
  api: Api,
  q: VersionQuery,
  segments = SEGMENTS,
): Promise<{ version: string; vehicles: number }[]> {
  const counts = new Map<string, number>();
  await Promise.all(
    Array.from({ length: segments }, async (_, segment) => {
      let token: string | undefined;
      do {
        const page = await api.get<InstalledVersions>('/fleet/versions', {
          ecu: q.ecu,
          hardware_ids: q.hardwareIds.length > 0 ? q.hardwareIds.join(',') : undefined,
          model: q.model,
          below: q.below,
          segment,
          segments,
          next_token: token,
        });
        for (const v of page.versions) counts.set(v.version, (counts.get(v.version) ?? 0) + v.vehicles);
        token = page.next_token ?? undefined;
      } while (token);
    }),
  );
  return [...counts]
    .map(([version, vehicles]) => ({ version, vehicles }))
    .sort((a, b) => b.vehicles - a.vehicles || compareVersions(b.version, a.version));
}

/**
 * The most common versions, at most `top`, until they cover `cover` (0-1) of the targets: each delta costs a build
 * at publish and object bytes, and a rare base loses little on chunk reuse.
 */
export function chooseBases(
  versions: readonly { version: string; vehicles: number }[],
  opts: { top: number; cover: number },
): { version: string; vehicles: number }[] {
  const total = versions.reduce((n, v) => n + v.vehicles, 0);
  const chosen: { version: string; vehicles: number }[] = [];
  let covered = 0;
  for (const v of versions) {
    if (chosen.length >= opts.top || covered >= opts.cover * total) break;
    chosen.push(v);
    covered += v.vehicles;
  }
  return chosen;
}

/** The image of `version` in `dir`: a file named `<version>` or `<ecu>-<version>`, with any one extension. */
export function findBaseImage(dir: string, ecu: string, version: string): string | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new CliError(`cannot read the base images folder ${dir} (${(err as NodeJS.ErrnoException).code})`);
  }
  const wanted = new Set([version, `${ecu}-${version}`]);
  const name = names.find((n) => wanted.has(n) || wanted.has(n.slice(0, n.length - extname(n).length)));
  return name === undefined ? undefined : join(dir, name);
}

async function sha256Of(path: string, signal: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for await (const d of createReadStream(path, { highWaterMark: 1 << 20, signal })) h.update(d as Buffer);
  return h.digest('hex');
}

const pct = (n: number, of: number) => `${of === 0 ? '0' : ((n * 100) / of).toFixed(1)}%`;

/**
 * `--delta-auto <dir>`: the bases to build deltas from, chosen from the fleet and found in `dir`. A base image whose
 * SHA-256 is not the published release's of that version is refused: vehicles check the delta's base digest
 * against their installed image, so a delta from the wrong file would only cost bytes.
 */
export async function autoDeltaBases(
  ctx: Context,
  dir: string,
  release: { ecu: string; version: string; hardwareIds: readonly string[] },
  explicit: readonly DeltaBaseFile[],
): Promise<DeltaBaseFile[]> {
  const v = ctx.args.values;
  const top = numberOption(v, 'delta-top', { integer: true, min: 1, max: 16 }) ?? 3;
  const cover = (numberOption(v, 'delta-cover', { min: 1, max: 100 }) ?? 90) / 100;
  const api = await ctx.api();
  const versions = await installedVersions(api, {
    ecu: release.ecu,
    hardwareIds: release.hardwareIds,
    below: release.version,
  });
  const total = versions.reduce((n, x) => n + x.vehicles, 0);
  const chosen = chooseBases(versions, { top, cover });
  ctx.io.stderr.write(
    `${total} target vehicle(s) run ${versions.length} version(s) of ${release.ecu} below ${release.version}` +
      (versions.length ? `: ${versions.map((x) => `${x.version} ${x.vehicles}`).join(', ')}` : '') +
      '\n',
  );
  const { items: releases } = await api.getAll<ReleaseSummary>('/releases', 'releases');
  const bases: DeltaBaseFile[] = [];
  let covered = 0;
  for (const c of chosen) {
    if (explicit.some((b) => b.version === c.version)) {
      covered += c.vehicles;
      continue;
    }
    const path = findBaseImage(dir, release.ecu, c.version);
    if (!path) {
      ctx.io.stderr.write(
        `no image of ${c.version} in ${dir}: its ${c.vehicles} vehicle(s) use chunk reuse\n`,
      );
      continue;
    }
    const published = releases.find(
      (r) => r.ecu === release.ecu && r.version === c.version && r.status !== 'failed',
    );
    if (published && (await sha256Of(path, ctx.signal)) !== published.sha256) {
      throw new CliError(
        `${path} is not the image of ${published.release_id} (SHA-256 ${published.sha256}): a delta from it ` +
          'would not match what the vehicles run',
      );
    }
    bases.push({ version: c.version, path, size: statSync(path).size });
    covered += c.vehicles;
  }
  ctx.io.stderr.write(
    `deltas from ${[...explicit.map((b) => b.version), ...bases.map((b) => b.version)].join(', ') || 'no base'}: ` +
      `${covered} of ${total} target vehicle(s) (${pct(covered, total)}); the others use chunk reuse\n`,
  );
  return bases;
}

/** `ota vehicles versions`: the distribution alone. */
export async function versions(ctx: Context): Promise<void> {
  const v = ctx.args.values;
  const ecu = requireString(v, 'ecu');
  const belowText = stringOption(v, 'below');
  const below = belowText === undefined ? undefined : checkVersion(belowText, '--below');
  const model = stringOption(v, 'model');
  const hardwareIds = stringList(v, 'hardware-id');
  if (hardwareIds.length > 32) throw new UsageError('at most 32 --hardware-id');
  const found = await installedVersions(await ctx.api(), {
    ecu,
    hardwareIds,
    ...(model !== undefined ? { model } : {}),
    ...(below !== undefined ? { below } : {}),
  });
  const total = found.reduce((n, x) => n + x.vehicles, 0);
  ctx.printJson({ ecu, vehicles: total, versions: found });
  ctx.print(
    [
      `${total} vehicle(s) with ${ecu}${below ? ` below ${below}` : ''}`,
      ...found.map(
        (x) => `  ${x.version.padEnd(12)} ${String(x.vehicles).padStart(9)}  ${pct(x.vehicles, total)}`,
      ),
    ].join('\n'),
  );
}
