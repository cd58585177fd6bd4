/**
 * The signed tables of a compressed release fetched from its stored object: the frame table (and a precomputed
 * delta's table), each one Range request of the same presigned URL, checked against the signed manifest before use.
 */
import { ProtocolError } from '../protocol/errors.js';
import { type FrameTable, objectSize, parseFrameTable } from '../protocol/frames.js';
import type { ReleaseManifest } from '../protocol/manifest.js';
import { AgentError, DownloadError } from './errors.js';
import type { TransferStats } from './frame-source.js';
import type { HttpResponse, HttpTransport } from './http-transport.js';
import { describeError } from './logger.js';
import { bytesToSkip, Transient, UrlRefused } from './range-fetch.js';

/**
 * `size` bytes of the stored object from `from` (a table: one Range request of the same presigned URL). Throws
 * UrlRefused, Transient or DownloadError like a download request.
 */
export async function fetchObjectBytes(
  transport: HttpTransport,
  url: string,
  m: ReleaseManifest,
  from: number,
  size: number,
  signal: AbortSignal,
  idleTimeoutMs: number,
  stats: TransferStats,
): Promise<Buffer> {
  stats.requests++;
  let res: HttpResponse;
  try {
    res = await transport.send({
      method: 'GET',
      url,
      headers: { range: `bytes=${from}-${from + size - 1}` },
      signal,
      idleTimeoutMs,
    });
  } catch (err) {
    if (signal.aborted) throw err;
    throw new Transient('network', describeError(err));
  }
  const out = Buffer.alloc(size);
  let have = 0;
  try {
    let skip = bytesToSkip(res, from, objectSize(m));
    for await (const piece of res.body) {
      stats.bytesReceived += piece.length;
      let data = piece;
      if (skip > 0) {
        const drop = Math.min(skip, data.length);
        skip -= drop;
        data = data.subarray(drop);
      }
      have += data.copy(out, have);
      if (have === out.length) break;
    }
  } catch (err) {
    if (err instanceof UrlRefused || err instanceof Transient || err instanceof AgentError) throw err;
    if (signal.aborted) throw err;
    throw new Transient('network', describeError(err));
  } finally {
    res.abort();
  }
  if (have < out.length) throw new Transient('network', 'the table arrived incomplete');
  return out;
}

/** The frame table (one Range request), checked against the signed manifest. */
export async function fetchFrameTable(
  transport: HttpTransport,
  url: string,
  m: ReleaseManifest,
  signal: AbortSignal,
  idleTimeoutMs: number,
  stats: TransferStats,
): Promise<{ table: FrameTable; bytes: Buffer }> {
  const c = m.compression!;
  const table = await fetchObjectBytes(
    transport,
    url,
    m,
    c.table_offset,
    c.table_size,
    signal,
    idleTimeoutMs,
    stats,
  );
  try {
    return { table: parseFrameTable(m, table), bytes: table };
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    throw new DownloadError('corrupt', err.message);
  }
}
