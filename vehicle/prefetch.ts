/**
 * An async sequence pulled ahead of its consumer from the moment it is made, by at most `depth` items: chunk reuse
 * (frame-source.ts) starts the next Range request and its decoding while the main thread reads and hashes the
 * installed image's frames before it, instead of one after the other.
 *
 * Items and the error that ends the sequence reach the consumer in order, exactly where they would have without
 * reading ahead: a cut connection in a run fetched ahead still surfaces after every byte before it was handed on
 * (and verified). Memory: `depth` items.
 */
export class Prefetch<T> implements AsyncIterable<T> {
  private readonly source: AsyncIterator<T>;
  private readonly queue: Promise<IteratorResult<T>>[] = [];
  private ended = false;

  constructor(
    source: AsyncIterable<T>,
    private readonly depth: number,
  ) {
    this.source = source[Symbol.asyncIterator]();
    this.fill();
  }

  /** Asks the source for items until `depth` are pending or it has ended (an async generator runs them in turn). */
  private fill(): void {
    while (!this.ended && this.queue.length < this.depth) {
      const next = this.source.next();
      next.then(
        (r) => {
          if (r.done) this.ended = true;
        },
        () => {
          this.ended = true;
        },
      );
      this.queue.push(next);
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for (;;) {
        const next = this.queue.shift();
        if (!next) return;
        const r = await next;
        if (r.done) return;
        this.fill();
        yield r.value;
      }
    } finally {
      this.close();
    }
  }

  /**
   * Stops reading ahead: the source is returned (a Range request's response is released) once the item it is
   * producing settles. For a sequence the consumer never reached, too: its iterator never started, so its own
   * `finally` could not do this.
   */
  close(): void {
    if (this.ended && this.queue.length === 0) return;
    this.ended = true;
    for (const pending of this.queue) pending.catch(() => {}); // never awaited now: not an unhandled rejection
    this.queue.length = 0;
    this.source.return?.(undefined)?.catch(() => {});
  }
}
