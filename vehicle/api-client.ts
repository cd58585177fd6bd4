/**
 * The vehicle's HTTPS API client: challenge-response login with the device key, bearer tokens refreshed before
 * they expire and once more on a 401, and the update routes. Responses are validated; a download answer whose
 * manifest or assignment does not parse is refused here, before anything acts on it.
 */

import { type BundleAnswer, bundleAnswerSchema } from '../protocol/bundle-api.js';
import { type FreshnessAlert, type FreshnessAnswer, freshnessAnswerSchema } from '../protocol/freshness.js';
import { type InventoryAnswer, type InventoryReport, inventoryAnswerSchema } from '../protocol/inventory.js';
import {
  challengeAnswerSchema,
  type DownloadAnswer,
  downloadAnswerSchema,
  type StatusAnswer,
  statusAnswerSchema,
  tokenAnswerSchema,
  type UpdateList,
  updateListSchema,
} from '../protocol/responses.js';
import type { StatusReport } from '../protocol/schemas.js';
import * as z from '../protocol/zod.js';
import { ApiError } from './errors.js';
import { type HttpTransport, readBody, TransportError } from './http-transport.js';
import { type AgentLogger, silentLogger } from './logger.js';
import { type AgentRuntime, systemRuntime } from './runtime.js';

export type StatusBody = StatusReport;

/** What the agent needs from the backend; the HTTPS client implements it, tests may fake it. */
export interface VehicleApi {
  initiate(firmwareVersion: string, signal?: AbortSignal): Promise<DownloadAnswer>;
  download(firmwareVersion: string, signal?: AbortSignal): Promise<DownloadAnswer>;
  listUpdates(signal?: AbortSignal): Promise<UpdateList>;
  reportStatus(body: StatusBody, signal?: AbortSignal): Promise<StatusAnswer>;
  /** The newest freshness statement with this vehicle's leaf and proof (absent: freshness is not checked). */
  freshness?(signal?: AbortSignal): Promise<FreshnessAnswer>;
  /** Reports a withheld offer or missing statements. */
  freshnessAlert?(alert: FreshnessAlert, signal?: AbortSignal): Promise<unknown>;
  /** Reports what every ECU runs (absent: the inventory is not reported). */
  reportInventory?(report: InventoryReport, signal?: AbortSignal): Promise<InventoryAnswer>;
  /** A bundle offered to this vehicle: the material to check and the members' download URLs (absent: no bundles). */
  bundle?(bundleId: string, signal?: AbortSignal, options?: { assignment?: boolean }): Promise<BundleAnswer>;
}

export interface VehicleApiClientOptions {
  /** https://host[:port][/stage] */
  readonly baseUrl: string;
  readonly vin: string;
  /** Signs the challenge nonce with the device key: base64 DER ECDSA-SHA256 over challengeSigningInput. */
  readonly signChallenge: (nonce: string) => string;
  readonly transport: HttpTransport;
  readonly runtime?: AgentRuntime;
  readonly logger?: AgentLogger;
  /** Refresh a token this long before it expires, s. @default 60 */
  readonly refreshMarginSeconds?: number;
  /** Socket inactivity limit per request, ms. @default 30000 */
  readonly timeoutMs?: number;
}

const MAX_JSON_BYTES = 4 * 1024 * 1024;

function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const seconds = Number(v);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export class VehicleApiClient implements VehicleApi {
  private token: { value: string; expiresAt: number } | undefined;
  private tokenRequest: Promise<string> | undefined;
  private readonly runtime: AgentRuntime;
  private readonly logger: AgentLogger;
  private readonly base: string;

  constructor(private readonly options: VehicleApiClientOptions) {
    this.runtime = options.runtime ?? systemRuntime;
    this.logger = options.logger ?? silentLogger;
    this.base = options.baseUrl.replace(/\/+$/, '');
  }

  initiate(firmwareVersion: string, signal?: AbortSignal): Promise<DownloadAnswer> {
    return this.authorized(
      'POST',
      `/updates/${this.options.vin}/initiate`,
      { firmware_version: firmwareVersion },
      signal,
      downloadAnswerSchema,
    );
  }

  download(firmwareVersion: string, signal?: AbortSignal): Promise<DownloadAnswer> {
    return this.authorized(
      'POST',
      `/updates/${this.options.vin}/download`,
      { firmware_version: firmwareVersion },
      signal,
      downloadAnswerSchema,
    );
  }

  listUpdates(signal?: AbortSignal): Promise<UpdateList> {
    return this.authorized('GET', `/updates/${this.options.vin}`, undefined, signal, updateListSchema);
  }

  reportStatus(body: StatusBody, signal?: AbortSignal): Promise<StatusAnswer> {
    return this.authorized('POST', `/updates/${this.options.vin}/status`, body, signal, statusAnswerSchema);
  }

  freshness(signal?: AbortSignal): Promise<FreshnessAnswer> {
    return this.authorized(
      'GET',
      `/updates/${this.options.vin}/freshness`,
      undefined,
      signal,
      freshnessAnswerSchema,
    );
  }

  freshnessAlert(alert: FreshnessAlert, signal?: AbortSignal): Promise<unknown> {
    return this.authorized(
      'POST',
      `/updates/${this.options.vin}/freshness/alert`,
      alert,
      signal,
      z.unknown(),
    );
  }

  bundle(
    bundleId: string,
    signal?: AbortSignal,
    options: { assignment?: boolean } = {},
  ): Promise<BundleAnswer> {
    return this.authorized(
      'POST',
      `/updates/${this.options.vin}/bundle`,
      { bundle_id: bundleId, ...(options.assignment ? { assignment: true } : {}) },
      signal,
      bundleAnswerSchema,
    );
  }

  reportInventory(report: InventoryReport, signal?: AbortSignal): Promise<InventoryAnswer> {
    return this.authorized(
      'POST',
      `/updates/${this.options.vin}/inventory`,
      report,
      signal,
      inventoryAnswerSchema,
    );
  }

  /** Forgets the token (e.g. after re-registration). */
  invalidateToken(): void {
    this.token = undefined;
  }

  private async authorized<T>(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    schema: z.ZodMiniType<T>,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.currentToken(signal);
      try {
        return await this.call(method, path, body, signal, schema, token);
      } catch (err) {
        // A 401 means the token is no longer good (expired early, key re-registered): one fresh login, once.
        if (err instanceof ApiError && err.status === 401 && attempt === 0) {
          this.logger.info('token refused; logging in again', { code: err.code });
          if (this.token?.value === token) this.token = undefined;
          continue;
        }
        throw err;
      }
    }
  }

  private currentToken(signal: AbortSignal | undefined): Promise<string> {
    const margin = (this.options.refreshMarginSeconds ?? 60) * 1000;
    if (this.token && this.runtime.now() < this.token.expiresAt - margin)
      return Promise.resolve(this.token.value);
    this.tokenRequest ??= this.login(signal).finally(() => {
      this.tokenRequest = undefined;
    });
    return this.tokenRequest;
  }

  private async login(signal: AbortSignal | undefined): Promise<string> {
    const vin = this.options.vin;
    let issued: z.infer<typeof tokenAnswerSchema> | undefined;
    // A challenge lives two minutes and is spent by any answer: one that expired while the answer waited (a stalled
    // link, a queue) or whose answer was lost after it was spent is refused with invalid_challenge, and only a
    // fresh challenge helps. Twice more, then the error goes up (a wrong key fails every time).
    for (let attempt = 0; issued === undefined; attempt++) {
      const challenge = await this.call('POST', '/auth/challenge', { vin }, signal, challengeAnswerSchema);
      try {
        issued = await this.call(
          'POST',
          '/auth/token',
          { vin, nonce: challenge.nonce, signature: this.options.signChallenge(challenge.nonce) },
          signal,
          tokenAnswerSchema,
        );
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 'invalid_challenge' && attempt < 2)) throw err;
        this.logger.info('challenge refused; logging in with a fresh one', { attempt });
      }
    }
    this.token = { value: issued.token, expiresAt: this.runtime.now() + issued.expires_in * 1000 };
    this.logger.debug('logged in', { expires_in: issued.expires_in });
    return issued.token;
  }

  private async call<T>(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    schema: z.ZodMiniType<T>,
    token?: string,
  ): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    let status: number;
    let raw: Buffer;
    let retryAfter: string | string[] | undefined;
    try {
      const res = await this.options.transport.send({
        method,
        url: `${this.base}${path}`,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        idleTimeoutMs: this.options.timeoutMs ?? 30_000,
      });
      status = res.status;
      retryAfter = res.headers['retry-after'];
      raw = await readBody(res, MAX_JSON_BYTES);
    } catch (err) {
      if (err instanceof TransportError)
        throw new ApiError(0, err.code, `${method} ${path}: ${err.message}`, undefined, { cause: err });
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch {
      json = undefined;
    }
    if (status < 200 || status >= 300) {
      const error = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      throw new ApiError(
        status,
        typeof error?.code === 'string' ? error.code : `http_${status}`,
        `${method} ${path}: ${status} ${typeof error?.message === 'string' ? error.message : ''}`.trim(),
        parseRetryAfter(retryAfter),
      );
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw new ApiError(
        status,
        'invalid_response',
        `${method} ${path}: unexpected answer (${parsed.error.issues[0]?.message})`,
      );
    }
    return parsed.data;
  }
}

/**
 * Operator call: registers a vehicle from its CSR (POST /vehicles with the admin token or IAM) and answers the
 * device certificate. Used by the CLI's --register for the local cloud and by tests; vehicles never hold this token.
 */
export async function registerVehicle(
  transport: HttpTransport,
  baseUrl: string,
  adminToken: string,
  body: {
    vin: string;
    model: string;
    ecus: { ecu: string; hardware_id: string; version: string }[];
    csr: string;
  },
): Promise<string> {
  const res = await transport.send({
    method: 'POST',
    url: `${baseUrl.replace(/\/+$/, '')}/vehicles`,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
    body: JSON.stringify(body),
    idleTimeoutMs: 30_000,
  });
  const raw = await readBody(res, MAX_JSON_BYTES);
  let json: { certificate_pem?: unknown; error?: { code?: string; message?: string } } | undefined;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    json = undefined;
  }
  if (res.status !== 201 || typeof json?.certificate_pem !== 'string') {
    throw new ApiError(
      res.status,
      json?.error?.code ?? `http_${res.status}`,
      `POST /vehicles: ${res.status} ${json?.error?.message ?? ''}`.trim(),
    );
  }
  return json.certificate_pem;
}
