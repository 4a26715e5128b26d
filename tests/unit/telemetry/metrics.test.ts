import { register as globalRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  createMetrics,
  type GatewayMetrics,
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
  renderMetrics,
  type UpstreamStateSource,
  wantsOpenMetrics,
  writeMetrics,
} from '../../../src/telemetry/metrics.ts';

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const OM_ACCEPT =
  'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

function metricsWithTraffic(exemplars = true): GatewayMetrics {
  const m = createMetrics({ exemplars, version: '1.2.3' });
  m.requestStarted('edge');
  m.requestStarted('edge');
  m.requestFinished('edge');
  m.connectionOpened('edge');
  m.recordRequest('edge', 'users', 'GET', 200, 0.004, TRACE_ID);
  m.recordRequest('edge', 'users', 'GET', 200, 0.02, undefined);
  m.recordRequest('edge', undefined, 'PROPFIND', 404, 0.0005, undefined);
  m.recordBytes('users', 10, 512);
  m.recordLocalResponse(undefined, 'ROUTE_NOT_FOUND');
  m.upstreamStarted('users-svc');
  m.recordAttempt('users-svc', 'http://10.0.0.5:8080', 'success', 200, 0.003, TRACE_ID);
  m.recordAttempt('users-svc', 'http://10.0.0.5:8080', 'connect_error', undefined, 0.0001, undefined);
  m.recordConfigReload('success');
  m.recordWebSocketUpgrade('chat', 'success');
  return m;
}

/** Lines of one metric family (samples only). */
function samples(body: string, prefix: string): string[] {
  return body.split('\n').filter((l) => l.startsWith(prefix));
}

describe('createMetrics + renderMetrics', () => {
  it('renders Prometheus text with the contract names and labels by default', async () => {
    const m = metricsWithTraffic();
    const { contentType, body } = await renderMetrics(m, undefined);
    expect(contentType).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(body).toContain('# TYPE peregrine_requests_total counter');
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="users",method="GET",status="200"} 2',
    );
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="_none",method="OTHER",status="404"} 1',
    );
    expect(body).toContain('# TYPE peregrine_request_duration_seconds histogram');
    expect(body).toContain(
      'peregrine_request_duration_seconds_bucket{le="0.005",listener="edge",route="users",method="GET",status="200"} 1',
    );
    expect(body).toContain(
      'peregrine_request_duration_seconds_bucket{le="+Inf",listener="edge",route="users",method="GET",status="200"} 2',
    );
    expect(body).toContain(
      'peregrine_request_duration_seconds_count{listener="edge",route="users",method="GET",status="200"} 2',
    );
    expect(body).toContain('peregrine_requests_in_flight{listener="edge"} 1');
    expect(body).toContain('peregrine_open_connections{listener="edge"} 1');
    expect(body).toContain('peregrine_request_body_bytes_total{route="users"} 10');
    expect(body).toContain('peregrine_response_body_bytes_total{route="users"} 512');
    expect(body).toContain('peregrine_local_responses_total{route="_none",code="ROUTE_NOT_FOUND"} 1');
    expect(body).toContain(
      'peregrine_upstream_attempts_total{upstream="users-svc",endpoint="http://10.0.0.5:8080",outcome="success",status="200"} 1',
    );
    expect(body).toContain(
      'peregrine_upstream_attempts_total{upstream="users-svc",endpoint="http://10.0.0.5:8080",outcome="connect_error",status="none"} 1',
    );
    expect(body).toContain(
      'peregrine_upstream_attempt_duration_seconds_count{upstream="users-svc",endpoint="http://10.0.0.5:8080",outcome="success"} 1',
    );
    expect(body).toContain('peregrine_upstream_in_flight{upstream="users-svc"} 1');
    expect(body).toContain('peregrine_config_reloads_total{outcome="success"} 1');
    expect(body).toContain('peregrine_config_reloads_total{outcome="failure"} 0');
    expect(body).toContain('peregrine_config_last_reload_successful 1');
    expect(body).toMatch(/peregrine_config_last_reload_success_timestamp_seconds \d{10}/);
    expect(body).toContain(`peregrine_build_info{version="1.2.3",node_version="${process.version}"} 1`);
    expect(body).toContain('peregrine_websocket_upgrades_total{route="chat",outcome="success"} 1');
    // prom-client default process metrics, prefixed.
    expect(body).toContain('# TYPE peregrine_process_cpu_user_seconds_total counter');
    expect(body).toContain('peregrine_process_resident_memory_bytes');
    // Event-loop delay as a histogram, not prom-client's per-scrape quantile gauges.
    expect(body).toContain('# TYPE peregrine_nodejs_eventloop_delay_seconds histogram');
    expect(body).toContain('peregrine_nodejs_eventloop_delay_seconds_bucket{le="+Inf"}');
    expect(body).not.toContain('eventloop_lag');
    // No gauge named like a counter (promtool check metrics refuses them).
    for (const [, name] of body.matchAll(/^# TYPE (\S+) (?:gauge|histogram)$/gm))
      expect(name).not.toMatch(/_total$/);
    // No exemplars and no OpenMetrics terminator in the Prometheus format.
    expect(body).not.toContain('# {');
    expect(body).not.toContain('# EOF');
  });

  it('renders OpenMetrics with trace_id exemplars when the scraper asks for it', async () => {
    const m = metricsWithTraffic();
    const { contentType, body } = await renderMetrics(m, OM_ACCEPT);
    expect(contentType).toBe(OPENMETRICS_CONTENT_TYPE);
    expect(body.endsWith('# EOF\n')).toBe(true);
    // OpenMetrics counter families drop the suffix; samples carry it.
    expect(body).toContain('# TYPE peregrine_requests counter');
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="users",method="GET",status="200"} 2',
    );
    const bucket = samples(
      body,
      'peregrine_request_duration_seconds_bucket{le="0.005",listener="edge",route="users"',
    );
    expect(bucket).toHaveLength(1);
    expect(bucket[0]).toMatch(new RegExp(`^\\S+ 1 # \\{trace_id="${TRACE_ID}"\\} 0\\.004 \\d+(\\.\\d+)?$`));
    // The unsampled request (0.02 s) left no exemplar in its bucket.
    const unsampled = samples(
      body,
      'peregrine_request_duration_seconds_bucket{le="0.025",listener="edge",route="users"',
    );
    expect(unsampled[0]).not.toContain('# {');
    const attempt = samples(
      body,
      'peregrine_upstream_attempt_duration_seconds_bucket{le="0.005",upstream="users-svc"',
    );
    expect(attempt.find((l) => l.includes('outcome="success"'))).toContain(
      `# {trace_id="${TRACE_ID}"} 0.003`,
    );
  });

  it('keeps Prometheus output intact after an OpenMetrics render (prom-client renames counters in place)', async () => {
    const m = metricsWithTraffic();
    await renderMetrics(m, OM_ACCEPT);
    const { contentType, body } = await renderMetrics(m, 'text/plain;version=0.0.4');
    expect(contentType).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(body).toContain('# TYPE peregrine_requests_total counter');
    expect(body).toContain('# HELP peregrine_config_reloads_total');
    expect(body).toContain('# TYPE peregrine_process_cpu_user_seconds_total counter');
    expect(body).not.toContain('# TYPE peregrine_requests counter');
    expect(m.registry.contentType).toBe(PROMETHEUS_CONTENT_TYPE);
  });

  it('serves every concurrent scrape in the format it asked for', async () => {
    const m = metricsWithTraffic();
    const asks = Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? OM_ACCEPT : undefined));
    const results = await Promise.all(asks.map((accept) => renderMetrics(m, accept)));
    results.forEach(({ contentType, body }, i) => {
      if (asks[i] === undefined) {
        expect(contentType).toBe(PROMETHEUS_CONTENT_TYPE);
        expect(body).toContain('# TYPE peregrine_requests_total counter');
        expect(body).not.toContain('# EOF');
        expect(body).not.toContain('# {trace_id=');
      } else {
        expect(contentType).toBe(OPENMETRICS_CONTENT_TYPE);
        expect(body).toContain('# TYPE peregrine_requests counter');
        expect(body).toContain('# {trace_id=');
        expect(body.endsWith('# EOF\n')).toBe(true);
      }
    });
  });

  it('records no exemplars when they are disabled', async () => {
    const { body } = await renderMetrics(metricsWithTraffic(false), OM_ACCEPT);
    expect(body).not.toContain('# {');
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="users",method="GET",status="200"} 2',
    );
  });

  it('marks a rejected reload', async () => {
    const m = metricsWithTraffic();
    m.recordConfigReload('failure');
    const { body } = await renderMetrics(m, undefined);
    expect(body).toContain('peregrine_config_reloads_total{outcome="failure"} 1');
    expect(body).toContain('peregrine_config_last_reload_successful 0');
  });

  it('treats status 0 as no upstream status and folds unknown methods', async () => {
    const m = createMetrics({ exemplars: true, version: 'x' });
    m.recordAttempt('u', 'e', 'reset', 0, 0.1, undefined);
    m.recordRequest('l', 'r', 'get', 200, 0.1, undefined);
    const { body } = await renderMetrics(m, undefined);
    expect(body).toContain(
      'peregrine_upstream_attempts_total{upstream="u",endpoint="e",outcome="reset",status="none"} 1',
    );
    expect(body).toContain('peregrine_requests_total{listener="l",route="r",method="OTHER",status="200"} 1');
  });

  it('forgets the series of a removed endpoint', async () => {
    const m = metricsWithTraffic();
    m.recordAttempt('users-svc', 'http://10.0.0.6:8080', 'success', 200, 0.01, undefined);
    m.forgetEndpoint('users-svc', 'http://10.0.0.5:8080');
    const { body } = await renderMetrics(m, undefined);
    expect(body).not.toContain('10.0.0.5');
    expect(body).toContain('endpoint="http://10.0.0.6:8080"');
    // Recording again after forgetting starts a fresh series.
    m.recordAttempt('users-svc', 'http://10.0.0.5:8080', 'success', 200, 0.01, undefined);
    expect((await renderMetrics(m, undefined)).body).toContain(
      'peregrine_upstream_attempts_total{upstream="users-svc",endpoint="http://10.0.0.5:8080",outcome="success",status="200"} 1',
    );
  });

  it('uses its own registry: two instances coexist and the global registry stays empty', async () => {
    const a = createMetrics({ exemplars: true, version: 'a' });
    const b = createMetrics({ exemplars: false, version: 'b' });
    a.recordRequest('edge', 'r', 'GET', 200, 0.1, undefined);
    expect((await renderMetrics(a, undefined)).body).toContain('peregrine_requests_total{');
    expect((await renderMetrics(b, undefined)).body).not.toContain('peregrine_requests_total{');
    expect(await globalRegistry.metrics()).not.toContain('peregrine_');
  });

  it('exposes the JSON form through the registry as well', async () => {
    const m = metricsWithTraffic();
    const json = await m.registry.getMetricsAsJSON();
    const duration = json.find((x) => x.name === 'peregrine_request_duration_seconds');
    expect(duration?.values).toContainEqual(
      expect.objectContaining({
        metricName: 'peregrine_request_duration_seconds_count',
        value: 2,
        labels: { listener: 'edge', route: 'users', method: 'GET', status: '200' },
      }),
    );
  });
});

describe('wantsOpenMetrics', () => {
  it.each([
    [undefined, false],
    ['', false],
    ['*/*', false],
    ['text/plain;version=0.0.4', false],
    ['application/openmetrics-text', true],
    [OM_ACCEPT, true],
    // Prometheus 3 default scrape protocols.
    [
      'application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1',
      true,
    ],
    ['text/plain;q=1,application/openmetrics-text;q=0.5', false],
    ['application/openmetrics-text;q=0', false],
  ])('%s → %s', (accept, expected) => {
    expect(wantsOpenMetrics(accept)).toBe(expected);
  });
});

describe('per-route series cost', () => {
  const histogramLines = (body: string, route: string) =>
    samples(body, 'peregrine_request_duration_seconds_').filter((l) => l.includes(`route="${route}"`));

  it('latencyBuckets sets the buckets of both latency histograms', async () => {
    const m = createMetrics({ exemplars: false, version: 't', latencyBuckets: [0.01, 0.1, 1] });
    m.recordRequest('edge', 'users', 'GET', 200, 0.05, undefined);
    m.recordAttempt('svc', 'http://10.0.0.5:8080', 'success', 200, 0.05, undefined);
    const { body } = await renderMetrics(m, undefined);
    // 3 buckets, +Inf, _sum, _count.
    expect(histogramLines(body, 'users')).toHaveLength(6);
    expect(body).toContain(
      'peregrine_request_duration_seconds_bucket{le="0.1",listener="edge",route="users",method="GET",status="200"} 1',
    );
    expect(samples(body, 'peregrine_upstream_attempt_duration_seconds_bucket')).toHaveLength(4);
  });

  it('a route without a histogram of its own keeps its counters and shares the _other latency series', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    m.configureRoutes([
      { name: 'tenant-a', histogram: false, httpRoute: '/tenant-a/*' },
      { name: 'tenant-b', histogram: false, httpRoute: '/tenant-b/*' },
      { name: 'users', histogram: undefined, httpRoute: '/users/*' },
    ]);
    m.recordRequest('edge', 'tenant-a', 'GET', 200, 0.004, undefined);
    m.recordRequest('edge', 'tenant-b', 'GET', 200, 0.004, undefined);
    m.recordRequest('edge', 'users', 'GET', 200, 0.004, undefined);
    const { body } = await renderMetrics(m, undefined);
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="tenant-a",method="GET",status="200"} 1',
    );
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="tenant-b",method="GET",status="200"} 1',
    );
    expect(histogramLines(body, 'tenant-a')).toEqual([]);
    expect(histogramLines(body, 'users')).toHaveLength(20);
    // The routes with a histogram of their own say which path template they stand for.
    expect(samples(body, 'peregrine_route_info')).toEqual([
      'peregrine_route_info{route="users",http_route="/users/*"} 1',
    ]);
    expect(body).toContain(
      'peregrine_request_duration_seconds_count{listener="edge",route="_other",method="GET",status="200"} 2',
    );
    expect(samples(body, 'peregrine_requests_total').some((l) => l.includes('_other'))).toBe(false);
  });

  it('configureRoutesSteps configures 2,000 routes in small steps, the histogram settings at the end', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const routes = Array.from({ length: 2000 }, (_, i) => ({
      name: `r${i}`,
      histogram: i === 0 ? false : undefined,
      httpRoute: `/r${i}/*`,
    }));
    m.recordRequest('edge', 'r0', 'GET', 200, 0.004, undefined);
    const steps = m.configureRoutesSteps(routes);
    let yields = 0;
    for (let step = steps.next(); !step.done; step = steps.next()) {
      yields++;
      // r0 keeps its own histogram until the last step.
      if (yields === 1)
        expect(histogramLines((await renderMetrics(m, undefined)).body, 'r0')).toHaveLength(20);
    }
    // 500 routes a step: 4 to read 2,000, 3 to add 1,999 info series.
    expect(yields).toBe(7);
    const { body } = await renderMetrics(m, undefined);
    expect(histogramLines(body, 'r0')).toEqual([]);
    expect(samples(body, 'peregrine_route_info')).toHaveLength(1999);
  });

  it('routeHistograms false: only routes that ask get one; a reload can change that either way', async () => {
    const m = createMetrics({ exemplars: false, version: 't', routeHistograms: false });
    m.configureRoutes([
      { name: 'checkout', histogram: true, httpRoute: '/checkout/*' },
      { name: 'tenant-a', histogram: undefined, httpRoute: '/tenant-a/*' },
    ]);
    m.recordRequest('edge', 'checkout', 'POST', 201, 0.2, undefined);
    m.recordRequest('edge', 'tenant-a', 'GET', 200, 0.004, undefined);
    m.recordRequest('edge', undefined, 'GET', 404, 0.001, undefined);
    let { body } = await renderMetrics(m, undefined);
    expect(histogramLines(body, 'checkout')).toHaveLength(20);
    expect(histogramLines(body, 'tenant-a')).toEqual([]);
    // Requests that matched no route keep their own series: one set, not one per route.
    expect(histogramLines(body, '_none')).toHaveLength(20);

    // The reload swaps the two: checkout's series go, tenant-a starts its own.
    m.configureRoutes([
      { name: 'checkout', histogram: false, httpRoute: '/checkout/*' },
      { name: 'tenant-a', histogram: true, httpRoute: '/tenant-a/*' },
    ]);
    m.recordRequest('edge', 'checkout', 'POST', 201, 0.2, undefined);
    m.recordRequest('edge', 'tenant-a', 'GET', 200, 0.004, undefined);
    ({ body } = await renderMetrics(m, undefined));
    expect(samples(body, 'peregrine_route_info')).toEqual([
      'peregrine_route_info{route="tenant-a",http_route="/tenant-a/*"} 1',
    ]);
    expect(histogramLines(body, 'checkout')).toEqual([]);
    expect(histogramLines(body, 'tenant-a')).toContain(
      'peregrine_request_duration_seconds_count{listener="edge",route="tenant-a",method="GET",status="200"} 1',
    );
    expect(body).toContain(
      'peregrine_request_duration_seconds_count{listener="edge",route="_other",method="POST",status="201"} 1',
    );
    expect(body).toContain(
      'peregrine_requests_total{listener="edge",route="checkout",method="POST",status="201"} 2',
    );
  });
});

describe('a scrape at scale', () => {
  /** Routes with traffic and 200 upstreams watched: every kind of family, many series. */
  function large(routes = 2000): GatewayMetrics {
    const m = createMetrics({ exemplars: true, version: 't' });
    m.configureRoutes(
      Array.from({ length: routes }, (_, i) => ({
        name: `r${i}`,
        histogram: undefined,
        httpRoute: `/r${i}/*`,
      })),
    );
    for (let i = 0; i < routes; i++) {
      m.recordRequest(
        'edge',
        `r${i}`,
        i % 3 === 0 ? 'POST' : 'GET',
        200 + (i % 2),
        (i % 50) / 1000,
        i % 7 === 0 ? TRACE_ID : undefined,
      );
      m.recordBytes(`r${i}`, i, 2 * i);
    }
    for (let u = 0; u < 200; u++) {
      const source: UpstreamStateSource = {
        circuitState: () => u % 3,
        queued: () => u,
        retryBudgetRemaining: () => u / 2,
        endpointStates: () => [u, 1, 0, u % 2],
        ejectedEndpoints: () => 0,
        panicMode: () => u % 5 === 0,
        endpointsInUse: () => u + 1,
      };
      m.watchUpstream(`svc${u}`, source);
      m.recordAttempt(`svc${u}`, `http://10.0.${u >> 8}.${u & 255}:80`, 'success', 200, 0.002, undefined);
    }
    return m;
  }

  /** The text without the process metrics, whose series change from one render to the next. */
  const stable = (text: string): string =>
    text
      .split('\n')
      .filter((l) => !/^(# (HELP|TYPE) )?peregrine_(process|nodejs)_/.test(l))
      .join('\n');

  /** Sample lines keyed by series (name and labels): each must appear once. */
  function seriesOf(body: string): string[] {
    return body
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.replace(/ # \{.*$/, '').replace(/ [^ ]+$/, ''));
  }

  it.each([undefined, OM_ACCEPT])(
    'renders byte for byte what prom-client renders from the same series (%s)',
    async (accept) => {
      const m = large();
      const { contentType, body } = await renderMetrics(m, accept);
      m.registry.setContentType(contentType as typeof PROMETHEUS_CONTENT_TYPE);
      const reference = await m.registry.metrics();
      m.registry.setContentType(PROMETHEUS_CONTENT_TYPE);
      expect(body.length).toBeGreaterThan(2_000_000);
      expect(stable(body)).toBe(stable(reference));
      expect(body).toContain('peregrine_upstream_endpoints{upstream="svc199",state="healthy"} 199');
    },
  );

  it('concurrent scrapes each get the whole text, once', async () => {
    const m = large(500);
    const bodies = await Promise.all(
      Array.from({ length: 4 }, () => renderMetrics(m, OM_ACCEPT).then((r) => r.body)),
    );
    const series = seriesOf(bodies[0]!);
    expect(new Set(series).size).toBe(series.length);
    for (const body of bodies) expect(stable(body)).toBe(stable(bodies[0]!));
  });

  it('a scrape during reloads writes each series once, and the families whole', async () => {
    const m = large();
    const routes = (r0Histogram: boolean) =>
      Array.from({ length: 2000 }, (_, i) => ({
        name: `r${i}`,
        histogram: i === 0 ? r0Histogram : undefined,
        httpRoute: i === 1999 ? '/moved/*' : `/r${i}/*`,
      }));
    let reloads = 0;
    const text: string[] = [];
    await writeMetrics(m, undefined, (chunk) => {
      text.push(chunk);
      // Once r0's latency series are written, two reloads between chunks: r0 loses its
      // histogram, then gets it back (a new series with the old labels), with traffic on it
      // after each; r1999's template changes.
      if (
        reloads === 0 &&
        chunk.includes('peregrine_request_duration_seconds_count{listener="edge",route="r0",')
      ) {
        reloads = 1;
        m.configureRoutes(routes(false));
        m.recordRequest('edge', 'r0', 'GET', 200, 0.001, undefined);
      } else if (reloads === 1) {
        reloads = 2;
        m.configureRoutes(routes(true));
        m.recordRequest('edge', 'r0', 'GET', 200, 0.001, undefined);
      }
      return new Promise<void>((resolve) => setImmediate(resolve));
    });
    expect(reloads).toBe(2);
    const body = text.join('');
    const series = seriesOf(body);
    expect(new Set(series).size).toBe(series.length);
    // Every family once, its samples together after its own header.
    const families = body
      .split('\n')
      .filter((l) => l.startsWith('# TYPE '))
      .map((l) => l.split(' ')[2]);
    expect(new Set(families).size).toBe(families.length);
    expect(families).toContain('peregrine_upstream_endpoints');
    // The next scrape shows the state after both reloads.
    const after = (await renderMetrics(m, undefined)).body;
    // r0's POST series got a new histogram (its old observations went with the old one).
    expect(after).toContain(
      'peregrine_request_duration_seconds_count{listener="edge",route="r0",method="POST",status="200"} 0',
    );
    expect(after).toContain(
      'peregrine_request_duration_seconds_count{listener="edge",route="r0",method="GET",status="200"} 1',
    );
    expect(after).toContain('peregrine_route_info{route="r1999",http_route="/moved/*"} 1');
  });
});
