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
import { closeSync, createReadStream, openSync, readSync, rmSync, writeSync } from 'node:fs';
import type { CdcParams } from '../protocol/cdc.js';
import { cdcChunks } from '../protocol/delta-publisher.js';
import { toolOutputSize } from './delta-harness.js';

export interface FloorRow {
  readonly avgChunk: number;
  /** Bytes of the new image in chunks the old image does not hold. */
  readonly missing: number;
  /** Those bytes as one zstd stream. */
  readonly oneStream: number;
  /** The new image against the reused chunks as dictionary. */
  readonly withReused: number;
}

const zstdSize = (level: number, argv: readonly string[], out: string) =>
  toolOutputSize('zstd', [`-${level}`, '-q', '-f', '-T1', '--long=27', ...argv, '-o', out], out).bytes;

/** The floor for each average chunk size; `scratch` is a path prefix for temporary files. */
export async function reuseFloor(
  oldImage: string,
  newImage: string,
  level: number,
  scratch: string,
  averages: readonly number[] = [512, 4096, 65536],
): Promise<FloorRow[]> {
  const rows: FloorRow[] = [];
  const missingFile = `${scratch}.missing`;
  const reusedFile = `${scratch}.reused`;
  const source = openSync(newImage, 'r');
  try {
    for (const avg of averages) {
      const cdc: CdcParams = { min: avg / 4, avg, max: avg * 4 };
      const held = new Set<string>();
      for await (const c of cdcChunks(createReadStream(oldImage), cdc)) held.add(c.sha256);
      // Each chunk of the new image is copied to the file of its kind as it is found: one chunk in memory at a time.
      const missingOut = openSync(missingFile, 'w');
      const reusedOut = openSync(reusedFile, 'w');
      const buf = Buffer.alloc(cdc.max);
      let missing = 0;
      try {
        for await (const c of cdcChunks(createReadStream(newImage), cdc)) {
          readSync(source, buf, 0, c.size, c.at);
          const isMissing = !held.has(c.sha256);
          writeSync(isMissing ? missingOut : reusedOut, buf, 0, c.size);
          if (isMissing) missing += c.size;
        }
      } finally {
        closeSync(missingOut);
        closeSync(reusedOut);
      }
      try {
        rows.push({
          avgChunk: avg,
          missing,
          oneStream: zstdSize(level, [missingFile], `${missingFile}.zst`),
          withReused: zstdSize(level, [`--patch-from=${reusedFile}`, newImage], `${scratch}.patch`),
        });
      } finally {
        rmSync(missingFile, { force: true });
        rmSync(reusedFile, { force: true });
      }
    }
  } finally {
    closeSync(source);
  }
  return rows;
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
