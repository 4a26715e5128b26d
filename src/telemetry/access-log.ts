/**
 * One JSON line per finished request (`"type":"access","msg":"access"`), joinable with traces by
 * traceId. The record is a fixed set of scalar fields: no header bag, no query string (it may hold
 * tokens), so there is nothing for redaction to catch.
 */
import pino, { type Logger } from 'pino';

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
  readonly requestBytes?: number;
  readonly responseBytes?: number;
  readonly upstreamDurationMs?: number | undefined;
  readonly subject?: string | undefined;
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
    traceId: x.traceId ?? '',
    spanId: x.spanId ?? '',
    requestId: x.requestId,
    clientAddress: x.clientAddress,
    code: x.code,
    userAgent,
    attempts: x.attempts,
    clientIdentity: x.identity,
    subject: x.subject,
  };
}

/** Longer client-supplied User-Agent values are cut, so one header cannot bloat every line. */
const MAX_USER_AGENT = 512;

/** A batch is written once it reaches this many characters (pino's stdout destination writes 16 KiB at most per call). */
const MAX_BATCH = 16 * 1024;

/**
 * Access lines gathered over one turn of the event loop and handed to the destination as one
 * string. pino's asynchronous destination (SonicBoom) measures the UTF-8 length of the whole
 * string it is still queueing on every write, so line-by-line writes under load cost time
 * quadratic in the queue (17k instructions of `Utf8Length` per request, measured with callgrind);
 * one write per turn measures each batch once. Order is kept; lines reach the destination at the
 * end of the turn that produced them, or at once when the batch is full or `flush` is called.
 */
class LineBatch {
  readonly #stream: { write(text: string): unknown };
  #pending = '';
  #scheduled = false;

  constructor(stream: { write(text: string): unknown }) {
    this.#stream = stream;
  }

  add(line: string): void {
    this.#pending += line;
    if (this.#pending.length >= MAX_BATCH) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(flushScheduled, this);
    }
  }

  scheduledTurnEnded(): void {
    this.#scheduled = false;
    this.flush();
  }

  flush(): void {
    if (this.#pending === '') return;
    const text = this.#pending;
    this.#pending = '';
    this.#stream.write(text);
  }
}

function flushScheduled(batch: LineBatch): void {
  batch.scheduledTurnEnded();
}

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
 * (ids, addresses and most paths): a regular-expression test is a few times cheaper.
 */
function jsonString(value: string): string {
  return JSON_PLAIN.test(value) ? `"${value}"` : JSON.stringify(value);
}

export function createAccessLog(logger: Logger, enabled: boolean): AccessLog {
  if (!enabled) return { enabled: false, log: noop, flush: noop };
  // The line is built here rather than by pino: a fixed set of fields needs no generic
  // serialiser, and this is the hottest log line by far (pino's serialisation of it measured at
  // about 6% of a fully observed request's CPU). It goes to the logger's own destination, so it
  // interleaves with the other lines (at the end of each event-loop turn, see LineBatch), and
  // keeps pino's shape (level, time, service, msg).
  const stream = (logger as unknown as Record<symbol, { write(line: string): unknown }>)[
    pino.symbols.streamSym
  ]!;
  const bindings = logger.bindings() as { service?: string };
  const batch = new LineBatch(stream);
  const head = `{"level":"info","service":${JSON.stringify(bindings.service ?? 'peregrine')},"type":"access","time":`;
  return {
    enabled: true,
    log: function accessLog(rec: AccessLogRecord): void {
      const ua = rec.userAgent;
      let line = `${head}${Date.now()},"listener":${quoted(rec.listener)}`;
      if (rec.route !== undefined) line += `,"route":${quoted(rec.route)}`;
      if (rec.upstream !== undefined) line += `,"upstream":${quoted(rec.upstream)}`;
      if (rec.endpoint !== undefined) line += `,"endpoint":${quoted(rec.endpoint)}`;
      line += `,"method":${quoted(rec.method)},"path":${jsonString(rec.path)},"status":${rec.status}`;
      line += `,"durationMs":${rec.durationMs}`;
      if (rec.upstreamDurationMs !== undefined) line += `,"upstreamDurationMs":${rec.upstreamDurationMs}`;
      line += `,"requestBytes":${rec.requestBytes},"responseBytes":${rec.responseBytes}`;
      line += `,"traceId":${jsonString(rec.traceId)},"spanId":${jsonString(rec.spanId)}`;
      line += `,"requestId":${jsonString(rec.requestId)},"clientAddress":${jsonString(rec.clientAddress)}`;
      if (rec.code !== undefined) line += `,"code":${quoted(rec.code)}`;
      if (ua !== undefined)
        line += `,"userAgent":${jsonString(ua.length > MAX_USER_AGENT ? ua.slice(0, MAX_USER_AGENT) : ua)}`;
      line += `,"attempts":${rec.attempts}`;
      if (rec.clientIdentity !== undefined) line += `,"clientIdentity":${jsonString(rec.clientIdentity)}`;
      if (rec.subject !== undefined) line += `,"subject":${jsonString(rec.subject)}`;
      batch.add(`${line},"msg":"access"}\n`);
    },
    flush() {
      batch.flush();
    },
  };
}
