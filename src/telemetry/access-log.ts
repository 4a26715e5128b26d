/**
 * One JSON line per finished request (`"type":"access","msg":"access"`), joinable with traces by
 * `trace_id`, `span_id` and `trace_flags`: the OpenTelemetry log data model's names, which the
 * Collector's filelog trace parser reads by default (docs/observability.md). The record is a fixed
 * set of scalar fields: no header bag, no query string (it may hold tokens), so there is nothing
 * for redaction to catch.
 */
import type { Logger } from 'pino';
import { LineBatch, LogDestination } from './log-destination.ts';
import { ACCESS_LEVEL, destinationOf } from './logger.ts';

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
  // The next four are written into the line without JSON escaping, so they must never hold a
  // quote, backslash or control character. They cannot: ids are lower-case hex (drawn by the
  // gateway, or taken from a traceparent/B3 header only after the propagator checked it is hex),
  // the request id matches REQUEST_ID_RE or is a UUID, and the address is the socket's.
  /** 32 hex digits (`trace_id`); undefined or '' when the exchange has no trace (left out). */
  traceId: string | undefined;
  /** 16 hex digits (`span_id`, the SERVER span's). */
  spanId: string | undefined;
  /** The trace's sampled flag (`trace_flags` `01` or `00`). */
  sampled: boolean;
  /** The client's `x-request-id` when it matches REQUEST_ID_RE, else a UUID; '' when none. */
  requestId: string;
  /** The peer's IP address as the socket reports it; '' when unknown. */
  clientAddress: string;
  /** GatewayError code when the gateway failed the request itself. */
  code: string | undefined;
  userAgent: string | undefined;
  attempts: number;
  /** Verified mTLS client identity (SPIFFE ID, URI or DNS SAN, or subject DN); never the certificate. */
  clientIdentity?: string | undefined;
  /** Authenticated subject (JWT `sub`); never the token. */
  subject?: string | undefined;
  /** The rate limit policy whose decision is reported (the weightiest of the request's), and that decision. */
  rateLimitPolicy?: string | undefined;
  rateLimitOutcome?: string | undefined;
}

export interface AccessLog {
  /** False when access logging is off: callers skip building the record. */
  readonly enabled: boolean;
  log(rec: AccessLogRecord): void;
  /** Write the lines gathered so far now (shutdown, before the logger is flushed). */
  flush(): void;
}

/**
 * What a record copies from the exchange it describes. A RequestContext has every field; a
 * WebSocket handshake or a parser rejection has no trace, body, upstream timing or subject and
 * leaves those out.
 */
export interface AccessExchange {
  /** Normalised path; '' when there is none yet (logged as `-`). */
  readonly path: string;
  readonly requestId: string;
  readonly clientAddress: string;
  readonly code: string | undefined;
  readonly attempts: number;
  /** Verified mTLS client identity. */
  readonly identity: string | undefined;
  readonly traceId?: string;
  readonly spanId?: string;
  readonly sampled?: boolean;
  readonly requestBytes?: number;
  readonly responseBytes?: number;
  readonly upstreamDurationMs?: number | undefined;
  readonly subject?: string | undefined;
  readonly rateLimitPolicy?: string | undefined;
  readonly rateLimitOutcome?: string | undefined;
}

/** Milliseconds to the microsecond. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/**
 * The one place a record is built, for finished requests, WebSocket handshakes and parser
 * rejections alike. Positional and closure-free: the pipeline calls it for every request.
 */
export function accessRecord(
  listener: string,
  route: string | undefined,
  upstream: string | undefined,
  endpoint: string | undefined,
  method: string,
  status: number,
  durationMs: number,
  userAgent: string | undefined,
  x: AccessExchange,
): AccessLogRecord {
  const upstreamMs = x.upstreamDurationMs;
  return {
    listener,
    route,
    upstream,
    endpoint,
    method,
    path: x.path || '-',
    status,
    durationMs: round(durationMs),
    upstreamDurationMs: upstreamMs === undefined ? undefined : round(upstreamMs),
    requestBytes: x.requestBytes ?? 0,
    responseBytes: x.responseBytes ?? 0,
    traceId: x.traceId,
    spanId: x.spanId,
    sampled: x.sampled === true,
    requestId: x.requestId,
    clientAddress: x.clientAddress,
    code: x.code,
    userAgent,
    attempts: x.attempts,
    clientIdentity: x.identity,
    subject: x.subject,
    rateLimitPolicy: x.rateLimitPolicy,
    rateLimitOutcome: x.rateLimitOutcome,
  };
}

/** Longer client-supplied User-Agent values are cut, so one header cannot bloat every line. */
const MAX_USER_AGENT = 512;

function noop(): void {}

/** Quoted JSON strings of the names a line repeats (listener, route, upstream, endpoint, method). */
const QUOTED_MAX = 512;
const quotedCache = new Map<string, string>();

/**
 * JSON.stringify for a value drawn from a small set (config names, methods, error codes), cached:
 * a third of the cost of building a line. The cache is emptied when it grows past QUOTED_MAX
 * (reloads that rename things, or HTTP/2 clients inventing methods), so it stays bounded.
 */
function quoted(value: string): string {
  let q = quotedCache.get(value);
  if (q === undefined) {
    if (quotedCache.size >= QUOTED_MAX) quotedCache.clear();
    q = JSON.stringify(value);
    quotedCache.set(value, q);
  }
  return q;
}

/** Printable ASCII but `"` and backslash: a string of only these is its own JSON body. */
const JSON_PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * JSON.stringify for a string, without the call into the runtime when nothing needs escaping
 * (most paths and user agents): a regular-expression test is a few times cheaper.
 */
function jsonString(value: string): string {
  return JSON_PLAIN.test(value) ? `"${value}"` : JSON.stringify(value);
}

/**
 * A duration in milliseconds as JSON text with three decimals (to the microsecond), by integer
 * arithmetic: the runtime's double-to-string for the two durations and the time cost about 2k
 * instructions per line (callgrind).
 */
export function millisText(ms: number): string {
  const us = Math.round(ms * 1000);
  if (!(us >= 0 && us <= 0x3fffffff)) return String(us / 1000);
  const whole = Math.floor(us / 1000);
  const frac = us - whole * 1000;
  return `${whole}.${frac >= 100 ? '' : frac >= 10 ? '0' : '00'}${frac}`;
}

/** The names a line starts with, and their text from `,"listener"` to the method's value. */
interface LineNames {
  readonly listener: string | undefined;
  readonly route: string | undefined;
  readonly upstream: string | undefined;
  readonly endpoint: string | undefined;
  readonly method: string | undefined;
  readonly text: string;
}

const NO_NAMES: LineNames = {
  listener: undefined,
  route: undefined,
  upstream: undefined,
  endpoint: undefined,
  method: undefined,
  text: '',
};

function namesOf(rec: AccessLogRecord): LineNames {
  let text = `,"listener":${quoted(rec.listener)}`;
  if (rec.route !== undefined) text += `,"route":${quoted(rec.route)}`;
  if (rec.upstream !== undefined) text += `,"upstream":${quoted(rec.upstream)}`;
  if (rec.endpoint !== undefined) text += `,"endpoint":${quoted(rec.endpoint)}`;
  text += `,"method":${quoted(rec.method)}`;
  return {
    listener: rec.listener,
    route: rec.route,
    upstream: rec.upstream,
    endpoint: rec.endpoint,
    method: rec.method,
    text,
  };
}

export function createAccessLog(logger: Logger, enabled: boolean): AccessLog {
  // Access lines are info lines: a logger set to warn or above writes none.
  if (!enabled || !logger.isLevelEnabled(ACCESS_LEVEL)) return { enabled: false, log: noop, flush: noop };
  // Built here rather than by pino (docs/decisions.md, "Logging"), in pino's shape (level, time,
  // service, msg), into the logger's own destination so it interleaves with the other lines: with
  // the default destination the lines share its queue (pino's own lines are written after the
  // access lines queued before them); another destination gets them in chunks the same way.
  const stream = destinationOf(logger);
  // Any other destination is a Node stream in practice (tests pass a Writable): it takes Buffers.
  const writable = stream as unknown as { write(chunk: Buffer): unknown };
  const batch =
    stream instanceof LogDestination ? stream.lines : new LineBatch((chunk) => writable.write(chunk));
  const bindings = logger.bindings() as { service?: string };
  const head = `{"level":"${ACCESS_LEVEL}","service":${JSON.stringify(bindings.service ?? 'peregrine')},"type":"access","time":`;
  // Date.now() is past the small-integer range, so its decimal text is worked out by the slow
  // number-to-string path: kept for the millisecond it stays the same.
  let lastTime = 0;
  let lastTimeText = '0';
  // The names from `listener` to `method` as the last line wrote them: consecutive requests mostly
  // share them (one route, one endpoint), and comparing five strings costs less than building the
  // text again (four cache lookups and as many concatenations).
  let names = NO_NAMES;
  return {
    enabled: true,
    log: function accessLog(rec: AccessLogRecord): void {
      const now = Date.now();
      if (now !== lastTime) {
        lastTime = now;
        lastTimeText = String(now);
      }
      const ua = rec.userAgent;
      if (
        rec.listener !== names.listener ||
        rec.route !== names.route ||
        rec.upstream !== names.upstream ||
        rec.endpoint !== names.endpoint ||
        rec.method !== names.method
      )
        names = namesOf(rec);
      let line = `${head}${lastTimeText}${names.text},"path":${jsonString(rec.path)},"status":${rec.status}`;
      line += `,"durationMs":${millisText(rec.durationMs)}`;
      if (rec.upstreamDurationMs !== undefined)
        line += `,"upstreamDurationMs":${millisText(rec.upstreamDurationMs)}`;
      line += `,"requestBytes":${rec.requestBytes},"responseBytes":${rec.responseBytes}`;
      // Ids and the peer address are written as they are: see AccessLogRecord.
      if (rec.traceId)
        line += `,"trace_id":"${rec.traceId}","span_id":"${rec.spanId}","trace_flags":"${rec.sampled ? '01' : '00'}"`;
      line += `,"requestId":"${rec.requestId}","clientAddress":"${rec.clientAddress}"`;
      if (rec.code !== undefined) line += `,"code":${quoted(rec.code)}`;
      if (ua !== undefined)
        line += `,"userAgent":${jsonString(ua.length > MAX_USER_AGENT ? ua.slice(0, MAX_USER_AGENT) : ua)}`;
      line += `,"attempts":${rec.attempts}`;
      if (rec.clientIdentity !== undefined) line += `,"clientIdentity":${jsonString(rec.clientIdentity)}`;
      if (rec.subject !== undefined) line += `,"subject":${jsonString(rec.subject)}`;
      if (rec.rateLimitPolicy !== undefined)
        line += `,"rateLimitPolicy":${quoted(rec.rateLimitPolicy)},"rateLimitOutcome":${quoted(rec.rateLimitOutcome ?? '')}`;
      batch.add(`${line},"msg":"access"}\n`);
    },
    flush() {
      batch.flush();
    },
  };
}
