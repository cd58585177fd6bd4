/**
 * Prefetch (vehicle/prefetch.ts): chunk reuse starts the next Range request while base frames are read. Items arrive
 * in order and the sequence is pulled ahead at once but never more than its depth; an error reaches the consumer
 * after every item before it (a cut connection still hands on the frames that arrived); closing a sequence nobody
 * iterated returns its source (a request started ahead is released), and a consumer that stops early does too.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { Prefetch } from '../../vehicle/prefetch.js';

/** A source counting how far it was pulled and whether it was returned (its finally ran). */
function source(items: number, failAfter?: number) {
  const seen = { pulled: 0, finished: false };
  async function* gen() {
    try {
      for (let i = 0; i < items; i++) {
        if (failAfter !== undefined && i === failAfter) throw new Error(`cut after ${i}`);
        seen.pulled++;
        yield i;
      }
    } finally {
      seen.finished = true;
    }
  }
  return { seen, gen: gen() };
}

async function settle() {
  for (let i = 0; i < 10; i++) await tick();
}

describe('Prefetch', { timeout: 30_000 }, () => {
  it('pulls up to its depth before anyone asks, then one more per item taken, in order', async () => {
    const { seen, gen } = source(10);
    const p = new Prefetch(gen, 3);
    await settle();
    assert.equal(seen.pulled, 3, 'three items made ahead, not more');
    const got: number[] = [];
    for await (const x of p) {
      got.push(x);
      if (got.length === 2) {
        await settle();
        assert.equal(seen.pulled, 5, 'two taken: two more made');
      }
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(seen.finished, true);
  });

  it('hands on every item before the error that ended the source, then the error', async () => {
    const { gen } = source(10, 4);
    const p = new Prefetch(gen, 8);
    await settle();
    const got: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const x of p) got.push(x);
      })(),
      /cut after 4/,
    );
    assert.deepEqual(got, [0, 1, 2, 3]);
  });

  it('close() on a sequence never iterated returns its source', async () => {
    const { seen, gen } = source(100);
    const p = new Prefetch(gen, 2);
    await settle();
    p.close();
    await settle();
    assert.equal(seen.finished, true, 'the source ran its finally (a response would be released)');
    assert.ok(seen.pulled <= 3, `pulled ${seen.pulled}: nothing more after close`);
  });

  it('a consumer that stops early returns the source', async () => {
    const { seen, gen } = source(100);
    for await (const x of new Prefetch(gen, 4)) if (x === 1) break;
    await settle();
    assert.equal(seen.finished, true);
    assert.ok(seen.pulled <= 7, `pulled ${seen.pulled}`);
  });
});
