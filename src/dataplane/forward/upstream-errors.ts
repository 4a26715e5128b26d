/**
 * How an upstream attempt failed, in one place: the stable GatewayError code the client sees, the
 * attempt outcome (metrics, retries, breaker), and for TLS failures the reason a log line names.
 */
import { GatewayError } from '../../errors.ts';
import type { AttemptOutcome } from '../../telemetry/metrics.ts';
import { type HandshakeFailureReason, handshakeFailureReason, verifyErrorReason } from '../../tls/reasons.ts';
import { PEER_IDENTITY_ERROR, type PeerIdentityError, type PeerIdentityReason } from '../../tls/svid.ts';

/** How an upstream attempt ended: the `outcome` label of the attempt metrics (ATTEMPT_OUTCOMES). */
export type { AttemptOutcome };

/**
 * Why the upstream's certificate was refused: the listener's client-certificate reasons (OpenSSL's
 * verification codes folded the same way), `name_mismatch` (the certificate does not name the
 * host the gateway connected to), and for an expected SPIFFE identity `not_svid` (no SPIFFE ID, or
 * not a leaf SVID) or `identity_mismatch` (a SPIFFE ID not expected).
 */
export type UpstreamTlsReason =
  | ReturnType<typeof verifyErrorReason>
  | 'name_mismatch'
  | HandshakeFailureReason
  | PeerIdentityReason;

export interface UpstreamTlsFailure {
  /**
   * `verify`: the handshake completed and the certificate was refused; `handshake`: it did not
   * complete; `identity`: the chain verified and the SPIFFE ID was not one expected.
   */
  readonly kind: 'verify' | 'handshake' | 'identity';
  /** Node's code: CERT_HAS_EXPIRED, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ERR_TLS_CERT_ALTNAME_INVALID, ERR_SSL_... */
  readonly code: string;
  readonly reason: UpstreamTlsReason;
  /** `identity` only: the URI SANs seen, the identities expected, and what was wrong. */
  readonly identity?: {
    readonly seen: readonly string[];
    readonly expected: readonly string[];
    readonly problem: string;
  };
}

export interface ClassifiedError {
  readonly error: GatewayError;
  readonly outcome: AttemptOutcome;
  /** Set for TLS failures (outcome `tls_error`). */
  readonly tls?: UpstreamTlsFailure | undefined;
}

const CONNECT_REFUSED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
const NAME_FAILURES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL']);
/**
 * The connection went away under the request. UND_ERR_INFO is undici closing a connection by
 * design with the request unanswered: chiefly an HTTP/2 GOAWAY without an error, which refuses the
 * streams it did not process (RFC 9113 §6.8) and which undici does not replay itself when the body
 * is a stream.
 */
const RESETS = new Set([
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'ECONNABORTED',
  'UND_ERR_INFO',
]);

/**
 * OpenSSL's certificate verification results (X509_V_ERR_*), as Node names them in `err.code` when
 * it refuses a peer's certificate, and Node's own host name check.
 */
const VERIFY_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const NAME_MISMATCH: ReadonlySet<string> = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH']);

/** A TLS failure of the upstream connection, or undefined when `code` is not one. */
export function upstreamTlsFailure(code: string): UpstreamTlsFailure | undefined {
  if (VERIFY_CODES.has(code))
    return {
      kind: 'verify',
      code,
      reason: NAME_MISMATCH.has(code) ? 'name_mismatch' : verifyErrorReason(code),
    };
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code === 'EPROTO')
    return {
      kind: 'handshake',
      code,
      reason: handshakeFailureReason({ code } as NodeJS.ErrnoException, undefined),
    };
  return undefined;
}

/**
 * Outcomes that describe the client, not the upstream: it went away (`client_abort`), it held the
 * exchange up until a timeout ran out (`client_timeout`), or its request turned out to be invalid
 * after the attempt had started (`client_error`). They are neither success nor failure for the
 * circuit breaker, outlier detection and the latency estimate, and are never retried.
 */
export function isClientSide(outcome: AttemptOutcome): boolean {
  return outcome === 'client_abort' || outcome === 'client_timeout' || outcome === 'client_error';
}

/**
 * Outcomes that say nothing about the endpoint, for the circuit breaker, outlier detection and the
 * latency estimate: the client-side ones, and `stale_connection` (a pooled connection the endpoint
 * had closed while idle, as HTTP/1.1 lets it, failed as a request was written on it).
 */
export function isNeutral(outcome: AttemptOutcome): boolean {
  return outcome === 'stale_connection' || isClientSide(outcome);
}

/**
 * How a request written on a connection the peer has just closed fails: a reset, a write to a
 * closed socket, undici's `other side closed`/`closed` (UND_ERR_SOCKET), or an HTTP/2 peer's
 * GOAWAY refusing the stream (UND_ERR_INFO).
 */
const STALE_CONNECTION_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_INFO',
]);

/**
 * Whether a failed attempt is a stale pooled connection: it went out on a connection that had
 * already served a request (reused), failed with a reset or close before any response head, and
 * the request is not itself a retry of one (a second such failure is the endpoint's).
 */
export function isStaleConnectionFailure(err: unknown, reused: boolean, status: number): boolean {
  if (!reused || status !== 0) return false;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && STALE_CONNECTION_CODES.has(code);
}

function outcomeOf(err: GatewayError): AttemptOutcome {
  if (err.code === 'CLIENT_CLOSED') return 'client_abort';
  // The request the client sent (its body) is what failed: too large, or badly framed.
  if (err.status < 500) return 'client_error';
  if (err.status === 504) return 'timeout';
  return err.code === 'UPSTREAM_RESET' ? 'reset' : 'other';
}

/**
 * Map what undici (or Node's net and TLS layers) reported for an attempt to a GatewayError with a
 * stable code. Keyed on error codes only (undici's `UND_ERR_*`, errno names, OpenSSL's names),
 * never on messages.
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
    if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')
      return {
        error: new GatewayError('UPSTREAM_PROTOCOL_ERROR', undefined, { cause: err }),
        outcome: 'protocol_error',
      };
    if (code === PEER_IDENTITY_ERROR) {
      const e = err as PeerIdentityError;
      return {
        error: new GatewayError('UPSTREAM_IDENTITY_MISMATCH', undefined, { cause: err }),
        outcome: 'tls_error',
        tls: {
          kind: 'identity',
          code,
          reason: e.reason,
          identity: { seen: e.seen, expected: e.expected, problem: e.message },
        },
      };
    }
    const tls = upstreamTlsFailure(code);
    if (tls !== undefined)
      return {
        error: new GatewayError(
          tls.kind === 'verify' ? 'UPSTREAM_TLS_VERIFY_FAILED' : 'UPSTREAM_TLS_HANDSHAKE_FAILED',
          undefined,
          { cause: err },
        ),
        outcome: 'tls_error',
        tls,
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
