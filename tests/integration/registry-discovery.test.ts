/**
 * Upstreams whose endpoints are registered instances, through whole gateways with real upstream
 * servers, registrations through the real registration API (raw requests and the Node client), and
 * a real redis-server for replicas: registered → routable within a second, heartbeats keep an
 * instance, silence expires it, a drain stops new requests while in-flight ones finish, the filter
 * picks instances, churn under load fails nothing, two gateways share one Redis, and a Redis
 * outage leaves every gateway serving what it last knew.
 */
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { RegistrationClient } from '../../src/registry/client.ts';
import { opener, served, steadyLoad, svc } from '../helpers/discovery.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { newPrefix } from '../helpers/registry.ts';
import { until } from '../helpers/until.ts';
import type { TestUpstream } from '../helpers/upstream.ts';

const TOKEN = 'registry-discovery-test-token-0123456789';
const TOKEN_ENV = 'PEREGRINE_TEST_DISCOVERY_TOKEN';

const { track, upstreams, gateway, closeAll } = opener();
beforeAll(() => {
  process.env[TOKEN_ENV] = TOKEN;
});
afterEach(closeAll);
afterAll(() => {
  delete process.env[TOKEN_ENV];
});

/** The registry section: loopback instances allowed, short leases, a fast sweep. */
function registry(extra: Record<string, unknown> = {}): ConfigInput['registry'] {
  return {
    listener: { address: '127.0.0.1:0' },
    credentials: { tokens: [{ name: 'test', env: TOKEN_ENV, services: ['users', 'orders'] }] },
    addresses: { allowLoopback: true },
    lease: { minTtl: '200ms' },
    sync: { sweepInterval: '50ms' },
    ...extra,
  } as ConfigInput['registry'];
}

/** A gateway with an embedded (memory) registry and one upstream `svc` reading service `users`. */
function memoryGateway(filter?: Record<string, unknown>, telemetry?: ConfigInput['telemetry']) {
  return gateway({
    ...svc({ discovery: { registry: 'users', ...(filter && { filter }) } }),
    registry: registry(),
    ...(telemetry && { telemetry }),
  });
}

const registryUrl = (gw: TestGateway) => `http://127.0.0.1:${gw.gateway.registryAddress.port}`;

/** A call to the registration API, as an instance's own tooling would make it. */
async function api(
  gw: TestGateway,
  method: 'PUT' | 'POST' | 'DELETE',
  path: string,
  body?: Record<string, unknown>,
): Promise<number> {
  const res = await fetch(`${registryUrl(gw)}/v1/services/${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

/** Register `u` as instance `id` of `service` (default users) through the API. */
async function register(
  gw: TestGateway,
  id: string,
  u: TestUpstream,
  fields: Record<string, unknown> = {},
  service = 'users',
): Promise<void> {
  const status = await api(gw, 'PUT', `${service}/instances/${id}`, {
    address: '127.0.0.1',
    port: u.port,
    ttl: '30s',
    ...fields,
  });
  expect(status === 201 || status === 200, `registration answered ${status}`).toBe(true);
}

/** The origins in an upstream's live set. */
const ids = (gw: TestGateway, upstream = 'svc') =>
  gw.gateway.store.current.clusters
    .get(upstream)!
    .endpoints.map((e) => e.id)
    .sort();

async function upstreamsView(gw: TestGateway): Promise<
  {
    name: string;
    discovery: { state: string; source: string; provider: Record<string, unknown> } | null;
    endpoints: { id: string; source: string; state: string; zone: string | null }[];
  }[]
> {
  return ((await (await fetch(`${gw.adminUrl}/v1/upstreams`)).json()) as { upstreams: never[] }).upstreams;
}

describe('a registry upstream over the embedded registry', () => {
  it('registered → routable within 1 s; heartbeats keep it; silence expires it and traffic moves off it', async () => {
    const [u1, u2] = await upstreams(2);
    const gw = await memoryGateway();
    const empty = await fetch(`${gw.url}/x`);
    expect(empty.status).toBe(503);
    expect(((await empty.json()) as { detail: string }).detail).toBe(
      'upstream svc has no endpoints (registry service users lists no endpoints)',
    );

    // u1 keeps its lease with the Node client: a 600 ms TTL renewed every ~200 ms.
    const client = new RegistrationClient({
      registry: registryUrl(gw),
      service: 'users',
      id: 'u1',
      address: '127.0.0.1',
      port: u1!.port,
      token: TOKEN,
      ttlMs: 600,
      drainDelayMs: 50,
    });
    track({ close: () => client.close() });
    const registeredAt = performance.now();
    await client.start();
    await until('u1 routable', async () => (await fetch(`${gw.url}/r`)).status === 200, 1000);
    expect(performance.now() - registeredAt).toBeLessThan(1000);
    expect(served(u1!, '/r')).toBeGreaterThanOrEqual(1);

    // u2 registers once and stays silent: its 600 ms lease runs out.
    await register(gw, 'u2', u2!, { ttl: '600ms' });
    expect(ids(gw)).toEqual([u1!.url, u2!.url].sort());
    const load = steadyLoad(`${gw.url}/delay/5`, 4);
    // Renewed until it has taken traffic (a loaded machine can take longer than its TTL to get
    // there), then silent.
    await until('u2 takes traffic', async () => {
      if (served(u2!, '/delay/5') > 5) return true;
      await register(gw, 'u2', u2!, { ttl: '600ms' });
      return false;
    });
    await until('u2 expired', () => ids(gw).length === 1, 2000);
    expect(ids(gw)).toEqual([u1!.url]);
    // Requests the gateway sent to u2 before it expired may still be arriving there: let them land.
    await new Promise((r) => setTimeout(r, 300));
    const onU2 = served(u2!, '/delay/5');
    // Three TTLs later u1 is still there, renewed by its heartbeats, and takes all the traffic.
    const onU1 = served(u1!, '/delay/5');
    await new Promise((r) => setTimeout(r, 1800));
    await until('u1 keeps serving', () => served(u1!, '/delay/5') > onU1 + 50);
    const statuses = await load.stop();
    expect(ids(gw)).toEqual([u1!.url]);
    expect(served(u2!, '/delay/5')).toBe(onU2);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);

    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toContain('peregrine_discovery_endpoints{upstream="svc",source="registry"} 1');
    expect(metrics).toContain('peregrine_discovery_stale{upstream="svc",source="registry"} 0');
    const [view] = await upstreamsView(gw);
    expect(view!.discovery).toMatchObject({
      source: 'registry',
      state: 'ok',
      provider: { service: 'users', instances: 1, store: { store: 'memory', synced: true } },
    });
    expect(view!.endpoints).toMatchObject([{ id: u1!.url, source: 'registry', state: 'healthy' }]);
  });

  it('drain: no new requests, in-flight ones finish; deregistration under a request marks its span', async () => {
    const [u1, u2] = await upstreams(2);
    const spans = new InMemorySpanExporter();
    const gw = await gateway(
      {
        ...svc({ discovery: { registry: 'users' } }),
        registry: registry(),
        telemetry: { tracing: { sampleRatio: 1 } },
      },
      { spanProcessor: new SimpleSpanProcessor(spans) },
    );
    await register(gw, 'u1', u1!);
    await register(gw, 'u2', u2!);
    const slow = (path: string) =>
      Array.from({ length: 4 }, () => fetch(`${gw.url}${path}`).then((r) => r.status));

    const draining = slow('/delay/600');
    await until('slow requests on u1', () => served(u1!, '/delay/600') >= 1);
    expect(await api(gw, 'POST', 'users/instances/u1/drain')).toBe(200);
    expect(ids(gw)).toEqual([u1!.url, u2!.url].sort());
    for (let i = 0; i < 20; i++) expect((await fetch(`${gw.url}/after-drain`)).status).toBe(200);
    expect(served(u1!, '/after-drain')).toBe(0);
    expect(served(u2!, '/after-drain')).toBe(20);
    expect(await Promise.all(draining)).toEqual([200, 200, 200, 200]);
    expect(u1!.requests.every((r) => !r.aborted)).toBe(true);
    const [view] = await upstreamsView(gw);
    expect(view!.endpoints.find((e) => e.id === u1!.url)).toMatchObject({ state: 'draining' });

    // Active again, then deregistered while requests are on it.
    await register(gw, 'u1', u1!, { state: 'active' });
    const removing = slow('/delay/500');
    await until('slow requests on u1 again', () => served(u1!, '/delay/500') >= 1);
    expect(await api(gw, 'DELETE', 'users/instances/u1')).toBe(204);
    expect(ids(gw)).toEqual([u2!.url]);
    expect(await Promise.all(removing)).toEqual([200, 200, 200, 200]);
    expect(u1!.requests.every((r) => !r.aborted)).toBe(true);

    const marked = (event: string, path: string) =>
      spans
        .getFinishedSpans()
        .filter((s) => s.attributes['url.path'] === path && s.events.some((e) => e.name === event));
    expect(marked('peregrine.endpoint_draining', '/delay/600')).toHaveLength(served(u1!, '/delay/600'));
    expect(marked('peregrine.endpoint_removed', '/delay/500')).toHaveLength(served(u1!, '/delay/500'));
    for (const s of marked('peregrine.endpoint_removed', '/delay/500'))
      expect(s.events.find((e) => e.name === 'peregrine.endpoint_removed')!.attributes).toEqual({
        endpoint: u1!.url,
        source: 'registry',
      });
    // Requests that started after the change meet no change: no event.
    expect(marked('peregrine.endpoint_draining', '/after-drain')).toEqual([]);
  });

  it('the filter selects instances by zone, version and metadata', async () => {
    const list = await upstreams(4);
    const [a, b, c, d] = list;
    const route = (name: string) => ({ name, match: { path: `/${name}` }, upstream: name });
    const upstream = (filter: Record<string, unknown>) => ({
      discovery: { registry: 'users', filter },
      balancer: { kind: 'round_robin' },
    });
    const gw = await gateway({
      registry: registry(),
      upstreams: {
        zoned: upstream({ zone: 'eu-1' }),
        v2: upstream({ version: '2.0.0' }),
        canary: upstream({ version: '2.0.0', metadata: { canary: 'true' } }),
        everyone: upstream({}),
      } as never,
      routes: ['zoned', 'v2', 'canary', 'everyone'].map(route),
    });
    await register(gw, 'a', a!, { zone: 'eu-1', version: '1.0.0' });
    await register(gw, 'b', b!, { zone: 'eu-1', version: '2.0.0', metadata: { canary: 'true' } });
    await register(gw, 'c', c!, { zone: 'eu-2', version: '2.0.0', metadata: { canary: 'false' } });
    await register(gw, 'd', d!, { zone: 'eu-2', metadata: { canary: 'true' } });
    // Another service on the same registry is no part of it.
    const [other] = await upstreams(1);
    await register(gw, 'o', other!, { zone: 'eu-1' }, 'orders');

    const hits = async (path: string) => {
      for (let i = 0; i < 12; i++) expect((await fetch(`${gw.url}${path}`)).status).toBe(200);
      return list.filter((u) => served(u, path) > 0).map((u) => u.url);
    };
    expect(await hits('/zoned')).toEqual([a!.url, b!.url]);
    expect(await hits('/v2')).toEqual([b!.url, c!.url]);
    expect(await hits('/canary')).toEqual([b!.url]);
    expect(await hits('/everyone')).toEqual(list.map((u) => u.url));
    expect(other!.requests).toHaveLength(0);

    // An instance that changes its metadata leaves (or joins) the filtered set at once.
    await register(gw, 'c', c!, { zone: 'eu-2', version: '2.0.0', metadata: { canary: 'true' } });
    expect(ids(gw, 'canary')).toEqual([b!.url, c!.url].sort());
    await register(gw, 'b', b!, { zone: 'eu-1', version: '2.0.0' });
    expect(ids(gw, 'canary')).toEqual([c!.url]);
    const zoned = (await upstreamsView(gw)).find((u) => u.name === 'zoned')!;
    expect(zoned.endpoints).toMatchObject([
      { id: a!.url, zone: 'eu-1', source: 'registry' },
      { id: b!.url, zone: 'eu-1', source: 'registry' },
    ]);
  });

  it('churn: one instance registered or deregistered every 100 ms under a steady load fails no request', async () => {
    const list = await upstreams(6);
    const [s1, s2, ...churners] = list;
    const gw = await memoryGateway();
    const cluster = gw.gateway.store.current.clusters.get('svc')!;
    await register(gw, 's1', s1!);
    await register(gw, 's2', s2!);
    const load = steadyLoad(`${gw.url}/delay/5`, 6);
    const present = new Set<number>();
    for (let step = 0; step < 32; step++) {
      const i = step % churners.length;
      const u = churners[i]!;
      if (present.has(i)) {
        expect(await api(gw, 'DELETE', `users/instances/c${i}`)).toBe(204);
        present.delete(i);
      } else {
        await register(gw, `c${i}`, u);
        present.add(i);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const statuses = await load.stop();
    expect(statuses.length).toBeGreaterThan(200);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(gw.gateway.store.current.clusters.get('svc')).toBe(cluster);
    expect(ids(gw)).toEqual([s1!.url, s2!.url, ...[...present].map((i) => churners[i]!.url)].sort());
    for (const u of churners) expect(served(u, '/delay/5')).toBeGreaterThan(0);
  });

  it('an upstream naming a service with no instances is ready and says why it has nothing', async () => {
    const gw = await memoryGateway({ zone: 'nowhere' });
    const ready = await fetch(`${gw.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ upstreamSourcesPending: [], upstreamSourcesFailing: [] });
  });
});

describe('registry upstreams on gateways sharing one Redis', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis({ persistent: true });
  });
  afterEach(async () => {
    if (!redis.running) await redis.start();
  });
  afterAll(async () => {
    await redis?.close();
  });

  /** Gateway `id` on the registry under `prefix`; with the registration API when `api`. */
  function redisGateway(id: string, prefix: string, api: boolean): Promise<TestGateway> {
    const { listener: _listener, ...withoutApi } = registry() as Record<string, unknown>;
    return gateway({
      ...svc({ discovery: { registry: 'users' } }),
      redis: {
        url: redis.url,
        keyPrefix: prefix,
        commandTimeout: '300ms',
        reconnect: { initialDelay: '20ms', maxDelay: '200ms' },
      },
      registry: { ...(api ? registry() : withoutApi), store: 'redis', gatewayId: id } as never,
    });
  }

  /** peregrine_discovery_refreshes_total of svc's source with outcome unavailable. */
  async function unavailableCount(gw: TestGateway): Promise<number> {
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const m =
      /peregrine_discovery_refreshes_total\{upstream="svc",source="registry",outcome="unavailable"\} (\d+)/.exec(
        metrics,
      );
    return m === null ? 0 : Number(m[1]);
  }

  async function ready(gw: TestGateway): Promise<void> {
    await until('ready', async () => (await fetch(`${gw.adminUrl}/readyz`)).status === 200, 5000);
  }

  it('a gateway that fails to start leaves no Redis connection behind', async () => {
    const prefix = newPrefix();
    const clients = async () =>
      (await redis.command('CLIENT', 'LIST')).split('name=failing-start').length - 1;
    await expect(
      startGateway({
        ...svc({ discovery: { registry: 'users' } }),
        listeners: [
          {
            name: 'edge',
            address: '127.0.0.1:0',
            tls: { cert: '/nonexistent.crt', key: '/nonexistent.key' },
          },
        ],
        redis: { url: redis.url, keyPrefix: prefix, connectionName: 'failing-start' },
        registry: { ...(registry() as Record<string, unknown>), store: 'redis' } as never,
      }),
    ).rejects.toThrow(/nonexistent/);
    // Left open, its connections would be up by now (loopback), and stay.
    await new Promise((r) => setTimeout(r, 500));
    await until('its connections closed', async () => (await clients()) === 0, 3000);
  });

  it('registered through A, routed by B within 1 s; expiry seen by both', async () => {
    const [u1] = await upstreams(1);
    const prefix = newPrefix();
    const a = await redisGateway('gw-a', prefix, true);
    const b = await redisGateway('gw-b', prefix, false);
    await Promise.all([ready(a), ready(b)]);

    const registeredAt = performance.now();
    await register(a, 'u1', u1!, { ttl: '1s' });
    await until('B routes to u1', async () => (await fetch(`${b.url}/b`)).status === 200, 1000);
    expect(performance.now() - registeredAt).toBeLessThan(1000);
    expect((await fetch(`${a.url}/a`)).status).toBe(200);
    expect(served(u1!, '/b')).toBeGreaterThanOrEqual(1);
    expect(served(u1!, '/a')).toBe(1);

    // No heartbeat: the lease ends on Redis's clock, and both gateways let go of it.
    await until('both saw the expiry', () => ids(a).length === 0 && ids(b).length === 0, 3000);
    for (const gw of [a, b]) {
      const res = await fetch(`${gw.url}/x`);
      expect(res.status).toBe(503);
      expect(res.headers.get('x-peregrine-reason')).toBe('NO_HEALTHY_ENDPOINT');
    }
  });

  it('Redis down: both gateways serve their last known instances and show the source failing; back: in sync', async () => {
    const [u1, u2] = await upstreams(2);
    const prefix = newPrefix();
    const a = await redisGateway('gw-a', prefix, true);
    const b = await redisGateway('gw-b', prefix, false);
    await Promise.all([ready(a), ready(b)]);
    await register(a, 'u1', u1!, { ttl: '1m' });
    await register(a, 'u2', u2!, { ttl: '1m' });
    await until('B has both', () => ids(b).length === 2, 1000);
    const unavailableBefore = await Promise.all([a, b].map(unavailableCount));

    await redis.stop();
    for (const [n, gw] of [a, b].entries()) {
      await vi.waitFor(
        async () => {
          const [view] = await upstreamsView(gw);
          expect(view!.discovery).toMatchObject({
            state: 'failing',
            provider: { store: { store: 'redis', synced: false } },
          });
        },
        { timeout: 3000, interval: 50 },
      );
      for (let i = 0; i < 10; i++) expect((await fetch(`${gw.url}/down`)).status).toBe(200);
      expect(ids(gw)).toEqual([u1!.url, u2!.url].sort());
      const readiness = await fetch(`${gw.adminUrl}/readyz`);
      expect(readiness.status).toBe(200);
      expect(await readiness.json()).toMatchObject({
        upstreamSourcesFailing: ['svc'],
        registryStore: { store: 'redis', synced: false },
      });
      const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      expect(metrics).toContain('peregrine_discovery_stale{upstream="svc",source="registry"} 1');
      // One failure per outage, not one per health check.
      expect(await unavailableCount(gw)).toBe(unavailableBefore[n]! + 1);
    }
    expect(served(u1!, '/down') + served(u2!, '/down')).toBe(20);

    await redis.start();
    for (const gw of [a, b]) {
      await vi.waitFor(
        async () => {
          const [view] = await upstreamsView(gw);
          expect(view!.discovery).toMatchObject({ state: 'ok', provider: { store: { synced: true } } });
        },
        { timeout: 5000, interval: 50 },
      );
      expect(ids(gw)).toEqual([u1!.url, u2!.url].sort());
    }
    // And changes flow again: a deregistration through A reaches B.
    expect(await api(a, 'DELETE', 'users/instances/u1')).toBe(204);
    await until('B saw the deregistration', () => ids(b).length === 1, 1000);
    expect(ids(b)).toEqual([u2!.url]);
  });
});
