/**
 * `GET /v1/stats/routes`: each route's request counters and latency histogram as the metric cells
 * hold them now (the same numbers `/metrics` renders, summed over listener, method and status).
 * Cumulative, like Prometheus counters: a reader takes two readings and divides the differences
 * by the time between them (`at`) for a rate, an error ratio or a quantile over that interval, as
 * the status page does. Nothing is kept between calls.
 */
import type { GatewayMetrics } from '../telemetry/metrics.ts';

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

export function routeStats(metrics: GatewayMetrics): RouteStatsView {
  const bounds = metrics.requestDuration.upperBounds;
  const byRoute = new Map<string, Totals>();
  for (const series of metrics.requestSeries()) {
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
  const routes: RouteStats[] = [];
  for (const [route, t] of byRoute) {
    if (t.latency !== null) {
      let acc = 0;
      t.latency.counts = t.latency.counts.map((c) => (acc += c));
    }
    routes.push({ route, ...t });
  }
  routes.sort((a, b) => (a.route < b.route ? -1 : a.route > b.route ? 1 : 0));
  return { at: new Date().toISOString(), latencyBuckets: bounds, routes };
}
