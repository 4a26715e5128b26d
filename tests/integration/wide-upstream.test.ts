/**
 * A wide upstream through the whole gateway, with real upstream servers: a replica sends traffic
 * to, and connects to, only the endpoints of its aperture's window; replicas numbered with
 * `replica` split the upstream between them; health checks keep connections only to the window.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { opener, svc } from '../helpers/discovery.ts';
import type { TestUpstream } from '../helpers/upstream.ts';

const { upstreams, gateway, closeAll } = opener();
afterEach(closeAll);

interface UpstreamView {
  aperture: { inUse: number; size: number; replica: { index: number; count: number } | null } | null;
  endpoints: { id: string; inUse: boolean; health: { rate: string } | null }[];
  pools: Record<string, { connected: number }>;
}

async function view(adminUrl: string): Promise<UpstreamView> {
  const body = (await (await fetch(`${adminUrl}/v1/upstreams`)).json()) as { upstreams: UpstreamView[] };
  return body.upstreams[0]!;
}

async function get(url: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await fetch(url);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
}

const servedBy = (list: readonly TestUpstream[]) =>
  list.filter((u) => u.requests.length > 0).map((u) => u.url);

describe('wide upstream (real servers)', () => {
  it('sends requests and opens connections only to the 12 endpoints of its window', async () => {
    const list = await upstreams(30);
    const gw = await gateway(svc({ endpoints: list.map((u) => u.url) }));
    await get(`${gw.url}/`, 120);
    const v = await view(gw.adminUrl);
    expect(v.aperture).toMatchObject({ inUse: 12, size: 12, replica: null });
    const inUse = v.endpoints.filter((e) => e.inUse).map((e) => e.id);
    expect(inUse).toHaveLength(12);
    // Round robin over the window: each of the 12 served 10, no other endpoint saw a request.
    expect(servedBy(list).sort()).toEqual([...inUse].sort());
    for (const u of list) expect(u.requests.length).toBe(inUse.includes(u.url) ? 10 : 0);
    // Endpoints outside the window never made a pool, let alone a connection.
    expect(Object.entries(v.pools).filter(([id, p]) => !inUse.includes(id) && p.connected > 0)).toEqual([]);
  });

  it('two replicas numbered 0 and 1 of 2 use disjoint halves that cover the upstream', async () => {
    const list = await upstreams(30);
    const config = svc({ endpoints: list.map((u) => u.url) });
    const windows: string[][] = [];
    for (const index of [0, 1]) {
      const gw = await gateway({ ...config, replica: { index, count: 2 } });
      await get(`${gw.url}/`, 45);
      const v = await view(gw.adminUrl);
      expect(v.aperture).toMatchObject({ inUse: 15, replica: { index, count: 2 } });
      windows.push(v.endpoints.filter((e) => e.inUse).map((e) => e.id));
    }
    expect(windows[0]!.filter((id) => windows[1]!.includes(id))).toEqual([]);
    expect(new Set([...windows[0]!, ...windows[1]!]).size).toBe(30);
    expect(servedBy(list)).toHaveLength(30);
  });

  it('checks the window at the interval and the rest at the idle rate, holding connections to the window only', async () => {
    const list = await upstreams(20);
    const gw = await gateway(
      svc({
        endpoints: list.map((u) => u.url),
        healthCheck: {
          path: '/health',
          interval: '100ms',
          idleInterval: '400ms',
          idleChecksPerSecond: 100,
          jitter: 0,
        },
      }),
    );
    await new Promise((r) => setTimeout(r, 1500));
    const v = await view(gw.adminUrl);
    const inUse = new Set(v.endpoints.filter((e) => e.inUse).map((e) => e.id));
    expect(inUse.size).toBe(12);
    for (const e of v.endpoints) expect(e.health?.rate).toBe(inUse.has(e.id) ? 'interval' : 'idle');
    const checks = (u: TestUpstream) => u.requests.filter((r) => r.url === '/health').length;
    for (const u of list) {
      if (inUse.has(u.url)) expect(checks(u)).toBeGreaterThanOrEqual(8);
      else {
        expect(checks(u)).toBeGreaterThanOrEqual(2);
        expect(checks(u)).toBeLessThanOrEqual(5);
      }
    }
    // A check of the window keeps its connection; one of the rest closes it after the answer.
    const open = (u: TestUpstream) =>
      new Promise<number>((r, j) => u.server.getConnections((e, n) => (e ? j(e) : r(n))));
    await vi.waitFor(async () => {
      for (const u of list) {
        if (inUse.has(u.url)) expect(await open(u)).toBe(1);
        else expect(await open(u)).toBe(0);
      }
    });
  });
});
