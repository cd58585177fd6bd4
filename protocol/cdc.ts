/**
 * Content-defined chunking (FastCDC: a gear rolling hash, normalized chunking with a stricter mask below the average
 * size and a looser one above). Cut points depend on the bytes around them only, so an insertion or a change moves
 * the cuts near it and leaves the others where they were: chunks of an old image and a new one line up wherever
 * their bytes are the same, which is what lets a vehicle reuse what it already has.
 *
 * The publisher and the agent must cut identically: the gear table is derived from a fixed label, and the sizes
 * travel in the signed frame table.
 */
import { createHash } from 'node:crypto';

export interface CdcParams {
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

/** 64 KiB on average: 16-64 KiB reuses a little more of an old image, larger frames compress better (zstd per frame). */
export const DEFAULT_CDC: CdcParams = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
export const MAX_CDC_CHUNK = 1024 * 1024;

function gearTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    table[i] = createHash('sha256').update(`ota.cdc.gear/v1:${i}`).digest().readUInt32LE(0);
  }
  return table;
}
const GEAR = gearTable();

export function checkCdcParams(p: CdcParams): void {
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(p.avg) || p.avg < 256 || p.min < 64 || p.min > p.avg || p.max < p.avg || p.max > MAX_CDC_CHUNK) {
    throw new RangeError(`unusable chunking parameters ${JSON.stringify(p)}`);
  }
}

/**
 * Streaming chunker: push() the bytes in order, in pieces of any size; it answers the lengths of the chunks that
 * ended in them. end() answers the last, partial one.
 */
export class Chunker {
  private hash = 0;
  private length = 0;
  private readonly maskSmall: number;
  private readonly maskLarge: number;

  constructor(private readonly params: CdcParams) {
    checkCdcParams(params);
    const bits = Math.log2(params.avg);
    // The high bits of a 32-bit gear hash depend on the last 32 bytes: the masks test those.
    this.maskSmall = (0xffffffff << (32 - (bits + 2))) >>> 0;
    this.maskLarge = (0xffffffff << (32 - (bits - 2))) >>> 0;
  }

  push(data: Uint8Array): number[] {
    const cuts: number[] = [];
    const { min, avg, max } = this.params;
    const maskS = this.maskSmall;
    const maskL = this.maskLarge;
    let h = this.hash;
    let len = this.length;
    let i = 0;
    const n = data.length;
    while (i < n) {
      if (len < min) {
        // Below the minimum no cut is possible: skip ahead (the hash restarts with the bytes that can cut).
        const skip = Math.min(min - len, n - i);
        i += skip;
        len += skip;
        h = 0;
        continue;
      }
      const b = data[i++]!;
      h = ((h << 1) + GEAR[b]!) >>> 0;
      len++;
      if ((len < avg ? (h & maskS) === 0 : (h & maskL) === 0) || len >= max) {
        cuts.push(len);
        len = 0;
        h = 0;
      }
    }
    this.hash = h;
    this.length = len;
    return cuts;
  }

  end(): number | undefined {
    const last = this.length;
    this.length = 0;
    this.hash = 0;
    return last > 0 ? last : undefined;
  }
}
