/**
 * Domain errors. Every error a caller can cause maps to one HTTP status and a stable, machine-readable code;
 * anything else is an internal error whose details never leave the process.
 */
export class OtaError extends Error {
  public readonly code: string;
  public readonly statusCode: number;
  public readonly context: Record<string, unknown>;

  constructor(
    code: string,
    message: string,
    statusCode: number,
    options: { cause?: unknown; context?: Record<string, unknown> } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
    this.context = options.context ?? {};
  }

  toBody(): { error: { code: string; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

type Opts = { cause?: unknown; context?: Record<string, unknown> };

export class BadRequestError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 400, opts);
  }
}
export class UnauthorizedError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 401, opts);
  }
}
export class ForbiddenError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 403, opts);
  }
}
export class NotFoundError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 404, opts);
  }
}
export class ConflictError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 409, opts);
  }
}
export class PayloadTooLargeError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 413, opts);
  }
}
export class TooManyRequestsError extends OtaError {
  constructor(code: string, message: string, opts?: Opts) {
    super(code, message, 429, opts);
  }
}

/** The body sent for anything unexpected: no message, stack or cause leaks to the caller. */
export const INTERNAL_ERROR_BODY = { error: { code: 'internal_error', message: 'Internal error' } } as const;
