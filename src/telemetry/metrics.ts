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
import { Counter, collectDefaultMetrics, Gauge, Registry, type RegistryContentType } from 'prom-client';
import type { ErrorCode } from '../errors.ts';
import {
  CellHistogram,
  CellMetric,
  type HistogramCell,
  type Labels,
  type ScalarCell,
} from './metric-cells.ts';

export const NO_ROUTE = '_none';

/** Methods kept as label values; anything else is `OTHER`. */
export const METRIC_METHODS = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'TRACE',
  'CONNECT',
  'OTHER',
] as const;
const METHOD_INDEX = new Map<string, number>(METRIC_METHODS.map((m, i) => [m, i]));
const OTHER_METHOD = METRIC_METHODS.length - 1;

export const ATTEMPT_OUTCOMES = [
  'success',
  'timeout',
  'connect_error',
  'reset',
  'protocol_error',
  'client_abort',
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

/** Seconds. Dense below 100 ms where a gateway's own latency lives; 30 s is the default request timeout. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;
export const OPENMETRICS_CONTENT_TYPE = Registry.OPENMETRICS_CONTENT_TYPE;

export interface GatewayMetrics {
  /** The registry holding every gateway metric (not prom-client's global one). Render it with renderMetrics(). */
  readonly registry: Registry<RegistryContentType>;
  readonly exemplars: boolean;

  readonly requestsTotal: CellMetric;
  readonly requestDuration: CellHistogram;
  readonly requestsInFlight: CellMetric;
  readonly openConnections: CellMetric;
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
  ): void;
  recordBytes(route: string | undefined, requestBytes: number, responseBytes: number): void;
  /** A response the gateway generated itself (problem+json), by GatewayError code. */
  recordLocalResponse(route: string | undefined, code: ErrorCode): void;
  requestStarted(listener: string): void;
  requestFinished(listener: string): void;
  connectionOpened(listener: string): void;
  connectionClosed(listener: string): void;
  /** One upstream attempt. `status` undefined or 0 when no response head arrived (label `none`). */
  recordAttempt(
    upstream: string,
    endpoint: string,
    outcome: AttemptOutcome,
    status: number | undefined,
    seconds: number,
    traceId: string | undefined,
  ): void;
  upstreamStarted(upstream: string): void;
  upstreamFinished(upstream: string): void;
  /** Count a configuration load (the initial load included) and update the last-reload gauges. */
  recordConfigReload(outcome: ConfigReloadOutcome): void;
  recordWebSocketUpgrade(route: string | undefined, outcome: WebSocketOutcome): void;
  /** Drop the series of an endpoint that discovery removed, so churn does not grow memory. */
  forgetEndpoint(upstream: string, endpoint: string): void;
}

export interface MetricsOptions {
  /** Attach trace_id exemplars to the latency histograms (OpenMetrics scrapes only). */
  exemplars: boolean;
  /** Gateway version for peregrine_build_info. */
  version: string;
}

interface RequestSeries {
  readonly total: ScalarCell;
  readonly duration: HistogramCell;
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

class PromGatewayMetrics implements GatewayMetrics {
  readonly registry: Registry<RegistryContentType>;
  readonly exemplars: boolean;
  readonly requestsTotal: CellMetric;
  readonly requestDuration: CellHistogram;
  readonly requestsInFlight: CellMetric;
  readonly openConnections: CellMetric;
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

  /** listener → route → method index → status → series */
  private readonly requests = new Map<string, Map<string, ByMethod>>();
  /** upstream → endpoint → outcome index → series */
  private readonly attempts = new Map<string, Map<string, ByOutcome>>();
  private readonly inFlightByListener = new Map<string, ScalarCell>();
  private readonly connectionsByListener = new Map<string, ScalarCell>();
  private readonly inFlightByUpstream = new Map<string, ScalarCell>();
  private readonly bodyByRoute = new Map<string, BodySeries>();
  /** route → code → series */
  private readonly localByRoute = new Map<string, Map<string, ScalarCell>>();

  constructor(opts: MetricsOptions) {
    // Prometheus text by default; renderMetrics() switches to OpenMetrics for scrapers that ask.
    // (The exemplar-carrying histograms are CellHistograms, so prom-client's rule that
    // exemplar-enabled metrics need an OpenMetrics registry at construction does not apply.)
    const registry = new Registry<RegistryContentType>();
    this.registry = registry;
    this.exemplars = opts.exemplars;
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
      buckets: LATENCY_BUCKETS,
      exemplars: opts.exemplars,
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
      buckets: LATENCY_BUCKETS,
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
    collectDefaultMetrics({ register: registry, prefix: 'peregrine_' });
  }

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
    return { total: this.requestsTotal.cell(labels), duration: this.requestDuration.cell(labels) };
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

  recordConfigReload(outcome: ConfigReloadOutcome): void {
    this.configReloads.inc({ outcome: outcome === 'success' ? 'success' : 'failure' });
    this.configLastReloadSuccessful.set(outcome === 'success' ? 1 : 0);
    if (outcome === 'success') this.configLastReloadSuccessTimestamp.set(Date.now() / 1000);
  }

  recordWebSocketUpgrade(route: string | undefined, outcome: WebSocketOutcome): void {
    this.websocketUpgrades.inc({ route: route ?? NO_ROUTE, outcome });
  }

  forgetEndpoint(upstream: string, endpoint: string): void {
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
  return new PromGatewayMetrics(opts);
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

/** Scrapes of one registry run one at a time: the format is registry-wide state (see below). */
const renderQueues = new WeakMap<GatewayMetrics, Promise<unknown>>();

/**
 * Render for the admin /metrics endpoint: Prometheus text by default, OpenMetrics (with
 * exemplars) when `accept` asks for it.
 *
 * prom-client keeps the format on the Registry and reads it after awaits inside metrics(), and
 * in OpenMetrics mode it renames counters in place (strips `_total`, prometheus/client_js#829).
 * So renders are serialised per registry, and each one restores the counter names and the
 * registry's Prometheus default afterwards. Always go through this function, never call
 * `registry.metrics()` directly.
 */
export function renderMetrics(
  m: GatewayMetrics,
  accept: string | undefined,
): Promise<{ contentType: string; body: string }> {
  const openMetrics = wantsOpenMetrics(accept);
  const previous = renderQueues.get(m) ?? Promise.resolve();
  const result = previous.then(() => renderNow(m.registry, openMetrics));
  renderQueues.set(
    m,
    result.catch(() => undefined),
  );
  return result;
}

async function renderNow(
  registry: Registry<RegistryContentType>,
  openMetrics: boolean,
): Promise<{ contentType: string; body: string }> {
  const contentType = openMetrics ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE;
  const names = registry.getMetricsAsArray().map((metric) => [metric, metric.name] as const);
  registry.setContentType(contentType);
  try {
    return { contentType, body: await registry.metrics() };
  } finally {
    for (const [metric, name] of names) metric.name = name;
    registry.setContentType(PROMETHEUS_CONTENT_TYPE);
  }
}
