import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { checkVinList, readListSlice } from '../../lambdas/core/vin-list.js';

const vin = (i: number) => `T${String(i).padStart(16, '0')}`;

/** A ranged read of an in-memory object, delivered in small chunks as a network stream would be. */
function reader(bytes: Buffer, chunk = 7) {
  let reads = 0;
  const read = async (start: number, endInclusive: number) => {
    reads++;
    const part = bytes.subarray(start, endInclusive + 1);
    return Readable.from(
      Array.from({ length: Math.ceil(part.length / chunk) }, (_, i) =>
        part.subarray(i * chunk, i * chunk + chunk),
      ),
    );
  };
  return { read, reads: () => reads };
}

/** Every line of the list, read range by range and slice by slice as the preparation segments do. */
async function readAll(text: string, ranges: number, maxLines: number) {
  const bytes = Buffer.from(text);
  const { read } = reader(bytes);
  const lines: string[] = [];
  for (let j = 0; j < ranges; j++) {
    const start = Math.floor((bytes.length * j) / ranges);
    const end = Math.floor((bytes.length * (j + 1)) / ranges);
    let from: number | undefined = start;
    let first = true;
    while (from !== undefined) {
      const slice = await readListSlice(read, bytes.length, from, end, maxLines, first && from > 0);
      assert.equal(slice.malformed, false);
      assert.ok(slice.lines.length <= maxLines);
      lines.push(...slice.lines);
      assert.ok(slice.next === undefined || slice.next > from, 'progress');
      from = slice.next;
      first = false;
    }
  }
  return lines;
}

describe('VIN lists', { timeout: 60_000 }, () => {
  it('split into byte ranges and slices, every line is read exactly once, whatever the cut', async () => {
    const vins = Array.from({ length: 500 }, (_, i) => vin(i));
    for (const eol of ['\n', '\r\n']) {
      for (const trailing of [true, false]) {
        const text = vins.join(eol) + (trailing ? eol : '');
        for (const ranges of [1, 2, 3, 7, 16]) {
          for (const maxLines of [1, 13, 250]) {
            const lines = (await readAll(text, ranges, maxLines)).map((l) => l.trim());
            assert.deepEqual(lines, vins, `eol ${JSON.stringify(eol)} ranges ${ranges} slice ${maxLines}`);
          }
        }
      }
    }
  });

  it('keeps blank lines as blanks and reads a list with ragged lines whole', async () => {
    const text = `${vin(1)}\n\n  ${vin(2)}  \r\n\r\n${vin(3)}`;
    for (const ranges of [1, 2, 5]) {
      const lines = (await readAll(text, ranges, 2)).map((l) => l.trim()).filter((l) => l !== '');
      assert.deepEqual(lines, [vin(1), vin(2), vin(3)]);
    }
  });

  it('reads a bounded range per slice, never the rest of the object', async () => {
    const bytes = Buffer.from(`${Array.from({ length: 10_000 }, (_, i) => vin(i)).join('\n')}\n`);
    let widest = 0;
    const read = async (start: number, endInclusive: number) => {
      widest = Math.max(widest, endInclusive + 1 - start);
      return Readable.from([bytes.subarray(start, endInclusive + 1)]);
    };
    const slice = await readListSlice(read, bytes.length, 0, bytes.length, 100, false);
    assert.equal(slice.lines.length, 100);
    assert.equal(slice.next, 100 * 18);
    assert.ok(widest < 100 * 24 + 512, `read ${widest} bytes for 100 lines`);
  });

  it('flags a line too long to be a VIN instead of buffering it', async () => {
    const bytes = Buffer.from(`${vin(1)}\n${'A'.repeat(100_000)}\n${vin(2)}\n`);
    const { read } = reader(bytes, 4096);
    const slice = await readListSlice(read, bytes.length, 0, bytes.length, 10, false);
    assert.equal(slice.malformed, true);
    assert.deepEqual(slice.lines, [vin(1)]);
  });

  it('checks an uploaded list whole: counts VINs, names the first bad line, refuses an empty one', async () => {
    const stream = (text: string) => Readable.from([Buffer.from(text)]);
    assert.equal(await checkVinList(stream(`${vin(1)}\r\n\r\n${vin(2)}\n${vin(3)}`)), 3);
    await assert.rejects(
      checkVinList(stream(`${vin(1)}\n${vin(2)}\nnot a vin\n`)),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'malformed_vin_list');
        assert.match(err.message, /line 3 /);
        return true;
      },
    );
    await assert.rejects(checkVinList(stream('\n \r\n')), /no VIN/);
    await assert.rejects(checkVinList(stream(`${vin(1)}${'X'.repeat(1000)}\n`)), /line 1 /);
  });
});
