/** readAhead: the response body keeps flowing while its consumer is busy, bounded, and ends or fails as the stream does. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { readAhead } from '../../vehicle/http-transport.js';

const KiB = 1024;

describe('readAhead', { timeout: 60_000 }, () => {
  it('reads ahead up to its bound while the consumer is busy, then pauses the stream and resumes it', async () => {
    const stream = new PassThrough();
    const it = readAhead(stream, 64 * KiB)[Symbol.asyncIterator]();
    const first = it.next(); // starts the flow
    for (let i = 0; i < 8; i++) stream.write(Buffer.alloc(16 * KiB, i));
    await tick();
    assert.equal((await first).value?.[0], 0);
    assert.equal(stream.isPaused(), true, 'paused once 64 KiB waited unread');
    const seen: number[] = [];
    for (let i = 1; i < 4; i++) seen.push((await it.next()).value![0]!);
    assert.equal(stream.isPaused(), false, 'resumed once half of it was taken');
    stream.end();
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      seen.push(r.value[0]!);
    }
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7], 'every chunk, in order, then the end');
  });

  it('throws the stream error after the chunks that came before it', async () => {
    const stream = new PassThrough();
    const it = readAhead(stream, 1024 * KiB)[Symbol.asyncIterator]();
    stream.write(Buffer.from('abc'));
    stream.destroy(new Error('connection reset'));
    assert.equal((await it.next()).value?.toString(), 'abc');
    await assert.rejects(it.next(), /connection reset/);
  });

  it('fails a response closed before its end instead of reporting a clean end', async () => {
    const stream = new PassThrough();
    const it = readAhead(stream, 1024 * KiB)[Symbol.asyncIterator]();
    stream.write(Buffer.from('partial'));
    await tick();
    stream.destroy();
    assert.equal((await it.next()).value?.toString(), 'partial');
    await assert.rejects(it.next(), /closed early/);
  });

  it('stops reading when the consumer breaks out', async () => {
    const stream = new PassThrough();
    stream.write(Buffer.from('one'));
    stream.write(Buffer.from('two'));
    for await (const chunk of readAhead(stream, 1024 * KiB)) {
      assert.equal(chunk.toString(), 'one');
      break;
    }
    assert.equal(stream.listenerCount('data'), 0);
    assert.equal(stream.isPaused(), true);
  });
});
