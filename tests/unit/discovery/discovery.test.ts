/**
 * The control plane's side of discovery, with providers the test drives by hand (the DNS provider
 * against a real DNS server is in dns-provider.test.ts): what a publication does to the live set,
 * that a failure never empties it, and what is counted, logged and shown.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type ConfigInput, ConfigSchema, dynamicPart } from '../../../src/config/schema.ts';
import { compileSnapshot, type Snapshot } from '../../../src/control/snapshot.ts';
import { Discovery } from '../../../src/discovery/discovery.ts';
import type { EndpointProvider, EndpointSink, ProviderFactories } from '../../../src/discovery/provider.ts';
import { checkEndpoint, FAILURE_LOG_INTERVAL_MS } from '../../../src/discovery/source-binding.ts';
import { createMetrics, type GatewayMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';

const A = 'http://10.0.0.1:8080';
const B = 'http://10.0.0.2:8080';
const C = 'http://10.0.0.3:8080';

/** A provider whose sink the test holds. */
interface Scripted {
  sink: EndpointSink | undefined;
  closed: boolean;
  readonly config: unknown;
}

interface Harness {
  readonly discovery: Discovery;
  readonly metrics: GatewayMetrics;
  readonly logs: Record<string, unknown>[];
  readonly providers: Scripted[];
  clock: { t: number };
  snapshot: Snapshot;
  reload(upstreams: ConfigInput['upstreams']): void;
}

const open: Harness[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) {
    await h.discovery.close();
    await Promise.all([...h.snapshot.clusters.values()].map((c) => c.destroy()));
  }
});

function scriptedFactory(providers: Scripted[]): (config: unknown) => EndpointProvider {
  return (config) => {
    const p: Scripted = { sink: undefined, closed: false, config };
    providers.push(p);
    return {
      start(sink) {
        p.sink = sink;
      },
      close() {
        p.closed = true;
      },
      describe: () => ({ scripted: true }),
    };
  };
}

function dynamic(upstreams: ConfigInput['upstreams']) {
  return dynamicPart(
    ConfigSchema.parse({ listeners: [{ name: 'edge', address: '127.0.0.1:0' }], upstreams }),
  );
}

function harness(upstreams: ConfigInput['upstreams'], withRegistry = true): Harness {
  const metrics = createMetrics({ exemplars: false, version: 't' });
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => logs.push(JSON.parse(s)) });
  const providers: Scripted[] = [];
  const clock = { t: 1_700_000_000_000 };
  const factories: ProviderFactories = {
    dns: scriptedFactory(providers),
    registry: withRegistry ? scriptedFactory(providers) : undefined,
  };
  const discovery = new Discovery({ logger, metrics, factories, now: () => clock.t });
  const deps = { metrics, logger };
  const h: Harness = {
    discovery,
    metrics,
    logs,
    providers,
    clock,
    snapshot: compileSnapshot(dynamic(upstreams), 1, undefined, deps).snapshot,
    reload(next) {
      const compiled = compileSnapshot(dynamic(next), h.snapshot.version + 1, h.snapshot, deps);
      h.snapshot = compiled.snapshot;
      for (const c of compiled.retired) void c.close();
      discovery.sync(h.snapshot);
    },
  };
  discovery.sync(h.snapshot);
  open.push(h);
  return h;
}

const ids = (h: Harness, name = 'svc') => h.snapshot.clusters.get(name)!.endpoints.map((e) => e.id);

async function scrape(m: GatewayMetrics): Promise<string> {
  return (await renderMetrics(m, undefined)).body;
}

describe('Discovery: publications and the live set', () => {
  it('a discovered upstream starts empty and pending; a publication fills it in place', () => {
    const h = harness({ svc: { discovery: { registry: 'users' } } });
    const cluster = h.snapshot.clusters.get('svc')!;
    expect(ids(h)).toEqual([]);
    expect(h.discovery.pending()).toEqual(['svc']);
    expect(h.providers[0]!.config).toEqual({ registry: 'users', filter: {} });
    h.providers[0]!.sink!.replace([
      { url: A, zone: 'z1', version: 'v1', metadata: { k: 'v' } },
      { url: B, weight: 3 },
    ]);
    expect(h.snapshot.clusters.get('svc')).toBe(cluster);
    expect(ids(h)).toEqual([A, B]);
    expect(cluster.endpoints.map((e) => [e.source, e.zone, e.version, e.weight])).toEqual([
      ['registry', 'z1', 'v1', 1],
      ['registry', undefined, undefined, 3],
    ]);
    expect(h.discovery.pending()).toEqual([]);
    expect(h.discovery.status('svc')).toMatchObject({
      source: 'registry',
      target: 'service users',
      state: 'ok',
      endpoints: 2,
      refreshes: 1,
      failures: 0,
      lastSuccessAt: new Date(h.clock.t).toISOString(),
      lastError: null,
      provider: { scripted: true },
    });
  });

  it('deltas: upsert adds or updates one endpoint, remove takes one away', () => {
    const h = harness({ svc: { discovery: { registry: 'users' } } });
    const sink = h.providers[0]!.sink!;
    sink.replace([{ url: A }, { url: B }]);
    const [a] = h.snapshot.clusters.get('svc')!.endpoints;
    sink.upsert({ url: C });
    sink.upsert({ url: A, state: 'draining' });
    sink.remove(`${B}/ignored-path`);
    expect(ids(h)).toEqual([A, C]);
    expect(h.snapshot.clusters.get('svc')!.endpoints[0]).toBe(a);
    expect(a!.draining).toBe(true);
    expect(h.discovery.status('svc')!.refreshes).toBe(4);
  });

  it('a failure keeps the last known set, says why, and is counted; the next success clears it', async () => {
    const h = harness({ svc: { discovery: { dns: 'users.internal', port: 8080 } } });
    const sink = h.providers[0]!.sink!;
    sink.replace([{ url: A }, { url: B }]);
    const before = h.snapshot.clusters.get('svc')!.endpoints;
    h.clock.t += 1000;
    sink.fail('nxdomain', 'ENOTFOUND');
    sink.fail('servfail', 'ESERVFAIL');
    expect(h.snapshot.clusters.get('svc')!.endpoints).toBe(before);
    expect(h.discovery.failing()).toEqual(['svc']);
    expect(h.discovery.status('svc')).toMatchObject({
      state: 'failing',
      consecutiveFailures: 2,
      failures: 2,
      lastError: { reason: 'servfail', detail: 'ESERVFAIL' },
      lastFailureAt: new Date(h.clock.t).toISOString(),
    });
    let text = await scrape(h.metrics);
    expect(text).toContain(
      'peregrine_discovery_refreshes_total{upstream="svc",source="dns",outcome="success"} 1',
    );
    expect(text).toContain(
      'peregrine_discovery_refreshes_total{upstream="svc",source="dns",outcome="nxdomain"} 1',
    );
    expect(text).toContain('peregrine_discovery_stale{upstream="svc",source="dns"} 1');
    expect(text).toContain('peregrine_discovery_endpoints{upstream="svc",source="dns"} 2');
    expect(text).toContain(
      `peregrine_discovery_last_success_timestamp_seconds{upstream="svc",source="dns"} ${(h.clock.t - 1000) / 1000}`,
    );
    sink.replace([{ url: B }]);
    expect(ids(h)).toEqual([B]);
    expect(h.discovery.failing()).toEqual([]);
    text = await scrape(h.metrics);
    expect(text).toContain('peregrine_discovery_stale{upstream="svc",source="dns"} 0');
    expect(h.logs.map((l) => l.msg)).toContain('endpoint source recovered');
  });

  it('a failure before any success leaves the upstream empty, with the reason in NO_HEALTHY_ENDPOINT', () => {
    const h = harness({ svc: { discovery: { dns: 'users.internal', port: 8080 } } });
    h.providers[0]!.sink!.fail('nxdomain', 'ENOTFOUND');
    expect(h.discovery.pending()).toEqual([]);
    expect(h.snapshot.clusters.get('svc')!.noEndpointReason()).toBe(
      'upstream svc has no endpoints (dns users.internal A port 8080: nxdomain: ENOTFOUND)',
    );
  });

  it('an empty publication is a source listing no endpoints: applied, and said so', () => {
    const h = harness({ svc: { discovery: { registry: 'users' } } });
    const sink = h.providers[0]!.sink!;
    sink.replace([{ url: A }]);
    sink.replace([]);
    expect(ids(h)).toEqual([]);
    expect(h.snapshot.clusters.get('svc')!.noEndpointReason()).toBe(
      'upstream svc has no endpoints (registry service users lists no endpoints)',
    );
  });

  it('unusable endpoints are skipped; a publication with nothing usable is a failure, not an empty set', () => {
    const h = harness({ svc: { discovery: { registry: 'users' } } });
    const sink = h.providers[0]!.sink!;
    sink.replace([{ url: A }, { url: 'not a url' }, { url: 'ftp://10.0.0.9:21' }]);
    expect(ids(h)).toEqual([A]);
    sink.replace([{ url: 'not a url' }]);
    expect(ids(h)).toEqual([A]);
    expect(h.discovery.status('svc')!.lastError).toEqual({
      reason: 'invalid',
      detail: '1 endpoints, none usable: invalid URL "not a url"',
    });
    sink.upsert({ url: 'gopher://x' });
    expect(ids(h)).toEqual([A]);
  });

  it('failure logs are rate-limited while a source keeps failing', () => {
    const h = harness({ svc: { discovery: { dns: 'users.internal', port: 8080 } } });
    const sink = h.providers[0]!.sink!;
    const failures = () =>
      h.logs.filter((l) => l.msg?.toString().startsWith('endpoint source refresh failed'));
    for (let i = 0; i < 10; i++) {
      sink.fail('timeout', 'ETIMEOUT');
      h.clock.t += 1000;
    }
    expect(failures()).toHaveLength(1);
    h.clock.t += FAILURE_LOG_INTERVAL_MS;
    sink.fail('timeout', 'ETIMEOUT');
    expect(failures()).toHaveLength(2);
    expect(failures()[1]).toMatchObject({
      upstream: 'svc',
      source: 'dns',
      reason: 'timeout',
      suppressed: 9,
      consecutiveFailures: 11,
    });
  });
});

describe('Discovery: following the snapshot', () => {
  it('a static upstream: the reload applies an endpoint-list change to the same cluster as a diff', () => {
    const h = harness({ svc: { endpoints: [A, B] } });
    const cluster = h.snapshot.clusters.get('svc')!;
    const [a] = cluster.endpoints;
    expect(h.discovery.status('svc')).toMatchObject({ source: 'static', target: 'config', state: 'ok' });
    h.reload({ svc: { endpoints: [A, C] } });
    expect(h.snapshot.clusters.get('svc')).toBe(cluster);
    expect(ids(h)).toEqual([A, C]);
    expect(cluster.endpoints[0]).toBe(a);
  });

  it('a policy change rebuilds the cluster; the binding (and its provider) stays and follows it', () => {
    const h = harness({ svc: { discovery: { registry: 'users' } } });
    h.providers[0]!.sink!.replace([{ url: A }]);
    const old = h.snapshot.clusters.get('svc')!;
    h.reload({ svc: { discovery: { registry: 'users' }, retries: { maxAttempts: 4 } } });
    const next = h.snapshot.clusters.get('svc')!;
    expect(next).not.toBe(old);
    expect(h.providers).toHaveLength(1);
    expect(h.providers[0]!.closed).toBe(false);
    expect(next.endpoints).toEqual(old.endpoints);
    h.providers[0]!.sink!.upsert({ url: B });
    expect(ids(h)).toEqual([A, B]);
    expect(old.endpoints.map((e) => e.id)).toEqual([A]);
  });

  it('a changed source starts a new provider; the old endpoints serve until it publishes', () => {
    const h = harness({ svc: { endpoints: [A] } });
    h.reload({ svc: { discovery: { dns: 'users.internal', port: 8080 } } });
    expect(ids(h)).toEqual([A]);
    expect(h.discovery.status('svc')).toMatchObject({ source: 'dns', state: 'pending' });
    h.providers[0]!.sink!.fail('nxdomain', 'ENOTFOUND');
    expect(ids(h)).toEqual([A]);
    h.providers[0]!.sink!.replace([{ url: B }]);
    expect(ids(h)).toEqual([B]);
    expect(h.snapshot.clusters.get('svc')!.endpoints[0]!.source).toBe('dns');
    h.reload({ svc: { discovery: { dns: 'users.internal', port: 9090 } } });
    expect(h.providers[0]!.closed).toBe(true);
    expect(h.providers).toHaveLength(2);
    // The closed provider's late publications are ignored.
    h.providers[0]!.sink!.replace([{ url: C }]);
    expect(ids(h)).toEqual([B]);
  });

  it('a removed upstream stops its provider and its gauges', async () => {
    const h = harness({ svc: { discovery: { registry: 'users' } }, other: { endpoints: [A] } });
    expect(await scrape(h.metrics)).toContain(
      'peregrine_discovery_stale{upstream="svc",source="registry"} 1',
    );
    h.reload({ other: { endpoints: [A] } });
    expect(h.providers[0]!.closed).toBe(true);
    expect(h.discovery.status('svc')).toBeUndefined();
    expect(await scrape(h.metrics)).not.toMatch(
      /peregrine_discovery_(endpoints|stale|last_success)[^\n]*upstream="svc"/,
    );
  });

  it('without a registry, a registry upstream starts empty with its source unavailable (not pending)', () => {
    const h = harness({ svc: { discovery: { registry: 'users' } } }, false);
    expect(ids(h)).toEqual([]);
    expect(h.discovery.pending()).toEqual([]);
    expect(h.discovery.failing()).toEqual(['svc']);
    expect(h.discovery.status('svc')!.lastError).toEqual({
      reason: 'unavailable',
      detail: 'no service registry runs in this gateway',
    });
    expect(h.snapshot.clusters.get('svc')!.noEndpointReason()).toBe(
      'upstream svc has no endpoints (registry service users: unavailable: no service registry runs in this gateway)',
    );
  });

  it('a provider that throws on start or in its factory is a failed source, not a crash', () => {
    const metrics = createMetrics({ exemplars: false, version: 't' });
    const logger = pino({ enabled: false });
    const discovery = new Discovery({
      logger,
      metrics,
      factories: {
        dns: () => ({
          start() {
            throw new Error('boom');
          },
          close() {},
        }),
        registry: () => {
          throw new Error('no store');
        },
      },
    });
    const snapshot = compileSnapshot(
      dynamic({
        d: { discovery: { dns: 'x.internal', port: 1 } },
        r: { discovery: { registry: 'users' } },
      }),
      1,
      undefined,
      { metrics, logger },
    ).snapshot;
    discovery.sync(snapshot);
    expect(discovery.status('d')!.lastError).toEqual({
      reason: 'error',
      detail: 'provider failed to start: Error: boom',
    });
    expect(discovery.status('r')!.lastError).toEqual({
      reason: 'unavailable',
      detail: 'the registry provider could not be built: Error: no store',
    });
    open.push({ discovery, snapshot } as unknown as Harness);
  });
});

describe('checkEndpoint', () => {
  it('clamps weights, defaults the state, drops what is not a string', () => {
    expect(checkEndpoint({ url: A, weight: 5000 })).toMatchObject({ weight: 1000, state: 'active' });
    expect(checkEndpoint({ url: A, weight: 0 })).toMatchObject({ weight: 1 });
    expect(checkEndpoint({ url: A, weight: Number.NaN })).toBe(`invalid weight for ${A}`);
    expect(checkEndpoint({ url: A, zone: 5 as unknown as string, host: '' })).toMatchObject({
      zone: undefined,
      host: undefined,
    });
  });
});
