/**
 * Per-request metric cost: prom-client's label-object API, prom-client children cached in a Map
 * keyed by a joined string (what "cache the children" usually means), and the CellMetric /
 * CellHistogram series behind GatewayMetrics (nested-Map lookup, then `+=`).
 *
 *   node bench/micro/metrics.ts
 */
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { createMetrics, LATENCY_BUCKETS } from '../../src/telemetry/metrics.ts';
import { bench, header } from './harness.ts';

const ROUTES = ['users', 'orders', 'carts', 'search', 'auth', 'catalog', 'images', 'health'];
const STATUSES = [200, 200, 200, 201, 204, 304, 404, 502];
const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const LABELS = ['listener', 'route', 'method', 'status'];

const registry = new Registry();
const omRegistry = new Registry<RegistryContentType>();
omRegistry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
const counter = new Counter({ name: 'c_total', help: 'h', labelNames: LABELS, registers: [registry] });
const histogram = new Histogram({
  name: 'h_seconds',
  help: 'h',
  labelNames: LABELS,
  buckets: [...LATENCY_BUCKETS],
  registers: [registry],
});
const exemplarHistogram = new Histogram<string>({
  name: 'hx_seconds',
  help: 'h',
  labelNames: LABELS,
  buckets: [...LATENCY_BUCKETS],
  enableExemplars: true,
  registers: [omRegistry as Registry<typeof Registry.OPENMETRICS_CONTENT_TYPE>],
});
const gauge = new Gauge({ name: 'g', help: 'h', labelNames: ['listener'], registers: [registry] });

header('counter: one increment with 4 labels');
bench('prom-client counter.inc({labels})', (i) => {
  counter.inc({ listener: 'edge', route: ROUTES[i & 7]!, method: 'GET', status: String(STATUSES[i & 7]) });
});
const counterChildren = new Map<string, Counter.Internal>();
bench('prom-client cached child (Map by joined key) .inc()', (i) => {
  const route = ROUTES[i & 7]!;
  const status = STATUSES[i & 7]!;
  const key = `edge\u0000${route}\u0000GET\u0000${status}`;
  let child = counterChildren.get(key);
  if (child === undefined) {
    child = counter.labels('edge', route, 'GET', String(status));
    counterChildren.set(key, child);
  }
  child.inc();
});

header('histogram: one observation with 4 labels');
bench('prom-client histogram.observe({labels}, v)', (i) => {
  histogram.observe(
    { listener: 'edge', route: ROUTES[i & 7]!, method: 'GET', status: String(STATUSES[i & 7]) },
    0.004,
  );
});
const histogramChildren = new Map<string, Histogram.Internal<string>>();
bench('prom-client cached child (Map by joined key) .observe(v)', (i) => {
  const route = ROUTES[i & 7]!;
  const status = STATUSES[i & 7]!;
  const key = `edge\u0000${route}\u0000GET\u0000${status}`;
  let child = histogramChildren.get(key);
  if (child === undefined) {
    child = histogram.labels('edge', route, 'GET', String(status));
    histogramChildren.set(key, child);
  }
  child.observe(0.004);
});
bench('prom-client observe({labels, value, exemplarLabels}) (sampled)', (i) => {
  exemplarHistogram.observe({
    labels: { listener: 'edge', route: ROUTES[i & 7]!, method: 'GET', status: String(STATUSES[i & 7]) },
    value: 0.004,
    exemplarLabels: { trace_id: TRACE_ID },
  });
});

header('GatewayMetrics (CellMetric/CellHistogram): counter + histogram per call');
const m = createMetrics({ exemplars: true, version: 'bench' });
const recordUnsampled = bench('recordRequest(..., traceId undefined)', (i) => {
  m.recordRequest('edge', ROUTES[i & 7], 'GET', STATUSES[i & 7]!, 0.004, undefined);
});
bench('recordRequest(..., traceId) (sampled: exemplar)', (i) => {
  m.recordRequest('edge', ROUTES[i & 7], 'GET', STATUSES[i & 7]!, 0.004, TRACE_ID);
});
bench('recordAttempt(..., traceId undefined)', (i) => {
  m.recordAttempt('users-svc', 'http://10.0.0.5:8080', 'success', STATUSES[i & 7]!, 0.003, undefined);
});

header('everything one proxied request records');
const promRequest = bench('prom-client label objects (same metric set)', (i) => {
  const route = ROUTES[i & 7]!;
  const status = String(STATUSES[i & 7]);
  gauge.inc({ listener: 'edge' });
  counter.inc({ listener: 'edge', route, method: 'GET', status });
  histogram.observe({ listener: 'edge', route, method: 'GET', status }, 0.004);
  counter.inc({ listener: 'edge', route, method: 'GET', status: '0' }, 10);
  counter.inc({ listener: 'edge', route, method: 'GET', status: '1' }, 512);
  gauge.inc({ listener: 'users-svc' });
  counter.inc({ listener: 'users-svc', route: 'e', method: 'success', status });
  histogram.observe({ listener: 'users-svc', route: 'e', method: 'success', status: '' }, 0.003);
  gauge.dec({ listener: 'users-svc' });
  gauge.dec({ listener: 'edge' });
});
const cellRequest = bench('GatewayMetrics', (i) => {
  const route = ROUTES[i & 7];
  const status = STATUSES[i & 7]!;
  m.requestStarted('edge');
  m.upstreamStarted('users-svc');
  m.recordAttempt('users-svc', 'http://10.0.0.5:8080', 'success', status, 0.003, undefined);
  m.upstreamFinished('users-svc');
  m.requestFinished('edge');
  m.recordRequest('edge', route, 'GET', status, 0.004, undefined);
  m.recordBytes(route, 10, 512);
});
console.log(
  `\nper request: ${(promRequest.nsPerOp / cellRequest.nsPerOp).toFixed(1)}x less time with cells ` +
    `(recordRequest alone: ${recordUnsampled.nsPerOp.toFixed(0)} ns)`,
);
