/**
 * Every metric the gateway exports, in one place (docs/metrics.md describes each one; names and
 * labels are a contract with dashboards). Label values are bounded: listener, route and upstream
 * names come from configuration, methods are folded into a fixed set, statuses are three digits,
 * outcomes and codes are closed unions.
 *
 * Per-request metrics are CellMetric/CellHistogram series (see metric-cells.ts): the recorder
 * looks a series up through nested Maps (about 45 ns, against about 275 ns for a joined-string key
 * and 400-800 ns for prom-client's own label hashing) and adds to numbers. Rarely-updated metrics
 * use prom-client's classes directly.
 */

import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { HTTP_METHODS } from '../config/http-methods.ts';
import type { Http2CloseReason } from '../dataplane/listener/http2-session-guard.ts';
import type { ErrorCode } from '../errors.ts';
import { runNow, type Steps } from '../slices.ts';
import type { ClientCertReason, HandshakeFailureReason } from '../tls/reasons.ts';
import { type TextSink, writeExposition } from './exposition.ts';
import { LATENCY_BUCKETS } from './latency-buckets.ts';
import {
  CellHistogram,
  CellMetric,
  type EmitSeries,
  type HistogramCell,
  type Labels,
  ReadGauge,
  type ScalarCell,
} from './metric-cells.ts';
import { registerRuntimeMetrics } from './runtime-metrics.ts';

export const NO_ROUTE = '_none';

/** Methods kept as label values; anything else is `OTHER`. */
export const METRIC_METHODS = [...HTTP_METHODS, 'OTHER'] as const;
const METHOD_INDEX = new Map<string, number>(METRIC_METHODS.map((m, i) => [m, i]));
const OTHER_METHOD = METRIC_METHODS.length - 1;

export const ATTEMPT_OUTCOMES = [
  'success',
  'timeout',
  'connect_error',
  'reset',
  'protocol_error',
  'tls_error',
  'client_abort',
  'client_timeout',
  'client_error',
  'stale_connection',
  'other',
] as const;
export type AttemptOutcome = (typeof ATTEMPT_OUTCOMES)[number];
const OUTCOME_INDEX = new Map<string, number>(ATTEMPT_OUTCOMES.map((o, i) => [o, i]));

/**
 * success: the upstream answered 101 and the tunnel is up; rejected: the upstream answered with
 * another status; refused: the gateway refused the upgrade itself (no route, no endpoint, bad
 * request); otherwise how the upstream attempt failed (an AttemptOutcome).
 */
export type WebSocketOutcome = 'success' | 'rejected' | 'refused' | Exclude<AttemptOutcome, 'success'>;

export type ConfigReloadOutcome = 'success' | 'failure';

/**
 * What became of ended, sampled spans (label `outcome` of peregrine_tracing_spans_total): sent to
 * the collector, lost in a failed export, or dropped because the export queue was full.
 */
export const SPAN_OUTCOMES = ['exported', 'failed', 'dropped'] as const;
export type SpanOutcome = (typeof SPAN_OUTCOMES)[number];

export type CertificateReloadOutcome = 'success' | 'failure';

/** One certificate a TLS listener serves (`server`) or trusts for client certificates (`client_ca`). */
export interface CertificateExpiry {
  readonly role: 'server' | 'client_ca';
  /** RFC 4514 subject, from the configured certificate (never from a client). */
  readonly subject: string;
  readonly notAfter: Date;
}

/**
 * Local decisions of the upstream resilience layer (label `decision` of
 * peregrine_upstream_decisions_total): a retry scheduled, a retry refused by the retry budget, a
 * request (or a retry due after its backoff) refused by the circuit breaker, or a request refused
 * by the bulkhead. Kept apart from peregrine_upstream_attempts_total, which counts attempts that
 * reached an endpoint.
 */
export const UPSTREAM_DECISIONS = ['retry', 'budget_exhausted', 'circuit_open', 'overloaded'] as const;
export type UpstreamDecision = (typeof UPSTREAM_DECISIONS)[number];
/** Why an attempt was retried (label `reason` of peregrine_upstream_retries_total). */
export const RETRY_REASONS = [
  'connect_failure',
  'refused',
  'reset',
  'timeout',
  'status',
  'stale_connection',
] as const;
export type RetryReason = (typeof RETRY_REASONS)[number];
/** Circuit breaker states: peregrine_upstream_circuit_state's value is the index. */
export const CIRCUIT_STATES = ['closed', 'open', 'half_open'] as const;
export type CircuitStateName = (typeof CIRCUIT_STATES)[number];
/**
 * Endpoint states (label `state` of peregrine_upstream_endpoints): healthy (eligible), unhealthy
 * (failing active health checks), ejected (by outlier detection, health checks passing), draining
 * (its discovery source is taking it away: in-flight requests finish, no new ones).
 */
export const ENDPOINT_STATES = ['healthy', 'unhealthy', 'ejected', 'draining'] as const;
export type EndpointState = (typeof ENDPOINT_STATES)[number];

/** What the upstream gauges read from a live cluster at scrape time. */
export interface UpstreamStateSource {
  /** An index into CIRCUIT_STATES. */
  circuitState(): number;
  queued(): number;
  retryBudgetRemaining(): number;
  /** Endpoint counts by ENDPOINT_STATES index. */
  endpointStates(): readonly number[];
  ejectedEndpoints(): number;
  panicMode(): boolean;
  /** Endpoints the balancer chooses among: the aperture's window, or every eligible one. */
  endpointsInUse(): number;
}

/**
 * How one refresh of an upstream's endpoint source ended (label `outcome` of
 * peregrine_discovery_refreshes_total): `success`, or why the source could not be read. DNS:
 * nxdomain (the name does not exist), no_data (no record of the type), servfail, refused, timeout;
 * any source: unavailable (its backend cannot be reached, or none runs in this gateway), invalid
 * (it answered with nothing usable), error.
 */
export const DISCOVERY_OUTCOMES = [
  'success',
  'nxdomain',
  'no_data',
  'servfail',
  'refused',
  'timeout',
  'unavailable',
  'invalid',
  'error',
] as const;
export type DiscoveryOutcome = (typeof DISCOVERY_OUTCOMES)[number];

/** What the discovery gauges read from an upstream's endpoint source at scrape time. */
export interface DiscoveryStateSource {
  /** The upstream's source kind: static, dns or registry. */
  readonly source: string;
  /** Endpoints in the upstream's live set by the source that put them there (kind → count). */
  endpointsBySource(): Readonly<Record<string, number>>;
  /** Unix ms of the last successful refresh; undefined while there has been none. */
  lastSuccessAt(): number | undefined;
  /** True while the set is last-known-good: the last refresh failed, or none has succeeded yet. */
  stale(): boolean;
}

/** The per-upstream resilience counters, one set per upstream name, updated with `+= 1`. */
export interface UpstreamResilienceSeries {
  /** By UPSTREAM_DECISIONS index. */
  readonly decisions: readonly ScalarCell[];
  /** By RETRY_REASONS index. */
  readonly retries: readonly ScalarCell[];
}

/**
 * Why an auth filter allowed or denied a request (label `reason` of peregrine_auth_decisions_total).
 * `ok` and, on routes where authentication is optional, `missing` go with `allow`; the rest with `deny`.
 */
export const AUTH_REASONS = [
  'ok',
  'missing',
  'malformed',
  'expired',
  'not_yet_valid',
  'bad_signature',
  'unknown_kid',
  'wrong_issuer',
  'wrong_audience',
  'wrong_type',
  'missing_claim',
  'forbidden_header',
  'algorithm_not_allowed',
  'too_large',
  'insufficient_scope',
  'insufficient_role',
  'jwks_unavailable',
  'mtls_required',
  'identity_denied',
] as const;
export type AuthReason = (typeof AUTH_REASONS)[number];
export type AuthResult = 'allow' | 'deny';
/** Provider label when no single provider applies (no token, or no provider for the token's issuer). */
export const NO_PROVIDER = '_none';

/** How one JWKS fetch ended (label `outcome` of peregrine_jwks_fetches_total). */
export const JWKS_FETCH_OUTCOMES = [
  'success',
  'not_modified',
  'error',
  'timeout',
  'http_error',
  'redirect',
  'too_large',
  'invalid',
] as const;
export type JwksFetchOutcome = (typeof JWKS_FETCH_OUTCOMES)[number];

export { LATENCY_BUCKETS };

/**
 * Route label of the latency series shared by the routes without a histogram of their own
 * (telemetry.metrics.routeHistograms, a route's metrics.histogram).
 */
export const OTHER_ROUTES = '_other';

export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;
export const OPENMETRICS_CONTENT_TYPE = Registry.OPENMETRICS_CONTENT_TYPE;

export interface MetricsOptions {
  /** Attach trace_id exemplars to the latency histograms (OpenMetrics scrapes only). */
  exemplars: boolean;
  /** Bucket bounds of both latency histograms (seconds); default LATENCY_BUCKETS. */
  latencyBuckets?: readonly number[];
  /**
   * Whether a route has a latency histogram of its own unless configureRoutes says otherwise
   * (default true); the others share the `_other` series.
   */
  routeHistograms?: boolean;
  /** Sampling interval of the event-loop delay histogram, ms (default EVENT_LOOP_RESOLUTION_MS). */
  eventLoopResolutionMs?: number;
  /** Gateway version for peregrine_build_info. */
  version: string;
}

interface RequestSeries {
  readonly total: ScalarCell;
  /** The route's own, or the shared `_other` one (replaced when configureRoutes changes that). */
  duration: HistogramCell;
}

interface AttemptSeries {
  readonly duration: HistogramCell;
  /** By status code; 0 stands for "no status" (label `none`). */
  readonly byStatus: Map<number, ScalarCell>;
}

interface BodySeries {
  readonly request: ScalarCell;
  readonly response: ScalarCell;
}

type ByMethod = (Map<number, RequestSeries> | undefined)[];
type ByOutcome = (AttemptSeries | undefined)[];

/** The single-label series for `value`, created on first use. */
function seriesOf(
  map: Map<string, ScalarCell>,
  metric: CellMetric,
  label: string,
  value: string,
): ScalarCell {
  let cell = map.get(value);
  if (cell === undefined) {
    cell = metric.cell({ [label]: value });
    map.set(value, cell);
  }
  return cell;
}

/** Every gateway metric and the calls that record them; build one with createMetrics(). */
export class GatewayMetrics {
  /** The registry holding every gateway metric (not prom-client's global one). Render it with renderMetrics(). */
  readonly registry: Registry<RegistryContentType>;
  readonly exemplars: boolean;
  readonly requestsTotal: CellMetric;
  readonly requestDuration: CellHistogram;
  /** 1 per route with a latency histogram of its own, labelled with its `http_route`. */
  readonly routeInfo: CellMetric;
  readonly requestsInFlight: CellMetric;
  readonly openConnections: CellMetric;
  readonly pipelinedDropped: CellMetric;
  readonly requestBodyBytes: CellMetric;
  readonly responseBodyBytes: CellMetric;
  readonly localResponses: CellMetric;
  readonly upstreamAttempts: CellMetric;
  readonly upstreamAttemptDuration: CellHistogram;
  readonly upstreamInFlight: CellMetric;
  readonly configReloads: Counter<'outcome'>;
  readonly configLastReloadSuccessTimestamp: Gauge;
  readonly configLastReloadSuccessful: Gauge;
  readonly buildInfo: Gauge<'version' | 'node_version'>;
  readonly websocketUpgrades: Counter<'route' | 'outcome'>;
  readonly authDecisions: CellMetric;
  readonly jwksFetches: Counter<'provider' | 'outcome'>;
  readonly jwksKidMisses: Counter<'provider'>;
  readonly jwksKeys: Gauge<'provider'>;
  readonly jwksKeysetAge: Gauge<'provider'>;
  readonly jwksStale: Gauge<'provider'>;
  readonly upstreamDecisions: CellMetric;
  readonly upstreamRetries: CellMetric;
  readonly upstreamCircuitState: ReadGauge<UpstreamStateSource>;
  readonly upstreamCircuitTransitions: Counter<'upstream' | 'from' | 'to'>;
  readonly upstreamEjections: Counter<'upstream' | 'endpoint'>;
  readonly upstreamEjectedEndpoints: ReadGauge<UpstreamStateSource>;
  readonly upstreamEndpoints: ReadGauge<UpstreamStateSource>;
  readonly upstreamPanicMode: ReadGauge<UpstreamStateSource>;
  readonly upstreamEndpointsInUse: ReadGauge<UpstreamStateSource>;
  readonly upstreamQueued: ReadGauge<UpstreamStateSource>;
  readonly upstreamRetryBudgetRemaining: ReadGauge<UpstreamStateSource>;
  readonly discoveryRefreshes: Counter<'upstream' | 'source' | 'outcome'>;
  readonly discoveryEndpoints: ReadGauge<DiscoveryStateSource>;
  readonly discoveryLastSuccess: ReadGauge<DiscoveryStateSource>;
  readonly discoveryStale: ReadGauge<DiscoveryStateSource>;

  readonly tlsHandshakes: CellMetric;
  readonly tlsHandshakeFailures: Counter<'listener' | 'reason'>;
  readonly tlsClientCertVerificationFailures: Counter<'listener' | 'reason'>;
  readonly tlsCertificateReloads: Counter<'listener' | 'outcome'>;
  readonly adminAuthFailures: Counter<'reason'>;
  readonly tlsCertificateExpiry: Gauge<'listener' | 'role' | 'subject'>;
  readonly http2SessionsClosed: Counter<'listener' | 'reason'>;
  readonly tracingSpans: Counter<'outcome'>;
  readonly tracingExportDuration: Histogram<'outcome'>;
  readonly tracingQueuedSpans: Gauge;
  /** Reads the span export queue's depth at scrape time (set while an exporting tracer runs). */
  private spanQueue: (() => number) | undefined = undefined;
  /** `listener NUL protocol NUL alpn` → handshake series. */
  private readonly handshakeCells = new Map<string, ScalarCell>();
  /** listener → label sets of its certificate expiry series (replaced when certificates reload). */
  private readonly expiryLabels = new Map<string, Labels[]>();
  #redis: RedisMetrics | undefined;
  #upstreamTls: UpstreamTlsMetrics | undefined;
  #registryMetrics: RegistryMetrics | undefined;
  #mesh: MeshMetrics | undefined;
  readonly #latencyBuckets: readonly number[];
  #rateLimits: RateLimitMetrics | undefined;

  /** listener → route → method index → status → series */
  private readonly requests = new Map<string, Map<string, ByMethod>>();
  /** upstream → endpoint → outcome index → series */
  private readonly attempts = new Map<string, Map<string, ByOutcome>>();
  private readonly inFlightByListener = new Map<string, ScalarCell>();
  private readonly connectionsByListener = new Map<string, ScalarCell>();
  private readonly droppedByListener = new Map<string, ScalarCell>();
  private readonly inFlightByUpstream = new Map<string, ScalarCell>();
  private readonly bodyByRoute = new Map<string, BodySeries>();
  /** route → code → series */
  private readonly localByRoute = new Map<string, Map<string, ScalarCell>>();
  /** `route NUL provider NUL result NUL reason` → series (looked up when filters are built, not per request). */
  private readonly authCells = new Map<string, ScalarCell>();
  /** provider → key set times read by the age and stale gauges at scrape time. */
  private readonly jwksKeysets = new Map<string, { confirmedAt: number | undefined; staleAfter: number }>();
  /** upstream → resilience counters (kept across reloads). */
  private readonly resilienceByUpstream = new Map<string, UpstreamResilienceSeries>();
  /** upstream → the live cluster the upstream gauges read at scrape time. */
  private readonly upstreamSources = new Map<string, UpstreamStateSource>();
  private readonly routeHistogramDefault: boolean;
  /** Routes whose histogram setting differs from routeHistogramDefault. */
  private routeHistogramExceptions: ReadonlySet<string> = new Set();
  /** `listener NUL method NUL status` → the `_other` latency series. */
  private readonly otherDurations = new Map<string, HistogramCell>();
  /** upstream → its endpoint source, read by the discovery gauges at scrape time. */
  private readonly discoverySources = new Map<string, DiscoveryStateSource>();
  /** route → its routeInfo series (`http_route` in the labels). */
  private readonly routeInfoCells = new Map<string, ScalarCell>();
  readonly #stopRuntime: () => void;

  constructor(opts: MetricsOptions) {
    // Prometheus text by default; renderMetrics() switches to OpenMetrics for scrapers that ask.
    // (The exemplar-carrying histograms are CellHistograms, so prom-client's rule that
    // exemplar-enabled metrics need an OpenMetrics registry at construction does not apply.)
    const registry = new Registry<RegistryContentType>();
    this.registry = registry;
    this.exemplars = opts.exemplars;
    this.#latencyBuckets = opts.latencyBuckets ?? LATENCY_BUCKETS;
    this.routeHistogramDefault = opts.routeHistograms ?? true;
    const registers = [registry as Registry];

    this.requestsTotal = new CellMetric('counter', {
      name: 'peregrine_requests_total',
      help: 'Requests answered, by listener, route, method and status code.',
      labelNames: ['listener', 'route', 'method', 'status'],
      registry,
    });
    this.requestDuration = new CellHistogram({
      name: 'peregrine_request_duration_seconds',
      help: 'Time from request received to response finished, as seen by the gateway.',
      labelNames: ['listener', 'route', 'method', 'status'],
      buckets: opts.latencyBuckets ?? LATENCY_BUCKETS,
      exemplars: opts.exemplars,
      registry,
    });
    this.routeInfo = new CellMetric('gauge', {
      name: 'peregrine_route_info',
      help: 'Always 1, per route with a latency histogram of its own: its path template as http_route (what spans carry as http.route).',
      labelNames: ['route', 'http_route'],
      registry,
    });
    this.requestsInFlight = new CellMetric('gauge', {
      name: 'peregrine_requests_in_flight',
      help: 'Requests received and not yet finished.',
      labelNames: ['listener'],
      registry,
    });
    this.openConnections = new CellMetric('gauge', {
      name: 'peregrine_open_connections',
      help: 'Client connections currently open.',
      labelNames: ['listener'],
      registry,
    });
    this.pipelinedDropped = new CellMetric('counter', {
      name: 'peregrine_pipelined_requests_dropped_total',
      help: 'HTTP/1.1 requests pipelined after a response that closed the connection: not processed (RFC 9112 §9.6).',
      labelNames: ['listener'],
      registry,
    });
    this.requestBodyBytes = new CellMetric('counter', {
      name: 'peregrine_request_body_bytes_total',
      help: 'Request body bytes received from clients.',
      labelNames: ['route'],
      registry,
    });
    this.responseBodyBytes = new CellMetric('counter', {
      name: 'peregrine_response_body_bytes_total',
      help: 'Response body bytes sent to clients.',
      labelNames: ['route'],
      registry,
    });
    this.localResponses = new CellMetric('counter', {
      name: 'peregrine_local_responses_total',
      help: 'Responses generated by the gateway itself, by error code.',
      labelNames: ['route', 'code'],
      registry,
    });
    this.upstreamAttempts = new CellMetric('counter', {
      name: 'peregrine_upstream_attempts_total',
      help: 'Upstream attempts (a retried request counts each try), by outcome and upstream status.',
      labelNames: ['upstream', 'endpoint', 'outcome', 'status'],
      registry,
    });
    this.upstreamAttemptDuration = new CellHistogram({
      name: 'peregrine_upstream_attempt_duration_seconds',
      help: 'Time from attempt start to its end (response finished or failure).',
      labelNames: ['upstream', 'endpoint', 'outcome'],
      buckets: opts.latencyBuckets ?? LATENCY_BUCKETS,
      exemplars: opts.exemplars,
      registry,
    });
    this.upstreamInFlight = new CellMetric('gauge', {
      name: 'peregrine_upstream_in_flight',
      help: 'Upstream attempts currently in progress.',
      labelNames: ['upstream'],
      registry,
    });
    this.configReloads = new Counter({
      name: 'peregrine_config_reloads_total',
      help: 'Configuration loads (initial load included), by outcome.',
      labelNames: ['outcome'],
      registers,
    });
    this.configReloads.inc({ outcome: 'success' }, 0);
    this.configReloads.inc({ outcome: 'failure' }, 0);
    this.configLastReloadSuccessTimestamp = new Gauge({
      name: 'peregrine_config_last_reload_success_timestamp_seconds',
      help: 'Unix time of the last successful configuration load.',
      registers,
    });
    this.configLastReloadSuccessful = new Gauge({
      name: 'peregrine_config_last_reload_successful',
      help: '1 if the last configuration load succeeded, 0 if it was rejected.',
      registers,
    });
    this.buildInfo = new Gauge({
      name: 'peregrine_build_info',
      help: 'Always 1; labels carry the gateway and Node.js versions.',
      labelNames: ['version', 'node_version'],
      registers,
    });
    this.buildInfo.set({ version: opts.version, node_version: process.version }, 1);
    this.websocketUpgrades = new Counter({
      name: 'peregrine_websocket_upgrades_total',
      help: 'WebSocket upgrade requests, by route and outcome.',
      labelNames: ['route', 'outcome'],
      registers,
    });
    this.authDecisions = new CellMetric('counter', {
      name: 'peregrine_auth_decisions_total',
      help: 'Authentication and authorisation decisions, by route, provider, result and reason.',
      labelNames: ['route', 'provider', 'result', 'reason'],
      registry,
    });
    this.jwksFetches = new Counter({
      name: 'peregrine_jwks_fetches_total',
      help: 'JWKS fetches, by auth provider and outcome.',
      labelNames: ['provider', 'outcome'],
      registers,
    });
    this.jwksKidMisses = new Counter({
      name: 'peregrine_jwks_kid_misses_total',
      help: 'Tokens naming a key id that the provider key set did not hold.',
      labelNames: ['provider'],
      registers,
    });
    this.jwksKeys = new Gauge({
      name: 'peregrine_jwks_keys',
      help: 'Usable verification keys in the provider key set.',
      labelNames: ['provider'],
      registers,
    });
    const keysets = this.jwksKeysets;
    this.jwksKeysetAge = new Gauge({
      name: 'peregrine_jwks_keyset_age_seconds',
      help: 'Time since the JWKS endpoint last confirmed the key set in use; grows while refreshes fail.',
      labelNames: ['provider'],
      registers,
      collect() {
        const now = Date.now();
        for (const [provider, k] of keysets) {
          if (k.confirmedAt !== undefined) this.set({ provider }, Math.max(0, now - k.confirmedAt) / 1000);
        }
      },
    });
    this.jwksStale = new Gauge({
      name: 'peregrine_jwks_stale',
      help: '1 while the provider serves a key set past its max-age because refreshes failed.',
      labelNames: ['provider'],
      registers,
      collect() {
        const now = Date.now();
        for (const [provider, k] of keysets) this.set({ provider }, now > k.staleAfter ? 1 : 0);
      },
    });
    this.upstreamDecisions = new CellMetric('counter', {
      name: 'peregrine_upstream_decisions_total',
      help: 'Local resilience decisions per upstream: retry, budget_exhausted, circuit_open, overloaded.',
      labelNames: ['upstream', 'decision'],
      registry,
    });
    this.upstreamRetries = new CellMetric('counter', {
      name: 'peregrine_upstream_retries_total',
      help: 'Retries scheduled per upstream, by the failure that caused them.',
      labelNames: ['upstream', 'reason'],
      registry,
    });
    this.upstreamCircuitTransitions = new Counter({
      name: 'peregrine_upstream_circuit_transitions_total',
      help: 'Circuit breaker state changes per upstream.',
      labelNames: ['upstream', 'from', 'to'],
      registers,
    });
    this.upstreamEjections = new Counter({
      name: 'peregrine_upstream_ejections_total',
      help: 'Endpoints ejected by outlier detection.',
      labelNames: ['upstream', 'endpoint'],
      registers,
    });
    // Upstream gauges are read from the live clusters at scrape time: nothing on the request path.
    const upstreamGauge = (
      name: string,
      help: string,
      read: (source: UpstreamStateSource) => number,
    ): ReadGauge<UpstreamStateSource> =>
      new ReadGauge({
        name,
        help,
        labelNames: ['upstream'],
        registry,
        sources: this.upstreamSources,
        read: (upstream, source, emit) => emit({ upstream }, read(source)),
      });
    this.upstreamCircuitState = upstreamGauge(
      'peregrine_upstream_circuit_state',
      'Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.',
      (s) => s.circuitState(),
    );
    this.upstreamEjectedEndpoints = upstreamGauge(
      'peregrine_upstream_ejected_endpoints',
      'Endpoints currently ejected by outlier detection.',
      (s) => s.ejectedEndpoints(),
    );
    this.upstreamEndpoints = new ReadGauge({
      name: 'peregrine_upstream_endpoints',
      help: 'Endpoints per upstream by state: healthy (eligible), unhealthy (active checks), ejected, draining.',
      labelNames: ['upstream', 'state'],
      registry,
      sources: this.upstreamSources,
      read(upstream, source, emit) {
        const counts = source.endpointStates();
        for (let i = 0; i < ENDPOINT_STATES.length; i++)
          emit({ upstream, state: ENDPOINT_STATES[i]! }, counts[i] ?? 0);
      },
    });
    this.upstreamEndpointsInUse = upstreamGauge(
      'peregrine_upstream_endpoints_in_use',
      "Endpoints the balancer chooses among: on a wide upstream the aperture's window, else every eligible one.",
      (s) => s.endpointsInUse(),
    );
    this.upstreamPanicMode = upstreamGauge(
      'peregrine_upstream_panic_mode',
      '1 while too few endpoints are eligible and the balancer spreads over all of them.',
      (s) => (s.panicMode() ? 1 : 0),
    );
    this.upstreamQueued = upstreamGauge(
      'peregrine_upstream_queued',
      'Requests waiting for a bulkhead slot.',
      (s) => s.queued(),
    );
    this.upstreamRetryBudgetRemaining = upstreamGauge(
      'peregrine_upstream_retry_budget_remaining',
      'Retries the retry budget would allow right now.',
      (s) => s.retryBudgetRemaining(),
    );
    this.discoveryRefreshes = new Counter({
      name: 'peregrine_discovery_refreshes_total',
      help: 'Reads of upstream endpoint sources (a DNS resolution, a registry read or change, the static list applied), by outcome.',
      labelNames: ['upstream', 'source', 'outcome'],
      registers,
    });
    const discoveryGauge = (
      name: string,
      help: string,
      read: (upstream: string, source: DiscoveryStateSource, emit: EmitSeries) => void,
    ): ReadGauge<DiscoveryStateSource> =>
      new ReadGauge({
        name,
        help,
        labelNames: ['upstream', 'source'],
        registry,
        sources: this.discoverySources,
        read,
      });
    this.discoveryEndpoints = discoveryGauge(
      'peregrine_discovery_endpoints',
      "Endpoints in an upstream's live set by the source that put them there.",
      (upstream, d, emit) => {
        const counts = d.endpointsBySource();
        emit({ upstream, source: d.source }, counts[d.source] ?? 0);
        for (const [source, n] of Object.entries(counts))
          if (source !== d.source && n > 0) emit({ upstream, source }, n);
      },
    );
    this.discoveryLastSuccess = discoveryGauge(
      'peregrine_discovery_last_success_timestamp_seconds',
      "Unix time of the last successful refresh of an upstream's endpoint source.",
      (upstream, d, emit) => {
        const at = d.lastSuccessAt();
        if (at !== undefined) emit({ upstream, source: d.source }, at / 1000);
      },
    );
    this.discoveryStale = discoveryGauge(
      'peregrine_discovery_stale',
      "1 while an upstream's endpoints are last-known-good: its source's last refresh failed (or none succeeded yet).",
      (upstream, d, emit) => emit({ upstream, source: d.source }, d.stale() ? 1 : 0),
    );
    this.tlsHandshakes = new CellMetric('counter', {
      name: 'peregrine_tls_handshakes_total',
      help: 'TLS handshakes completed, by listener, protocol version and ALPN protocol.',
      labelNames: ['listener', 'protocol', 'alpn'],
      registry,
    });
    this.tlsHandshakeFailures = new Counter({
      name: 'peregrine_tls_handshake_failures_total',
      help: 'TLS handshakes that failed or were refused, by listener and reason.',
      labelNames: ['listener', 'reason'],
      registers,
    });
    this.tlsClientCertVerificationFailures = new Counter({
      name: 'peregrine_tls_client_cert_verification_failures_total',
      help: 'Client certificates that did not verify (or were missing where required), by listener and reason.',
      labelNames: ['listener', 'reason'],
      registers,
    });
    this.tlsCertificateReloads = new Counter({
      name: 'peregrine_tls_certificate_reloads_total',
      help: 'TLS certificate reloads after start, by listener and outcome.',
      labelNames: ['listener', 'outcome'],
      registers,
    });
    this.adminAuthFailures = new Counter({
      name: 'peregrine_admin_auth_failures_total',
      help: 'Admin API requests refused for want of a credential (no_credential) or with a wrong one (bad_credential).',
      labelNames: ['reason'],
      registers,
    });
    this.tlsCertificateExpiry = new Gauge({
      name: 'peregrine_tls_certificate_expiry_timestamp_seconds',
      help: 'Unix time at which a certificate a listener serves (role server) or trusts (role client_ca) expires.',
      labelNames: ['listener', 'role', 'subject'],
      registers,
    });
    this.http2SessionsClosed = new Counter({
      name: 'peregrine_http2_sessions_closed_total',
      help: 'HTTP/2 sessions ended, by listener and reason.',
      labelNames: ['listener', 'reason'],
      registers,
    });
    this.tracingSpans = new Counter({
      name: 'peregrine_tracing_spans_total',
      help: 'Ended, sampled spans by what became of them: exported, failed (export error) or dropped (queue full).',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of SPAN_OUTCOMES) this.tracingSpans.inc({ outcome }, 0);
    this.tracingExportDuration = new Histogram({
      name: 'peregrine_tracing_export_duration_seconds',
      help: 'Time to export one request of spans (a batch or a slice of one; retries included), by result.',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS as number[],
      registers,
    });
    this.tracingExportDuration.zero({ outcome: 'exported' });
    this.tracingExportDuration.zero({ outcome: 'failed' });
    const metrics = this;
    this.tracingQueuedSpans = new Gauge({
      name: 'peregrine_tracing_queued_spans',
      help: 'Sampled spans waiting in the export queue (0 when nothing is exported).',
      registers,
      collect() {
        this.set(metrics.spanQueue?.() ?? 0);
      },
    });
    this.#stopRuntime = registerRuntimeMetrics(registry, 'peregrine_', opts.eventLoopResolutionMs);
  }

  /** Stop what runs in the background (the event-loop monitor). Idempotent. */
  close(): void {
    this.#stopRuntime();
  }

  /** One export of a batch of `spans` spans, by result. */
  recordSpanExport(outcome: 'exported' | 'failed', spans: number, seconds: number): void {
    this.tracingSpans.inc({ outcome }, spans);
    this.tracingExportDuration.observe({ outcome }, seconds);
  }

  /** Spans the export queue had no room for. */
  recordSpansDropped(spans: number): void {
    this.tracingSpans.inc({ outcome: 'dropped' }, spans);
  }

  /** Read the export queue's depth with `read` at every scrape until the returned function is called. */
  watchSpanQueue(read: () => number): () => void {
    this.spanQueue = read;
    return () => {
      if (this.spanQueue === read) this.spanQueue = undefined;
    };
  }

  /**
   * One finished request: peregrine_requests_total and peregrine_request_duration_seconds.
   * `route` undefined means no route matched. Pass `traceId` only for sampled requests; it becomes
   * the bucket's exemplar.
   */
  recordRequest(
    listener: string,
    route: string | undefined,
    method: string,
    status: number,
    seconds: number,
    traceId: string | undefined,
  ): void {
    const r = route ?? NO_ROUTE;
    let byRoute = this.requests.get(listener);
    if (byRoute === undefined) {
      byRoute = new Map();
      this.requests.set(listener, byRoute);
    }
    let byMethod = byRoute.get(r);
    if (byMethod === undefined) {
      byMethod = new Array(METRIC_METHODS.length).fill(undefined);
      byRoute.set(r, byMethod);
    }
    const mi = METHOD_INDEX.get(method) ?? OTHER_METHOD;
    let byStatus = byMethod[mi];
    if (byStatus === undefined) {
      byStatus = new Map();
      byMethod[mi] = byStatus;
    }
    let series = byStatus.get(status);
    if (series === undefined) {
      series = this.newRequestSeries(listener, r, METRIC_METHODS[mi]!, status);
      byStatus.set(status, series);
    }
    series.total.value += 1;
    this.requestDuration.observe(series.duration, seconds, traceId);
  }

  private newRequestSeries(listener: string, route: string, method: string, status: number): RequestSeries {
    const labels: Labels = { listener, route, method, status: String(status) };
    return { total: this.requestsTotal.cell(labels), duration: this.durationCell(labels) };
  }

  /** The latency series for a request series' labels: the route's own or the shared `_other`. */
  private durationCell(labels: Labels): HistogramCell {
    if (this.ownHistogram(labels.route!)) return this.requestDuration.cell(labels);
    const { listener, method, status } = labels;
    const key = `${listener}\u0000${method}\u0000${status}`;
    let cell = this.otherDurations.get(key);
    if (cell === undefined) {
      cell = this.requestDuration.cell({
        listener: listener!,
        route: OTHER_ROUTES,
        method: method!,
        status: status!,
      });
      this.otherDurations.set(key, cell);
    }
    return cell;
  }

  private ownHistogram(route: string): boolean {
    return route === NO_ROUTE || this.routeHistogramExceptions.has(route) !== this.routeHistogramDefault;
  }

  /**
   * The routes now configured and whether each has a latency histogram of its own (undefined:
   * the default). A route that loses its histogram drops its series and records into `_other`
   * from now on; one that gains it starts its own. Counters stay per route either way.
   * `peregrine_route_info` follows: one series per route with a histogram of its own.
   */
  configureRoutes(routes: Iterable<RouteMetricsConfig>): void {
    runNow(this.configureRoutesSteps(routes));
  }

  /**
   * configureRoutes in steps (src/slices.ts), a yield every ROUTES_PER_STEP routes: a reload
   * configures 10,000 routes between requests. The new settings take effect together at the end.
   */
  *configureRoutesSteps(routes: Iterable<RouteMetricsConfig>): Steps<void> {
    const exceptions = new Set<string>();
    const info = new Map<string, string>();
    let n = 0;
    for (const r of routes) {
      if (r.histogram !== undefined && r.histogram !== this.routeHistogramDefault) exceptions.add(r.name);
      if ((r.histogram ?? this.routeHistogramDefault) === true) info.set(r.name, r.httpRoute);
      if (++n % ROUTES_PER_STEP === 0) yield;
    }
    yield* this.setRouteInfoSteps(info);
    const before = this.routeHistogramExceptions;
    this.routeHistogramExceptions = exceptions;
    const changed = new Set<string>();
    for (const name of before) if (!exceptions.has(name)) changed.add(name);
    for (const name of exceptions) if (!before.has(name)) changed.add(name);
    if (changed.size === 0) return;
    for (const byRoute of this.requests.values()) {
      for (const route of changed) {
        for (const byStatus of byRoute.get(route) ?? []) {
          for (const series of byStatus?.values() ?? []) {
            const own = series.duration.labels.route === route;
            if (own) this.requestDuration.remove(series.duration);
            series.duration = this.durationCell(series.total.labels);
          }
        }
      }
    }
  }

  /** Keep one routeInfo series per entry of `info` (route → http_route), and no others. */
  private *setRouteInfoSteps(info: ReadonlyMap<string, string>): Steps<void> {
    let n = 0;
    for (const [route, cell] of this.routeInfoCells) {
      if (++n % ROUTES_PER_STEP === 0) yield;
      if (info.get(route) === cell.labels.http_route) continue;
      this.routeInfo.remove(cell);
      this.routeInfoCells.delete(route);
    }
    for (const [route, httpRoute] of info) {
      if (++n % ROUTES_PER_STEP === 0) yield;
      if (this.routeInfoCells.has(route)) continue;
      const cell = this.routeInfo.cell({ route, http_route: httpRoute });
      cell.value = 1;
      this.routeInfoCells.set(route, cell);
    }
  }

  recordBytes(route: string | undefined, requestBytes: number, responseBytes: number): void {
    const r = route ?? NO_ROUTE;
    let series = this.bodyByRoute.get(r);
    if (series === undefined) {
      const labels = { route: r };
      series = { request: this.requestBodyBytes.cell(labels), response: this.responseBodyBytes.cell(labels) };
      this.bodyByRoute.set(r, series);
    }
    series.request.value += requestBytes;
    series.response.value += responseBytes;
  }

  /** A response the gateway generated itself (problem+json), by GatewayError code. */
  recordLocalResponse(route: string | undefined, code: ErrorCode): void {
    const r = route ?? NO_ROUTE;
    let byCode = this.localByRoute.get(r);
    if (byCode === undefined) {
      byCode = new Map();
      this.localByRoute.set(r, byCode);
    }
    let cell = byCode.get(code);
    if (cell === undefined) {
      cell = this.localResponses.cell({ route: r, code });
      byCode.set(code, cell);
    }
    cell.value += 1;
  }

  requestStarted(listener: string): void {
    seriesOf(this.inFlightByListener, this.requestsInFlight, 'listener', listener).value += 1;
  }

  requestFinished(listener: string): void {
    seriesOf(this.inFlightByListener, this.requestsInFlight, 'listener', listener).value -= 1;
  }

  connectionOpened(listener: string): void {
    seriesOf(this.connectionsByListener, this.openConnections, 'listener', listener).value += 1;
  }

  connectionClosed(listener: string): void {
    seriesOf(this.connectionsByListener, this.openConnections, 'listener', listener).value -= 1;
  }

  pipelinedRequestDropped(listener: string): void {
    seriesOf(this.droppedByListener, this.pipelinedDropped, 'listener', listener).value += 1;
  }

  /** One upstream attempt. `status` undefined or 0 when no response head arrived (label `none`). */
  recordAttempt(
    upstream: string,
    endpoint: string,
    outcome: AttemptOutcome,
    status: number | undefined,
    seconds: number,
    traceId: string | undefined,
  ): void {
    let byEndpoint = this.attempts.get(upstream);
    if (byEndpoint === undefined) {
      byEndpoint = new Map();
      this.attempts.set(upstream, byEndpoint);
    }
    let byOutcome = byEndpoint.get(endpoint);
    if (byOutcome === undefined) {
      byOutcome = new Array(ATTEMPT_OUTCOMES.length).fill(undefined);
      byEndpoint.set(endpoint, byOutcome);
    }
    const oi = OUTCOME_INDEX.get(outcome) ?? ATTEMPT_OUTCOMES.length - 1;
    let series = byOutcome[oi];
    if (series === undefined) {
      series = {
        duration: this.upstreamAttemptDuration.cell({ upstream, endpoint, outcome: ATTEMPT_OUTCOMES[oi]! }),
        byStatus: new Map(),
      };
      byOutcome[oi] = series;
    }
    const code = status ?? 0;
    let total = series.byStatus.get(code);
    if (total === undefined) {
      total = this.upstreamAttempts.cell({
        upstream,
        endpoint,
        outcome: ATTEMPT_OUTCOMES[oi]!,
        status: code === 0 ? 'none' : String(code),
      });
      series.byStatus.set(code, total);
    }
    total.value += 1;
    this.upstreamAttemptDuration.observe(series.duration, seconds, traceId);
  }

  upstreamStarted(upstream: string): void {
    seriesOf(this.inFlightByUpstream, this.upstreamInFlight, 'upstream', upstream).value += 1;
  }

  upstreamFinished(upstream: string): void {
    seriesOf(this.inFlightByUpstream, this.upstreamInFlight, 'upstream', upstream).value -= 1;
  }

  /** Count a configuration load (the initial load included) and update the last-reload gauges. */
  recordConfigReload(outcome: ConfigReloadOutcome): void {
    this.configReloads.inc({ outcome: outcome === 'success' ? 'success' : 'failure' });
    this.configLastReloadSuccessful.set(outcome === 'success' ? 1 : 0);
    if (outcome === 'success') this.configLastReloadSuccessTimestamp.set(Date.now() / 1000);
  }

  recordWebSocketUpgrade(route: string | undefined, outcome: WebSocketOutcome): void {
    this.websocketUpgrades.inc({ route: route ?? NO_ROUTE, outcome });
  }

  /**
   * The peregrine_auth_decisions_total series for these labels, created on first use and the same
   * cell for the same labels afterwards. Auth filters fetch their cells when they are built and add
   * 1 per decision, so a decision costs one `+=`.
   */
  authDecisionCell(route: string, provider: string, result: AuthResult, reason: AuthReason): ScalarCell {
    const key = `${route}\u0000${provider}\u0000${result}\u0000${reason}`;
    let cell = this.authCells.get(key);
    if (cell === undefined) {
      cell = this.authDecisions.cell({ route, provider, result, reason });
      this.authCells.set(key, cell);
    }
    return cell;
  }

  /** One auth decision, for callers without a cached cell (a Map lookup by joined key). */
  recordAuthDecision(route: string, provider: string, result: AuthResult, reason: AuthReason): void {
    this.authDecisionCell(route, provider, result, reason).value += 1;
  }

  recordJwksFetch(provider: string, outcome: JwksFetchOutcome): void {
    this.jwksFetches.inc({ provider, outcome });
  }

  /** A token named a `kid` the provider's key set does not hold. */
  recordJwksKidMiss(provider: string): void {
    this.jwksKidMisses.inc({ provider });
  }

  /**
   * A provider's key set: usable keys, when the JWKS endpoint last confirmed it (ms since the epoch;
   * undefined while it never has, or for keys from the configuration), and the time after which it
   * counts as stale (past its max-age because refreshes failed). Age and staleness are computed at
   * scrape time, so they keep moving while nothing is fetched.
   */
  setJwksKeyset(provider: string, keys: number, confirmedAt: number | undefined, staleAfter: number): void {
    this.jwksKeys.set({ provider }, keys);
    this.jwksKeysets.set(provider, { confirmedAt, staleAfter });
    if (confirmedAt === undefined) this.jwksKeysetAge.remove({ provider });
  }

  /** Drop the JWKS gauges of a provider that a reload removed. */
  forgetJwksProvider(provider: string): void {
    this.jwksKeysets.delete(provider);
    this.jwksKeys.remove({ provider });
    this.jwksKeysetAge.remove({ provider });
    this.jwksStale.remove({ provider });
  }

  /**
   * The resilience counters of an upstream: created (at 0) on first use, and the same cells for
   * every Cluster of that name afterwards, so counters continue across reloads.
   */
  upstreamResilience(upstream: string): UpstreamResilienceSeries {
    let series = this.resilienceByUpstream.get(upstream);
    if (series === undefined) {
      series = {
        decisions: UPSTREAM_DECISIONS.map((decision) => this.upstreamDecisions.cell({ upstream, decision })),
        retries: RETRY_REASONS.map((reason) => this.upstreamRetries.cell({ upstream, reason })),
      };
      this.resilienceByUpstream.set(upstream, series);
    }
    return series;
  }

  /**
   * Read `source` for the upstream's gauges at every scrape until the returned function is called.
   * A later watch of the same name replaces it (a reload built a new Cluster); the stale watcher's
   * unwatch then does nothing.
   */
  watchUpstream(upstream: string, source: UpstreamStateSource): () => void {
    const sources = this.upstreamSources;
    sources.set(upstream, source);
    return function unwatchUpstream(): void {
      if (sources.get(upstream) === source) sources.delete(upstream);
    };
  }

  recordCircuitTransition(upstream: string, from: CircuitStateName, to: CircuitStateName): void {
    this.upstreamCircuitTransitions.inc({ upstream, from, to });
  }

  recordEjection(upstream: string, endpoint: string): void {
    this.upstreamEjections.inc({ upstream, endpoint });
  }

  /** A TLS handshake completed on a listener (counted on 'secureConnection'); alpn `none` without ALPN. */
  recordTlsHandshake(listener: string, protocol: string, alpn: string): void {
    const key = `${listener}\u0000${protocol}\u0000${alpn}`;
    let cell = this.handshakeCells.get(key);
    if (cell === undefined) {
      cell = this.tlsHandshakes.cell({ listener, protocol, alpn });
      this.handshakeCells.set(key, cell);
    }
    cell.value += 1;
  }

  recordTlsHandshakeFailure(listener: string, reason: HandshakeFailureReason): void {
    this.tlsHandshakeFailures.inc({ listener, reason });
  }

  recordAdminAuthFailure(reason: 'no_credential' | 'bad_credential'): void {
    this.adminAuthFailures.inc({ reason });
  }

  /**
   * Every request series (route, status, count) with its latency histogram cell, for the admin
   * API's per-route view. The histogram is the shared `_other` one for routes without their own.
   */
  *requestSeries(): Generator<{ route: string; status: number; count: number; duration: HistogramCell }> {
    for (const byRoute of this.requests.values())
      for (const [route, byMethod] of byRoute)
        for (const byStatus of byMethod)
          if (byStatus !== undefined)
            for (const [status, series] of byStatus)
              yield { route, status, count: series.total.value, duration: series.duration };
  }

  /** A client certificate that did not verify, or none where one is required. */
  recordClientCertVerificationFailure(listener: string, reason: ClientCertReason): void {
    this.tlsClientCertVerificationFailures.inc({ listener, reason });
  }

  /** A certificate reload after start (file change) was applied or rejected. */
  recordCertificateReload(listener: string, outcome: CertificateReloadOutcome): void {
    this.tlsCertificateReloads.inc({ listener, outcome });
  }

  /** The certificates a listener serves and trusts now; replaces that listener's previous series. */
  setCertificateExpiry(listener: string, certs: readonly CertificateExpiry[]): void {
    for (const labels of this.expiryLabels.get(listener) ?? []) this.tlsCertificateExpiry.remove(labels);
    const sets: Labels[] = [];
    for (const c of certs) {
      const labels = { listener, role: c.role, subject: c.subject };
      this.tlsCertificateExpiry.set(labels, c.notAfter.getTime() / 1000);
      sets.push(labels);
    }
    this.expiryLabels.set(listener, sets);
  }

  recordHttp2SessionClosed(listener: string, reason: Http2CloseReason): void {
    this.http2SessionsClosed.inc({ listener, reason });
  }

  /** TLS toward upstreams, registered on first use (gateways without `https://` upstreams show none). */
  get upstreamTls(): UpstreamTlsMetrics {
    this.#upstreamTls ??= new UpstreamTlsMetrics(this.registry);
    return this.#upstreamTls;
  }

  recordDiscoveryRefresh(upstream: string, source: string, outcome: DiscoveryOutcome): void {
    this.discoveryRefreshes.inc({ upstream, source, outcome });
  }

  /**
   * Read `source` for the upstream's discovery gauges at every scrape until the returned function
   * is called. A later watch of the same upstream replaces it (its source changed).
   */
  watchDiscovery(upstream: string, source: DiscoveryStateSource): () => void {
    const sources = this.discoverySources;
    sources.set(upstream, source);
    return function unwatchDiscovery(): void {
      if (sources.get(upstream) === source) sources.delete(upstream);
    };
  }

  /** The shared Redis connection's metrics, registered on first use (gateways without Redis show none). */
  get redis(): RedisMetrics {
    this.#redis ??= new RedisMetrics(this.registry);
    return this.#redis;
  }

  /** The service registry's metrics, registered on first use (gateways without a registry show none). */
  get registryMetrics(): RegistryMetrics {
    this.#registryMetrics ??= new RegistryMetrics(this.registry);
    return this.#registryMetrics;
  }

  /** Service-to-service metrics of a sidecar, registered on first use (gateways show none). */
  get mesh(): MeshMetrics {
    this.#mesh ??= new MeshMetrics(this.registry, this.#latencyBuckets, this.exemplars);
    return this.#mesh;
  }

  /** Rate limiting's metrics, registered on first use (gateways without rate limits show none). */
  get rateLimits(): RateLimitMetrics {
    this.#rateLimits ??= new RateLimitMetrics(this.registry);
    return this.#rateLimits;
  }

  /** Drop the series of an endpoint that discovery removed, so churn does not grow memory. */
  forgetEndpoint(upstream: string, endpoint: string): void {
    this.upstreamEjections.remove({ upstream, endpoint });
    const byEndpoint = this.attempts.get(upstream);
    const byOutcome = byEndpoint?.get(endpoint);
    if (byEndpoint === undefined || byOutcome === undefined) return;
    for (const series of byOutcome) {
      if (series === undefined) continue;
      this.upstreamAttemptDuration.remove(series.duration);
      for (const cell of series.byStatus.values()) this.upstreamAttempts.remove(cell);
    }
    byEndpoint.delete(endpoint);
  }
}

export function createMetrics(opts: MetricsOptions): GatewayMetrics {
  return new GatewayMetrics(opts);
}

/**
 * True when the scraper ranks OpenMetrics at least as high as the Prometheus text format.
 * Prometheus sends e.g. `application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*\/*;q=0.1`.
 */
export function wantsOpenMetrics(accept: string | undefined): boolean {
  if (accept === undefined || !accept.includes('application/openmetrics-text')) return false;
  let om = 0;
  let text = 0;
  for (const range of accept.split(',')) {
    const params = range.split(';');
    const type = params[0]!.trim().toLowerCase();
    let q = 1;
    for (let i = 1; i < params.length; i++) {
      const [k, v] = params[i]!.split('=');
      if (k?.trim().toLowerCase() === 'q') q = Number(v) || 0;
    }
    if (type === 'application/openmetrics-text') om = Math.max(om, q);
    else if (type === 'text/plain' || type === 'text/*' || type === '*/*') text = Math.max(text, q);
  }
  return om > 0 && om >= text;
}

/** The content type a scrape with this Accept header gets. */
export function metricsContentType(accept: string | undefined): string {
  return wantsOpenMetrics(accept) ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE;
}

/** Scrapes of one registry run one at a time: the format is registry-wide state (see below). */
const renderQueues = new WeakMap<GatewayMetrics, Promise<unknown>>();

/** What configureRoutes is told of a route. */
export interface RouteMetricsConfig {
  readonly name: string;
  readonly histogram: boolean | undefined;
  readonly httpRoute: string;
}

/** Routes configured between two yields of configureRoutesSteps: well under a millisecond. */
const ROUTES_PER_STEP = 500;

/**
 * Render for the admin /metrics endpoint: Prometheus text by default, OpenMetrics (with
 * exemplars) when `accept` asks for it. `sink` receives the text chunk by chunk (a returned
 * promise holds the next chunk back); the result says which content type it is.
 *
 * prom-client keeps the format on the Registry and reads it after awaits, so renders are
 * serialised per registry, and each one restores the registry's Prometheus default afterwards.
 * Always go through this function (or renderMetrics), never call `registry.metrics()` directly.
 */
export function writeMetrics(
  m: GatewayMetrics,
  accept: string | undefined,
  sink: TextSink,
): Promise<{ contentType: string }> {
  const openMetrics = wantsOpenMetrics(accept);
  const previous = renderQueues.get(m) ?? Promise.resolve();
  const result = previous.then(() => renderNow(m.registry, openMetrics, sink));
  renderQueues.set(
    m,
    result.catch(() => undefined),
  );
  return result;
}

/** writeMetrics into one string. */
export async function renderMetrics(
  m: GatewayMetrics,
  accept: string | undefined,
): Promise<{ contentType: string; body: string }> {
  const chunks: string[] = [];
  const { contentType } = await writeMetrics(m, accept, (chunk) => {
    chunks.push(chunk);
  });
  return { contentType, body: chunks.join('') };
}

async function renderNow(
  registry: Registry<RegistryContentType>,
  openMetrics: boolean,
  sink: TextSink,
): Promise<{ contentType: string }> {
  const contentType = openMetrics ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE;
  registry.setContentType(contentType);
  try {
    await writeExposition(registry, openMetrics, sink);
    return { contentType };
  } finally {
    registry.setContentType(PROMETHEUS_CONTENT_TYPE);
  }
}

// --- TLS toward upstreams ------------------------------------------------------------------------

/** One certificate an upstream's connections present (`client`) or trust (`ca`). */
export interface UpstreamCertificateExpiry {
  readonly role: 'client' | 'ca';
  readonly subject: string;
  readonly notAfter: Date;
}

export class UpstreamTlsMetrics {
  readonly handshakes: Counter<'upstream' | 'session'>;
  readonly failures: Counter<'upstream' | 'reason'>;
  readonly certificateReloads: Counter<'upstream' | 'outcome'>;
  readonly certificateExpiry: Gauge<'upstream' | 'role' | 'subject'>;
  /** upstream → label sets of its certificate expiry series (replaced when its certificates reload). */
  readonly #expiryLabels = new Map<string, Labels[]>();

  constructor(registry: Registry<RegistryContentType>) {
    const registers = [registry as Registry];
    this.handshakes = new Counter({
      name: 'peregrine_upstream_tls_handshakes_total',
      help: 'TLS handshakes with upstream endpoints, by upstream and session: new (full handshake) or resumed.',
      labelNames: ['upstream', 'session'],
      registers,
    });
    this.failures = new Counter({
      name: 'peregrine_upstream_tls_failures_total',
      help: "Upstream connections refused over TLS, by upstream and reason (certificate, handshake or the peer's SPIFFE identity).",
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.certificateReloads = new Counter({
      name: 'peregrine_upstream_tls_certificate_reloads_total',
      help: "Reloads of an upstream's client certificate and CA files after start, by upstream and outcome.",
      labelNames: ['upstream', 'outcome'],
      registers,
    });
    this.certificateExpiry = new Gauge({
      name: 'peregrine_upstream_tls_certificate_expiry_timestamp_seconds',
      help: "Unix time at which a certificate an upstream's connections present (role client) or trust (role ca) expires.",
      labelNames: ['upstream', 'role', 'subject'],
      registers,
    });
  }

  /** The handshake counter of one upstream and session kind, for a caller to keep and increment. */
  handshakeCounter(upstream: string, session: 'new' | 'resumed'): { inc(): void } {
    return this.handshakes.labels({ upstream, session });
  }

  recordFailure(upstream: string, reason: string): void {
    this.failures.inc({ upstream, reason });
  }

  recordCertificateReload(upstream: string, outcome: CertificateReloadOutcome): void {
    this.certificateReloads.inc({ upstream, outcome });
  }

  /** The certificates an upstream uses now; replaces its previous series (none: removes them). */
  setCertificateExpiry(upstream: string, certs: readonly UpstreamCertificateExpiry[]): void {
    for (const labels of this.#expiryLabels.get(upstream) ?? []) this.certificateExpiry.remove(labels);
    const sets: Labels[] = [];
    for (const c of certs) {
      const labels = { upstream, role: c.role, subject: c.subject };
      this.certificateExpiry.set(labels, c.notAfter.getTime() / 1000);
      sets.push(labels);
    }
    if (sets.length > 0) this.#expiryLabels.set(upstream, sets);
    else this.#expiryLabels.delete(upstream);
  }
}

// --- Redis and the service registry -------------------------------------------------------------

/**
 * One of Peregrine's Redis connections: `commands` (shared by every user), `subscriber` (pub/sub)
 * or `ratelimits` (rate limit counters: no per-command timer, src/stores/redis.ts).
 */
export type RedisConnectionName = 'commands' | 'subscriber' | 'ratelimits';
/** peregrine_redis_connection_state: 1 on the connection's current state, 0 on the others. */
export const REDIS_STATES = ['connecting', 'ready', 'reconnecting', 'closed'] as const;
export type RedisState = (typeof REDIS_STATES)[number];
/** connection: the socket failed or could not connect; timeout: a command had no reply in time; command: Redis answered with an error. */
export const REDIS_ERROR_KINDS = ['connection', 'timeout', 'command'] as const;
export type RedisErrorKind = (typeof REDIS_ERROR_KINDS)[number];

export class RedisMetrics {
  readonly connectionState: Gauge<'connection' | 'state'>;
  readonly reconnects: Counter<'connection'>;
  readonly errors: Counter<'connection' | 'kind'>;

  constructor(registry: Registry<RegistryContentType>) {
    const registers = [registry as Registry];
    this.connectionState = new Gauge({
      name: 'peregrine_redis_connection_state',
      help: 'State of each Redis connection: 1 on the current state (connecting, ready, reconnecting, closed).',
      labelNames: ['connection', 'state'],
      registers,
    });
    this.reconnects = new Counter({
      name: 'peregrine_redis_reconnects_total',
      help: 'Reconnection attempts per Redis connection.',
      labelNames: ['connection'],
      registers,
    });
    this.errors = new Counter({
      name: 'peregrine_redis_errors_total',
      help: 'Redis failures by connection and kind: connection, timeout, command.',
      labelNames: ['connection', 'kind'],
      registers,
    });
  }

  /** Start a connection's series: its state, and its counters at 0 (so rates exist before the first error). */
  addConnection(connection: RedisConnectionName): void {
    this.setState(connection, 'connecting');
    this.reconnects.inc({ connection }, 0);
    for (const kind of REDIS_ERROR_KINDS) this.errors.inc({ connection, kind }, 0);
  }

  setState(connection: RedisConnectionName, state: RedisState): void {
    for (const s of REDIS_STATES) this.connectionState.set({ connection, state: s }, s === state ? 1 : 0);
  }

  recordReconnect(connection: RedisConnectionName): void {
    this.reconnects.inc({ connection });
  }

  recordError(connection: RedisConnectionName, kind: RedisErrorKind): void {
    this.errors.inc({ connection, kind });
  }
}

/** Why the registration API refused a request (label `reason` of peregrine_registry_denials_total). */
export const REGISTRY_DENIAL_REASONS = [
  'no_credential',
  'bad_credential',
  'service_not_allowed',
  'rate_limited',
  'invalid',
  'address_not_allowed',
  'too_many_instances',
  'too_many_services',
] as const;
export type RegistryDenialReason = (typeof REGISTRY_DENIAL_REASONS)[number];
/** Why a replica re-read the whole registry (label `reason` of peregrine_registry_resyncs_total). */
export const REGISTRY_RESYNC_REASONS = ['start', 'reconnect', 'gap', 'periodic'] as const;
export type RegistryResyncReason = (typeof REGISTRY_RESYNC_REASONS)[number];
/** Registry store operations (label `operation` of peregrine_registry_store_errors_total). */
export const REGISTRY_STORE_OPERATIONS = [
  'register',
  'renew',
  'drain',
  'deregister',
  'sweep',
  'resync',
  'event',
] as const;
export type RegistryStoreOperation = (typeof REGISTRY_STORE_OPERATIONS)[number];
/** Service label value for services past the label bound (see RegistryMetrics.serviceLabel). */
export const OTHER_SERVICE = '_other';

/** What the instance gauge reads from the registry at scrape time: counts per service, state and source. */
export interface RegistryInstanceSource {
  instanceCounts(): Iterable<{ service: string; state: string; source: string; count: number }>;
}

/**
 * Registry metrics. Service names come from registrations, not from configuration, so the label is
 * bounded: the first `maxServices` names seen keep their own series, later ones share `_other`
 * (the store refuses more than `registry.limits.maxServices` services at once, so this only
 * happens after many services came and went).
 */
export class RegistryMetrics {
  readonly instances: Gauge<'service' | 'state' | 'source'>;
  readonly registrations: Counter<'service' | 'outcome'>;
  /** Cells, not a prom-client counter: 200 renewals a second each found their series by hashing its labels. */
  readonly renewals: CellMetric;
  readonly drains: Counter<'service'>;
  readonly deregistrations: Counter<'service'>;
  readonly expirations: Counter<'service'>;
  readonly denials: Counter<'reason'>;
  readonly storeErrors: Counter<'store' | 'operation'>;
  readonly resyncs: Counter<'reason' | 'outcome'>;
  readonly propagation: Histogram;
  readonly watchStreams: Gauge;
  #maxServices = 1000;
  readonly #labelled = new Set<string>();
  /** The renewals series of each service label value. */
  readonly #renewalCells = new Map<string, ScalarCell>();
  #source: RegistryInstanceSource | undefined;

  constructor(registry: Registry<RegistryContentType>) {
    const registers = [registry as Registry];
    const metrics = this;
    this.instances = new Gauge({
      name: 'peregrine_registry_instances',
      help: 'Registered instances per service, by state (active, draining) and source (local: registered through this gateway; peer: through another replica).',
      labelNames: ['service', 'state', 'source'],
      registers,
      collect() {
        this.reset();
        const source = metrics.#source;
        if (source === undefined) return;
        for (const c of source.instanceCounts())
          this.inc({ service: metrics.serviceLabel(c.service), state: c.state, source: c.source }, c.count);
      },
    });
    this.registrations = new Counter({
      name: 'peregrine_registry_registrations_total',
      help: 'Registrations accepted, by service and outcome (created, updated).',
      labelNames: ['service', 'outcome'],
      registers,
    });
    this.renewals = new CellMetric('counter', {
      name: 'peregrine_registry_renewals_total',
      help: 'Lease renewals (heartbeats, and registrations of an unchanged instance), by service.',
      labelNames: ['service'],
      registry,
    });
    this.drains = new Counter({
      name: 'peregrine_registry_drains_total',
      help: 'Instances put into the draining state, by service.',
      labelNames: ['service'],
      registers,
    });
    this.deregistrations = new Counter({
      name: 'peregrine_registry_deregistrations_total',
      help: 'Instances removed by their owner, by service.',
      labelNames: ['service'],
      registers,
    });
    this.expirations = new Counter({
      name: 'peregrine_registry_expirations_total',
      help: 'Leases expired without renewal, by service (counted by the replica that removed them).',
      labelNames: ['service'],
      registers,
    });
    this.denials = new Counter({
      name: 'peregrine_registry_denials_total',
      help: 'Registration API requests refused, by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REGISTRY_DENIAL_REASONS) this.denials.inc({ reason }, 0);
    this.storeErrors = new Counter({
      name: 'peregrine_registry_store_errors_total',
      help: 'Registry store operations that failed (store unreachable, timeout, bad event), by store and operation.',
      labelNames: ['store', 'operation'],
      registers,
    });
    this.resyncs = new Counter({
      name: 'peregrine_registry_resyncs_total',
      help: 'Full re-reads of the shared registry by this replica, by reason and outcome.',
      labelNames: ['reason', 'outcome'],
      registers,
    });
    this.propagation = new Histogram({
      name: 'peregrine_registry_propagation_seconds',
      help: 'Time from a registry change at one replica to its arrival at this one (through Redis).',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.watchStreams = new Gauge({
      name: 'peregrine_registry_watch_streams',
      help: 'Open watch (server-sent events) streams on the registration API.',
      registers,
    });
  }

  /** Start a store's error (and, for Redis, resync) counters at 0, so their rates exist before the first event. */
  addStore(store: 'memory' | 'redis'): void {
    for (const operation of REGISTRY_STORE_OPERATIONS) this.storeErrors.inc({ store, operation }, 0);
    if (store !== 'redis') return;
    for (const reason of REGISTRY_RESYNC_REASONS)
      for (const outcome of ['success', 'failure']) this.resyncs.inc({ reason, outcome }, 0);
  }

  /** Bound the service label to this many distinct values (registry.limits.maxServices). */
  setMaxServices(n: number): void {
    this.#maxServices = n;
  }

  /** Read instance counts from `source` at every scrape (the registry's view). */
  watchInstances(source: RegistryInstanceSource | undefined): void {
    this.#source = source;
  }

  /** The label value for `service`: itself while under the bound, else `_other`. */
  serviceLabel(service: string): string {
    if (this.#labelled.has(service)) return service;
    if (this.#labelled.size >= this.#maxServices) return OTHER_SERVICE;
    this.#labelled.add(service);
    return service;
  }

  recordRegistration(service: string, outcome: 'created' | 'updated'): void {
    this.registrations.inc({ service: this.serviceLabel(service), outcome });
  }

  recordRenewal(service: string): void {
    seriesOf(this.#renewalCells, this.renewals, 'service', this.serviceLabel(service)).value++;
  }

  recordDrain(service: string): void {
    this.drains.inc({ service: this.serviceLabel(service) });
  }

  recordDeregistration(service: string): void {
    this.deregistrations.inc({ service: this.serviceLabel(service) });
  }

  recordExpiration(service: string): void {
    this.expirations.inc({ service: this.serviceLabel(service) });
  }

  recordDenial(reason: RegistryDenialReason): void {
    this.denials.inc({ reason });
  }

  recordStoreError(store: 'memory' | 'redis', operation: RegistryStoreOperation): void {
    this.storeErrors.inc({ store, operation });
  }

  recordResync(reason: RegistryResyncReason, outcome: 'success' | 'failure'): void {
    this.resyncs.inc({ reason, outcome });
  }

  observePropagation(seconds: number): void {
    this.propagation.observe(Math.max(0, seconds));
  }
}

// --- The mesh (sidecar mode) ---------------------------------------------------------------------

/** Which side of a sidecar a request came through: from a mesh peer, or from the local application. */
export const MESH_DIRECTIONS = ['inbound', 'outbound'] as const;
export type MeshDirection = (typeof MESH_DIRECTIONS)[number];
/** Peer label values that name no service: no route chose a destination; a caller identity outside the pattern. */
export const MESH_NO_PEER = '_none';
export const MESH_UNKNOWN_PEER = '_unknown';

/**
 * The series of one (direction, source, destination): its latency histogram, and its request
 * counters by status, created as statuses appear.
 */
export interface MeshPeerSeries {
  readonly duration: HistogramCell;
  readonly byStatus: Map<number, ScalarCell>;
  readonly labels: Labels;
}

/**
 * Requests through a sidecar by direction and by the services on either end. `source` and
 * `destination` are service names: the local service on one end; on the other, the destination a
 * route chose (outbound, bounded by `sidecar.outbound.services`) or the caller's service read from
 * its verified identity (inbound, bounded by `sidecar.metrics.maxPeers`, then `_other`).
 */
export class MeshMetrics {
  readonly requests: CellMetric;
  readonly duration: CellHistogram;
  /** 1 while the local application passes its readiness probes (thresholds applied), else 0. */
  readonly appReady: Gauge;
  readonly appReadinessChanges: Counter<'ready'>;

  constructor(registry: Registry<RegistryContentType>, buckets: readonly number[], exemplars: boolean) {
    this.appReady = new Gauge({
      name: 'peregrine_mesh_app_ready',
      help: 'Whether the local application is ready by its readiness probes (1) or not (0): a sidecar drains its registration while it is 0.',
      registers: [registry],
    });
    this.appReadinessChanges = new Counter({
      name: 'peregrine_mesh_app_readiness_changes_total',
      help: 'Changes of the local application readiness, by the state it changed to (ready="true" or "false"), each after its threshold of probes in a row.',
      labelNames: ['ready'],
      registers: [registry],
    });
    this.appReadinessChanges.inc({ ready: 'true' }, 0);
    this.appReadinessChanges.inc({ ready: 'false' }, 0);
    this.requests = new CellMetric('counter', {
      name: 'peregrine_mesh_requests_total',
      help: 'Requests through a sidecar, by direction (inbound: from a mesh peer; outbound: from the local application), source and destination service, and status.',
      labelNames: ['direction', 'source', 'destination', 'status'],
      registry,
    });
    this.duration = new CellHistogram({
      name: 'peregrine_mesh_request_duration_seconds',
      help: 'Time from request received to response finished at a sidecar, by direction, source and destination service.',
      labelNames: ['direction', 'source', 'destination'],
      buckets,
      exemplars,
      registry,
    });
  }

  readinessChanged(ready: boolean): void {
    this.appReady.set(ready ? 1 : 0);
    this.appReadinessChanges.inc({ ready: ready ? 'true' : 'false' });
  }

  /** The series of one pair of services; the caller keeps it (one per peer). */
  peerSeries(direction: MeshDirection, source: string, destination: string): MeshPeerSeries {
    const labels = { direction, source, destination };
    return { duration: this.duration.cell(labels), byStatus: new Map(), labels };
  }

  record(series: MeshPeerSeries, status: number, seconds: number, traceId: string | undefined): void {
    let total = series.byStatus.get(status);
    if (total === undefined) {
      total = this.requests.cell({ ...series.labels, status: String(status) });
      series.byStatus.set(status, total);
    }
    total.value += 1;
    this.duration.observe(series.duration, seconds, traceId);
  }
}

/**
 * How a rate limit policy decided a request: `allowed` and `limited` by its store (or, `limited`,
 * by the insurance limiter), `dry_run_limited` would have been limited (dry run admits it),
 * `insured` admitted by the insurance limiter while the store failed, `store_error` decided
 * without a limiter while the store failed (fail-open admits, fail-closed refuses with 503),
 * `skipped` not counted (an exemption, a missing key with `ifMissing: skip`, a cost of 0),
 * `key_missing` refused because it lacks the key's value (`ifMissing: reject`).
 */
export const RATE_LIMIT_OUTCOMES = [
  'allowed',
  'limited',
  'dry_run_limited',
  'store_error',
  'insured',
  'skipped',
  'key_missing',
] as const;
export type RateLimitOutcome = (typeof RATE_LIMIT_OUTCOMES)[number];

/** How a call to the shared store ended: a reply, no reply within the policy's timeout, a failure. */
export const RATE_LIMIT_STORE_RESULTS = ['ok', 'timeout', 'error'] as const;
export type RateLimitStoreResult = (typeof RATE_LIMIT_STORE_RESULTS)[number];
const RATE_LIMIT_STORE_RESULT_INDEX = Object.fromEntries(
  RATE_LIMIT_STORE_RESULTS.map((r, i) => [r, i]),
) as Record<RateLimitStoreResult, number>;

/** Store latency buckets: the per-call timeout defaults to 50 ms, and a healthy local Redis answers in well under 1 ms. */
const RATE_LIMIT_STORE_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/** A policy's counters in memory, read at scrape time: the keys held by its fullest limit. */
export interface RateLimitKeySource {
  readonly keys: number;
}

export class RateLimitMetrics {
  readonly decisions: CellMetric;
  readonly storeDuration: CellHistogram;
  readonly insuranceActivations: Counter<'policy'>;
  readonly degraded: Gauge<'policy'>;
  readonly evictions: CellMetric;
  readonly keys: ReadGauge<RateLimitKeySource[]>;
  readonly #cells = new Map<string, readonly ScalarCell[]>();
  readonly #evictionCells = new Map<string, ScalarCell>();
  /**
   * Per policy, the counters that exist, oldest first: a reload that changes a policy builds the
   * new ones before it closes the old, and a reload that fails closes the new ones instead. The
   * newest is reported.
   */
  readonly #keySources = new Map<string, RateLimitKeySource[]>();
  /** Per Redis-backed policy, a series per store result, made on its first observation. */
  readonly #storeCells = new Map<string, (HistogramCell | undefined)[]>();

  constructor(registry: Registry<RegistryContentType>) {
    const registers = [registry as Registry];
    this.decisions = new CellMetric('counter', {
      name: 'peregrine_ratelimit_decisions_total',
      help: 'Rate limit decisions, by policy and outcome (allowed, limited, dry_run_limited, store_error, insured, skipped, key_missing).',
      labelNames: ['policy', 'outcome'],
      registry,
    });
    // Observed on every counted request: cells, not prom-client's label hashing per observation.
    this.storeDuration = new CellHistogram({
      name: 'peregrine_ratelimit_store_duration_seconds',
      help: "Time a Redis-backed policy waited for its store per request (all its limits at once), by policy and result (ok, timeout: the policy's per-call timeout ran out, error).",
      labelNames: ['policy', 'result'],
      buckets: RATE_LIMIT_STORE_BUCKETS,
      exemplars: false,
      registry,
    });
    this.insuranceActivations = new Counter({
      name: 'peregrine_ratelimit_insurance_activations_total',
      help: 'Times a Redis-backed policy switched from its store to its degradation (insurance, fail-open or fail-closed) after a store failure.',
      labelNames: ['policy'],
      registers,
    });
    this.degraded = new Gauge({
      name: 'peregrine_ratelimit_degraded',
      help: '1 while a Redis-backed policy decides by its degradation because its last store call failed, else 0.',
      labelNames: ['policy'],
      registers,
    });
    // Added to on the request path (a new key at the cap): a cell.
    this.evictions = new CellMetric('counter', {
      name: 'peregrine_ratelimit_evictions_total',
      help: "Keys a policy's memory counters dropped before their window ended, to hold at most maxKeys per limit (the oldest window's key goes), by policy.",
      labelNames: ['policy'],
      registry,
    });
    this.keys = new ReadGauge({
      name: 'peregrine_ratelimit_keys',
      help: "Keys held by a policy's memory counters (the memory store, or a Redis store's insurance), in its fullest limit: at most its maxKeys.",
      labelNames: ['policy'],
      registry,
      sources: this.#keySources,
      read: (policy, sources, emit) => emit({ policy }, sources.at(-1)!.keys),
    });
  }

  /** The eviction counter of a policy, at 0 from its first load and the same afterwards. */
  evictionCell(policy: string): ScalarCell {
    let cell = this.#evictionCells.get(policy);
    if (cell === undefined) {
      cell = this.evictions.cell({ policy });
      this.#evictionCells.set(policy, cell);
    }
    return cell;
  }

  /** Report the keys of a policy's memory counters, until unwatchKeys() with the same source. */
  watchKeys(policy: string, source: RateLimitKeySource): void {
    const sources = this.#keySources.get(policy);
    if (sources === undefined) this.#keySources.set(policy, [source]);
    else sources.push(source);
  }

  /** Forget `source`; the policy's other counters (before or after a reload) stay reported. */
  unwatchKeys(policy: string, source: RateLimitKeySource): void {
    const sources = this.#keySources.get(policy);
    const i = sources?.indexOf(source) ?? -1;
    if (i === -1) return;
    sources!.splice(i, 1);
    if (sources!.length === 0) this.#keySources.delete(policy);
  }

  /**
   * The decision cells of a policy, one per outcome in RATE_LIMIT_OUTCOMES order, created at 0
   * on first use and the same afterwards: a decision costs one `+=`.
   */
  decisionCells(policy: string): readonly ScalarCell[] {
    let cells = this.#cells.get(policy);
    if (cells === undefined) {
      cells = RATE_LIMIT_OUTCOMES.map((outcome) => this.decisions.cell({ policy, outcome }));
      this.#cells.set(policy, cells);
    }
    return cells;
  }

  /** A Redis-backed policy: its store series start at 0, so their rates exist before the first failure. */
  addStorePolicy(policy: string): void {
    this.insuranceActivations.inc({ policy }, 0);
    this.degraded.set({ policy }, 0);
  }

  observeStore(policy: string, result: RateLimitStoreResult, seconds: number): void {
    let cells = this.#storeCells.get(policy);
    if (cells === undefined) {
      cells = RATE_LIMIT_STORE_RESULTS.map(() => undefined);
      this.#storeCells.set(policy, cells);
    }
    const i = RATE_LIMIT_STORE_RESULT_INDEX[result];
    let cell = cells[i];
    if (cell === undefined) {
      cell = this.storeDuration.cell({ policy, result });
      cells[i] = cell;
    }
    this.storeDuration.observe(cell, seconds, undefined);
  }

  setDegraded(policy: string, degraded: boolean): void {
    this.degraded.set({ policy }, degraded ? 1 : 0);
    if (degraded) this.insuranceActivations.inc({ policy });
  }
}
