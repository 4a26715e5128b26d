/**
 * DNS discovery against a real DNS server on a random loopback UDP port (tests/helpers/dns-server.ts):
 * A, AAAA and SRV answers, refresh by TTL within refresh.min/max, failures that keep the last known
 * endpoints, and a changed answer that changes only the endpoints it names.
 *
 * The refresh schedule is driven with fake setTimeout (the provider's only timer); the DNS traffic
 * itself is real, so waits poll on real time with setImmediate.
 */
import { Resolver } from 'node:dns/promises';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type ConfigInput, ConfigSchema, dynamicPart } from '../../../src/config/schema.ts';
import { compileSnapshot, type Snapshot } from '../../../src/control/snapshot.ts';
import { Discovery } from '../../../src/discovery/discovery.ts';
import {
  createDnsProviderFactory,
  dnsFailure,
  refreshDelay,
  resolveEndpoints,
  retryDelay,
} from '../../../src/discovery/dns-provider.ts';
import type { DnsDiscoveryConfig } from '../../../src/discovery/schema.ts';
import { createMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import { type DnsTestServer, startDnsServer } from '../../helpers/dns-server.ts';

let dns: DnsTestServer;
const cleanups: (() => Promise<void>)[] = [];
beforeEach(async () => {
  dns = await startDnsServer();
});
afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0)) await c();
  await dns.close();
});

function resolver(): Resolver {
  const r = new Resolver({ timeout: 200, tries: 1 });
  r.setServers([dns.server]);
  return r;
}

function config(input: Record<string, unknown>): DnsDiscoveryConfig {
  return ConfigSchema.parse({
    listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
    upstreams: { svc: { discovery: input } },
  }).upstreams.svc!.discovery as DnsDiscoveryConfig;
}

/** Poll (real time, setImmediate: not faked) until `check` passes. */
async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setImmediate(r));
  }
}

interface Running {
  readonly discovery: Discovery;
  readonly snapshot: Snapshot;
  readonly metrics: ReturnType<typeof createMetrics>;
  ids(): string[];
}

function run(discovery: Record<string, unknown>, extra: Partial<ConfigInput> = {}): Running {
  const metrics = createMetrics({ exemplars: false, version: 't' });
  const logger = pino({ enabled: false });
  const cfg = dynamicPart(
    ConfigSchema.parse({
      listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
      upstreams: { svc: { discovery, balancer: { kind: 'round_robin' } } },
      ...extra,
    }),
  );
  const snapshot = compileSnapshot(cfg, 1, undefined, { metrics, logger }).snapshot;
  const d = new Discovery({
    logger,
    metrics,
    factories: { dns: createDnsProviderFactory({ servers: [dns.server], timeoutMs: 200, tries: 1 }) },
  });
  d.sync(snapshot);
  cleanups.push(async () => {
    await d.close();
    await Promise.all([...snapshot.clusters.values()].map((c) => c.destroy()));
  });
  return {
    discovery: d,
    snapshot,
    metrics,
    ids: () => snapshot.clusters.get('svc')!.endpoints.map((e) => e.id),
  };
}

describe('resolveEndpoints (one resolution)', () => {
  it('A: one endpoint per address, the name as Host, the lowest TTL', async () => {
    dns.set('users.test', 'A', [
      { address: '10.0.0.1', ttl: 30 },
      { address: '10.0.0.2', ttl: 12 },
    ]);
    const answer = await resolveEndpoints(resolver(), config({ dns: 'users.test.', port: 8080 }));
    expect(answer).toEqual({
      ttl: 12,
      endpoints: [
        { url: 'http://10.0.0.1:8080', host: 'users.test:8080', weight: undefined },
        { url: 'http://10.0.0.2:8080', host: 'users.test:8080', weight: undefined },
      ],
    });
  });

  it('AAAA over https on 443: bracketed addresses, the default port left out', async () => {
    dns.set('users.test', 'AAAA', [{ address: 'fd00::5', ttl: 7 }]);
    const answer = await resolveEndpoints(
      resolver(),
      config({ dns: 'users.test', type: 'AAAA', port: 443, protocol: 'https' }),
    );
    expect(answer).toEqual({
      ttl: 7,
      endpoints: [{ url: 'https://[fd00::5]', host: 'users.test', weight: undefined }],
    });
  });

  it('SRV: the lowest priority only, weights scaled into 1..1000, targets resolved (A, else AAAA, or a literal)', async () => {
    dns.set('_http._tcp.users.test', 'SRV', [
      { target: 'a.users.test', port: 8001, priority: 1, weight: 65535, ttl: 60 },
      { target: 'b.users.test', port: 8002, priority: 1, weight: 0, ttl: 60 },
      { target: '10.0.0.9', port: 8003, priority: 1, weight: 6553, ttl: 60 },
      { target: 'backup.users.test', port: 9000, priority: 5, weight: 10, ttl: 60 },
    ]);
    dns.set('a.users.test', 'A', [{ address: '10.0.0.1', ttl: 20 }]);
    dns.set('b.users.test', 'A', 'nodata');
    dns.set('b.users.test', 'AAAA', [{ address: 'fd00::2', ttl: 9 }]);
    dns.set('backup.users.test', 'A', [{ address: '10.0.0.99', ttl: 60 }]);
    const answer = await resolveEndpoints(resolver(), config({ dns: '_http._tcp.users.test', type: 'SRV' }));
    expect(answer.ttl).toBe(9);
    expect(answer.endpoints).toEqual([
      { url: 'http://10.0.0.1:8001', host: 'a.users.test:8001', weight: 1000 },
      { url: 'http://[fd00::2]:8002', host: 'b.users.test:8002', weight: 1 },
      { url: 'http://10.0.0.9:8003', host: '10.0.0.9:8003', weight: 100 },
    ]);
    expect(dns.queries('backup.users.test', 'A')).toBe(0);
  });

  it('SRV: a target that does not resolve is left out; none resolving is a failure', async () => {
    dns.set('_x._tcp.t', 'SRV', [
      { target: 'up.t', port: 1, ttl: 5 },
      { target: 'gone.t', port: 2, ttl: 5 },
    ]);
    dns.set('up.t', 'A', [{ address: '10.0.0.1', ttl: 5 }]);
    expect(
      (await resolveEndpoints(resolver(), config({ dns: '_x._tcp.t', type: 'SRV' }))).endpoints,
    ).toHaveLength(1);
    dns.set('up.t', 'A', 'nxdomain');
    await expect(
      resolveEndpoints(resolver(), config({ dns: '_x._tcp.t', type: 'SRV' })),
    ).rejects.toMatchObject({
      code: 'ENOTFOUND',
    });
  });

  it('classifies failures: NXDOMAIN, no data, SERVFAIL, no answer', async () => {
    dns.set('empty.t', 'A', 'nodata');
    dns.set('broken.t', 'A', 'servfail');
    dns.set('silent.t', 'A', 'drop');
    const r = resolver();
    const reasonOf = (name: string) =>
      resolveEndpoints(r, config({ dns: name, port: 80 })).then(
        () => 'resolved',
        (err: unknown) => dnsFailure(err).reason,
      );
    expect(await reasonOf('missing.t')).toBe('nxdomain');
    expect(await reasonOf('empty.t')).toBe('no_data');
    expect(await reasonOf('broken.t')).toBe('servfail');
    expect(await reasonOf('silent.t')).toBe('timeout');
    expect(dnsFailure(new Error('odd'))).toEqual({ reason: 'error', detail: 'odd' });
  });
});

describe('refresh timing', () => {
  const bounds = { min: 5000, max: 60_000 };
  it('follows the TTL within refresh.min and refresh.max', () => {
    expect(refreshDelay(30, bounds)).toBe(30_000);
    expect(refreshDelay(0, bounds)).toBe(5000);
    expect(refreshDelay(3600, bounds)).toBe(60_000);
    expect(refreshDelay(Number.POSITIVE_INFINITY, bounds)).toBe(60_000);
  });
  it('after failures: refresh.min, doubling, up to refresh.max', () => {
    expect([1, 2, 3, 4, 5, 6, 50].map((n) => retryDelay(n, bounds))).toEqual([
      5000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000,
    ]);
  });
});

describe('DNS discovery into a live upstream', () => {
  it('resolves again when the TTL runs out, and a changed answer changes only the endpoints it names', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    dns.set('users.test', 'A', [
      { address: '10.0.0.1', ttl: 20 },
      { address: '10.0.0.2', ttl: 20 },
    ]);
    const r = run({ dns: 'users.test', port: 8080, refresh: { min: '1s', max: '1m' } });
    await until(() => r.ids().length === 2);
    const cluster = r.snapshot.clusters.get('svc')!;
    const [one, two] = cluster.endpoints;
    expect(cluster.endpoints.map((e) => [e.source, e.host])).toEqual([
      ['dns', 'users.test:8080'],
      ['dns', 'users.test:8080'],
    ]);
    expect(r.discovery.status('svc')!.provider).toMatchObject({ lastTtlSeconds: 20, consecutiveFailures: 0 });

    dns.set('users.test', 'A', [
      { address: '10.0.0.2', ttl: 20 },
      { address: '10.0.0.3', ttl: 20 },
    ]);
    vi.advanceTimersByTime(19_999);
    await new Promise((res) => setImmediate(res));
    expect(dns.queries('users.test', 'A')).toBe(1);
    vi.advanceTimersByTime(1);
    await until(() => r.ids().includes('http://10.0.0.3:8080'));
    expect(dns.queries('users.test', 'A')).toBe(2);
    expect(r.ids()).toEqual(['http://10.0.0.2:8080', 'http://10.0.0.3:8080']);
    expect(cluster.endpoints[0]).toBe(two);
    expect(one!.removed).toBe(true);
    expect(r.snapshot.clusters.get('svc')).toBe(cluster);
  });

  it('a TTL of 0 waits refresh.min; a long TTL is cut to refresh.max', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    dns.set('zero.test', 'A', [{ address: '10.0.0.1', ttl: 0 }]);
    dns.set('long.test', 'A', [{ address: '10.0.0.2', ttl: 86_400 }]);
    const zero = run({ dns: 'zero.test', port: 80, refresh: { min: '2s', max: '10s' } });
    const long = run({ dns: 'long.test', port: 80, refresh: { min: '2s', max: '10s' } });
    const refreshes = (x: Running) => x.discovery.status('svc')!.refreshes;
    await until(() => refreshes(zero) === 1 && refreshes(long) === 1);
    vi.advanceTimersByTime(1999);
    await new Promise((res) => setImmediate(res));
    expect(dns.queries('zero.test', 'A')).toBe(1);
    vi.advanceTimersByTime(1);
    await until(() => refreshes(zero) === 2);
    expect(dns.queries('long.test', 'A')).toBe(1);
    vi.advanceTimersByTime(8000);
    await until(() => refreshes(long) === 2);
    expect(dns.queries('long.test', 'A')).toBe(2);
  });

  it('NXDOMAIN keeps the last known endpoints, counts and shows it, retries with backoff, and recovers', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    dns.set('users.test', 'A', [{ address: '10.0.0.1', ttl: 1 }]);
    const r = run({ dns: 'users.test', port: 8080, refresh: { min: '1s', max: '8s' } });
    await until(() => r.ids().length === 1);
    const kept = r.snapshot.clusters.get('svc')!.endpoints;

    dns.set('users.test', 'A', 'nxdomain');
    vi.advanceTimersByTime(1000);
    await until(() => r.discovery.status('svc')!.state === 'failing');
    expect(r.snapshot.clusters.get('svc')!.endpoints).toBe(kept);
    expect(r.discovery.status('svc')).toMatchObject({
      lastError: { reason: 'nxdomain', detail: 'ENOTFOUND' },
      consecutiveFailures: 1,
    });
    // Backoff: 1 s, then 2 s. (A refresh's next timer is set when its answer has been handled,
    // so the waits are on the status, not on the queries the server saw.)
    vi.advanceTimersByTime(1000);
    await until(() => r.discovery.status('svc')!.consecutiveFailures === 2);
    expect(dns.queries('users.test', 'A')).toBe(3);
    vi.advanceTimersByTime(1999);
    await new Promise((res) => setImmediate(res));
    expect(dns.queries('users.test', 'A')).toBe(3);
    dns.set('users.test', 'A', 'servfail');
    vi.advanceTimersByTime(1);
    await until(() => r.discovery.status('svc')!.consecutiveFailures === 3);
    expect(r.discovery.status('svc')!.lastError!.reason).toBe('servfail');
    expect(r.snapshot.clusters.get('svc')!.endpoints).toBe(kept);
    const text = (await renderMetrics(r.metrics, undefined)).body;
    expect(text).toContain(
      'peregrine_discovery_refreshes_total{upstream="svc",source="dns",outcome="nxdomain"} 2',
    );
    expect(text).toContain(
      'peregrine_discovery_refreshes_total{upstream="svc",source="dns",outcome="servfail"} 1',
    );
    expect(text).toContain('peregrine_discovery_stale{upstream="svc",source="dns"} 1');

    dns.set('users.test', 'A', [{ address: '10.0.0.7', ttl: 60 }]);
    vi.advanceTimersByTime(4000);
    await until(() => r.ids()[0] === 'http://10.0.0.7:8080');
    expect(r.discovery.status('svc')!.state).toBe('ok');
  });

  it('a name that never resolves leaves the upstream empty, not pending, with the reason', async () => {
    const r = run({ dns: 'nowhere.test', port: 80 });
    expect(r.discovery.pending()).toEqual(['svc']);
    await until(() => r.discovery.pending().length === 0);
    expect(r.snapshot.clusters.get('svc')!.noEndpointReason()).toBe(
      'upstream svc has no endpoints (dns nowhere.test A port 80: nxdomain: ENOTFOUND)',
    );
  });

  it('close() stops resolving: no query after it, nothing published from one in flight', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    dns.set('users.test', 'A', [{ address: '10.0.0.1', ttl: 1 }]);
    const r = run({ dns: 'users.test', port: 80, refresh: { min: '1s', max: '1s' } });
    await until(() => r.ids().length === 1);
    dns.set('users.test', 'A', 'drop');
    vi.advanceTimersByTime(1000);
    await until(() => dns.queries('users.test', 'A') === 2);
    await r.discovery.close();
    dns.set('users.test', 'A', [{ address: '10.0.0.2', ttl: 1 }]);
    vi.advanceTimersByTime(60_000);
    for (let i = 0; i < 20; i++) await new Promise((res) => setImmediate(res));
    expect(dns.queries('users.test', 'A')).toBe(2);
    expect(r.ids()).toEqual(['http://10.0.0.1']);
  });
});
