/**
 * Every query of every dashboard in dashboards/, run against a real Prometheus that scrapes a live
 * gateway under traffic. A query fails the test when Prometheus rejects it or when it returns no
 * series: a renamed metric or label, a typo, `=` where a multi-value variable needs `=~`.
 *
 * Needs a `prometheus` binary and, for the registry's store, a `redis-server`, found by
 * tests/helpers/tools.ts (PROMETHEUS_BIN / REDIS_SERVER_BIN, PATH, or .tools/ from
 * scripts/get-tools.sh). Without them the test fails, saying how to get them: it is the only check
 * that the dashboards work.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ConfigInput } from '../../src/config/schema.ts';
import { OTEL_HTTP_DURATION_BUCKETS } from '../../src/telemetry/latency-buckets.ts';
import { removeCertFiles } from '../helpers/certs.ts';
import {
  dashboardFiles,
  type GrafanaVariable,
  loadDashboard,
  parseLabelValues,
  substituteVariables,
  targetsOf,
  variableQuery,
  variablesOf,
} from '../helpers/dashboards.ts';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
import { callThrough, createMeshPki, meshId, type SidecarOptions, sidecarConfig } from '../helpers/mesh.ts';
import { freePort } from '../helpers/ports.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { type FoundTool, findTool, PROMETHEUS } from '../helpers/tools.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const SCRAPE_INTERVAL = '1s';
const RULE_FILES = ['peregrine-rules.yml', 'peregrine-otel-rules.yml'].map((f) =>
  join(import.meta.dirname, '../../deployment/prometheus', f),
);
/** The bucket boundaries OpenTelemetry recommends for HTTP durations, and +Inf. */
const OTEL_LE = [...OTEL_HTTP_DURATION_BUCKETS.map(String), '+Inf'];
/**
 * Values Grafana would give its built-ins. $__rate_interval is at least 4 scrape intervals in
 * Grafana; 10 s with 1 s scrapes leaves room for a late scrape.
 */
const BUILTINS: Readonly<Record<string, string>> = {
  __rate_interval: '10s',
  __rate_interval_ms: '10000',
  __interval: '5s',
  __interval_ms: '5000',
  __range: '5m',
  __range_s: '300',
  __range_ms: '300000',
};
/** A query may return nothing until its series has two samples in the window: retry until then. */
const QUERY_DEADLINE_MS = 30_000;

/**
 * The test's servers: `echo` answers by path (tests/helpers/upstream.ts), `hang` never answers,
 * `collector` takes span exports (and drops them: the trace export panels need them to flow),
 * `redis` holds the registry (its dashboard charts the Redis store and the replicas' view).
 */
interface Servers {
  echo: string;
  hang: string;
  collector: string;
  redis: string;
}

const REGISTRY_TOKEN = 'dashboards-test-registry-token-0123';
const REGISTRY_TOKEN_ENV = 'PEREGRINE_DASHBOARDS_REGISTRY_TOKEN';
const MESH_TOKEN = 'dashboards-test-mesh-token-0123456789';
const MESH_TOKEN_ENV = 'PEREGRINE_DASHBOARDS_MESH_TOKEN';

/**
 * `echo` and `refused` feed the overview; their breakers are off so that they keep producing the
 * outcomes the overview shows (with the defaults, the 503s, resets and timeouts below trip them
 * within a second and most requests become CIRCUIT_OPEN). The other upstreams each drive one
 * resilience mechanism, for the resilience dashboard; startTraffic() says how.
 */
function gatewayConfig(s: Servers, extraRoutes: RouteInput[] = []): Partial<ConfigInput> {
  const noBreaker = { enabled: false };
  const noEjection = { enabled: false };
  const fastBackoff = { base: '1ms', max: '5ms' };
  return {
    // Every request sampled, so every latency bucket gets a trace_id exemplar; spans exported.
    telemetry: { tracing: { sampleRatio: 1, exporter: 'otlp', endpoint: s.collector } },
    redis: { url: s.redis },
    // Short leases, so registryTraffic() sees some expire.
    registry: {
      store: 'redis',
      listener: { address: '127.0.0.1:0' },
      credentials: {
        tokens: [
          { name: 'dashboards', env: REGISTRY_TOKEN_ENV, services: ['web', 'jobs'] },
          // The mesh's sidecars (meshSidecars()): they register and follow the registry with it.
          { name: 'mesh', env: MESH_TOKEN_ENV, services: ['cart', 'shop', 'batch', 'rogue'] },
        ],
      },
      // The sidecars run on this machine.
      addresses: { allowLoopback: true },
      lease: { minTtl: '300ms' },
      sync: { sweepInterval: '100ms' },
    },
    upstreams: {
      echo: { endpoints: [s.echo], timeouts: { response: '300ms' }, circuitBreaker: noBreaker },
      // Nothing listens on port 1: connection refused.
      refused: { endpoints: ['http://127.0.0.1:1'], circuitBreaker: noBreaker },
      // Mostly 503 (retried once): trips after 3 failures, open for 0.5-1 s, half-open probes
      // mostly fail (re-open) and sometimes succeed (close).
      flapping: {
        endpoints: [s.echo],
        retries: { statuses: [503], backoff: fastBackoff },
        circuitBreaker: { consecutiveFailures: 3, openDuration: '500ms', maxOpenDuration: '1s' },
        outlierDetection: noEjection,
      },
      // Always 503, retried, with a budget of about 3 retries a second for 20 requests a second:
      // retries and budget_exhausted both keep moving.
      stingy: {
        endpoints: [s.echo],
        retries: { statuses: [503], backoff: fastBackoff, budget: { ratio: 0.1, minRetriesPerSecond: 1 } },
        circuitBreaker: noBreaker,
        outlierDetection: noEjection,
      },
      // One endpoint hangs: two response timeouts eject it for 1 s, again and again.
      outlier: {
        endpoints: [s.hang, s.echo],
        balancer: { kind: 'round_robin' },
        timeouts: { response: '150ms' },
        retries: { maxAttempts: 1 },
        circuitBreaker: noBreaker,
        outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '1s', maxEjectionTime: '1s' },
      },
      // One slot and one queue place for three concurrent slow clients: always one queued, and
      // the third refused (overloaded).
      bulkhead: { endpoints: [s.echo], bulkhead: { maxConcurrent: 1, maxQueued: 1, queueTimeout: '2s' } },
      // The second endpoint refuses connections, so fails its health checks: unhealthy, and with
      // one of two endpoints eligible (under panicThreshold 75) the upstream is in panic mode and
      // its requests go to the dead endpoint too (connect errors, retried elsewhere).
      checked: {
        endpoints: [s.echo, 'http://127.0.0.1:1'],
        balancer: { kind: 'round_robin', panicThreshold: 75 },
        healthCheck: { path: '/healthz', interval: '200ms', timeout: '100ms', unhealthyThreshold: 2 },
        circuitBreaker: noBreaker,
        outlierDetection: noEjection,
      },
    },
    // Five requests a second per policy, for traffic of about 20 a second: limited all along.
    policies: {
      'rl-memory': { kind: 'rate_limit', limitBy: 'none', limits: [{ points: 5, duration: '1s' }] },
      'rl-redis': {
        kind: 'rate_limit',
        limitBy: 'none',
        limits: [{ points: 5, duration: '1s' }],
        store: { type: 'redis', replicas: 1 },
      },
    },
    routes: [
      { name: 'api', match: { path: '/api' }, upstream: 'echo', rewrite: { stripPrefix: '/api' } },
      ...['rl-memory', 'rl-redis'].map((name) => ({
        name,
        match: { path: `/${name}` },
        upstream: 'echo',
        rewrite: { stripPrefix: `/${name}` },
        policies: [name],
      })),
      { name: 'refused', match: { path: '/refused' }, upstream: 'refused' },
      ...['flapping', 'stingy', 'outlier', 'bulkhead', 'checked'].map((name) => ({
        name,
        match: { path: `/${name}` },
        upstream: name,
        rewrite: { stripPrefix: `/${name}` },
      })),
      ...extraRoutes,
    ],
  };
}
type RouteInput = NonNullable<ConfigInput['routes']>[number];

let up: TestUpstream | undefined;
let hang: TestUpstream | undefined;
let collector: Server | undefined;
let redis: TestRedis | undefined;
let gw: TestGateway | undefined;
let mesh: Mesh | undefined;
let prom: Prometheus | undefined;
let traffic: Traffic | undefined;

beforeAll(async () => {
  const prometheus = findTool(PROMETHEUS, 'the dashboard test');
  up = await startUpstream();
  // Accepts every request and never answers.
  hang = await startUpstream(() => true);
  collector = createServer((req, res) => {
    req.resume();
    req.once('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  collector.listen(0, '127.0.0.1');
  await once(collector, 'listening');
  redis = await startRedis();
  process.env[REGISTRY_TOKEN_ENV] = REGISTRY_TOKEN;
  process.env[MESH_TOKEN_ENV] = MESH_TOKEN;
  const servers: Servers = {
    echo: up.url,
    hang: hang.url,
    collector: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`,
    redis: redis.url,
  };
  gw = await startGateway(gatewayConfig(servers), { asFile: true });
  mesh = await meshSidecars(gw, servers);
  traffic = startTraffic(gw, mesh);

  // One rejected and one accepted reload, so both outcomes have moved.
  const file = gw.configFile!;
  writeConfig(file, gatewayConfig(servers, [{ name: 'broken', upstream: 'missing' }]));
  expect(await gw.gateway.reload('test')).toMatchObject({ ok: false });
  const v2: RouteInput = {
    name: 'v2',
    match: { path: '/v2' },
    upstream: 'echo',
    rewrite: { stripPrefix: '/v2' },
  };
  writeConfig(file, gatewayConfig(servers, [v2]));
  expect(await gw.gateway.reload('test')).toMatchObject({ ok: true });

  prom = await startPrometheus(prometheus, [
    gw.gateway.adminAddress.port,
    ...Object.values(mesh.sidecars).map((s) => s.gateway.adminAddress.port),
  ]);
  await prom.waitForScrapes(3);
}, 90_000);

afterAll(async () => {
  const steps: [string, (() => Promise<void>) | undefined][] = [
    ['traffic', traffic && (() => traffic!.stop())],
    ['prometheus', prom && (() => prom!.stop())],
    ['mesh', mesh && (() => mesh!.close())],
    ['gateway', gw && (() => gw!.close())],
    ['upstream', up && (() => up!.close())],
    ['hanging upstream', hang && (() => hang!.close())],
    [
      'collector',
      collector &&
        (() =>
          new Promise<void>((resolve) => {
            collector!.closeAllConnections();
            collector!.close(() => resolve());
          })),
    ],
    ['redis', redis && (() => redis!.close())],
  ];
  for (const [name, step] of steps) {
    try {
      await step?.();
    } catch (err) {
      console.error(`dashboards test: closing ${name} failed`, err);
    }
  }
}, 30_000);

describe('dashboards against a real Prometheus', () => {
  const files = dashboardFiles();

  it('dashboards/ holds at least one dashboard', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  describe.each(files)('%s', (file) => {
    const d = loadDashboard(file);
    const variables = variablesOf(d);

    it(
      'every panel query is valid and returns series',
      async () => {
        const checks = targetsOf(d).map(({ target, where }) => {
          const raw = target.expr ?? '';
          let expr: string | undefined;
          let problem: string | undefined;
          try {
            expr = substituteVariables(raw, variables, BUILTINS);
          } catch (err) {
            problem = (err as Error).message;
          }
          return {
            where: `${where}\n    ${raw}`,
            run: async (): Promise<Outcome> =>
              expr === undefined ? { fatal: problem! } : prom!.instantQuery(expr),
          };
        });
        expect(checks.length, `${file}: no queries`).toBeGreaterThan(0);
        const failures = await untilAllPass(checks);
        if (failures.length > 0)
          expect.fail(`${file}: panel queries failed\n${failures.join('\n')}${await prom!.context()}`);
      },
      QUERY_DEADLINE_MS + 15_000,
    );

    it(
      'every template variable query returns values',
      async () => {
        const checks = variables
          .filter((v) => v.type === 'query')
          .map((v) => ({
            where: `${file} › variable $${v.name}: ${variableQuery(v) ?? '(no query)'}`,
            run: () => variableCheck(v, variables),
          }));
        const failures = await untilAllPass(checks);
        if (failures.length > 0)
          expect.fail(`${file}: variable queries failed\n${failures.join('\n')}${await prom!.context()}`);
      },
      QUERY_DEADLINE_MS + 15_000,
    );

    it(
      'latency targets with exemplars enabled get trace_id exemplars',
      async () => {
        const checks = targetsOf(d)
          .filter(({ target }) => target.exemplar === true)
          .map(({ target, where }) => ({
            where: `${where}\n    ${target.expr}`,
            run: () => prom!.exemplars(substituteVariables(target.expr ?? '', variables, BUILTINS)),
          }));
        const failures = await untilAllPass(checks);
        if (failures.length > 0)
          expect.fail(`${file}: no exemplars\n${failures.join('\n')}${await prom!.context()}`);
      },
      QUERY_DEADLINE_MS + 15_000,
    );
  });
});

/**
 * The upstream gauges exist from the start and the decision and retry counters start at 0, so
 * the resilience dashboard's queries return series whatever the traffic does. This checks that
 * the traffic really moves each of them, so that those series are not just zeros.
 */
describe('the test traffic', () => {
  const driven: Readonly<Record<string, string>> = {
    'breaker trips': 'peregrine_upstream_circuit_transitions_total{upstream="flapping", to="open"} > 0',
    'breaker goes half-open':
      'peregrine_upstream_circuit_transitions_total{upstream="flapping", to="half_open"} > 0',
    'breaker state leaves closed':
      'max_over_time(peregrine_upstream_circuit_state{upstream="flapping"}[1m]) > 0',
    'requests refused by the breaker':
      'peregrine_upstream_decisions_total{upstream="flapping", decision="circuit_open"} > 0',
    'retries of a listed status':
      'peregrine_upstream_retries_total{upstream="flapping", reason="status"} > 0',
    'retries within the budget': 'peregrine_upstream_retries_total{upstream="stingy", reason="status"} > 0',
    'retries refused by the budget':
      'peregrine_upstream_decisions_total{upstream="stingy", decision="budget_exhausted"} > 0',
    'endpoint ejections': 'peregrine_upstream_ejections_total{upstream="outlier"} > 0',
    'ejected endpoints': 'max_over_time(peregrine_upstream_ejected_endpoints{upstream="outlier"}[1m]) > 0',
    'endpoints in state ejected':
      'max_over_time(peregrine_upstream_endpoints{upstream="outlier", state="ejected"}[1m]) > 0',
    'attempts timing out': 'peregrine_upstream_attempts_total{upstream="outlier", outcome="timeout"} > 0',
    'requests refused by the bulkhead':
      'peregrine_upstream_decisions_total{upstream="bulkhead", decision="overloaded"} > 0',
    'requests queued by the bulkhead':
      'max_over_time(peregrine_upstream_queued{upstream="bulkhead"}[1m]) > 0',
    'endpoints in state unhealthy':
      'max_over_time(peregrine_upstream_endpoints{upstream="checked", state="unhealthy"}[1m]) > 0',
    'panic mode': 'max_over_time(peregrine_upstream_panic_mode{upstream="checked"}[1m]) > 0',
    'retries after connect failures':
      'peregrine_upstream_retries_total{upstream="checked", reason="connect_failure"} > 0',
    'spans exported': 'peregrine_tracing_spans_total{outcome="exported"} > 0',
    'registry leases expiring': 'peregrine_registry_expirations_total > 0',
    'registry changes arriving through Redis': 'peregrine_registry_propagation_seconds_count > 0',
    'registry refusals': 'peregrine_registry_denials_total{reason="no_credential"} > 0',
    'instances draining': 'max_over_time(peregrine_registry_instances{state="draining"}[1m]) > 0',
    'requests rate limited in memory':
      'peregrine_ratelimit_decisions_total{policy="rl-memory", outcome="limited"} > 0',
    'requests rate limited through Redis':
      'peregrine_ratelimit_store_duration_seconds_count{policy="rl-redis", result="ok"} > 0',
    'mesh requests':
      'peregrine_mesh_requests_total{direction="outbound", source="shop", destination="cart"} > 0',
    'mesh 5xx': 'peregrine_mesh_requests_total{direction="outbound", status="500"} > 0',
    'callers refused by identity':
      'peregrine_mesh_requests_total{direction="inbound", source="batch", destination="cart", status="403"} > 0',
    'foreign client certificates refused':
      'peregrine_tls_client_cert_verification_failures_total{listener="inbound"} > 0',
  };

  it(
    'drives every resilience mechanism the resilience dashboard shows, span export, the registry, rate limits and the mesh',
    () => expectSeries(driven, 'the traffic did not produce'),
    QUERY_DEADLINE_MS + 15_000,
  );
});

/**
 * deployment/prometheus/peregrine-otel-rules.yml, evaluated by this Prometheus: the series a
 * dashboard written for OpenTelemetry's HTTP metrics reads exist, with their labels, and their
 * buckets are exactly OpenTelemetry's (so they sum `by (le)` with other services' histograms).
 */
describe('the OpenTelemetry recording rules', () => {
  const recorded: Readonly<Record<string, string>> = {
    'server latency by route template':
      'http_server_request_duration_seconds_bucket{http_route="/api/*", http_request_method="GET", http_response_status_code="200", le="0.075"}',
    'server errors typed by status': 'http_server_request_duration_seconds_count{error_type="503"}',
    'requests that matched no route, without http_route':
      'http_server_request_duration_seconds_count{http_route="", http_response_status_code="404"}',
    'server sums': 'http_server_request_duration_seconds_sum{http_route="/api/*"}',
    'a quantile over the recorded buckets':
      'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket[10s])))',
    'client latency by server address and port':
      'http_client_request_duration_seconds_bucket{upstream="echo", server_address="127.0.0.1", server_port=~"[0-9]+", url_scheme="http", le="0.75"}',
    'failed attempts typed by outcome':
      'http_client_request_duration_seconds_count{upstream="refused", error_type="connect_error"}',
    'client sums': 'http_client_request_duration_seconds_sum{upstream="echo"}',
  };

  it(
    'produce the OpenTelemetry-named series from the gateway',
    () => expectSeries(recorded, 'the recording rules did not produce'),
    QUERY_DEADLINE_MS + 15_000,
  );

  it('record exactly the OpenTelemetry bucket boundaries', async () => {
    for (const family of [
      'http_server_request_duration_seconds_bucket',
      'http_client_request_duration_seconds_bucket',
    ]) {
      expect((await prom!.labelValues('le', family)).sort(), family).toEqual([...OTEL_LE].sort());
    }
  });
});

// --- checks ---------------------------------------------------------------------------------

/** undefined: passed; {retry}: not yet (no data); {fatal}: will not pass (invalid query). */
type Outcome = undefined | { retry: string } | { fatal: string };

/** Every expression (`what` → PromQL) returns series before the deadline; fails with those that do not. */
async function expectSeries(exprs: Readonly<Record<string, string>>, failure: string): Promise<void> {
  const checks = Object.entries(exprs).map(([what, expr]) => ({
    where: `${what}: ${expr}`,
    run: () => prom!.instantQuery(expr),
  }));
  const failures = await untilAllPass(checks);
  if (failures.length > 0) expect.fail(`${failure}\n${failures.join('\n')}${await prom!.context()}`);
}

/** Run every check until it passes or the deadline; returns one message per failed check. */
async function untilAllPass(checks: { where: string; run: () => Promise<Outcome> }[]): Promise<string[]> {
  const deadline = Date.now() + QUERY_DEADLINE_MS;
  const failed = new Map<string, string>();
  let pending = checks;
  for (;;) {
    const results = await Promise.all(
      pending.map(async (c) => {
        try {
          return { c, outcome: await c.run() };
        } catch (err) {
          return { c, outcome: { retry: `request failed: ${(err as Error).message}` } as Outcome };
        }
      }),
    );
    pending = [];
    for (const { c, outcome } of results) {
      if (outcome === undefined) failed.delete(c.where);
      else {
        failed.set(c.where, 'fatal' in outcome ? outcome.fatal : outcome.retry);
        if ('retry' in outcome) pending.push(c);
      }
    }
    if (pending.length === 0 || Date.now() >= deadline) break;
    await sleep(1000);
  }
  return [...failed].map(([where, why]) => `  ${where}\n    → ${why}`);
}

async function variableCheck(v: GrafanaVariable, variables: GrafanaVariable[]): Promise<Outcome> {
  const query = variableQuery(v) ?? '';
  const lv = parseLabelValues(query);
  if (lv !== undefined) {
    const match =
      lv.selector === undefined ? undefined : substituteVariables(lv.selector, variables, BUILTINS);
    const values = await prom!.labelValues(lv.label, match);
    return values.length > 0 ? undefined : { retry: `no values for label ${lv.label}` };
  }
  const qr = /^\s*query_result\((.*)\)\s*$/s.exec(query);
  if (qr) return prom!.instantQuery(substituteVariables(qr[1]!, variables, BUILTINS));
  return { fatal: 'unsupported variable query (the test knows label_values() and query_result())' };
}

// --- Prometheus -----------------------------------------------------------------------------

interface PromResponse<T> {
  status: 'success' | 'error';
  data: T;
  errorType?: string;
  error?: string;
}

interface Prometheus {
  readonly url: string;
  instantQuery(expr: string): Promise<Outcome>;
  exemplars(expr: string): Promise<Outcome>;
  labelValues(label: string, match: string | undefined): Promise<string[]>;
  waitForScrapes(n: number): Promise<void>;
  /** The scrape target's state, Prometheus's exit status and recent warnings, for failure messages. */
  context(): Promise<string>;
  stop(): Promise<void>;
}

/** Kill on worker exit too, so a crashed test run never leaves a Prometheus behind. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** Scrapes every admin port; the first (the gateway's) is the one waited for and reported on. */
async function startPrometheus(bin: FoundTool, adminPorts: number[]): Promise<Prometheus> {
  const adminPort = adminPorts[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'peregrine-prometheus-'));
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(
    configFile,
    [
      'global:',
      `  scrape_interval: ${SCRAPE_INTERVAL}`,
      `  scrape_timeout: ${SCRAPE_INTERVAL}`,
      `  evaluation_interval: ${SCRAPE_INTERVAL}`,
      // The shipped rules, evaluated against the gateway: the OpenTelemetry-named series are checked below.
      'rule_files:',
      ...RULE_FILES.map((f) => `  - ${JSON.stringify(f)}`),
      'scrape_configs:',
      '  - job_name: peregrine',
      '    metrics_path: /metrics',
      '    static_configs:',
      `      - targets: [${adminPorts.map((p) => `'127.0.0.1:${p}'`).join(', ')}]`,
      '',
    ].join('\n'),
  );
  const log: string[] = [];
  // The port may be taken between freePort() and Prometheus binding it: try a few.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = spawn(
      bin.path,
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(dir, `data-${attempt}`)}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--enable-feature=exemplar-storage',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: bin.env },
    );
    running.add(proc);
    let exit: string | undefined;
    const exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        exit = `prometheus exited (${signal ?? `code ${code}`})`;
        running.delete(proc);
        resolve();
      });
      proc.once('error', (err) => {
        exit = `prometheus failed to start: ${err.message}`;
        running.delete(proc);
        resolve();
      });
    });
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      log.push(...chunk.split('\n').filter(Boolean));
      if (log.length > 20) log.splice(0, log.length - 20);
    });
    const status = () => `prometheus ${url} ${exit ?? 'running'}; last warnings: ${log.join('\n') || 'none'}`;

    const api = async <T>(
      path: string,
      params: Record<string, string | string[]>,
    ): Promise<PromResponse<T>> => {
      const body = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) for (const one of [v].flat()) body.append(k, one);
      const res = await fetch(`${url}${path}?${body}`, { signal: AbortSignal.timeout(5000) });
      const json = (await res.json()) as PromResponse<T>;
      return json;
    };
    const now = () => String(Date.now() / 1000);

    const prometheus: Prometheus = {
      url,
      async instantQuery(expr) {
        const r = await api<{ resultType: string; result: unknown[] | unknown }>('/api/v1/query', {
          query: expr,
          time: now(),
        });
        if (r.status !== 'success')
          return { fatal: `invalid query: ${r.errorType}: ${r.error} (sent: ${expr})` };
        if (r.data.resultType === 'scalar' || r.data.resultType === 'string') return undefined;
        return (r.data.result as unknown[]).length > 0 ? undefined : { retry: `no series (sent: ${expr})` };
      },
      async exemplars(expr) {
        const end = Date.now() / 1000;
        const r = await api<
          { seriesLabels: Record<string, string>; exemplars: { labels: Record<string, string> }[] }[]
        >('/api/v1/query_exemplars', { query: expr, start: String(end - 300), end: String(end) });
        if (r.status !== 'success')
          return { fatal: `invalid query: ${r.errorType}: ${r.error} (sent: ${expr})` };
        const ids = r.data.flatMap((s) => s.exemplars.map((e) => e.labels.trace_id));
        if (ids.length === 0) return { retry: `no exemplars (sent: ${expr})` };
        const bad = ids.find((id) => !/^[0-9a-f]{32}$/.test(id ?? ''));
        return bad === undefined ? undefined : { fatal: `exemplar without a valid trace_id: ${bad}` };
      },
      async labelValues(label, match) {
        const params: Record<string, string> = { start: String(Date.now() / 1000 - 300), end: now() };
        if (match !== undefined) params['match[]'] = match;
        const r = await api<string[]>(`/api/v1/label/${encodeURIComponent(label)}/values`, params);
        if (r.status !== 'success') throw new Error(`${r.errorType}: ${r.error}`);
        return r.data;
      },
      async waitForScrapes(n) {
        const deadline = Date.now() + 30_000;
        let last = 'no answer yet';
        while (Date.now() < deadline && exit === undefined) {
          try {
            const targets = await api<{
              activeTargets: { health: string; lastError: string; scrapeUrl: string }[];
            }>('/api/v1/targets', {});
            const t = targets.data.activeTargets.find((x) => x.scrapeUrl.includes(`:${adminPort}/`));
            last = t === undefined ? 'target not listed' : `target ${t.health} ${t.lastError}`;
            if (t?.health === 'up') {
              const r = await api<{ result: { value: [number, string] }[] }>('/api/v1/query', {
                query: `count_over_time(up{job="peregrine", instance="127.0.0.1:${adminPort}"}[1m])`,
                time: now(),
              });
              const scrapes = Number(r.data.result[0]?.value[1] ?? 0);
              last = `target up, ${scrapes} scrapes`;
              if (scrapes >= n) return;
            }
          } catch (err) {
            last = (err as Error).message;
          }
          await sleep(250);
        }
        throw new Error(`Prometheus did not scrape the gateway ${n} times: ${last}\n${status()}`);
      },
      async context() {
        let target = 'unknown';
        try {
          const r = await api<{
            activeTargets: { health: string; lastError: string; lastScrape: string; scrapeUrl: string }[];
          }>('/api/v1/targets', {});
          const t = r.data.activeTargets.find((x) => x.scrapeUrl.includes(`:${adminPort}/`));
          if (t)
            target = `${t.health}, last scrape ${t.lastScrape}${t.lastError ? `, error: ${t.lastError}` : ''}`;
        } catch (err) {
          target = `not reachable (${(err as Error).message})`;
        }
        return `\n--- scrape target (gateway admin :${adminPort}): ${target}\n--- ${status()}`;
      },
      async stop() {
        if (exit === undefined) {
          proc.kill('SIGTERM');
          const killed = await Promise.race([exited.then(() => true), sleep(5000, false)]);
          if (!killed) {
            proc.kill('SIGKILL');
            await exited;
          }
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };

    // Ready, or exited (port taken: retry on another one).
    const deadline = Date.now() + 20_000;
    while (exit === undefined && Date.now() < deadline) {
      const ready = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) return prometheus;
      await sleep(100);
    }
    if (exit === undefined) {
      await prometheus.stop();
      throw new Error(`Prometheus did not become ready in 20 s\n${status()}`);
    }
    const portTaken = log.some((l) => l.includes('address already in use'));
    if (!portTaken || attempt >= 3) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`Prometheus did not start\n${status()}`);
    }
  }
}

// --- traffic --------------------------------------------------------------------------------

interface Traffic {
  stop(): Promise<void>;
}

/**
 * Requests in the background until stopped, so that every series a panel reads exists and
 * moves: successes with bodies, 404 (no route), an upstream 503, a refused connection, an
 * upstream reset, an upstream timeout, and a refused WebSocket upgrade; and for the resilience
 * upstreams of gatewayConfig(): a breaker that trips and probes, retries and a spent retry
 * budget, an endpoint ejected again and again, a full bulkhead, and an upstream in panic mode.
 */
function startTraffic(g: TestGateway, m: Mesh): Traffic {
  const stopper = new AbortController();
  const hit = async (path: string, init: RequestInit = {}): Promise<void> => {
    const signal = AbortSignal.any([stopper.signal, AbortSignal.timeout(5000)]);
    try {
      const res = await fetch(`${g.url}${path}`, { ...init, signal });
      await res.arrayBuffer();
    } catch {
      // Aborted at stop, or cut by the gateway on purpose: the metrics are what matter here.
    }
  };
  const upgrade = (path: string): Promise<void> =>
    new Promise((resolve) => {
      const ws = new WebSocket(`${g.url.replace('http', 'ws')}${path}`);
      const done = () => {
        ws.terminate();
        resolve();
      };
      ws.once('error', done);
      ws.once('close', done);
      ws.once('open', done);
    });
  const loop = async (pauseMs: number, body: () => Promise<unknown>): Promise<void> => {
    while (!stopper.signal.aborted) {
      await body();
      await sleep(pauseMs);
    }
  };
  const loops = [
    loop(50, () =>
      Promise.all([
        hit('/api/echo'),
        hit('/api/sink', { method: 'POST', body: 'x'.repeat(1024) }),
        hit('/no-such-route'),
        hit('/api/status/503'),
        hit('/refused'),
        hit('/api/reset'),
      ]),
    ),
    // Past the 300 ms response timeout: 504, attempt outcome `timeout`.
    loop(200, () => hit('/api/hang')),
    loop(1000, () => upgrade('/no-such-route')),
    // 503s trip the breaker (retry reason `status`, then circuit_open); the rarer successes
    // sometimes win the half-open probe and close it.
    loop(50, () => hit('/flapping/status/503')),
    loop(250, () => hit('/flapping/echo')),
    // More retries wanted than the budget allows: budget_exhausted.
    loop(50, () => hit('/stingy/status/503')),
    // Round robin over a hanging and a healthy endpoint: timeouts eject the hanging one.
    loop(50, () => hit('/outlier/echo')),
    // Three clients for one slot and one queue place: queued, and overloaded.
    ...[1, 2, 3].map(() => loop(20, () => hit('/bulkhead/delay/200'))),
    // Panic mode: half of these go to the endpoint that fails its health checks.
    loop(200, () => hit('/checked/echo')),
    // Over the rate limits' 5 a second: limited, in memory and in Redis.
    loop(50, () => Promise.all([hit('/rl-memory/echo'), hit('/rl-redis/echo')])),
    ...registryTraffic(g, loop, stopper.signal),
    ...meshTraffic(m, loop),
  ];
  return {
    async stop() {
      stopper.abort();
      await Promise.all(loops);
    },
  };
}

/**
 * Registration API traffic: `web` instances registered, renewed and updated, one drained,
 * deregistered and registered again; `jobs` instances registered once with a short lease that
 * expires; and requests without a credential (refused).
 */
function registryTraffic(
  g: TestGateway,
  loop: (pauseMs: number, body: () => Promise<unknown>) => Promise<void>,
  signal: AbortSignal,
): Promise<void>[] {
  const base = `http://127.0.0.1:${g.gateway.registryAddress.port}/v1/services`;
  const call = async (method: string, path: string, body?: unknown, token = true): Promise<void> => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${REGISTRY_TOKEN}`;
    try {
      const res = await fetch(`${base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.any([signal, AbortSignal.timeout(5000)]),
      });
      await res.arrayBuffer();
    } catch {
      // Aborted at stop.
    }
  };
  let n = 0;
  return [
    loop(200, async () => {
      n++;
      await call('PUT', '/web/instances/w-1', { address: '10.0.0.1', port: 8080, weight: 1 + (n % 3) });
      await call('POST', '/web/instances/w-1/heartbeat');
      // w-2: registered, draining for two rounds (so scrapes see it), deregistered.
      if (n % 5 === 1)
        await call('PUT', '/web/instances/w-2', { address: '10.0.0.2', port: 8080, ttl: '60s' });
      if (n % 5 === 3) await call('POST', '/web/instances/w-2/drain');
      if (n % 5 === 0) await call('DELETE', '/web/instances/w-2');
      await call('PUT', `/jobs/instances/j-${n}`, {
        address: '10.0.1.1',
        port: 9000 + (n % 1000),
        ttl: '300ms',
      });
      await call('GET', '', undefined, false);
    }),
  ];
}

// --- the mesh -------------------------------------------------------------------------------

/** Sidecars of a small mesh, in process, registered with (and following) the gateway's registry. */
interface Mesh {
  readonly sidecars: Record<'cart' | 'shop' | 'batch' | 'rogue', TestGateway>;
  close(): Promise<void>;
}

/**
 * `cart` (the echo upstream as its application, callable by `shop` only), and outbound-only
 * sidecars for `shop` (allowed), `batch` (not on cart's allow-list) and `rogue` (a certificate from
 * another CA). All trace every request, so mesh latencies get exemplars.
 */
async function meshSidecars(g: TestGateway, s: Servers): Promise<Mesh> {
  const pki = await createMeshPki(['cart', 'shop', 'batch']);
  const registry = `http://127.0.0.1:${g.gateway.registryAddress.port}`;
  const telemetry = { tracing: { sampleRatio: 1, exporter: 'otlp' as const, endpoint: s.collector } };
  const start = (o: SidecarOptions) =>
    startGateway({ ...sidecarConfig({ ...o, tokenEnv: MESH_TOKEN_ENV }), telemetry });
  const rogueFiles = await pki.issue('rogue', pki.otherCa);
  const [cart, shop, batch, rogue] = await Promise.all([
    start({ service: 'cart', files: pki.files.cart!, registry, app: s.echo, allow: [meshId('shop')] }),
    start({ service: 'shop', files: pki.files.shop!, registry, services: ['cart'] }),
    start({ service: 'batch', files: pki.files.batch!, registry, services: ['cart'] }),
    start({ service: 'rogue', files: rogueFiles, registry, services: ['cart'] }),
  ]);
  const sidecars = { cart: cart!, shop: shop!, batch: batch!, rogue: rogue! };
  return {
    sidecars,
    async close() {
      await Promise.all(Object.values(sidecars).map((x) => x.close()));
      removeCertFiles();
    },
  };
}

/**
 * shop → cart: successes and 500s, by both of cart's names, and a service it may not call
 * (404); batch → cart: refused by identity (403); rogue → cart: refused at the handshake.
 */
function meshTraffic(
  m: Mesh,
  loop: (pauseMs: number, body: () => Promise<unknown>) => Promise<void>,
): Promise<void>[] {
  const out = (name: keyof Mesh['sidecars']) => m.sidecars[name].gateway.address('outbound').port;
  const call = (from: keyof Mesh['sidecars'], host: string, path: string) =>
    callThrough(out(from), host, path).catch(() => undefined);
  return [
    loop(50, () =>
      Promise.all([
        call('shop', 'cart', '/echo'),
        call('shop', 'cart.mesh', '/status/500'),
        call('shop', 'billing', '/'),
        call('batch', 'cart', '/echo'),
      ]),
    ),
    loop(500, () => call('rogue', 'cart', '/echo')),
  ];
}
