import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ResumableSha256 } from '../../lambdas/core/sha256-state.js';

const nodeSha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('resumable SHA-256', { timeout: 60_000 }, () => {
  it('matches node:crypto at every length around the block and padding boundaries', () => {
    for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 70_000]) {
      const data = randomBytes(n);
      assert.equal(new ResumableSha256().update(data).digest().toString('hex'), nodeSha(data), `length ${n}`);
    }
    assert.equal(
      new ResumableSha256().update(Buffer.from('abc')).digest().toString('hex'),
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });

  it('gives the same digest whatever the update sizes', () => {
    const data = randomBytes(10_000);
    const h = new ResumableSha256();
    for (let at = 0, step = 1; at < data.length; at += step, step = (step * 7 + 3) % 300) {
      h.update(data.subarray(at, Math.min(data.length, at + step)));
    }
    assert.equal(h.digest().toString('hex'), nodeSha(data));
  });

  it('saves and resumes its state at any offset, across instances', () => {
    const data = randomBytes(5_000);
    for (const cut of [0, 1, 63, 64, 65, 1000, 4999, 5000]) {
      const first = new ResumableSha256().update(data.subarray(0, cut));
      const state = first.export();
      const resumed = ResumableSha256.import(state);
      assert.equal(resumed.length, cut);
      assert.equal(
        resumed.update(data.subarray(cut)).digest().toString('hex'),
        nodeSha(data),
        `cut at ${cut}`,
      );
    }
  });

  it('refuses a state that is not one it saved', () => {
    const good = new ResumableSha256().update(randomBytes(100)).export();
    const [v, total, words, pending] = good.split('.');
    for (const bad of [
      '',
      'x',
      `s2.${total}.${words}.${pending}`,
      `${v}.101.${words}.${pending}`,
      `${v}.${total}.${words!.slice(2)}.${pending}`,
      `${v}.-1.${words}.`,
      `${good}.extra`,
    ]) {
      assert.throws(() => ResumableSha256.import(bad), /not a saved SHA-256 state/, bad);
    }
  });
});
