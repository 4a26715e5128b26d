/**
 * Why a TLS handshake or a client certificate failed, folded into a closed set of metric label
 * values from OpenSSL's error and verification codes.
 */
import type { TLSSocket } from 'node:tls';

/** Label `reason` of peregrine_tls_client_cert_verification_failures_total. */
export const CLIENT_CERT_REASONS = [
  'no_cert',
  'unknown_ca',
  'cert_expired',
  'cert_not_yet_valid',
  'bad_purpose',
  'cert_invalid',
] as const;
export type ClientCertReason = (typeof CLIENT_CERT_REASONS)[number];

/** Label `reason` of peregrine_tls_handshake_failures_total: the client-certificate reasons and these. */
export const HANDSHAKE_FAILURE_REASONS = [
  ...CLIENT_CERT_REASONS,
  'protocol_version',
  'no_shared_cipher',
  'no_alpn',
  'peer_rejected_cert',
  'not_tls',
  'timeout',
  'client_closed',
  'other',
] as const;
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number];

/** X509_V_ERR_* names as Node reports them in `authorizationError` → reason. */
const VERIFY_ERRORS: ReadonlyMap<string, ClientCertReason> = new Map<string, ClientCertReason>([
  ['CERT_HAS_EXPIRED', 'cert_expired'],
  ['CERT_NOT_YET_VALID', 'cert_not_yet_valid'],
  ['INVALID_PURPOSE', 'bad_purpose'],
  ['UNABLE_TO_GET_ISSUER_CERT', 'unknown_ca'],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'unknown_ca'],
  ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unknown_ca'],
  ['SELF_SIGNED_CERT_IN_CHAIN', 'unknown_ca'],
  ['DEPTH_ZERO_SELF_SIGNED_CERT', 'unknown_ca'],
  ['CERT_UNTRUSTED', 'unknown_ca'],
  ['CERT_REJECTED', 'unknown_ca'],
]);

/** Node's error codes on 'tlsClientError' (OpenSSL reason strings, upper-cased) → reason. */
const HANDSHAKE_ERRORS: ReadonlyMap<string, HandshakeFailureReason> = new Map<string, HandshakeFailureReason>(
  [
    ['ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', 'no_cert'],
    ['ERR_SSL_UNSUPPORTED_PROTOCOL', 'protocol_version'],
    ['ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'protocol_version'],
    ['ERR_SSL_UNKNOWN_PROTOCOL', 'protocol_version'],
    ['ERR_SSL_VERSION_TOO_LOW', 'protocol_version'],
    ['ERR_SSL_NO_SHARED_CIPHER', 'no_shared_cipher'],
    ['ERR_SSL_NO_APPLICATION_PROTOCOL', 'no_alpn'],
    ['ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL', 'no_alpn'],
    ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'peer_rejected_cert'],
    ['ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'peer_rejected_cert'],
    ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN', 'peer_rejected_cert'],
    ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'peer_rejected_cert'],
    ['ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR', 'peer_rejected_cert'],
    ['ERR_SSL_HTTP_REQUEST', 'not_tls'],
    ['ERR_SSL_HTTPS_PROXY_REQUEST', 'not_tls'],
    ['ERR_SSL_WRONG_VERSION_NUMBER', 'not_tls'],
    ['ERR_SSL_PACKET_LENGTH_TOO_LONG', 'not_tls'],
    ['ERR_TLS_HANDSHAKE_TIMEOUT', 'timeout'],
    ['ECONNRESET', 'client_closed'],
    ['EPIPE', 'client_closed'],
  ],
);

/** A certificate-verification error code (`socket.authorizationError`) as a reason. */
export function verifyErrorReason(code: string | Error | null | undefined): ClientCertReason {
  const key = typeof code === 'string' ? code : (code as { code?: string } | null | undefined)?.code;
  return (key && VERIFY_ERRORS.get(key)) || 'cert_invalid';
}

/**
 * Reason of a failed handshake. With `rejectUnauthorized`, Node completes the handshake with a bad
 * client certificate and then destroys the socket, so the event carries only ECONNRESET; the
 * verification error is on the socket, and wins.
 */
export function handshakeFailureReason(
  err: NodeJS.ErrnoException,
  socket: TLSSocket | undefined,
): HandshakeFailureReason {
  const verify = socket?.authorizationError;
  if (verify) return verifyErrorReason(verify);
  return (err.code && HANDSHAKE_ERRORS.get(err.code)) || 'other';
}

const CLIENT_CERT_SET: ReadonlySet<string> = new Set(CLIENT_CERT_REASONS);

export function isClientCertReason(reason: HandshakeFailureReason): reason is ClientCertReason {
  return CLIENT_CERT_SET.has(reason);
}
