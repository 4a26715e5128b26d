/**
 * The admin views the status page reads, against a real gateway: /v1/status, /v1/stats/routes
 * (the metric cells' counts and latency buckets), /v1/decisions/recent (refusals only, newest
 * first, with trace ids), /v1/registry/instances (leases), and the breaker's last transition in
 * /v1/upstreams.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    admin: { recentDecisions: 3 },
    registry: { store: 'memory' },
    telemetry: { tracing: { sampleRatio: 0, uiUrl: 'https://traces.example/t/{traceId}?from=peregrine' } },
    upstreams: {
      main: {
        endpoints: [up.url],
        retries: { maxAttempts: 1 },
        circuitBreaker: { consecutiveFailures: 2, openDuration: '60s' },
        outlierDetection: { enabled: false },
      },
      hello: { discovery: { registry: 'hello' } },
    },
    routes: [
      { name: 'main', match: { path: '/main' }, upstream: 'main', rewrite: { stripPrefix: '/main' } },
      { name: 'quiet', match: { path: '/quiet' }, upstream: 'main', metrics: { histogram: false } },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

async function view<T>(path: string): Promise<T> {
  const res = await fetch(`${gw.adminUrl}${path}`);
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
}

interface Decision {
  code: string;
  status: number;
  route: string | null;
  upstream: string | null;
  traceId: string;
  requestId: string;
  sampled: boolean;
}

describe('admin views', () => {
  it('/v1/status: version, uptime, generation, last reload, listeners, and the GET paths it answers', async () => {
    const s = await view<{
      version: string;
      uptimeSeconds: number;
      ready: boolean;
      config: unknown;
      listeners: unknown[];
      api: string[];
    }>('/v1/status');
    expect(s.version).toBe(gw.gateway.version);
    expect(s.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(s.ready).toBe(true);
    expect(s.config).toMatchObject({ generation: 1, lastReload: { ok: true } });
    expect(s.listeners).toEqual([{ name: 'edge', address: `127.0.0.1:${gw.port}`, tls: false }]);
    expect(s.api).toEqual(
      expect.arrayContaining([
        '/readyz',
        '/v1/routes',
        '/v1/upstreams',
        '/v1/stats/routes',
        '/v1/decisions/recent',
        '/v1/registry',
        '/v1/registry/instances',
      ]),
    );
    expect(s.api).not.toContain('/ui');
  });

  it('/v1/stats/routes: the counts and latency buckets of each route, cumulative', async () => {
    for (let i = 0; i < 4; i++) expect((await fetch(`${gw.url}/main/echo`)).status).toBe(200);
    expect((await fetch(`${gw.url}/main/status/500`)).status).toBe(500);
    expect((await fetch(`${gw.url}/quiet`)).status).toBe(200);
    const stats = await view<{
      latencyBuckets: number[];
      routes: {
        route: string;
        requests: number;
        statuses: Record<string, number>;
        latency: { counts: number[]; count: number };
      }[];
    }>('/v1/stats/routes');
    const main = stats.routes.find((r) => r.route === 'main')!;
    expect(main.requests).toBe(5);
    expect(main.statuses).toEqual({ '2xx': 4, '5xx': 1 });
    expect(main.latency.counts).toHaveLength(stats.latencyBuckets.length + 1);
    expect(main.latency.counts.at(-1)).toBe(5);
    expect(main.latency.count).toBe(5);
    // Cumulative: never decreasing.
    expect(main.latency.counts).toEqual([...main.latency.counts].sort((a, b) => a - b));
    // A route without a histogram of its own has counts and no latency.
    const quiet = stats.routes.find((r) => r.route === 'quiet')!;
    expect(quiet).toMatchObject({ requests: 1, statuses: { '2xx': 1 }, latency: null });
  });

  it('/v1/decisions/recent: only responses the gateway made, newest first, bounded, with ids', async () => {
    // An upstream's own 500 above is not a local decision.
    expect((await view<{ decisions: Decision[] }>('/v1/decisions/recent')).decisions).toEqual([]);
    const ids: string[] = [];
    for (const path of ['/nowhere/1', '/nowhere/2', '/main/status/503', '/main/status/503', '/main/x']) {
      const res = await fetch(`${gw.url}${path}`);
      if (res.headers.get('content-type')?.startsWith('application/problem+json'))
        ids.push(((await res.json()) as { traceId: string }).traceId);
    }
    // Two 404s and the CIRCUIT_OPEN after two upstream 503s tripped the breaker.
    expect(ids).toHaveLength(3);
    const v = await view<{ capacity: number; total: number; traceUrl: string; decisions: Decision[] }>(
      '/v1/decisions/recent',
    );
    expect(v.capacity).toBe(3);
    expect(v.total).toBe(3);
    expect(v.traceUrl).toBe('https://traces.example/t/{traceId}?from=peregrine');
    expect(v.decisions.map((d) => d.traceId)).toEqual([...ids].reverse());
    expect(v.decisions[0]).toMatchObject({
      code: 'CIRCUIT_OPEN',
      status: 503,
      route: 'main',
      upstream: 'main',
    });
    expect(v.decisions[1]).toMatchObject({
      code: 'ROUTE_NOT_FOUND',
      status: 404,
      route: null,
      upstream: null,
    });
    expect(v.decisions[0]!.sampled).toBe(false);
    expect(v.decisions[0]!.requestId).toMatch(/^[0-9a-f-]{36}$/);
    // Past capacity, the oldest goes.
    await fetch(`${gw.url}/nowhere/3`);
    const after = await view<{ total: number; decisions: Decision[] }>('/v1/decisions/recent');
    expect(after.total).toBe(4);
    expect(after.decisions).toHaveLength(3);
    expect(after.decisions.map((d) => d.traceId)).not.toContain(ids[0]);
    expect((await view<{ decisions: Decision[] }>('/v1/decisions/recent?limit=1')).decisions).toHaveLength(1);
  });

  it("/v1/upstreams: the breaker's last transition and its reason", async () => {
    const v = await view<{
      upstreams: {
        name: string;
        circuitBreaker: { state: string; lastTransition: { at: string } };
      }[];
    }>('/v1/upstreams');
    const main = v.upstreams.find((u) => u.name === 'main')!;
    expect(main.circuitBreaker.state).toBe('open');
    expect(main.circuitBreaker.lastTransition).toMatchObject({
      from: 'closed',
      to: 'open',
      reason: expect.stringContaining('2 consecutive failures'),
    });
    expect(Date.now() - Date.parse(main.circuitBreaker.lastTransition.at)).toBeLessThan(10_000);
  });

  it('/v1/registry/instances: registered instances with lease expiry and last heartbeat', async () => {
    const store = gw.gateway.registry!.store;
    const spec = { address: '10.0.0.7', port: 8080, protocol: 'http' as const, zone: 'a', version: '1.2.0' };
    await store.register(
      {
        service: 'hello',
        id: 'h-1',
        spec: { ...spec, weight: 1, metadata: {} },
        state: 'active',
        ttlMs: 15_000,
      },
      'test',
    );
    const v = await view<{ total: number; truncated: boolean; instances: Record<string, unknown>[] }>(
      '/v1/registry/instances',
    );
    expect(v.total).toBe(1);
    expect(v.truncated).toBe(false);
    const i = v.instances[0]!;
    expect(i).toMatchObject({
      service: 'hello',
      id: 'h-1',
      address: '10.0.0.7',
      port: 8080,
      state: 'active',
    });
    const expires = Date.parse(i.expiresAt as string) - Date.now();
    expect(expires).toBeGreaterThan(10_000);
    expect(expires).toBeLessThanOrEqual(15_000);
    expect(Date.now() - Date.parse(i.lastHeartbeat as string)).toBeLessThan(5000);
    expect((await view<{ total: number }>('/v1/registry/instances?service=other')).total).toBe(0);
  });
});
