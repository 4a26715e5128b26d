/**
 * One JSON line per finished request (`"type":"access","msg":"access"`), joinable with traces by
 * traceId. The record is a fixed set of scalar fields: no header bag, no query string (it may hold
 * tokens), so there is nothing for redaction to catch.
 */
import type { Logger } from 'pino';

export interface AccessLogRecord {
  listener: string;
  route: string | undefined;
  upstream: string | undefined;
  endpoint: string | undefined;
  method: string;
  /** Normalised path, no query string (the query may hold tokens). */
  path: string;
  status: number;
  durationMs: number;
  upstreamDurationMs: number | undefined;
  requestBytes: number;
  responseBytes: number;
  traceId: string;
  spanId: string;
  requestId: string;
  clientAddress: string;
  /** GatewayError code when the gateway failed the request itself. */
  code: string | undefined;
  userAgent: string | undefined;
  attempts: number;
  /** Verified mTLS client identity (SPIFFE ID, URI or DNS SAN, or subject DN); never the certificate. */
  clientIdentity?: string | undefined;
  /** Authenticated subject (JWT `sub`); never the token. */
  subject?: string | undefined;
}

export interface AccessLog {
  log(rec: AccessLogRecord): void;
}

/** Longer client-supplied User-Agent values are cut, so one header cannot bloat every line. */
const MAX_USER_AGENT = 512;

function noop(): void {}

export function createAccessLog(logger: Logger, enabled: boolean): AccessLog {
  if (!enabled) return { log: noop };
  // Pinned to info: logLevel tunes diagnostic lines, accessLog.enabled switches access lines.
  const access = logger.child({ type: 'access' }, { level: 'info' });
  return {
    log: function accessLog(rec: AccessLogRecord): void {
      // Copied field by field so that passing a wider object (a request context, say) can never
      // put more than these fields on the line.
      const ua = rec.userAgent;
      access.info(
        {
          listener: rec.listener,
          route: rec.route,
          upstream: rec.upstream,
          endpoint: rec.endpoint,
          method: rec.method,
          path: rec.path,
          status: rec.status,
          durationMs: rec.durationMs,
          upstreamDurationMs: rec.upstreamDurationMs,
          requestBytes: rec.requestBytes,
          responseBytes: rec.responseBytes,
          traceId: rec.traceId,
          spanId: rec.spanId,
          requestId: rec.requestId,
          clientAddress: rec.clientAddress,
          code: rec.code,
          userAgent: ua !== undefined && ua.length > MAX_USER_AGENT ? ua.slice(0, MAX_USER_AGENT) : ua,
          attempts: rec.attempts,
          clientIdentity: rec.clientIdentity,
          subject: rec.subject,
        },
        'access',
      );
    },
  };
}
