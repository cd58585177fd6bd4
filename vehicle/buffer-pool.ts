/**
 * Fixed-size buffers allocated once and reused: the image path hands bytes between the socket, the hashes and the
 * file through a few of these instead of a fresh buffer per piece, which would sit in memory as garbage until the
 * collector ran (a GiB of them is tens of MiB of resident memory).
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  /** `keep`: most buffers held while unused (more given back are left to the garbage collector). */
  constructor(
    readonly size: number,
    private readonly keep = Number.POSITIVE_INFINITY,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buffer: Buffer): void {
    if (this.free.length < this.keep) this.free.push(buffer);
  }
}
