/**
 * VIN lists for campaign targets: a text object, one VIN a line (CR LF or LF, blank lines ignored), up to
 * MAX_VIN_LIST_LINES. Read as a stream, a line at a time: neither the check at upload nor the preparation slices
 * ever hold the list in memory, whatever its size.
 */
import type { Readable } from 'node:stream';
import { VIN_LIST_LIMITS } from '../../protocol/limits.js';
import { VIN_PATTERN } from '../../protocol/schemas.js';
import { BadRequestError } from './errors.js';

/** The largest fleet a campaign targets by list. */
export const MAX_VIN_LIST_LINES = VIN_LIST_LIMITS.lines;
/** A line longer than this is not a VIN, and reading further for its end would hold an unbounded buffer. */
const MAX_LINE_BYTES = 256;

/** The key of a campaign's VIN list in the firmware bucket (its own prefix, granted apart from releases/). */
export function targetListKey(campaignId: string): string {
  return `campaign-targets/${campaignId}.txt`;
}

/** A list line as the VIN it names, '' for a blank line. */
export function vinOfLine(line: string): string {
  return line.trim();
}

export function isVin(text: string): boolean {
  return VIN_PATTERN.test(text);
}

/** The lines of a stream with the offset each starts at, relative to the stream's first byte. */
async function* linesOf(stream: Readable): AsyncGenerator<{ text: string; start: number; end: number }> {
  let pending: Buffer = Buffer.alloc(0);
  let start = 0;
  try {
    for await (const chunk of stream) {
      pending = pending.length > 0 ? Buffer.concat([pending, chunk as Buffer]) : (chunk as Buffer);
      let nl = pending.indexOf(10);
      while (nl >= 0) {
        yield { text: pending.subarray(0, nl).toString('latin1'), start, end: start + nl + 1 };
        start += nl + 1;
        pending = pending.subarray(nl + 1);
        nl = pending.indexOf(10);
      }
      if (pending.length > MAX_LINE_BYTES) {
        yield { text: pending.subarray(0, MAX_LINE_BYTES).toString('latin1'), start, end: -1 };
        return;
      }
    }
    if (pending.length > 0) yield { text: pending.toString('latin1'), start, end: start + pending.length };
  } finally {
    stream.destroy();
  }
}

/** Bytes a VIN may hold: digits and capital letters but I, O and Q. */
const VIN_BYTE = new Uint8Array(256);
for (const c of '0123456789ABCDEFGHJKLMNPRSTUVWXYZ') VIN_BYTE[c.charCodeAt(0)] = 1;
const isBlank = (b: number) => b === 32 || b === 9 || b === 13;

/**
 * Checks a whole uploaded list (synchronously, at upload completion, so a bad list gets a 400 naming the line):
 * every non-blank line a VIN (surrounding blanks and a CR allowed), at least one, at most MAX_VIN_LIST_LINES.
 * Answers how many VINs it lists. Byte by byte, with no string per line: a million lines take about a second of
 * CPU, inside the operator function's 10 s.
 */
export async function checkVinList(stream: Readable): Promise<number> {
  let count = 0;
  let lineNo = 1;
  // Per line: characters of the VIN so far, whether it ended (blanks after it), whether it is wrong, its start.
  let length = 0;
  let ended = false;
  let wrong = false;
  let sample: number[] = [];
  const endLine = () => {
    if (wrong || (length > 0 && length !== 17)) {
      throw new BadRequestError(
        'malformed_vin_list',
        `line ${lineNo} of the VIN list is not a VIN (17 characters: digits and letters except I, O, Q): ${JSON.stringify(Buffer.from(sample).toString('latin1').trim())}`,
      );
    }
    if (length > 0 && ++count > MAX_VIN_LIST_LINES) {
      throw new BadRequestError('vin_list_too_long', `The VIN list has more than ${MAX_VIN_LIST_LINES} VINs`);
    }
    lineNo++;
    length = 0;
    ended = false;
    wrong = false;
    sample = [];
  };
  try {
    for await (const chunk of stream) {
      const bytes = chunk as Buffer;
      for (let i = 0; i < bytes.length; i++) {
        const b = bytes[i]!;
        if (b === 10) {
          endLine();
          continue;
        }
        if (sample.length < 40) sample.push(b);
        if (isBlank(b)) {
          if (length > 0) ended = true;
        } else if (ended || VIN_BYTE[b] !== 1 || ++length > 17) wrong = true;
      }
    }
    if (length > 0 || wrong) endLine();
  } finally {
    stream.destroy();
  }
  if (count === 0) throw new BadRequestError('no_targets', 'The VIN list names no VIN');
  return count;
}

export interface ListSlice {
  /** The lines read (blank ones included, as ''; a line that is not a VIN as its text). */
  readonly lines: string[];
  /** Absolute offset of the next line to read, undefined when the byte range is done. */
  readonly next?: number;
  /** A line too long to be anything (the list changed since it was checked). */
  readonly malformed: boolean;
}

/**
 * One slice of a list's byte range [from, end): at most maxLines lines starting in the range. A line belongs to
 * the range its first byte is in, so neighbouring ranges split the list without a line read twice or lost.
 * align: `from` may be mid-line (a range's first slice); the read then starts one byte earlier and everything up
 * to the first line break is skipped. read(start, endInclusive) opens a ranged read of the object.
 */
export async function readListSlice(
  read: (start: number, endInclusive: number) => Promise<Readable>,
  size: number,
  from: number,
  end: number,
  maxLines: number,
  align: boolean,
): Promise<ListSlice> {
  const origin = align ? from - 1 : from;
  if (origin >= size || from >= end) return { lines: [], malformed: false };
  // Enough bytes for maxLines VIN lines with CR LF; a short read just leaves more for the next slice.
  const last = Math.min(size, origin + maxLines * 24 + MAX_LINE_BYTES) - 1;
  const eof = last === size - 1;
  const lines: string[] = [];
  let skipping = align;
  let after = origin;
  const rest = (at: number) => (at < end && at < size ? at : undefined);
  for await (const line of linesOf(await read(origin, last))) {
    const start = origin + line.start;
    const terminated = line.end - line.start === line.text.length + 1;
    if (line.end < 0) return { lines, malformed: true };
    if (!terminated && !eof) {
      // The read stopped mid-line: the next slice reads it whole (a line longer than a read is no VIN).
      if (skipping || start === origin) return { lines, malformed: true };
      return { lines, next: rest(start), malformed: false };
    }
    after = origin + line.end;
    if (skipping) {
      skipping = false;
      continue;
    }
    if (start >= end) return { lines, malformed: false };
    lines.push(line.text);
    if (lines.length >= maxLines) return { lines, next: rest(after), malformed: false };
  }
  return { lines, next: eof || skipping ? undefined : rest(after), malformed: false };
}
