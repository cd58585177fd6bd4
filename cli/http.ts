/**
 * HTTPS for the CLI: one agent that trusts the system roots plus the configured CA, request bodies from strings
 * or streams (never a whole image in memory), bounded response bodies, and network failures turned into
 * messages that say what to check.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { trustingAgent } from '../protocol/tls-trust.js';
import { CliError, readTextFile } from './errors.js';

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface HttpRequest {
  readonly method: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Buffer | Readable;
  readonly agent: Agent;
  readonly signal?: AbortSignal;
  /** Fails a request whose socket stays silent this long. @default 60000 */
  readonly idleTimeoutMs?: number;
  /** Larger response bodies are cut (error bodies and JSON answers are small). @default 16 MiB */
  readonly maxResponseBytes?: number;
}

/** An agent trusting the system roots plus `caFile` (the local cloud's CA). */
export function createAgent(caFile: string | undefined, maxSockets = 8): Agent {
  if (caFile === undefined) return new Agent({ keepAlive: true, maxSockets });
  const pem = readTextFile(caFile, 'the CA file');
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new CliError(`${caFile} is not a PEM certificate`);
  return trustingAgent(pem, { keepAlive: true, maxSockets });
}

const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
]);

/** A network failure described for an operator; `retryable` for transient ones. */
export class NetworkError extends CliError {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, 1, options);
  }
}

export function describeNetworkError(err: unknown, url: URL): NetworkError {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const where = url.origin;
  if (code === 'ECONNREFUSED') {
    const local = url.hostname === '127.0.0.1' || url.hostname === 'localhost';
    return new NetworkError(
      `cannot connect to ${where} (connection refused)${local ? '; is the local cloud running? (npm start)' : ''}`,
      !local,
      { cause: err },
    );
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new NetworkError(`cannot resolve ${url.hostname} (${code})`, code === 'EAI_AGAIN', { cause: err });
  }
  if (TLS_CODES.has(code)) {
    return new NetworkError(
      `TLS: the certificate of ${where} is not trusted (${code}); pass the CA with --ca <file> or OTA_CA_FILE`,
      false,
      { cause: err },
    );
  }
  if (code === 'ETIMEDOUT' || code === 'ECONNRESET' || code === 'EPIPE' || code === 'IDLE_TIMEOUT') {
    return new NetworkError(`connection to ${where} failed (${code})`, true, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new NetworkError(`request to ${where} failed: ${message}${code ? ` (${code})` : ''}`, false, {
    cause: err,
  });
}

/** One HTTPS request. Network errors become NetworkError; an abort rejects with the AbortError. */
export function send(url: URL, req: HttpRequest): Promise<HttpResponse> {
  const max = req.maxResponseBytes ?? 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    if (req.signal?.aborted) {
      reject(req.signal.reason ?? new DOMException('aborted', 'AbortError'));
      return;
    }
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      if (req.signal?.aborted) reject(req.signal.reason ?? err);
      else if ((err as { name?: string }).name === 'AbortError' || err instanceof CliError) reject(err);
      else reject(describeNetworkError(err, url));
    };
    const r = httpsRequest(
      url,
      { method: req.method, headers: req.headers, agent: req.agent, signal: req.signal },
      (res) => {
        const parts: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          if (size < max) parts.push(d.subarray(0, max - size));
          size += d.length;
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) });
        });
        res.on('error', fail);
      },
    );
    r.setTimeout(req.idleTimeoutMs ?? 60_000, () => {
      const err = Object.assign(new Error('no response'), { code: 'IDLE_TIMEOUT' });
      r.destroy(err);
    });
    r.on('error', fail);
    const body = req.body;
    if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) {
      r.end(body);
    } else {
      body.on('error', (err) => {
        r.destroy(err);
        fail(new CliError(`reading the upload failed: ${err.message}`));
      });
      body.pipe(r);
    }
  });
}
