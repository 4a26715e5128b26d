/**
 * A wide upstream's cluster with its aperture: picks stay inside the window, the window follows
 * failures, load and set changes without disturbing the endpoints that stay, health checks run at
 * the full rate only for what the window covers, and the state shows in describe() and metrics.
 */
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { UpstreamSchema } from '../../../src/config/schema.ts';
import { replicaPosition } from '../../../src/dataplane/upstream/aperture.ts';
import { NO_TICKET } from '../../../src/dataplane/upstream/circuit-breaker.ts';
import { APERTURE_PERIOD_MS, type Cluster } from '../../../src/dataplane/upstream/cluster.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { createMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import { clusterFactory, ManualClock, tally } from './helpers.ts';

const { make, destroyAll } = clusterFactory();
afterEach(async () => {
  vi.useRealTimers();
  await destroyAll();
});

function origins(n: number, from = 0): string[] {
  return Array.from(
    { length: n },
    (_, i) => `http://127.0.${(from + i) >> 8}.${(from + i) & 255 || 1}:${10_000 + from + i}`,
  );
}

const REPLICA = replicaPosition(undefined, 'test-host/1');

function picked(c: Cluster, n = 2000): Set<string> {
  return new Set(tally(n, () => c.pick()).keys());
}

function inUse(c: Cluster): string[] {
  return c
    .describe()
    .endpoints.filter((e) => e.inUse)
    .map((e) => e.id);
}

describe.each([{ kind: 'round_robin' }, { kind: 'least_request' }, { kind: 'peak_ewma' }])(
  'aperture under $kind',
  (balancer) => {
    it('picks only among the window: minEndpoints of 100, the same ones describe() and the gauge show', async () => {
      const metrics = createMetrics({ exemplars: false, version: 'test' });
      const c = make({ endpoints: origins(100), balancer }, { replica: REPLICA, metrics });
      const window = inUse(c);
      expect(window).toHaveLength(12);
      expect(picked(c)).toEqual(new Set(window));
      expect(c.describe().aperture).toMatchObject({ inUse: 12, size: 12, baseSize: 12, replica: null });
      expect((await renderMetrics(metrics, undefined)).body).toContain(
        'peregrine_upstream_endpoints_in_use{upstream="svc"} 12',
      );
      // Pools are made at first use: none of the 100 has one yet, whatever was read above.
      expect(c.endpoints.filter((e) => e.openedPool !== undefined)).toEqual([]);
      const e = c.pick()!;
      expect(e.pool).toBe(e.openedPool);
      expect(c.endpoints.filter((x) => x.openedPool !== undefined)).toEqual([e]);
    });

    it('each endpoint joining or leaving moves the window by one at most; the endpoints that stay keep objects, pools and state', () => {
      const clock = new ManualClock();
      const c = make({ endpoints: origins(60), balancer }, { replica: REPLICA, now: clock.now });
      const objects = new Map(c.endpoints.map((e) => [e.id, e]));
      const pools = new Map(c.endpoints.map((e) => [e.id, e.pool]));
      for (const e of c.endpoints) {
        c.attemptStarted(e);
        c.attemptFinished(e, 'success', 200, 7, { breakerTicket: NO_TICKET });
      }
      const rtt = new Map(c.endpoints.map((e) => [e.id, e.rttMs]));
      let before = inUse(c);
      const step = (change: () => void) => {
        change();
        const after = inUse(c);
        expect(after).toHaveLength(12);
        expect(after.filter((id) => !before.includes(id)).length).toBeLessThanOrEqual(1);
        expect(
          before.filter((id) => !after.includes(id) && c.endpoint(id) !== undefined).length,
        ).toBeLessThanOrEqual(1);
        before = after;
      };
      for (const url of origins(30, 500)) step(() => c.addEndpoint({ url }));
      for (const e of [...c.endpoints].slice(0, 30)) step(() => c.removeEndpoint(e.id));
      for (const id of before) {
        if (!objects.has(id)) continue;
        expect(c.endpoint(id)).toBe(objects.get(id));
        expect(c.endpoint(id)!.pool).toBe(pools.get(id));
        expect(c.endpoint(id)!.rttMs).toBe(rtt.get(id));
      }
      expect(picked(c)).toEqual(new Set(before));
    });

    it('an ejected endpoint in the window is replaced by the next one on the ring', () => {
      const c = make(
        {
          endpoints: origins(50),
          balancer,
          outlierDetection: { consecutiveGatewayErrors: 1 },
          circuitBreaker: { enabled: false },
        },
        { replica: REPLICA },
      );
      const before = inUse(c);
      const victim = c.endpoint(before[0]!)!;
      c.attemptStarted(victim);
      c.attemptFinished(victim, 'reset', 0, 1, { breakerTicket: NO_TICKET });
      expect(victim.ejected).toBe(true);
      const after = inUse(c);
      expect(after).toHaveLength(12);
      expect(after).not.toContain(victim.id);
      expect(after.filter((id) => !before.includes(id))).toHaveLength(1);
      expect(picked(c)).toEqual(new Set(after));
    });
  },
);

describe('aperture: load, replicas, settings', () => {
  it('widens when attempts in flight pass size × maxLoad, and narrows back after a quiet period', () => {
    const clock = new ManualClock();
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    const c = make({ endpoints: origins(200) }, { replica: REPLICA, now: clock.now, logger });
    const started: Endpoint[] = [];
    for (let i = 0; i < 48; i++) {
      const e = c.pick()!;
      c.attemptStarted(e);
      started.push(e);
    }
    expect(c.describe().aperture?.size).toBe(12);
    const e = c.pick()!;
    c.attemptStarted(e);
    started.push(e);
    expect(c.describe().aperture?.size).toBe(19);
    expect(inUse(c)).toHaveLength(19);
    expect(lines.find((l) => String(l.msg).startsWith('aperture widened'))).toMatchObject({
      from: 12,
      to: 19,
    });
    // Load falls; after the period, the next finished attempt narrows it.
    for (const s of started) c.attemptFinished(s, 'success', 200, 5, { breakerTicket: NO_TICKET });
    expect(c.describe().aperture?.size).toBe(19);
    clock.advance(APERTURE_PERIOD_MS);
    const one = c.pick()!;
    c.attemptStarted(one);
    c.attemptFinished(one, 'success', 200, 5, { breakerTicket: NO_TICKET });
    // That period's peak was 49: it still needs 19.
    expect(c.describe().aperture?.size).toBe(19);
    clock.advance(APERTURE_PERIOD_MS);
    c.attemptStarted(one);
    c.attemptFinished(one, 'success', 200, 5, { breakerTicket: NO_TICKET });
    expect(c.describe().aperture?.size).toBe(12);
    expect(inUse(c)).toHaveLength(12);
    expect(lines.find((l) => l.msg === 'aperture narrowed')).toMatchObject({ from: 19, to: 12 });
  });

  it('replicas with index/count split the upstream between them', () => {
    const list = origins(90);
    const seen = new Map<string, number>();
    for (let index = 0; index < 3; index++) {
      const c = make({ endpoints: list }, { replica: replicaPosition({ index, count: 3 }) });
      expect(c.describe().aperture).toMatchObject({ size: 30, replica: { index, count: 3 } });
      for (const id of inUse(c)) seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    expect(seen.size).toBe(90);
    expect(new Set(seen.values())).toEqual(new Set([1]));
  });

  it('is off for consistent hashing (every replica must map a key alike) and when disabled', () => {
    const hashed = make(
      {
        endpoints: origins(40),
        balancer: { kind: 'consistent_hash', hashOn: { source: 'header', name: 'x-k' } },
      },
      { replica: REPLICA },
    );
    expect(hashed.describe().aperture).toBeNull();
    expect(inUse(hashed)).toHaveLength(40);
    const off = make(
      { endpoints: origins(40), balancer: { kind: 'peak_ewma', aperture: { enabled: false } } },
      { replica: REPLICA },
    );
    expect(off.describe().aperture).toBeNull();
    expect(picked(off, 4000).size).toBe(40);
    const bad = UpstreamSchema.safeParse({
      endpoints: origins(2),
      balancer: {
        kind: 'consistent_hash',
        hashOn: { source: 'client_address' },
        aperture: { minEndpoints: 3 },
      },
    });
    expect(bad.success).toBe(false);
  });

  it('health checks run at the interval for the window (and what it steps over), at the idle interval for the rest', () => {
    const c = make(
      { endpoints: origins(40), healthCheck: { interval: '10s', idleInterval: '60s' } },
      { replica: REPLICA },
    );
    const d = c.describe().endpoints;
    const window = new Set(inUse(c));
    for (const e of d) expect(e.health?.rate).toBe(window.has(e.id) ? 'interval' : 'idle');
    expect(d.filter((e) => e.health?.rate === 'interval')).toHaveLength(12);
  });
});
