/** Choosing delta bases from the fleet's installed versions, and finding their images in a folder. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { chooseBases, findBaseImage } from '../../cli/firmware-bases.js';

const HOOK_TIMEOUT = { timeout: 10_000 };
const dir = mkdtempSync(join(tmpdir(), 'delta-bases-'));
after(() => rmSync(dir, { recursive: true, force: true }), HOOK_TIMEOUT);

const fleet = [
  { version: '2.0.0', vehicles: 600 },
  { version: '1.9.0', vehicles: 250 },
  { version: '1.8.0', vehicles: 100 },
  { version: '1.0.0', vehicles: 50 },
];

describe('delta bases', { timeout: 10_000 }, () => {
  it('takes the most common versions until they cover the share asked, at most top', () => {
    assert.deepEqual(
      chooseBases(fleet, { top: 3, cover: 0.9 }).map((b) => b.version),
      ['2.0.0', '1.9.0', '1.8.0'],
    );
    assert.deepEqual(
      chooseBases(fleet, { top: 3, cover: 0.8 }).map((b) => b.version),
      ['2.0.0', '1.9.0'],
    );
    assert.deepEqual(
      chooseBases(fleet, { top: 1, cover: 1 }).map((b) => b.version),
      ['2.0.0'],
    );
    assert.deepEqual(chooseBases([], { top: 3, cover: 0.9 }), []);
  });

  it('finds <version> or <ecu>-<version> with one extension, nothing else', () => {
    for (const name of ['1.9.0.img', 'tcu-2.0.0.bin', '1.8.0', 'tcu-1.0.0.img.gz', 'ecm-1.0.0.img']) {
      writeFileSync(join(dir, name), 'x');
    }
    assert.equal(findBaseImage(dir, 'tcu', '1.9.0'), join(dir, '1.9.0.img'));
    assert.equal(findBaseImage(dir, 'tcu', '2.0.0'), join(dir, 'tcu-2.0.0.bin'));
    assert.equal(findBaseImage(dir, 'tcu', '1.8.0'), join(dir, '1.8.0'));
    assert.equal(findBaseImage(dir, 'tcu', '1.0.0'), undefined, 'two extensions, or another ECU');
    assert.equal(findBaseImage(dir, 'tcu', '1.9'), undefined);
  });
});
