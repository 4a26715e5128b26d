/**
 * How an upstream attempt failed, in one place: the stable GatewayError code the client sees and
 * the attempt outcome (metrics, retries, breaker).
 */
import { GatewayError } from '../../errors.ts';
import type { AttemptOutcome } from '../../telemetry/metrics.ts';

/** How an upstream attempt ended: the `outcome` label of the attempt metrics (ATTEMPT_OUTCOMES). */
export type { AttemptOutcome };

export interface ClassifiedError {
  readonly error: GatewayError;
  readonly outcome: AttemptOutcome;
}

const CONNECT_REFUSED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
const NAME_FAILURES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL']);
const RESETS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED']);

/**
 * Outcomes that describe the client, not the upstream: it went away (`client_abort`), it held the
 * exchange up until a timeout ran out (`client_timeout`), or its request turned out to be invalid
 * after the attempt had started (`client_error`). They are neither success nor failure for the
 * circuit breaker, outlier detection and the latency estimate, and are never retried.
 */
export function isClientSide(outcome: AttemptOutcome): boolean {
  return outcome === 'client_abort' || outcome === 'client_timeout' || outcome === 'client_error';
}

function outcomeOf(err: GatewayError): AttemptOutcome {
  if (err.code === 'CLIENT_CLOSED') return 'client_abort';
  // The request the client sent (its body) is what failed: too large, or badly framed.
  if (err.status < 500) return 'client_error';
  if (err.status === 504) return 'timeout';
  return err.code === 'UPSTREAM_RESET' ? 'reset' : 'other';
}

/**
 * Map what undici (or Node's net layer) reported for an attempt to a GatewayError with a
 * stable code. Keyed on error codes only (undici's `UND_ERR_*`, errno names), never on messages.
 */
export function classifyUpstreamError(err: unknown): ClassifiedError {
  if (err instanceof GatewayError) return { error: err, outcome: outcomeOf(err) };
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
