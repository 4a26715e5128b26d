/**
 * `/v1/stats/routes` in steps: the view sums each route's series over listener, method and status
 * (counts by status class, cumulative latency buckets, none for a route without a histogram of its
 * own), sorted by route; its JSON is byte for byte what `res.json(redact(view))` sends, built in
 * one piece or in slices with a turn of the event loop at every step.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { routeStatsJson, routeStatsSteps } from '../../../src/admin/route-stats.ts';
import { redact } from '../../../src/config/redact.ts';
import { runInSlices, runNow } from '../../../src/slices.ts';
import { createMetrics, type GatewayMetrics } from '../../../src/telemetry/metrics.ts';

const BOUNDS = [0.01, 0.1, 1];
let metrics: GatewayMetrics | undefined;

afterEach(() => {
  metrics?.close();
  metrics = undefined;
});

function newMetrics(): GatewayMetrics {
  metrics = createMetrics({ exemplars: false, version: 'test', latencyBuckets: BOUNDS });
  return metrics;
}

describe('the view', () => {
  it('sums each route over listeners, methods and statuses, cumulative buckets, sorted by route', () => {
    const m = newMetrics();
    m.configureRoutes([{ name: 'quiet', histogram: false, httpRoute: '/quiet' }]);
    m.recordRequest('edge', 'orders', 'GET', 200, 0.005, undefined);
    m.recordRequest('edge', 'orders', 'GET', 200, 0.05, undefined);
    m.recordRequest('internal', 'orders', 'POST', 503, 2, undefined);
    m.recordRequest('edge', 'orders', 'PUT', 404, 0.5, undefined);
    m.recordRequest('edge', 'carts', 'GET', 201, 0.02, undefined);
    m.recordRequest('edge', 'quiet', 'GET', 200, 0.001, undefined);
    m.recordRequest('edge', undefined, 'GET', 404, 0.0001, undefined);
    const view = runNow(routeStatsSteps(m));
    expect(view.latencyBuckets).toEqual(BOUNDS);
    expect(view.routes).toEqual([
      {
        route: '_none',
        requests: 1,
        statuses: { '4xx': 1 },
        latency: { counts: [1, 1, 1, 1], sum: 0.0001, count: 1 },
      },
      {
        route: 'carts',
        requests: 1,
        statuses: { '2xx': 1 },
        latency: { counts: [0, 1, 1, 1], sum: 0.02, count: 1 },
      },
      {
        route: 'orders',
        requests: 4,
        statuses: { '2xx': 2, '5xx': 1, '4xx': 1 },
        latency: { counts: [1, 2, 3, 4], sum: 2.555, count: 4 },
      },
      { route: 'quiet', requests: 1, statuses: { '2xx': 1 }, latency: null },
    ]);
    expect(Date.parse(view.at)).not.toBeNaN();
  });
});

describe('in steps', () => {
  function busy(routes: number): GatewayMetrics {
    const m = newMetrics();
    for (let i = 0; i < routes; i++) {
      // Not in name order: the view sorts.
      const route = `r${(i * 7919) % routes}`;
      m.recordRequest('edge', route, 'GET', 200, 0.005 * (i % 300), undefined);
      m.recordRequest('edge', route, i % 2 === 0 ? 'GET' : 'POST', i % 3 === 0 ? 503 : 404, 0.3, undefined);
    }
    return m;
  }

  it('gives the event loop turns, and answers what one piece answers', async () => {
    const m = busy(2_000);
    let steps = 0;
    const walk = routeStatsSteps(m);
    for (let s = walk.next(); !s.done; s = walk.next()) steps++;
    expect(steps).toBeGreaterThan(50);
    const whole = runNow(routeStatsSteps(m));
    const sliced = await runInSlices(routeStatsSteps(m), 0);
    expect(sliced.routes).toEqual(whole.routes);
    expect(whole.routes.map((r) => r.route)).toEqual(whole.routes.map((r) => r.route).sort());
    expect(whole.routes).toHaveLength(2_000);
  });

  it('writes the JSON res.json(redact(view)) would send, byte for byte, in one piece or in slices', async () => {
    const view = runNow(routeStatsSteps(busy(1_000)));
    const expected = JSON.stringify(redact(view));
    expect(runNow(routeStatsJson(view))).toBe(expected);
    expect(await runInSlices(routeStatsJson(view), 0)).toBe(expected);
    const empty = runNow(routeStatsSteps(newMetrics()));
    expect(runNow(routeStatsJson(empty))).toBe(JSON.stringify(redact(empty)));
  });
});
