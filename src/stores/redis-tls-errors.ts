/**
 * What a failed TLS connection to Redis means, in words an operator can act on. OpenSSL's own
 * text (`error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:…`) names neither
 * the setting nor the side at fault, and a Redis with `tls-auth-clients yes` given no client
 * certificate closes the connection without an alert, which reaches the client as a bare
 * `ECONNRESET` on its first command after the handshake (TLS 1.3 ends the client's handshake
 * before the server has judged its certificate); a refused certificate's alert can lose that race
 * too.
 */

/** Where the failed connection had got to, and what it presented. */
export interface RedisTlsErrorContext {
  /** The handshake had completed (ioredis's 'connect'), and the connection was not yet ready. */
  readonly afterHandshake: boolean;
  /** `redis.tls.cert` is set. */
  readonly clientCertificate: boolean;
}

const ALERT_CODE = /^ERR_SSL_(?:TLSV1|TLSV13|SSLV3)_ALERT_([A-Z_]+)$/;
/** Alerts a server sends about the client's certificate (RFC 8446 §6.2). */
const CERTIFICATE_ALERTS = new Set([
  'bad certificate',
  'unsupported certificate',
  'certificate revoked',
  'certificate expired',
  'certificate unknown',
  'unknown ca',
  'certificate required',
  'access denied',
]);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);

/**
 * The explanation of `err` on a `rediss://` connection, or undefined when it is not about TLS
 * (the caller then reports the message as it is).
 */
export function explainRedisTlsError(err: Error, context: RedisTlsErrorContext): string | undefined {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const alert = ALERT_CODE.exec(code)?.[1]?.toLowerCase().replaceAll('_', ' ');
  if (alert !== undefined) {
    if (!CERTIFICATE_ALERTS.has(alert)) return `Redis refused the TLS handshake (alert: ${alert})`;
    return context.clientCertificate
      ? `Redis refused the client certificate of redis.tls.cert (alert: ${alert}): it must be issued by a CA in Redis's tls-ca-cert-file, and be valid now`
      : `Redis demands a client certificate (alert: ${alert}): set redis.tls.cert and redis.tls.key`;
  }
  if (context.afterHandshake && RESET_CODES.has(code))
    return context.clientCertificate
      ? `Redis closed the connection after the TLS handshake (${code}): it refused the client certificate of redis.tls.cert (not issued by a CA in Redis's tls-ca-cert-file, or not valid now), or dropped the connection`
      : `Redis closed the connection after the TLS handshake (${code}): a Redis that demands client certificates (tls-auth-clients yes) does so when none is presented; set redis.tls.cert and redis.tls.key`;
  return undefined;
}
