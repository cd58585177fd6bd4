/**
 * The protocol's own error: a message or artefact that does not follow the wire contract (a manifest whose
 * fields contradict each other, a malformed topic). It knows nothing of HTTP: the backend maps it to a 400, the
 * vehicle agent to a refusal of the offer.
 */
export class ProtocolError extends Error {
  public readonly code: string;
  public readonly context: Record<string, unknown>;

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; context?: Record<string, unknown> } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'ProtocolError';
    this.code = code;
    this.context = options.context ?? {};
  }
}
