/**
 * Uploading an image to the presigned URLs POST /releases answers: one PUT with the signed content length, or
 * multipart with a few parts in flight. Every request streams its byte range from the file, so memory stays
 * bounded whatever the image size; a part that fails on the network or with a 5xx is sent again.
 */
import { createReadStream } from 'node:fs';
import type { Agent } from 'node:https';
import { Transform } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CliError } from './errors.js';
import { NetworkError, send } from './http.js';

export type UploadTarget =
  | { readonly method: 'PUT'; readonly url: string; readonly expires_at: string }
  | {
      readonly method: 'MULTIPART';
      readonly upload_id: string;
      readonly part_size: number;
      readonly parts: readonly { readonly part_number: number; readonly url: string }[];
      readonly expires_at: string;
    };

export interface PartRange {
  readonly partNumber: number;
  readonly url: string;
  /** First byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
}

/** The byte range of every part; refuses a part list that does not cover the image exactly. */
export function partRanges(
  size: number,
  partSize: number,
  parts: readonly { readonly part_number: number; readonly url: string }[],
): PartRange[] {
  const expected = Math.ceil(size / partSize);
  const numbers = parts.map((p) => p.part_number).sort((a, b) => a - b);
  if (parts.length !== expected || numbers.some((n, i) => n !== i + 1)) {
    throw new CliError(
      `the API answered ${parts.length} upload parts for ${size} bytes in parts of ${partSize}; expected parts 1-${expected}`,
    );
  }
  return [...parts]
    .sort((a, b) => a.part_number - b.part_number)
    .map((p) => ({
      partNumber: p.part_number,
      url: p.url,
      start: (p.part_number - 1) * partSize,
      end: Math.min(size, p.part_number * partSize),
    }));
}

/** The body of POST /releases/{id}/publish after the upload. */
export type PublishBody = { upload_id?: string; parts?: { part_number: number; etag: string }[] };

export interface UploadOptions {
  readonly file: string;
  readonly size: number;
  readonly target: UploadTarget;
  readonly agent: Agent;
  readonly signal?: AbortSignal;
  /** Bytes sent since the last call; negative when a failed attempt's bytes are taken back. */
  readonly onProgress?: (delta: number) => void;
  /** Parts in flight at once. @default 4 */
  readonly concurrency?: number;
  /** Attempts per request. @default 3 */
  readonly attempts?: number;
  /** Wait before attempt n (1-based) is retried. @default 1 s, 2 s, 4 s... */
  readonly backoffMs?: (attempt: number) => number;
}

/** S3 error XML -> "Code: Message". */
export function describeS3Error(status: number, body: Buffer): string {
  const text = body.toString('utf8');
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  const detail = code ? `${code}${message ? `: ${message}` : ''}` : text.trim().slice(0, 200);
  return `HTTP ${status}${detail ? ` ${detail}` : ''}`;
}

const retryableStatus = (status: number) => status >= 500 || status === 408 || status === 429;

async function putRange(
  opts: UploadOptions,
  range: { url: string; start: number; end: number; what: string; headers: Record<string, string> },
): Promise<string | undefined> {
  const attempts = opts.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    let sent = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        sent += chunk.length;
        opts.onProgress?.(chunk.length);
        done(null, chunk);
      },
    });
    const stream = createReadStream(opts.file, {
      start: range.start,
      end: range.end - 1,
      highWaterMark: 1024 * 1024,
    });
    stream.on('error', (err) => counter.destroy(err));
    let failure: CliError;
    let stored = false;
    try {
      const res = await send(new URL(range.url), {
        method: 'PUT',
        headers: { ...range.headers, 'content-length': String(range.end - range.start) },
        body: stream.pipe(counter),
        agent: opts.agent,
        signal: opts.signal,
        idleTimeoutMs: 120_000,
        maxResponseBytes: 64 * 1024,
      });
      if (res.status >= 200 && res.status < 300) {
        stored = true;
        const etag = res.headers.etag;
        return typeof etag === 'string' ? etag : undefined;
      }
      const expired = res.status === 403 && /expired/i.test(res.body.toString('utf8'));
      failure = new CliError(
        `upload of ${range.what} refused: ${describeS3Error(res.status, res.body)}${expired ? '; run the upload again for fresh URLs' : ''}`,
      );
      if (!retryableStatus(res.status)) throw failure;
    } catch (err) {
      stream.destroy();
      if (!(err instanceof NetworkError) || !err.retryable) throw err;
      failure = err;
    } finally {
      // A failed attempt's bytes will be sent again: take them back from the progress.
      if (!stored) opts.onProgress?.(-sent);
    }
    if (attempt >= attempts) throw failure;
    await sleep((opts.backoffMs ?? ((n) => 1000 * 2 ** (n - 1)))(attempt), undefined, {
      signal: opts.signal,
    });
  }
}

/** Uploads the image to the target and answers the publish body (upload id and ETags for multipart). */
export async function uploadImage(opts: UploadOptions): Promise<PublishBody> {
  const { target } = opts;
  if (target.method === 'PUT') {
    await putRange(opts, {
      url: target.url,
      start: 0,
      end: opts.size,
      what: 'the image',
      headers: { 'content-type': 'application/octet-stream' },
    });
    return {};
  }
  const ranges = partRanges(opts.size, target.part_size, target.parts);
  const etags = new Map<number, string>();
  let next = 0;
  let stop: unknown;
  const worker = async () => {
    while (next < ranges.length && stop === undefined) {
      const r = ranges[next++]!;
      try {
        const etag = await putRange(opts, {
          ...r,
          what: `part ${r.partNumber} of ${ranges.length}`,
          headers: {},
        });
        if (!etag) throw new CliError(`part ${r.partNumber} was stored but the answer carried no ETag`);
        etags.set(r.partNumber, etag);
      } catch (err) {
        stop ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 4, ranges.length) }, worker));
  if (stop !== undefined) throw stop;
  return {
    upload_id: target.upload_id,
    parts: ranges.map((r) => ({ part_number: r.partNumber, etag: etags.get(r.partNumber)! })),
  };
}
