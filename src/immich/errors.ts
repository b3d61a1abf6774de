/**
 * Typed errors of the Immich boundary. They carry the method, endpoint, status and the server's
 * message so a log line can say what went wrong — and never the API key, which this module does
 * not know.
 */
export type ImmichErrorKind =
  /** 401: the key is wrong or revoked. Fatal for the whole run. */
  | 'auth'
  /** 403: the key lacks a permission; `message` names it. */
  | 'forbidden'
  /** Any other 4xx: this request (this file) is refused; retrying the same bytes will not help. */
  | 'rejected'
  /** 5xx, 408, 429: the server is struggling; retry later. */
  | 'server'
  /** No answer: connection refused or reset, DNS failure, or no byte for the inactivity timeout. */
  | 'network';

export class ImmichError extends Error {
  override readonly name = 'ImmichError';
  constructor(
    readonly kind: ImmichErrorKind,
    readonly method: string,
    readonly endpoint: string,
    message: string,
    readonly details: {
      status?: number;
      /** The server's own message, as it sent it. */
      serverMessage?: string;
      /** From a Retry-After header, in milliseconds. */
      retryAfterMs?: number;
      correlationId?: string;
      /** The low-level code of a network failure (ECONNREFUSED, ETIMEDOUT, ...). */
      code?: string;
      /** A network failure after the whole request was sent, before any answer: it may have been done. */
      dropped?: true;
    } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get status(): number | undefined {
    return this.details.status;
  }

  /** Whether trying the same request again later can succeed. */
  get retryable(): boolean {
    return this.kind === 'server' || this.kind === 'network';
  }
}

export function isImmichError(error: unknown): error is ImmichError {
  return error instanceof ImmichError;
}

/**
 * A proxy's answer for an Immich behind it that is down or restarting (502, 503, 504): the
 * server may be back in a moment, as with a refused connection.
 */
export function isGatewayTrouble(error: ImmichError): boolean {
  return error.kind === 'server' && (error.status === 502 || error.status === 503 || error.status === 504);
}

/** Immich's 403 for a key without a permission the request needs (`Missing required permission: asset.upload`). */
export function isMissingPermission(error: ImmichError): boolean {
  return error.kind === 'forbidden' && /missing required permission/i.test(error.details.serverMessage ?? '');
}
