/** File-backed A/B slots: write and verify the inactive slot, atomic switch, health check, commit, rollback, recovery. */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { InstallError } from '../../vehicle/errors.js';
import { FileSlotInstaller, type ImageToInstall } from '../../vehicle/installer.js';

const root = mkdtempSync(join(tmpdir(), 'agent-slots-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const factory = Buffer.from('factory 1.0.0');
let n = 0;
const signal = new AbortController().signal;

function setup(healthy: boolean | (() => boolean) = true) {
  const dir = join(root, `ecu${++n}`);
  const make = () =>
    new FileSlotInstaller({
      dir,
      ecu: 'tcu',
      factory: { version: '1.0.0', image: factory },
      healthCheck: typeof healthy === 'function' ? healthy : () => healthy,
      freeSpace: async () => 1024 ** 3,
    });
  const bytes = randomBytes(300_000);
  const file = join(root, `image${n}.img`);
  writeFileSync(file, bytes);
  const image: ImageToInstall = { path: file, version: '2.0.0', size: bytes.length, sha256: sha(bytes) };
  return { dir, make, bytes, image };
}

const activeBytes = async (i: FileSlotInstaller) => readFileSync(await i.activeSlotPath());

describe('FileSlotInstaller', { timeout: 60_000 }, () => {
  it('starts on the factory image in slot A', async () => {
    const { make } = setup();
    const i = make();
    assert.deepEqual(await i.active(), { version: '1.0.0', sha256: sha(factory) });
    assert.ok((await activeBytes(i)).equals(factory));
  });

  it('installs into the inactive slot, switches for a trial, and commits', async () => {
    const { make, image, bytes } = setup();
    const i = make();
    const progress: number[] = [];
    await i.writeInactive(image, { signal, onProgress: (w) => progress.push(w) });
    assert.equal((await i.active()).version, '1.0.0', 'writing never touches the active slot');
    assert.equal(progress.at(-1), bytes.length);
    await i.activate(image);
    assert.equal((await i.read()).state, 'trial');
    assert.equal(await i.healthCheck(), true);
    await i.commit();
    const s = await i.read();
    assert.equal(s.active, 'b');
    assert.equal(s.state, 'committed');
    assert.ok((await activeBytes(i)).equals(bytes));
    assert.equal((await make().active()).version, '2.0.0', 'a fresh instance (reboot) reads the same');
  });

  it('rolls back to the previous slot and drops the failed image', async () => {
    const { make, image } = setup(false);
    const i = make();
    await i.writeInactive(image, { signal });
    await i.activate(image);
    assert.equal(await i.healthCheck(), false);
    assert.deepEqual(await i.rollback(), { version: '1.0.0', sha256: sha(factory) });
    const s = await i.read();
    assert.equal(s.active, 'a');
    assert.equal(s.slots.b.status, 'empty');
    assert.ok((await activeBytes(i)).equals(factory));
  });

  it('after a power cut in a trial, recovery switches back (never boots an unconfirmed image for good)', async () => {
    const { make, image } = setup();
    const before = make();
    await before.writeInactive(image, { signal });
    await before.activate(image);
    const report = await make().recover();
    assert.deepEqual(report.active, { version: '1.0.0', sha256: sha(factory) });
    assert.equal(report.revertedTrial?.version, '2.0.0');
  });

  it('after a power cut while writing, recovery marks the half-written slot empty and keeps the active one', async () => {
    const { dir, make } = setup();
    const i = make();
    await i.read();
    const pointer = JSON.parse(readFileSync(join(dir, 'slots.json'), 'utf8'));
    pointer.slots.b = { status: 'writing' };
    writeFileSync(join(dir, 'slots.json'), JSON.stringify(pointer));
    const report = await make().recover();
    assert.equal(report.active.version, '1.0.0');
    assert.equal(report.revertedTrial, undefined);
    assert.equal((await make().read()).slots.b.status, 'empty');
  });

  it('refuses an image file that does not match its signed digest as it reads it, and never activates it', async () => {
    const { make, image } = setup();
    const i = make();
    await assert.rejects(
      i.writeInactive({ ...image, sha256: 'f'.repeat(64) }, { signal }),
      (e: unknown) => e instanceof InstallError && e.code === 'image_damaged',
    );
    assert.equal((await i.read()).slots.b.status, 'empty');
    await assert.rejects(
      i.activate(image),
      (e: unknown) => e instanceof InstallError && e.code === 'slot_not_ready',
    );
    assert.equal((await i.active()).version, '1.0.0');
  });

  it('refuses to start a second install while a trial is pending, and checks free space', async () => {
    const { make, image } = setup();
    const i = make();
    await i.writeInactive(image, { signal });
    await i.activate(image);
    await assert.rejects(
      i.writeInactive(image, { signal }),
      (e: unknown) => e instanceof InstallError && e.code === 'trial_pending',
    );
    const small = new FileSlotInstaller({
      dir: join(root, `ecu${++n}`),
      ecu: 'tcu',
      factory: { version: '1.0.0', image: factory },
      freeSpace: async () => 10,
    });
    await assert.rejects(
      small.writeInactive(image, { signal }),
      (e: unknown) => e instanceof InstallError && e.code === 'no_space',
    );
  });

  it('default health check re-hashes the active slot', async () => {
    const { dir } = setup();
    const bytes = randomBytes(1000);
    const file = join(root, 'h.img');
    writeFileSync(file, bytes);
    const i = new FileSlotInstaller({
      dir,
      ecu: 'tcu',
      factory: { version: '1.0.0', image: factory },
      freeSpace: async () => 1e9,
    });
    const image = { path: file, version: '2.0.0', size: bytes.length, sha256: sha(bytes) };
    await i.writeInactive(image, { signal });
    await i.activate(image);
    assert.equal(await i.healthCheck(), true);
    writeFileSync(await i.activeSlotPath(), Buffer.from('bit rot'));
    assert.equal(await i.healthCheck(), false);
  });
});
