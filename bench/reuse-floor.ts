/**
 * `npm run bench:delta -- --floor`: the least any chunk-reuse download can send for a pair, whatever its frames and
 * index. For content-defined chunks of several average sizes (the agent's chunker, protocol/cdc.ts, min avg/4 and
 * max 4*avg), the new image's chunks the old image does not hold are the bytes a vehicle must be sent; the floor
 * puts them in the most favourable form a server that does not know the vehicle's bytes could send:
 *
 *   one stream    every missing chunk, in order, compressed as ONE zstd stream at the bench's level with --long
 *                 (no frames, no index, no request: less than any real Range-addressable layout can send)
 *   + reused      the whole new image compressed with the chunks the vehicle reuses (bytes of the new image, which
 *                 the server knows) as the dictionary (`--patch-from`): the missing chunks may also copy from the
 *                 bytes the vehicle already has
 *
 * Both are printed as a share of the new image and as a ratio to `zstd --patch-from` the old image, the anchor the
 * issue's "chunk reuse plus compression at most 2.5x" is measured against. Where even the floor is above 2.5x, no
 * chunk-reuse layout can meet the target on that pair: what is missing is similar to bytes only the old image
 * holds, which is what a precomputed delta (needing that exact base) reaches.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Chunker } from '../protocol/cdc.js';

export interface FloorRow {
  readonly avgChunk: number;
  /** Bytes of the new image in chunks the old image does not hold. */
  readonly missing: number;
  /** Those bytes as one zstd stream. */
  readonly oneStream: number;
  /** The new image against the reused chunks as dictionary. */
  readonly withReused: number;
}

function chunksOf(image: Buffer, avg: number): Buffer[] {
  const chunker = new Chunker({ min: avg / 4, avg, max: avg * 4 });
  const lengths = chunker.push(image);
  const last = chunker.end();
  if (last !== undefined) lengths.push(last);
  const out: Buffer[] = [];
  let offset = 0;
  for (const n of lengths) {
    out.push(image.subarray(offset, offset + n));
    offset += n;
  }
  return out;
}

const digest = (b: Buffer) => createHash('sha256').update(b).digest('base64');

function zstdSize(level: number, argv: readonly string[], out: string): number {
  const r = spawnSync('zstd', [`-${level}`, '-q', '-f', '-T1', '--long=27', ...argv, '-o', out], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  if (r.status !== 0) throw new Error(`zstd ${argv.join(' ')}: ${r.stderr.toString()}`);
  const bytes = statSync(out).size;
  rmSync(out, { force: true });
  return bytes;
}

/** The floor for each average chunk size; `scratch` is a path prefix for temporary files. */
export function reuseFloor(
  oldImage: string,
  newImage: string,
  level: number,
  scratch: string,
  averages: readonly number[] = [512, 4096, 65536],
): FloorRow[] {
  const before = readFileSync(oldImage);
  const after = readFileSync(newImage);
  return averages.map((avg) => {
    const held = new Set(chunksOf(before, avg).map(digest));
    const missing: Buffer[] = [];
    const reused: Buffer[] = [];
    for (const c of chunksOf(after, avg)) (held.has(digest(c)) ? reused : missing).push(c);
    const missingFile = `${scratch}.missing`;
    const reusedFile = `${scratch}.reused`;
    writeFileSync(missingFile, Buffer.concat(missing));
    writeFileSync(reusedFile, Buffer.concat(reused));
    try {
      return {
        avgChunk: avg,
        missing: missing.reduce((n, c) => n + c.length, 0),
        oneStream: zstdSize(level, [missingFile], `${missingFile}.zst`),
        withReused: zstdSize(level, [`--patch-from=${reusedFile}`, newImage], `${scratch}.patch`),
      };
    } finally {
      rmSync(missingFile, { force: true });
      rmSync(reusedFile, { force: true });
    }
  });
}

/** The floor as lines for the bench's report. */
export function floorLines(rows: readonly FloorRow[], size: number, patchFrom: number | undefined): string[] {
  const pct = (n: number) => `${((n * 100) / size).toFixed(1)}%`.padStart(6);
  const vs = (n: number) => (patchFrom ? `${(n / patchFrom).toFixed(2)}x`.padStart(6) : '   n/a');
  return [
    '  floor of chunk reuse (missing chunks in the most favourable form; /pf = over zstd --patch-from):',
    '    avg chunk  missing   one stream   /pf    + reused as dictionary   /pf',
    ...rows.map(
      (r) =>
        `    ${`${r.avgChunk / 1024} KiB`.padStart(9)}  ${pct(r.missing)}  ${String(r.oneStream).padStart(9)} ${pct(r.oneStream)} ${vs(r.oneStream)}` +
        `    ${String(r.withReused).padStart(9)} ${pct(r.withReused)}       ${vs(r.withReused)}`,
    ),
  ];
}
