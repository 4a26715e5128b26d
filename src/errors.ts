/**
 * Every local failure the gateway produces is a GatewayError with a stable code. Retry, breaker,
 * metrics and logging logic key on `code`, never on message text. `toProblem` is the one mapping
 * to `application/problem+json` (RFC 9457).
 */

export interface ErrorSpec {
  readonly status: number;
  readonly title: string;
}

/** The table of codes. Adding a code is adding a row; codes are part of the public contract. */
export const ERROR_CODES = {
  BAD_REQUEST: { status: 400, title: 'Bad request' },
  INVALID_REGISTRATION: { status: 400, title: 'Invalid registration' },
  ADDRESS_NOT_ALLOWED: { status: 400, title: 'Address not allowed for registration' },
  TOO_MANY_INSTANCES: { status: 400, title: 'Too many instances for the service' },
  TOO_MANY_SERVICES: { status: 400, title: 'Too many services in the registry' },
  AUTH_REQUIRED: { status: 401, title: 'Authentication required' },
  INVALID_TOKEN: { status: 401, title: 'Invalid access token' },
  INVALID_CREDENTIAL: { status: 401, title: 'Credential not accepted' },
  INSUFFICIENT_SCOPE: { status: 403, title: 'Insufficient scope' },
  RATE_LIMIT_KEY_MISSING: { status: 403, title: 'Request lacks what its rate limit is keyed on' },
  FORBIDDEN: { status: 403, title: 'Forbidden' },
  MTLS_REQUIRED: { status: 403, title: 'Client certificate required' },
  IDENTITY_DENIED: { status: 403, title: 'Client identity not allowed' },
  ROUTE_NOT_FOUND: { status: 404, title: 'No route matches the request' },
  INSTANCE_NOT_FOUND: { status: 404, title: 'No lease for this instance' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  REQUEST_TIMEOUT: { status: 408, title: 'Request timed out' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Request body too large' },
  REGISTRY_RATE_LIMITED: { status: 429, title: 'Too many registration requests' },
  RATE_LIMITED: { status: 429, title: 'Rate limit exceeded' },
  HEADERS_TOO_LARGE: { status: 431, title: 'Request header fields too large' },
  CLIENT_CLOSED: { status: 499, title: 'Client closed the request' },
  INTERNAL: { status: 500, title: 'Internal gateway error' },
  UPSTREAM_CONNECT_FAILED: { status: 502, title: 'Upstream connection failed' },
  UPSTREAM_RESET: { status: 502, title: 'Upstream connection reset' },
  UPSTREAM_PROTOCOL_ERROR: { status: 502, title: 'Upstream sent an invalid response' },
  UPSTREAM_TLS_VERIFY_FAILED: { status: 502, title: "Upstream's TLS certificate failed verification" },
  UPSTREAM_TLS_HANDSHAKE_FAILED: { status: 502, title: 'Upstream TLS handshake failed' },
  UPSTREAM_IDENTITY_MISMATCH: { status: 502, title: "Upstream's identity is not the one expected" },
  UPSTREAM_UNAVAILABLE: { status: 503, title: 'Upstream unavailable' },
  AUTH_UNAVAILABLE: { status: 503, title: 'Token verification keys unavailable' },
  NO_HEALTHY_ENDPOINT: { status: 503, title: 'No endpoint available for the upstream' },
  CIRCUIT_OPEN: { status: 503, title: 'Upstream circuit breaker is open' },
  UPSTREAM_OVERLOADED: { status: 503, title: 'Upstream concurrency limit reached' },
  SHUTTING_DOWN: { status: 503, title: 'Gateway is shutting down' },
  REGISTRY_UNAVAILABLE: { status: 503, title: 'Registry store unavailable' },
  RATE_LIMIT_UNAVAILABLE: { status: 503, title: 'Rate limit store unavailable' },
  UPSTREAM_CONNECT_TIMEOUT: { status: 504, title: 'Upstream connect timed out' },
  UPSTREAM_TIMEOUT: { status: 504, title: 'Upstream response timed out' },
  UPSTREAM_BODY_TIMEOUT: { status: 504, title: 'Upstream body idle timeout' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra response headers for the problem response (e.g. `www-authenticate`), set by the gateway only. */
  readonly headers: Readonly<Record<string, string>> | undefined;
  /** Extension members of the problem body (RFC 9457 §3.2), set by the gateway only. */
  readonly members: Readonly<Record<string, string | readonly string[]>> | undefined;

  constructor(
    code: ErrorCode,
    detail?: string,
    options?: {
      cause?: unknown;
      headers?: Readonly<Record<string, string>>;
      members?: Readonly<Record<string, string | readonly string[]>>;
    },
  ) {
    super(detail ?? ERROR_CODES[code].title, options);
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.headers = options?.headers;
    this.members = options?.members;
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof GatewayError;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail?: string;
  instance?: string;
  traceId?: string;
  requestId?: string;
  /** Extension members (GatewayError.members). */
  [member: string]: unknown;
}

/**
 * Build the RFC 9457 body. `detail` is only what the gateway itself wrote (never upstream or
 * client text), so it is safe to return.
 */
export function toProblem(err: GatewayError, ids: { traceId?: string; requestId?: string }): Problem {
  const spec = ERROR_CODES[err.code];
  const problem: Problem = {
    type: `https://peregrine.dev/problems/${err.code.toLowerCase().replaceAll('_', '-')}`,
    title: spec.title,
    status: err.status,
    code: err.code,
  };
  if (err.message && err.message !== spec.title) problem.detail = err.message;
  if (err.members !== undefined) {
    for (const name in err.members) if (!Object.hasOwn(problem, name)) problem[name] = err.members[name];
  }
  if (ids.traceId) problem.traceId = ids.traceId;
  if (ids.requestId) problem.requestId = ids.requestId;
  return problem;
}

/** Wrap anything thrown into a GatewayError without losing the cause. */
export function asGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('INTERNAL', undefined, { cause: err });
}
