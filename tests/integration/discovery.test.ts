/**
 * Live endpoint sets through the whole gateway, with real upstream servers: endpoints added and
 * removed (by config reload and by DNS) under a steady load with no failed request, in-flight
 * requests on removed endpoints finishing, a DNS-discovered upstream that keeps serving through
 * NXDOMAIN, and a registry upstream in a gateway without a registry.
 */
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createDnsProviderFactory } from '../../src/discovery/dns-provider.ts';
import { opener, served, steadyLoad, svc } from '../helpers/discovery.ts';
import { type DnsTestServer, startDnsServer } from '../helpers/dns-server.ts';
import { writeConfig } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const { track, upstreams, gateway, closeAll } = opener();
afterEach(closeAll);

describe('endpoints added and removed under load (config reload)', () => {
  it('no request fails, in-flight requests on removed endpoints finish, and the cluster is the same object throughout', async () => {
    const [u1, u2, u3, u4] = await upstreams(4);
    const urls = (list: TestUpstream[]) => list.map((u) => u.url);
    const gw = await gateway(svc({ endpoints: urls([u1!, u2!]) }), { asFile: true });
    const cluster = gw.gateway.store.current.clusters.get('svc')!;
    const reloadTo = async (list: TestUpstream[]) => {
      writeConfig(gw.configFile!, svc({ endpoints: urls(list) }));
      expect((await gw.gateway.reload('test')).ok).toBe(true);
      expect(gw.gateway.store.current.clusters.get('svc')).toBe(cluster);
      // The live set keeps the order endpoints joined in.
      expect(cluster.endpoints.map((e) => e.id).sort()).toEqual(urls(list).sort());
    };
    const load = steadyLoad(`${gw.url}/delay/5`, 6);
    const progress = async (n: number) => {
      const total = () => [u1!, u2!, u3!, u4!].reduce((sum, u) => sum + served(u, '/delay/5'), 0);
      const target = total() + n;
      await vi.waitFor(() => expect(total()).toBeGreaterThanOrEqual(target), {
        timeout: 10_000,
        interval: 10,
      });
    };

    await progress(40);
    await reloadTo([u1!, u2!, u3!]);
    await progress(40);
    // Slow requests, some of them on u1, in flight while u1 is taken out.
    const slow = Array.from({ length: 6 }, () => fetch(`${gw.url}/delay/400`).then((r) => r.status));
    await vi.waitFor(() => expect(served(u1!, '/delay/400')).toBeGreaterThanOrEqual(1), { timeout: 5000 });
    await reloadTo([u2!, u3!]);
    const onU1 = served(u1!, '/delay/5');
    await progress(40);
    await reloadTo([u3!, u4!]);
    await progress(40);
    await reloadTo([u4!, u1!]);
    await progress(40);
    await reloadTo([u1!, u2!, u3!, u4!]);
    await progress(60);

    const statuses = await load.stop();
    expect(await Promise.all(slow)).toEqual([200, 200, 200, 200, 200, 200]);
    const slowOnU1 = u1!.requests.filter((r) => r.url === '/delay/400');
    expect(slowOnU1.length).toBeGreaterThanOrEqual(1);
    expect(slowOnU1.every((r) => !r.aborted)).toBe(true);
    expect(statuses.length).toBeGreaterThanOrEqual(300);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Every endpoint took traffic while it was in the set; u1 none while it was out.
    for (const u of [u1!, u2!, u3!, u4!]) expect(served(u, '/delay/5')).toBeGreaterThan(0);
    expect(served(u1!, '/delay/5')).toBeGreaterThan(onU1);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toContain('peregrine_discovery_endpoints{upstream="svc",source="static"} 4');
  });

  it('a reload that changes only the endpoint list keeps the cluster and its breaker (an open circuit stays open)', async () => {
    const [good] = await upstreams(1);
    const failing = await startUpstream((_req, res) => {
      res.writeHead(503).end();
      return true;
    });
    track(failing);
    const breaker = { consecutiveFailures: 2, openDuration: '30s' };
    const gw = await gateway(svc({ endpoints: [failing.url], circuitBreaker: breaker }), { asFile: true });
    const cluster = gw.gateway.store.current.clusters.get('svc')!;
    for (let i = 0; i < 2; i++) expect((await fetch(`${gw.url}/x`)).status).toBe(503);
    expect((await fetch(`${gw.url}/x`)).headers.get('x-peregrine-reason')).toBe('CIRCUIT_OPEN');

    writeConfig(gw.configFile!, svc({ endpoints: [good!.url], circuitBreaker: breaker }));
    expect((await gw.gateway.reload('test')).ok).toBe(true);
    expect(gw.gateway.store.current.clusters.get('svc')).toBe(cluster);
    expect(cluster.endpoints.map((e) => e.id)).toEqual([good!.url]);
    const res = await fetch(`${gw.url}/x`);
    expect(res.headers.get('x-peregrine-reason')).toBe('CIRCUIT_OPEN');
    expect(good!.requests).toHaveLength(0);
  });
});

describe('DNS discovery through the gateway (a real DNS server, SRV records)', () => {
  async function dnsServer(): Promise<DnsTestServer> {
    const d = await startDnsServer();
    track(d);
    return d;
  }

  function srv(dns: DnsTestServer, list: TestUpstream[]): void {
    dns.set(
      '_http._tcp.svc.test',
      'SRV',
      list.map((u) => ({ target: 'host.test', port: u.port, ttl: 1 })),
    );
  }

  it('follows the records under load; NXDOMAIN keeps the last known endpoints serving; removals mark requests in flight', async () => {
    const [u1, u2, u3] = await upstreams(3);
    const dns = await dnsServer();
    dns.set('host.test', 'A', [{ address: '127.0.0.1', ttl: 1 }]);
    srv(dns, [u1!, u2!]);
    const spans = new InMemorySpanExporter();
    const gw = await gateway(
      {
        ...svc({
          discovery: { dns: '_http._tcp.svc.test', type: 'SRV', refresh: { min: '50ms', max: '200ms' } },
        }),
        telemetry: { tracing: { sampleRatio: 1 } },
      },
      {
        spanProcessor: new SimpleSpanProcessor(spans),
        providers: { dns: createDnsProviderFactory({ servers: [dns.server], timeoutMs: 500, tries: 1 }) },
      },
    );
    const ids = () => gw.gateway.store.current.clusters.get('svc')!.endpoints.map((e) => e.id);
    await vi.waitFor(() => expect(ids()).toEqual([u1!.url, u2!.url]), { timeout: 5000 });
    expect((await fetch(`${gw.adminUrl}/readyz`)).status).toBe(200);

    const load = steadyLoad(`${gw.url}/delay/5`, 4);
    const slow = Array.from({ length: 4 }, () => fetch(`${gw.url}/delay/500`).then((r) => r.status));
    await vi.waitFor(() => expect(served(u1!, '/delay/500')).toBeGreaterThanOrEqual(1), { timeout: 5000 });
    srv(dns, [u2!, u3!]);
    await vi.waitFor(() => expect(ids()).toEqual([u2!.url, u3!.url]), { timeout: 5000 });
    await vi.waitFor(() => expect(served(u3!, '/delay/5')).toBeGreaterThan(20), { timeout: 10_000 });
    // Read once the requests already sent to u1 when the set changed (up to the load's 4) are done.
    const onU1 = served(u1!, '/delay/5');

    dns.set('_http._tcp.svc.test', 'SRV', 'nxdomain');
    await vi.waitFor(
      async () => {
        const body = (await (await fetch(`${gw.adminUrl}/v1/upstreams`)).json()) as {
          upstreams: { discovery: { state: string; lastError: { reason: string } | null } }[];
        };
        expect(body.upstreams[0]!.discovery).toMatchObject({
          state: 'failing',
          lastError: { reason: 'nxdomain' },
        });
      },
      { timeout: 5000 },
    );
    const during = served(u2!, '/delay/5') + served(u3!, '/delay/5');
    await vi.waitFor(
      () => expect(served(u2!, '/delay/5') + served(u3!, '/delay/5')).toBeGreaterThan(during + 40),
      { timeout: 10_000 },
    );
    const statuses = await load.stop();
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(await Promise.all(slow)).toEqual([200, 200, 200, 200]);
    expect(served(u1!, '/delay/5')).toBe(onU1);
    expect(ids()).toEqual([u2!.url, u3!.url]);

    const ready = (await (await fetch(`${gw.adminUrl}/readyz`)).json()) as Record<string, unknown>;
    expect(ready).toMatchObject({ ready: true, upstreamSourcesPending: [], upstreamSourcesFailing: ['svc'] });
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /peregrine_discovery_refreshes_total\{upstream="svc",source="dns",outcome="nxdomain"\} [1-9]/,
    );
    expect(metrics).toContain('peregrine_discovery_stale{upstream="svc",source="dns"} 1');
    expect(metrics).toContain('peregrine_discovery_endpoints{upstream="svc",source="dns"} 2');
    // The requests that were on u1 when the answer dropped it (the slow ones, and whichever of the
    // load's were) carry the event on their span; no other request does.
    const removed = spans
      .getFinishedSpans()
      .filter((s) => s.events.some((e) => e.name === 'peregrine.endpoint_removed'));
    const slowMarked = removed.filter((s) => s.attributes['url.path'] === '/delay/500');
    expect(slowMarked.length).toBe(served(u1!, '/delay/500'));
    for (const s of removed)
      expect(s.events.find((e) => e.name === 'peregrine.endpoint_removed')!.attributes).toEqual({
        endpoint: u1!.url,
        source: 'dns',
      });
  });
});

describe('a registry upstream in a gateway without a registry', () => {
  it('starts, is ready, and answers 503 NO_HEALTHY_ENDPOINT saying why', async () => {
    const gw = await gateway(svc({ discovery: { registry: 'orders', filter: { zone: 'eu-1' } } }));
    const res = await fetch(`${gw.url}/x`);
    expect(res.status).toBe(503);
    expect(res.headers.get('x-peregrine-reason')).toBe('NO_HEALTHY_ENDPOINT');
    expect(((await res.json()) as { detail: string }).detail).toBe(
      'upstream svc has no endpoints (registry service orders: unavailable: no service registry runs in this gateway)',
    );
    const ready = await fetch(`${gw.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ upstreamSourcesFailing: ['svc'] });
  });
});
