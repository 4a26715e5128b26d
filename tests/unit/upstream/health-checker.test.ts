/**
 * Active health checks against real HTTP servers on 127.0.0.1:0 whose answers the test flips.
 * Real time with short intervals; assertions wait for state changes and count the checks the
 * servers saw, so they do not depend on exact timing.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Cluster } from '../../../src/dataplane/upstream/cluster.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import {
  HealthChecker,
  nextCheckDelay,
  statusMatcher,
} from '../../../src/dataplane/upstream/health-checker.ts';
import { HealthCheckSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { tally, upstream } from './helpers.ts';

interface HealthServer {
  readonly url: string;
  /** Connections accepted, and open now. */
  readonly connections: { accepted: number; open: number };
  /** Status the health path answers with; 0 = never answer. */
  status: number;
  /** Arrival times (ms) of health checks. */
  readonly checks: number[];
  readonly hosts: string[];
  close(): Promise<void>;
}

const servers: HealthServer[] = [];
const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function healthServer(status = 200): Promise<HealthServer> {
  const hanging = new Set<import('node:http').ServerResponse>();
  const state = { status, checks: [] as number[], hosts: [] as string[] };
  const server: Server = createServer((req, res) => {
    if (req.url !== '/health') {
      res.writeHead(404).end();
      return;
    }
    state.checks.push(performance.now());
    state.hosts.push(req.headers.host ?? '');
    if (state.status === 0) {
      hanging.add(res);
      return;
    }
    res.writeHead(state.status, { 'content-type': 'text/plain' }).end('ok');
  });
  const connections = { accepted: 0, open: 0 };
  server.on('connection', (socket) => {
    connections.accepted++;
    connections.open++;
    socket.on('close', () => connections.open--);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const s: HealthServer = Object.assign(state, {
    connections,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const r of hanging) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  servers.push(s);
  return s;
}

function checker(
  list: readonly Endpoint[],
  cfg: Record<string, unknown>,
): { hc: HealthChecker; changes: string[] } {
  const changes: string[] = [];
  const hc = new HealthChecker(HealthCheckSchema.parse({ path: '/health', jitter: 0, ...cfg }), list, {
    random: Math.random,
    connectTimeoutMs: 1000,
    hooks: {
      onChange: (e, healthy) => changes.push(`${list.indexOf(e)} ${healthy ? 'healthy' : 'unhealthy'}`),
    },
  });
  closers.push(() => hc.close());
  return { hc, changes };
}

function clusterOf(urls: string[], extra: Record<string, unknown> = {}): Cluster {
  const c = new Cluster('svc', upstream({ endpoints: urls, ...extra }));
  closers.push(() => c.close());
  return c;
}

describe('HealthChecker (real servers)', () => {
  it('turns unhealthy after unhealthyThreshold failures and healthy after healthyThreshold passes', async () => {
    const s = await healthServer(200);
    const c = clusterOf([s.url], {
      healthCheck: {
        path: '/health',
        interval: '40ms',
        timeout: '500ms',
        unhealthyThreshold: 3,
        healthyThreshold: 2,
        jitter: 0,
      },
      balancer: { kind: 'round_robin', panicThreshold: 0 },
    });
    const e = c.endpoints[0]!;
    await vi.waitFor(() => expect(s.checks.length).toBeGreaterThanOrEqual(2), { timeout: 5000 });
    expect(e.healthy).toBe(true);
    expect(s.hosts[0]).toBe(e.host);

    s.status = 503;
    const before = s.checks.length;
    await vi.waitFor(() => expect(e.healthy).toBe(false), { timeout: 5000 });
    // The third failing check flipped it (one more check may have been in flight at the flip).
    expect(s.checks.length - before).toBeGreaterThanOrEqual(3);
    expect(s.checks.length - before).toBeLessThanOrEqual(4);
    expect(c.pick()).toBeUndefined(); // panic mode off: nothing eligible
    expect(c.describe().endpoints[0]).toMatchObject({
      state: 'unhealthy',
      health: { lastStatus: 503, lastError: 'unexpected status 503' },
    });

    s.status = 200;
    const again = s.checks.length;
    await vi.waitFor(() => expect(e.healthy).toBe(true), { timeout: 5000 });
    expect(s.checks.length - again).toBeGreaterThanOrEqual(2);
    expect(s.checks.length - again).toBeLessThanOrEqual(3);
    expect(c.pick()).toBe(e);
  });

  it('judges statuses by expectedStatuses (codes and ranges)', async () => {
    const teapot = await healthServer(418);
    const ok = await healthServer(204);
    const redirect = await healthServer(302);
    const missing = await healthServer(404);
    const eps = clusterOf([teapot.url, ok.url, redirect.url, missing.url]).endpoints;
    const { hc, changes: seen } = checker(eps, {
      interval: '30ms',
      unhealthyThreshold: 1,
      expectedStatuses: ['200-299', 418],
    });
    expect(seen).toEqual([]); // nothing runs before start()
    hc.start();
    await vi.waitFor(() => expect(redirect.checks.length).toBeGreaterThanOrEqual(2), { timeout: 5000 });
    await vi.waitFor(() => expect(ok.checks.length).toBeGreaterThanOrEqual(2), { timeout: 5000 });
    await vi.waitFor(() => expect(missing.checks.length).toBeGreaterThanOrEqual(2), { timeout: 5000 });
    expect(seen.sort()).toEqual(['2 unhealthy', '3 unhealthy']);
    expect(eps.map((e) => e.healthy)).toEqual([true, true, false, false]);
  });

  it('counts no answer within the timeout as a failure', async () => {
    const s = await healthServer(0);
    const eps = clusterOf([s.url]).endpoints;
    const { hc, changes } = checker(eps, { interval: '30ms', timeout: '80ms', unhealthyThreshold: 2 });
    const t0 = performance.now();
    hc.start();
    await vi.waitFor(() => expect(changes).toEqual(['0 unhealthy']), { timeout: 5000 });
    // Two checks, each given up after 80 ms, with a 30 ms wait between.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2 * 80 + 30 - 5);
    expect(hc.describe(eps[0]!)).toMatchObject({
      consecutiveFailures: 2,
      lastError: 'no answer within 80 ms',
    });
  });

  it('counts a refused connection as a failure', async () => {
    const s = await healthServer(200);
    const url = s.url;
    await s.close();
    servers.splice(servers.indexOf(s), 1);
    const eps = clusterOf([url]).endpoints;
    const { hc, changes } = checker(eps, { interval: '20ms', unhealthyThreshold: 2 });
    hc.start();
    await vi.waitFor(() => expect(changes).toEqual(['0 unhealthy']), { timeout: 5000 });
    expect(hc.describe(eps[0]!)?.lastError).toBe('ECONNREFUSED');
  });

  it('spaces checks by the interval within the jitter bounds', async () => {
    const s = await healthServer(200);
    const eps = clusterOf([s.url]).endpoints;
    const interval = 40;
    const jitter = 0.5;
    const { hc } = checker(eps, { interval: `${interval}ms`, jitter });
    hc.start();
    await vi.waitFor(() => expect(s.checks.length).toBeGreaterThanOrEqual(12), { timeout: 10_000 });
    const gaps = s.checks.slice(1).map((t, i) => t - s.checks[i]!);
    // A gap is the jittered wait plus one check's round trip; timers never fire early.
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(interval * (1 - jitter) - 2);
    expect(Math.min(...gaps)).toBeLessThan(interval * (1 + jitter) + 100);
    // Jitter spreads them: not all within a couple of ms of each other.
    expect(Math.max(...gaps) - Math.min(...gaps)).toBeGreaterThan(4);
  });

  it('keeps one connection for an endpoint in use; an idle-rate check opens one and closes it after the answer', async () => {
    const used = await healthServer(200);
    const idle = await healthServer(200);
    const eps = clusterOf([used.url, idle.url]).endpoints;
    const { hc } = checker(eps, { interval: '20ms', idleInterval: '30ms' });
    hc.focus([eps[0]!]);
    hc.start();
    await vi.waitFor(() => expect(idle.checks.length).toBeGreaterThanOrEqual(4), { timeout: 5000 });
    await vi.waitFor(() => expect(idle.connections.open).toBe(0), { timeout: 5000 });
    expect(idle.connections.accepted).toBe(idle.checks.length);
    expect(used.checks.length).toBeGreaterThanOrEqual(4);
    expect(used.connections.accepted).toBe(1);
    expect(used.connections.open).toBe(1);
    expect(hc.describe(eps[1]!)).toMatchObject({ rate: 'idle', lastStatus: 200 });
    // Out of use: its kept connection goes at its next check.
    hc.focus([]);
    await vi.waitFor(() => expect(used.connections.open).toBe(0), { timeout: 5000 });
  });

  it('close() stops checking', async () => {
    const s = await healthServer(200);
    const eps = clusterOf([s.url]).endpoints;
    const { hc } = checker(eps, { interval: '20ms' });
    hc.start();
    await vi.waitFor(() => expect(s.checks.length).toBeGreaterThanOrEqual(2), { timeout: 5000 });
    await hc.close();
    await hc.close();
    const n = s.checks.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(s.checks.length).toBe(n);
  });
});

describe('panic mode with active health checks (real servers)', () => {
  it('engages when too few endpoints pass, spreading over all; disengages when enough recover', async () => {
    const list = await Promise.all([healthServer(), healthServer(), healthServer(), healthServer()]);
    const c = clusterOf(
      list.map((s) => s.url),
      {
        healthCheck: {
          path: '/health',
          interval: '30ms',
          unhealthyThreshold: 1,
          healthyThreshold: 1,
          jitter: 0,
        },
        balancer: { kind: 'round_robin', panicThreshold: 50 },
      },
    );
    list[0]!.status = 500;
    list[1]!.status = 500;
    await vi.waitFor(() => expect(c.endpoints.filter((e) => !e.healthy)).toHaveLength(2), { timeout: 5000 });
    expect(c.panic).toBe(false);
    expect(new Set(tally(100, () => c.pick()).keys())).toEqual(
      new Set([c.endpoints[2]!.id, c.endpoints[3]!.id]),
    );

    list[2]!.status = 500;
    await vi.waitFor(() => expect(c.panic).toBe(true), { timeout: 5000 });
    expect(tally(100, () => c.pick()).size).toBe(4);
    expect(c.describe().endpoints.map((e) => e.eligible)).toEqual([true, true, true, true]);

    list[0]!.status = 200;
    await vi.waitFor(() => expect(c.panic).toBe(false), { timeout: 5000 });
    expect(new Set(tally(100, () => c.pick()).keys())).toEqual(
      new Set([c.endpoints[0]!.id, c.endpoints[3]!.id]),
    );
  });
});

describe('health check helpers', () => {
  it('nextCheckDelay stays within interval × [1 - jitter, 1 + jitter]', () => {
    expect(nextCheckDelay(10_000, 0.1, () => 0)).toBe(9000);
    expect(nextCheckDelay(10_000, 0.1, () => 0.5)).toBe(10_000);
    expect(nextCheckDelay(10_000, 0.1, () => 0.999_999)).toBe(11_000);
    expect(nextCheckDelay(10_000, 0, Math.random)).toBe(10_000);
    for (let i = 0; i < 1000; i++) {
      const d = nextCheckDelay(1000, 0.25, Math.random);
      expect(d).toBeGreaterThanOrEqual(750);
      expect(d).toBeLessThanOrEqual(1250);
    }
  });

  it('statusMatcher accepts codes and inclusive ranges', () => {
    const m = statusMatcher(['200-299', 418, '304-304']);
    expect([200, 299, 300, 304, 418, 503].map(m)).toEqual([true, true, false, true, true, false]);
  });
});

describe('HealthChecker: endpoints joining and leaving (real servers)', () => {
  it('checks an endpoint that joins, stops checking one that leaves, and leaves the others be', async () => {
    const stays = await healthServer(200);
    const leaves = await healthServer(200);
    const joins = await healthServer(503);
    const c = clusterOf([stays.url, leaves.url], {
      healthCheck: { path: '/health', interval: '30ms', unhealthyThreshold: 2, jitter: 0 },
      balancer: { kind: 'round_robin', panicThreshold: 0 },
    });
    await vi.waitFor(() => expect(leaves.checks.length).toBeGreaterThanOrEqual(2), { timeout: 5000 });
    const stopped = leaves.checks.length;
    c.removeEndpoint(leaves.url);
    c.addEndpoint({ url: joins.url });
    const joined = c.endpoint(joins.url)!;
    await vi.waitFor(() => expect(joined.healthy).toBe(false), { timeout: 5000 });
    const running = stays.checks.length;
    await vi.waitFor(() => expect(stays.checks.length).toBeGreaterThan(running + 3), { timeout: 5000 });
    // At most one check was in flight when it left.
    expect(leaves.checks.length - stopped).toBeLessThanOrEqual(1);
    expect(c.describe().endpoints.map((e) => [e.id, e.state])).toEqual([
      [stays.url, 'healthy'],
      [joins.url, 'unhealthy'],
    ]);
  });
});
