/**
 * Agent errors: one base class with a stable code, subclasses per concern. Each carries what the orchestrator
 * needs to decide (retry or give up) and to report honestly (the status and a reason the backend can show).
 */
export class AgentError extends Error {
  readonly code: string;
  readonly context: Record<string, unknown>;

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; context?: Record<string, unknown> } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.context = options.context ?? {};
  }
}

/** The backend answered with an error status ({error: {code, message}}), or not at all. */
export class ApiError extends AgentError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    /** From retry-after on 429/503, ms. */
    readonly retryAfterMs?: number,
    options: { cause?: unknown } = {},
  ) {
    super(code, message, options);
  }

  /** Worth retrying later: no answer, throttling, server-side failure. Other 4xx are final answers. */
  get transient(): boolean {
    return (
      this.status === 0 ||
      this.status === 401 ||
      this.status === 408 ||
      this.status === 429 ||
      this.status >= 500
    );
  }
}

export type DownloadFailure =
  /** A chunk kept failing its digest after the re-fetch budget. */
  | 'corrupt'
  /** Slower than the minimum speed for the whole window. */
  | 'too_slow'
  /** The overall download deadline passed. */
  | 'deadline'
  /** Not enough free space for the image. */
  | 'no_space'
  /** The server kept refusing the URL (403) even after fresh URLs. */
  | 'forbidden'
  /** The server's object is not the manifest's (other size), or it answered something unusable. */
  | 'bad_response'
  /** Network failures, timeouts or 5xx beyond the retry budget. */
  | 'network';

export class DownloadError extends AgentError {
  constructor(
    readonly failure: DownloadFailure,
    message: string,
    options: { cause?: unknown; context?: Record<string, unknown> } = {},
  ) {
    super(`download_${failure}`, message, options);
  }

  /**
   * Worth another download run later, from the resume point it kept: the network, a slow link, the deadline or
   * refused URLs may do better next time; corrupt bytes, a full disk or an object that is not the manifest's will not.
   */
  get resumable(): boolean {
    return this.failure !== 'corrupt' && this.failure !== 'no_space' && this.failure !== 'bad_response';
  }
}

export class InstallError extends AgentError {}

/** The state file is unreadable or invalid: the agent refuses to guess (counters and sequences live there). */
export class StateError extends AgentError {}
