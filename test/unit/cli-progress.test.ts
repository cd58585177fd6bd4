/** Progress formatting and reporting of the operator CLI: terminal bar, plain lines every 10%, retries. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatBytes,
  formatDuration,
  Progress,
  plainProgressLine,
  progressBar,
  progressLine,
  stepOf,
} from '../../cli/progress.js';

const MiB = 1024 * 1024;

function recorder(isTTY: boolean, columns = 80) {
  const writes: string[] = [];
  return { writes, out: { isTTY, columns, write: (t: string) => writes.push(t) } };
}

describe('formatting', { timeout: 60_000 }, () => {
  it('formats bytes in binary units', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(1023), '1023 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(11 * MiB + 123), '11.0 MiB');
    assert.equal(formatBytes(2 * 1024 * MiB), '2.00 GiB');
  });

  it('formats durations', () => {
    assert.equal(formatDuration(4.4), '4s');
    assert.equal(formatDuration(185), '3m05s');
    assert.equal(formatDuration(3720), '1h02m');
  });

  it('draws a bar clamped to [0, 1]', () => {
    assert.equal(progressBar(0, 10), '[----------]');
    assert.equal(progressBar(0.45, 10), '[####------]');
    assert.equal(progressBar(1, 10), '[##########]');
    assert.equal(progressBar(7, 4), '[####]');
    assert.equal(progressBar(Number.NaN, 4), '[----]');
  });

  it('fits a terminal line with bar, percent, bytes, rate and time left', () => {
    const line = progressLine(
      { label: 'uploading tcu-3.0.1', done: 5 * MiB, total: 10 * MiB, elapsedMs: 2000 },
      100,
    );
    assert.match(
      line,
      /^uploading tcu-3\.0\.1 \[#+-+\] {2}50% {2}5\.0 MiB \/ 10\.0 MiB {2}2\.5 MiB\/s {2}ETA 2s$/,
    );
    assert.ok(line.length <= 100, 'fits the width');
    const narrow = progressLine({ label: 'uploading tcu-3.0.1', done: 1, total: 2, elapsedMs: 0 }, 40);
    assert.ok(!narrow.includes('['), 'no bar when there is no room for one');
    assert.ok(narrow.length <= 40, `fits 40 columns: ${narrow}`);
  });

  it('plain lines and 10% steps', () => {
    assert.equal(
      plainProgressLine({ label: 'hashing a.bin', done: 3 * MiB, total: 4 * MiB, elapsedMs: 0 }),
      'hashing a.bin: 75% (3.0 MiB of 4.0 MiB)',
    );
    assert.equal(stepOf(9, 100), 0);
    assert.equal(stepOf(10, 100), 10);
    assert.equal(stepOf(47, 100), 40);
    assert.equal(stepOf(100, 100), 100);
    assert.equal(stepOf(5, 0), 100, 'an empty total is complete');
  });
});

describe('Progress', { timeout: 60_000 }, () => {
  it('prints a line at 0% and at each 10% step when not a terminal, never twice for one step', () => {
    const { writes, out } = recorder(false);
    const p = new Progress(out, 'uploading r', 100, { now: () => 0 });
    for (let i = 0; i < 100; i++) p.add(1);
    p.finish();
    assert.equal(writes.length, 11, writes.join(''));
    assert.equal(writes[0], 'uploading r: 0% (0 B of 100 B)\n');
    assert.equal(writes.at(-1), 'uploading r: 100% (100 B of 100 B)\n');
  });

  it('takes back the bytes of a failed attempt without reprinting steps already shown', () => {
    const { writes, out } = recorder(false);
    const p = new Progress(out, 'u', 100, { now: () => 0 });
    p.add(35);
    p.add(-20);
    p.add(20);
    p.add(10);
    assert.deepEqual(
      writes.map((w) => w.trim()),
      ['u: 0% (0 B of 100 B)', 'u: 35% (35 B of 100 B)', 'u: 45% (45 B of 100 B)'],
      'the log only moves forward',
    );
  });

  it('redraws in place on a terminal, throttled, and ends the line', () => {
    const { writes, out } = recorder(true, 100);
    let t = 0;
    const p = new Progress(out, 'u', 1000, { now: () => t, redrawMs: 100 });
    assert.equal(writes.length, 0, 'nothing before the first bytes');
    p.add(100);
    t = 50;
    p.add(100);
    assert.equal(writes.length, 1, 'a second update within 100 ms is not drawn');
    t = 150;
    p.add(800);
    p.finish();
    assert.ok(
      writes.every((w) => w === '\n' || (w.startsWith('\r') && w.endsWith('\x1b[K'))),
      'each draw returns the cursor and clears the rest of the line',
    );
    assert.match(writes.at(-2) ?? '', /100%/);
    assert.equal(writes.at(-1), '\n');
  });

  it('is silent when quiet (--json)', () => {
    const { writes, out } = recorder(false);
    const p = new Progress(out, 'u', 10, { quiet: true });
    p.add(10);
    p.finish();
    assert.deepEqual(writes, []);
  });
});
