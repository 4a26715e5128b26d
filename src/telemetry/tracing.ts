/**
 * Tracing: one SERVER span per inbound request, one CLIENT span per upstream attempt, created by
 * the gateway at fixed points, with parents passed explicitly (`trace.setSpan(ROOT_CONTEXT,
 * parent)`), so nothing on the request path touches AsyncLocalStorage or the global context.
 *
 * The provider is sdk-trace-base's BasicTracerProvider with a BatchSpanProcessor, built here and
 * registered nowhere globally (why not NodeSDK, and why no auto-instrumentation: docs/decisions.md,
 * "Tracing"). They read the OTEL_* variables NodeSDK does: OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
 * OTEL_SPAN_*_LIMIT; the OTLP exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT/HEADERS/TIMEOUT/
 * COMPRESSION; the resource takes OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
 *
 * exporter 'none' (and OTEL_SDK_DISABLED=true) still gives every request real ids and the
 * parent-based sampling decision, so access logs and problem+json carry a trace id and upstreams
 * receive a traceparent that keeps the caller's sampled flag, but spans are non-recording and
 * cost little more than two random ids; the SDK's modules are not even loaded then.
 */

import { randomFillSync, randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createRequire } from 'node:module';
import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import {
  getBooleanFromEnv,
  getNumberFromEnv,
  getStringFromEnv,
  W3CTraceContextPropagator,
} from '@opentelemetry/core';
import type * as OtlpHttpModule from '@opentelemetry/exporter-trace-otlp-http';
import { B3Propagator } from '@opentelemetry/propagator-b3';
import type * as ResourcesModule from '@opentelemetry/resources';
import type { ResourceDetector } from '@opentelemetry/resources';
import type * as SdkModule from '@opentelemetry/sdk-trace-base';
import type { IdGenerator, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_INSTANCE_ID,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import type { TelemetryConfig } from '../config/schema.ts';
import { HTTP_METHODS } from '../config/schema.ts';
import { ERROR_CODES, type ErrorCode } from '../errors.ts';
import { VERSION } from '../version.ts';
import { keepBundledUndiciUnloaded } from './exporter-http.ts';
import { redactQuery, serverAddressOf } from './http-attributes.ts';
import type { AttemptOutcome } from './metrics.ts';
import { observeSpanExport, type SpanExportObservation, type SpanExportReport } from './span-export.ts';

export interface Tracing {
  /**
   * Extract W3C traceparent/tracestate (and B3 single and multi header as input) from the inbound
   * headers; start a SERVER span named after the method, to be renamed `{method} {http.route}`
   * once a route matched (routeServerSpan). `server.address` and `server.port` come from the Host
   * (or `:authority`), the default port from `url.scheme` in `attributes`.
   */
  startServerSpan(method: string, headers: IncomingHttpHeaders, attributes: Attributes): Span;
  /** CLIENT span for one upstream attempt, child of the server span. */
  startClientSpan(parent: Span, name: string, attributes: Attributes): Span;
  /**
   * Write traceparent (and tracestate) for `span` into the outbound header object (lower-case
   * names), replacing whatever the client sent. B3 headers from the client are removed by the
   * caller's header hygiene (see B3_HEADERS).
   */
  inject(span: Span, headers: Record<string, string | string[]>): void;
  /** Same as inject, appending `name, value` pairs to a flat header list (the forwarder's form). */
  injectInto(span: Span, headers: string[]): void;
  traceIds(span: Span): { traceId: string; spanId: string; sampled: boolean };
  /** Flush (for at most SHUTDOWN_TIMEOUT_MS) and stop exporting. Idempotent; never rejects. */
  shutdown(): Promise<void>;
}

/** The W3C traceparent naming `span`; undefined for the SDK's suppressed-tracing span (no ids). */
function traceparentOf(span: Span): string | undefined {
  const sc = span.spanContext();
  if (sc.spanId === INVALID_SPAN_ID) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${isSampled(sc) ? '01' : '00'}`;
}

/** Inbound-only trace headers: accepted for extraction, never forwarded (we inject W3C only). */
export const B3_HEADERS: ReadonlySet<string> = new Set([
  'b3',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
]);

/**
 * The name of the service on the other side of a CLIENT span, under the two names tools read:
 * `peer.service` is what the Collector's servicegraph connector and Tempo's service graphs look
 * for by default (the node of an uninstrumented upstream); the conventions have since deprecated
 * it for `server.service.name` (development), which they do not read by default yet. Defined here: the semantic-conventions package keeps unstable names out of its stable entry
 * point (docs/decisions.md, "Span attributes: the HTTP conventions").
 */
const ATTR_PEER_SERVICE = 'peer.service';
const ATTR_SERVER_SERVICE_NAME = 'server.service.name';

/** Span attribute names used by the gateway (stable HTTP semantic conventions + peregrine.*). */
export const SPAN_ATTR = {
  HTTP_REQUEST_METHOD: ATTR_HTTP_REQUEST_METHOD,
  HTTP_REQUEST_METHOD_ORIGINAL: ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  HTTP_REQUEST_RESEND_COUNT: ATTR_HTTP_REQUEST_RESEND_COUNT,
  HTTP_RESPONSE_STATUS_CODE: ATTR_HTTP_RESPONSE_STATUS_CODE,
  HTTP_ROUTE: ATTR_HTTP_ROUTE,
  NETWORK_PROTOCOL_VERSION: ATTR_NETWORK_PROTOCOL_VERSION,
  URL_PATH: ATTR_URL_PATH,
  URL_QUERY: ATTR_URL_QUERY,
  URL_SCHEME: ATTR_URL_SCHEME,
  URL_FULL: ATTR_URL_FULL,
  SERVER_ADDRESS: ATTR_SERVER_ADDRESS,
  SERVER_PORT: ATTR_SERVER_PORT,
  CLIENT_ADDRESS: ATTR_CLIENT_ADDRESS,
  USER_AGENT_ORIGINAL: ATTR_USER_AGENT_ORIGINAL,
  ERROR_TYPE: ATTR_ERROR_TYPE,
  PEER_SERVICE: ATTR_PEER_SERVICE,
  SERVER_SERVICE_NAME: ATTR_SERVER_SERVICE_NAME,
  ROUTE: 'peregrine.route',
  ENDPOINT: 'peregrine.endpoint',
  CODE: 'peregrine.code',
  OUTCOME: 'peregrine.outcome',
} as const;
const ATTR_PEREGRINE_CODE = SPAN_ATTR.CODE;
const ATTR_PEREGRINE_OUTCOME = SPAN_ATTR.OUTCOME;
const ATTR_PEREGRINE_ROUTE = SPAN_ATTR.ROUTE;

const KNOWN_METHODS: ReadonlySet<string> = new Set(HTTP_METHODS);

/** The instrumentation scope of every span (its version is the gateway's). */
export const SCOPE_NAME = 'peregrine';

/** http.request.method of a method outside the known set, or of a request whose method is unknown. */
export const UNKNOWN_METHOD = '_OTHER';

/** The semconv value of http.request.method: the method if known, `_OTHER` otherwise. */
export function spanMethod(method: string): string {
  return KNOWN_METHODS.has(method) ? method : UNKNOWN_METHOD;
}

/**
 * `{method} {target}`, or `{method}` without a target; `HTTP` stands for unknown methods (the HTTP
 * conventions' span name). The target is `http.route` on SERVER spans.
 */
export function serverSpanName(method: string, route?: string): string {
  const m = KNOWN_METHODS.has(method) ? method : 'HTTP';
  return route === undefined ? m : `${m} ${route}`;
}

/**
 * A route matched: the SERVER span is named `{method} {http.route}` and carries the route's path
 * template as `http.route` and its name as `peregrine.route`.
 */
export function routeServerSpan(span: Span, method: string, httpRoute: string, routeName: string): void {
  if (!span.isRecording()) return;
  span.updateName(serverSpanName(method, httpRoute));
  span.setAttribute(ATTR_HTTP_ROUTE, httpRoute);
  span.setAttribute(ATTR_PEREGRINE_ROUTE, routeName);
}

/** `url.query` of a SERVER span: keys only (redactQuery); nothing when the request had no query. */
export function setServerQuery(span: Span, query: string): void {
  if (query !== '' && span.isRecording()) span.setAttribute(ATTR_URL_QUERY, redactQuery(query));
}

/**
 * End a SERVER span, status per the HTTP semantic conventions: ERROR for a 5xx, whether the status
 * was sent or belongs to the local failure that cut the response (`code`), and for an exchange the
 * client cut short (`CLIENT_CLOSED`: the response was not delivered, which the conventions count
 * as a failed request); any other 4xx leaves the status unset (the client's failure, not the
 * server's) and carries no `error.type`. `error.type` goes with ERROR: the local code when the
 * gateway failed the request, else a 5xx status as a string, else `CLIENT_CLOSED`. A local code
 * that is not an error of the span (404 no route, 401) is kept as `peregrine.code`. `status` is
 * the status sent, undefined when none was (`http.response.status_code` is then absent).
 */
export function endServerSpan(span: Span, status: number | undefined, code: ErrorCode | undefined): void {
  if (span.isRecording()) {
    if (status !== undefined) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    if (code !== undefined) span.setAttribute(ATTR_PEREGRINE_CODE, code);
    if (code !== undefined && ERROR_CODES[code].status >= 500) markError(span, code);
    else if (status !== undefined && status >= 500) markError(span, String(status));
    else if (code === 'CLIENT_CLOSED') markError(span, code);
  }
  span.end();
}

/**
 * Attributes of the CLIENT span of one upstream attempt (build them only for a recording parent):
 * the stable HTTP client attributes, `url.full` from the endpoint's origin (its id, which never
 * holds userinfo) and the path and query sent (values redacted: redactQuery), the upstream's name
 * as the peer service, and `http.request.resend_count` from the second attempt on.
 */
export function attemptSpanAttributes(
  method: string,
  origin: string,
  address: string,
  port: number,
  path: string,
  query: string,
  upstream: string,
  resendCount: number,
): Attributes {
  const spanMethodName = spanMethod(method);
  // Keys written out, not [ATTR_...]: an object literal with computed keys is built property by
  // property in the runtime (~1k instructions here); these are the constants' values (SPAN_ATTR).
  const attributes: Attributes = {
    'http.request.method': spanMethodName,
    'server.address': address,
    'server.port': port,
    'url.full': query === '' ? `${origin}${path}` : `${origin}${path}?${redactQuery(query)}`,
    'peer.service': upstream,
    'server.service.name': upstream,
    'peregrine.endpoint': origin,
  };
  if (method !== spanMethodName) attributes[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = method;
  if (resendCount > 0) attributes[ATTR_HTTP_REQUEST_RESEND_COUNT] = resendCount;
  return attributes;
}

/**
 * End a CLIENT span (one upstream attempt): the upstream's status when a response head arrived;
 * ERROR when the attempt failed (no response, or a response cut short: `error.type` is the
 * failure's code, `peregrine.outcome` the attempt's outcome as the attempts metric counts it,
 * which tells the client's doing, `client_*`, from the upstream's) or the status is 4xx/5xx
 * (`error.type` is the status as a string).
 */
export function endClientSpan(
  span: Span,
  status: number | undefined,
  failure: ErrorCode | undefined,
  outcome?: AttemptOutcome,
): void {
  if (span.isRecording()) {
    if (status !== undefined && status > 0) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    if (failure !== undefined) {
      markError(span, failure);
      if (outcome !== undefined) span.setAttribute(ATTR_PEREGRINE_OUTCOME, outcome);
    } else if (status !== undefined && status >= 400) markError(span, String(status));
  }
  span.end();
}

/** ERROR status with `error.type`; no description, which the type and status code already give. */
function markError(span: Span, type: string): void {
  span.setAttribute(ATTR_ERROR_TYPE, type);
  span.setStatus({ code: SpanStatusCode.ERROR });
}

const ID_POOL_BYTES = 4096;
const INVALID_TRACE_ID = '0'.repeat(32);
const INVALID_SPAN_ID = '0'.repeat(16);

/**
 * Trace and span ids hex-encoded from a pool filled by the CSPRNG: about half the cost of the
 * SDK's Math.random-based RandomIdGenerator (three ids per proxied request; bench/micro/tracing.ts).
 */
class PooledIdGenerator implements IdGenerator {
  private readonly pool = Buffer.allocUnsafe(ID_POOL_BYTES);
  private offset = ID_POOL_BYTES;
  /** Handed out by the next generateTraceId(): a root already decided by SpanStarter. */
  presetTraceId: string | undefined = undefined;
  /** The sampling key (see ratioKey) of the last trace id drawn. */
  rootKey = 0;

  /** Where the next `bytes` random bytes start in the pool (refilled when short). */
  private take(bytes: number): number {
    if (this.offset + bytes > ID_POOL_BYTES) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const at = this.offset;
    this.offset = at + bytes;
    return at;
  }

  private next(bytes: number): string {
    const at = this.take(bytes);
    return this.pool.toString('hex', at, at + bytes);
  }

  /** A fresh trace id; its sampling key goes to rootKey. */
  rootTraceId(): string {
    for (;;) {
      const at = this.take(16);
      const id = this.pool.toString('hex', at, at + 16);
      if (id !== INVALID_TRACE_ID) {
        this.rootKey = ratioKey(this.pool, at);
        return id;
      }
    }
  }

  generateTraceId(): string {
    const preset = this.presetTraceId;
    if (preset !== undefined) {
      this.presetTraceId = undefined;
      return preset;
    }
    return this.rootTraceId();
  }

  generateSpanId(): string {
    let id = this.next(8);
    while (id === INVALID_SPAN_ID) id = this.next(8);
    return id;
  }
}

/**
 * What TraceIdRatioBasedSampler compares with its bound, read off the 16 bytes of a trace id
 * rather than parsed from its hex (which cost ~3k instructions per request, callgrind): the XOR of
 * its four big-endian 32-bit words.
 */
export function ratioKey(id: Buffer, at = 0): number {
  return (
    (id.readUInt32BE(at) ^ id.readUInt32BE(at + 4) ^ id.readUInt32BE(at + 8) ^ id.readUInt32BE(at + 12)) >>> 0
  );
}

/**
 * TraceIdRatioBasedSampler's bound for `ratio`: a valid trace id is sampled when its ratioKey is
 * below it (2^32 at ratio 1, 0 at ratio 0 or NaN).
 */
export function ratioBound(ratio: number): number {
  if (Number.isNaN(ratio) || ratio <= 0) return 0;
  return ratio >= 1 ? 0x100000000 : Math.floor(ratio * 0xffffffff);
}

/**
 * Creates the spans. The sampler is ParentBased(TraceIdRatioBased) unless OTEL_TRACES_SAMPLER
 * names another, and then it is applied here, not by the SDK: a child of an unsampled parent is
 * unsampled whatever the ratio, so it is built here as a NonRecordingSpan (new span id, the
 * parent's trace id, flags and tracestate), exactly what the SDK would return, without its context
 * and attribute copying; a child of a sampled parent goes to the SDK, whose sampler is then
 * AlwaysOn. A root (no parent) is decided here as the ratio sampler decides (ratioKey below
 * ratioBound), on a trace id drawn here: an unsampled root (most of them, at the usual ratios) is
 * a NonRecordingSpan built here, and a sampled one goes to the SDK, whose id generator hands out
 * that same trace id. Without an SDK (exporter 'none') roots are decided the same way: upstream
 * services then see the sampled flag they would see behind an exporting gateway.
 */
class SpanStarter {
  private readonly tracer: Tracer | undefined;
  /** The sampler is ParentBased(root): unsampled parents mean unsampled children. */
  private readonly parentBased: boolean;
  /** ratioBound of the root sampler's ratio. */
  private readonly rootBound: number;
  private readonly ids: PooledIdGenerator;

  constructor(tracer: Tracer | undefined, parentBased: boolean, rootBound: number, ids: PooledIdGenerator) {
    this.tracer = tracer;
    this.parentBased = parentBased || tracer === undefined;
    this.rootBound = rootBound;
    this.ids = ids;
  }

  /** `context` holds the extracted remote parent, if any (validated by the propagators). */
  startServer(name: string, attributes: Attributes, context: Context): Span {
    const parent = trace.getSpanContext(context);
    if (parent !== undefined && (this.tracer === undefined || (this.parentBased && !isSampled(parent)))) {
      return this.child(parent);
    }
    if (this.tracer !== undefined && (parent !== undefined || !this.parentBased)) {
      return this.recorded(this.tracer, name, SERVER, attributes, context);
    }
    const traceId = this.ids.rootTraceId();
    const sampled = this.ids.rootKey < this.rootBound;
    if (sampled && this.tracer !== undefined) {
      this.ids.presetTraceId = traceId;
      try {
        return this.recorded(this.tracer, name, SERVER, attributes, context);
      } finally {
        this.ids.presetTraceId = undefined;
      }
    }
    return trace.wrapSpanContext({
      traceId,
      spanId: this.ids.generateSpanId(),
      traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
    });
  }

  startClient(parent: Span, name: string, attributes: Attributes): Span {
    const sc = parent.spanContext();
    if (this.tracer === undefined || (this.parentBased && !isSampled(sc))) return this.child(sc);
    return this.recorded(this.tracer, name, CLIENT, attributes, trace.setSpan(ROOT_CONTEXT, parent));
  }

  /**
   * A span from the SDK, its attributes set once it exists: handed to `startSpan`, they would be
   * copied and checked three times (sanitised for the sampler, again after merging the sampler's
   * attributes, then set one by one on the span). No sampler the SDK builds reads them: the
   * gateway's is AlwaysOn, and OTEL_TRACES_SAMPLER names only built-in samplers, which decide
   * by the trace id and the parent alone.
   */
  private recorded(
    tracer: Tracer,
    name: string,
    kind: typeof SERVER | typeof CLIENT,
    attributes: Attributes,
    context: Context,
  ): Span {
    const span = tracer.startSpan(name, kind, context);
    return span.isRecording() ? span.setAttributes(attributes) : span;
  }

  private child(parent: SpanContext): Span {
    return trace.wrapSpanContext({
      traceId: parent.traceId,
      spanId: this.ids.generateSpanId(),
      traceFlags: parent.traceFlags & TraceFlags.SAMPLED,
      traceState: parent.traceState,
    });
  }
}

/** `startSpan` options without attributes, one object per kind (the SDK only reads them). */
const SERVER = { kind: SpanKind.SERVER } as const;
const CLIENT = { kind: SpanKind.CLIENT } as const;

function isSampled(sc: SpanContext): boolean {
  return (sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
}

const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

class GatewayTracing implements Tracing {
  private readonly spans: SpanStarter;
  private readonly provider: SdkModule.BasicTracerProvider | undefined;
  private readonly w3c = new W3CTraceContextPropagator();
  private readonly b3 = new B3Propagator();
  private readonly observation: SpanExportObservation | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    spans: SpanStarter,
    provider: SdkModule.BasicTracerProvider | undefined,
    observation: SpanExportObservation | undefined,
  ) {
    this.spans = spans;
    this.provider = provider;
    this.observation = observation;
  }

  /** W3C wins when both are present and valid; B3 (single, then multi) otherwise. */
  private extract(headers: IncomingHttpHeaders): Context {
    if (headers.traceparent !== undefined) {
      const ctx = this.w3c.extract(ROOT_CONTEXT, headers, headerGetter);
      if (trace.getSpanContext(ctx) !== undefined) return ctx;
    }
    if (headers.b3 !== undefined || headers['x-b3-traceid'] !== undefined) {
      return this.b3.extract(ROOT_CONTEXT, headers, headerGetter);
    }
    return ROOT_CONTEXT;
  }

  startServerSpan(method: string, headers: IncomingHttpHeaders, attributes: Attributes): Span {
    const span = this.spans.startServer(serverSpanName(method), attributes, this.extract(headers));
    // Attributes derived from headers are only worth computing for spans that get exported.
    if (span.isRecording()) {
      const m = spanMethod(method);
      if (attributes[ATTR_HTTP_REQUEST_METHOD] === undefined) {
        span.setAttribute(ATTR_HTTP_REQUEST_METHOD, m);
        if (m !== method) span.setAttribute(ATTR_HTTP_REQUEST_METHOD_ORIGINAL, method);
      }
      const ua = headers['user-agent'];
      if (ua !== undefined && attributes[ATTR_USER_AGENT_ORIGINAL] === undefined) {
        span.setAttribute(ATTR_USER_AGENT_ORIGINAL, ua);
      }
      if (attributes[ATTR_SERVER_ADDRESS] === undefined) {
        const server = serverAddressOf(
          headers.host ?? (headers[':authority'] as string | undefined),
          String(attributes[ATTR_URL_SCHEME] ?? ''),
        );
        if (server !== undefined) {
          span.setAttribute(ATTR_SERVER_ADDRESS, server.address);
          if (server.port !== undefined) span.setAttribute(ATTR_SERVER_PORT, server.port);
        }
      }
    }
    return span;
  }

  startClientSpan(parent: Span, name: string, attributes: Attributes): Span {
    return this.spans.startClient(parent, name, attributes);
  }

  inject(span: Span, headers: Record<string, string | string[]>): void {
    if (headers.traceparent !== undefined) delete headers.traceparent;
    if (headers.tracestate !== undefined) delete headers.tracestate;
    const traceparent = traceparentOf(span);
    if (traceparent === undefined) return;
    headers.traceparent = traceparent;
    const state = span.spanContext().traceState?.serialize();
    if (state) headers.tracestate = state;
  }

  injectInto(span: Span, headers: string[]): void {
    const traceparent = traceparentOf(span);
    if (traceparent === undefined) return;
    headers.push('traceparent', traceparent);
    const state = span.spanContext().traceState?.serialize();
    if (state) headers.push('tracestate', state);
  }

  traceIds(span: Span): { traceId: string; spanId: string; sampled: boolean } {
    const sc = span.spanContext();
    return { traceId: sc.traceId, spanId: sc.spanId, sampled: isSampled(sc) };
  }

  shutdown(): Promise<void> {
    this.closing ??= (
      this.provider === undefined ? Promise.resolve() : settleWithin(this.provider.shutdown())
    ).then(() => this.observation?.close());
    return this.closing;
  }
}

/**
 * A dead collector must not hold up process exit: the exporter retries until its own timeout
 * (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default), so the flush is cut short after this long.
 */
export const SHUTDOWN_TIMEOUT_MS = 5000;

function settleWithin(work: Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS);
    timer.unref();
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    work.then(done, done);
  });
}

/**
 * The root sampling ratio. OTEL_TRACES_SAMPLER_ARG overrides the configured ratio;
 * OTEL_TRACES_SAMPLER, when set, replaces the whole sampler of an exporting provider
 * (BasicTracerProvider builds it from the environment).
 */
function rootRatio(ratio: number): number {
  const arg = getNumberFromEnv('OTEL_TRACES_SAMPLER_ARG');
  return arg !== undefined && arg >= 0 && arg <= 1 ? arg : ratio;
}

function otlpUrl(endpoint: string): string | undefined {
  // The exporter itself prefers these variables, but only when no url is passed in.
  if (
    getStringFromEnv('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') ||
    getStringFromEnv('OTEL_EXPORTER_OTLP_ENDPOINT')
  ) {
    return undefined;
  }
  return `${endpoint.replace(/\/+$/, '')}/v1/traces`;
}

/**
 * The SDK (provider, processors, exporters, resource detection) is loaded on first use: a gateway
 * that records no spans never loads it, which keeps about 4.5 MB out of its resident memory
 * (measured by importing the modules). These packages are CommonJS (the same module instances an
 * `import` would give), so `require` loads them synchronously.
 */
const requireLazily = createRequire(import.meta.url);
const sdkTraceBase = () => requireLazily('@opentelemetry/sdk-trace-base') as typeof SdkModule;

function createExporter(cfg: TelemetryConfig['tracing']): SpanExporter | undefined {
  switch (cfg.exporter) {
    case 'otlp': {
      const url = otlpUrl(cfg.endpoint);
      keepBundledUndiciUnloaded();
      const { OTLPTraceExporter } = requireLazily(
        '@opentelemetry/exporter-trace-otlp-http',
      ) as typeof OtlpHttpModule;
      return new OTLPTraceExporter(url === undefined ? {} : { url });
    }
    case 'console':
      return new (sdkTraceBase().ConsoleSpanExporter)();
    case 'none':
      return undefined;
  }
}

/**
 * `service.instance.id`: one random UUID per process (the conventions' recommendation), so the
 * spans of replicas, and of the same replica before and after a restart, stay apart.
 * OTEL_RESOURCE_ATTRIBUTES can set another.
 */
export const SERVICE_INSTANCE_ID = randomUUID();

const ATTR_PROCESS_COMMAND_ARGS = 'process.command_args';

/**
 * The SDK's process detector without `process.command_args` (unless `commandArgs`): a command
 * line can carry secrets (`--password=...`, tokens in arguments), and the resource goes out with
 * every batch of spans.
 */
function processDetectorWithout(detector: ResourceDetector, commandArgs: boolean): ResourceDetector {
  if (commandArgs) return detector;
  return {
    detect(config) {
      const detected = detector.detect(config);
      const attributes = { ...detected.attributes };
      delete attributes[ATTR_PROCESS_COMMAND_ARGS];
      return { ...detected, attributes };
    },
  };
}

export function createTracing(
  cfg: TelemetryConfig,
  opts?: {
    spanProcessorForTests?: SpanProcessor | undefined;
    report?: SpanExportReport;
    /** The gateway's version: `service.version` and the instrumentation scope's version. */
    version?: string;
  },
): Tracing {
  const exporter = getBooleanFromEnv('OTEL_SDK_DISABLED') ? undefined : createExporter(cfg.tracing);
  const processors: SpanProcessor[] = [];
  let observation: SpanExportObservation | undefined;
  if (exporter !== undefined) {
    const { BatchSpanProcessor } = sdkTraceBase();
    if (opts?.report === undefined) processors.push(new BatchSpanProcessor(exporter));
    else {
      observation = observeSpanExport(opts.report);
      // selfObsMeterProvider is passed through to the SDK's processor (see span-export.ts).
      const config = { selfObsMeterProvider: observation.processorMeters } as SdkModule.BufferConfig;
      processors.push(new BatchSpanProcessor(observation.exporter(exporter), config));
    }
  }
  if (opts?.spanProcessorForTests !== undefined) processors.push(opts.spanProcessorForTests);
  const ratio = rootRatio(cfg.tracing.sampleRatio);
  const idGenerator = new PooledIdGenerator();

  if (processors.length === 0) {
    return new GatewayTracing(
      new SpanStarter(undefined, true, ratioBound(ratio), idGenerator),
      undefined,
      undefined,
    );
  }

  const { AlwaysOnSampler, BasicTracerProvider } = sdkTraceBase();
  const {
    defaultResource,
    detectResources,
    envDetector,
    hostDetector,
    processDetector,
    resourceFromAttributes,
  } = requireLazily('@opentelemetry/resources') as typeof ResourcesModule;
  const version = opts?.version ?? VERSION;
  // Later merges win: the environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) over the file.
  const resource = defaultResource()
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: cfg.serviceName,
        [ATTR_SERVICE_VERSION]: version,
        [ATTR_SERVICE_INSTANCE_ID]: SERVICE_INSTANCE_ID,
      }),
    )
    .merge(
      detectResources({
        detectors: [
          hostDetector,
          processDetectorWithout(processDetector, cfg.tracing.commandArgs),
          envDetector,
        ],
      }),
    );
  const envSampler = getStringFromEnv('OTEL_TRACES_SAMPLER') !== undefined;
  const provider = new BasicTracerProvider({
    resource,
    idGenerator,
    spanProcessors: processors,
    // Unless OTEL_TRACES_SAMPLER names another sampler, only spans SpanStarter decided are sampled
    // reach the SDK (children of sampled parents, roots it sampled): ParentBased(TraceIdRatioBased)
    // would sample each of them again, validating the parent's ids and re-reading the trace id's
    // hex (~4k instructions per sampled request), to the same result.
    ...(envSampler ? {} : { sampler: new AlwaysOnSampler() }),
  });
  const starter = new SpanStarter(
    provider.getTracer(SCOPE_NAME, version),
    !envSampler,
    ratioBound(ratio),
    idGenerator,
  );
  return new GatewayTracing(starter, provider, observation);
}
