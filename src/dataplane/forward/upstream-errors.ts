import { GatewayError } from '../../errors.ts';

/** How an upstream attempt ended: the `outcome` label of the attempt metrics. */
export type AttemptOutcome =
  | 'success'
  | 'timeout'
  | 'connect_error'
  | 'reset'
  | 'protocol_error'
  | 'client_abort'
  | 'other';

export interface ClassifiedError {
  readonly error: GatewayError;
  readonly outcome: AttemptOutcome;
}

const CONNECT_REFUSED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
const NAME_FAILURES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL']);
const RESETS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED']);

/**
 * Map what undici (or Node's net layer) reported for an attempt to a GatewayError with a stable
 * code. Keyed on error codes only (undici's `UND_ERR_*`, errno names), never on messages.
 */
export function classifyUpstreamError(err: unknown): ClassifiedError {
  if (err instanceof GatewayError) {
    // A 4xx abort reason is the client's doing (it left, its body broke or grew over the limit).
    const outcome: AttemptOutcome =
      err.status < 500
        ? 'client_abort'
        : err.status === 504
          ? 'timeout'
          : err.code === 'UPSTREAM_RESET'
            ? 'reset'
            : 'other';
    return { error: err, outcome };
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (code === 'UND_ERR_CONNECT_TIMEOUT')
      return {
        error: new GatewayError('UPSTREAM_CONNECT_TIMEOUT', undefined, { cause: err }),
        outcome: 'timeout',
      };
    if (code === 'UND_ERR_HEADERS_TIMEOUT')
      return { error: new GatewayError('UPSTREAM_TIMEOUT', undefined, { cause: err }), outcome: 'timeout' };
    if (code === 'UND_ERR_BODY_TIMEOUT')
      return {
        error: new GatewayError('UPSTREAM_BODY_TIMEOUT', undefined, { cause: err }),
        outcome: 'timeout',
      };
    if (CONNECT_REFUSED.has(code))
      return {
        error: new GatewayError('UPSTREAM_CONNECT_FAILED', undefined, { cause: err }),
        outcome: 'connect_error',
      };
    if (NAME_FAILURES.has(code))
      return {
        error: new GatewayError('UPSTREAM_UNAVAILABLE', 'upstream host name did not resolve', { cause: err }),
        outcome: 'connect_error',
      };
    if (RESETS.has(code))
      return { error: new GatewayError('UPSTREAM_RESET', undefined, { cause: err }), outcome: 'reset' };
    if (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')
      return {
        error: new GatewayError('UPSTREAM_PROTOCOL_ERROR', undefined, { cause: err }),
        outcome: 'protocol_error',
      };
  }
  // undici's HTTPParserError carries the llhttp code on `code` (HPE_*) and name 'HTTPParserError'.
  if ((err as { name?: unknown } | null)?.name === 'HTTPParserError')
    return {
      error: new GatewayError('UPSTREAM_PROTOCOL_ERROR', undefined, { cause: err }),
      outcome: 'protocol_error',
    };
  return {
    error: new GatewayError('UPSTREAM_RESET', 'upstream exchange failed', { cause: err }),
    outcome: 'other',
  };
}
