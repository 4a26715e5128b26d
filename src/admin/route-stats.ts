/**
 * `GET /v1/stats/routes`: each route's request counters and latency histogram as the metric cells
 * hold them now (the same numbers `/metrics` renders, summed over listener, method and status).
 * Cumulative, like Prometheus counters: a reader takes two readings and divides the differences
 * by the time between them (`at`) for a rate, an error ratio or a quantile over that interval, as
 * the status page does. Nothing is kept between calls.
 *
 * At 10,000 routes the walk, the redaction and the JSON took 40-80 ms of one turn of the event
 * loop that also serves requests; they run in steps (src/slices.ts), which the admin API runs in
 * slices.
 */
import { redact } from '../config/redact.ts';
import { BIG_STEP, type Steps } from '../slices.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';

/** Series walked, or routes written, between two chances to yield: a few tens of µs of work. */
const PER_STEP = 64;

export interface RouteStats {
  /** `_none`: requests no route matched. */
  readonly route: string;
  readonly requests: number;
  /** Responses by status class (`2xx` ... `5xx`); gateway refusals included. */
  readonly statuses: Record<string, number>;
  /**
   * Request durations: per bucket of `latencyBuckets` (and a last one for +Inf), the cumulative
   * count; `sum` in seconds. null for a route without a histogram of its own (it records into
   * `_other`: `routes[].metrics.histogram`).
   */
  readonly latency: { readonly counts: number[]; readonly sum: number; readonly count: number } | null;
}

export interface RouteStatsView {
  readonly at: string;
  /** Upper bounds in seconds of the latency buckets. */
  readonly latencyBuckets: readonly number[];
  readonly routes: RouteStats[];
}

interface Totals {
  requests: number;
  statuses: Record<string, number>;
  latency: { counts: number[]; sum: number; count: number } | null;
}

/**
 * The view, in steps. Requests go on being counted between them, so a reading spans those few ms
 * as a scrape does; each series is read once.
 */
export function* routeStatsSteps(metrics: GatewayMetrics): Steps<RouteStatsView> {
  const bounds = metrics.requestDuration.upperBounds;
  const byRoute = new Map<string, Totals>();
  let walked = 0;
  for (const series of metrics.requestSeries()) {
    if (++walked % PER_STEP === 0) yield;
    let t = byRoute.get(series.route);
    if (t === undefined) {
      t = { requests: 0, statuses: {}, latency: null };
      byRoute.set(series.route, t);
    }
    t.requests += series.count;
    const cls = `${Math.floor(series.status / 100)}xx`;
    t.statuses[cls] = (t.statuses[cls] ?? 0) + series.count;
    const cell = series.duration;
    if (cell.labels.route !== series.route) continue;
    t.latency ??= { counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 };
    for (let i = 0; i < cell.counts.length; i++) t.latency.counts[i]! += cell.counts[i]!;
    t.latency.sum += cell.sum;
    t.latency.count += cell.count;
  }
  // The engine's own string order (UTF-16 code units, as `<` compares) sorts 10,000 names in a
  // fraction of the time a comparator takes.
  const names = [...byRoute.keys()];
  yield BIG_STEP;
  names.sort();
  const routes: RouteStats[] = [];
  for (const route of names) {
    if (routes.length % PER_STEP === 0) yield;
    const t = byRoute.get(route)!;
    if (t.latency !== null) {
      let acc = 0;
      t.latency.counts = t.latency.counts.map((c) => (acc += c));
    }
    routes.push({ route, ...t });
  }
  return { at: new Date().toISOString(), latencyBuckets: bounds, routes };
}

/**
 * The view as the admin API sends every view (JSON of its redaction, src/admin/app.ts), in steps:
 * the same text, a few routes at a time.
 */
export function* routeStatsJson(view: RouteStatsView): Steps<string> {
  const { routes, ...head } = view;
  // `routes` is the last member: the head's text without its closing brace, then the list.
  const headText = JSON.stringify(redact(head));
  let text = `${headText.slice(0, -1)},"routes":[`;
  for (let i = 0; i < routes.length; i++) {
    if (i > 0) {
      text += ',';
      if (i % PER_STEP === 0) yield;
    }
    text += JSON.stringify(redact(routes[i]));
  }
  return `${text}]}`;
}
