import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ConfigInput,
  ConfigSchema,
  type DynamicConfig,
  dynamicPart,
  RouteSchema,
} from '../../../src/config/schema.ts';
import { compileSnapshot, compileSnapshotInSlices, type Snapshot } from '../../../src/control/snapshot.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { Discovery } from '../../../src/discovery/discovery.ts';
import { createMetrics } from '../../../src/telemetry/metrics.ts';

const deps = { metrics: createMetrics({ exemplars: false, version: 't' }), logger: pino({ enabled: false }) };

const A = 'http://127.0.0.1:9001';
const B = 'http://127.0.0.1:9002';

function dynamic(upstreams: ConfigInput['upstreams']): DynamicConfig {
  const names = Object.keys(upstreams ?? {});
  return dynamicPart(
    ConfigSchema.parse({
      listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
      upstreams,
      routes: names.map((n) => ({ name: n, match: { path: `/${n}` }, upstream: n })),
    }),
  );
}

const snapshots: Snapshot[] = [];
afterEach(async () => {
  for (const s of snapshots.splice(0)) {
    s.auth.close();
    await Promise.all([...s.clusters.values()].map((c) => c.destroy()));
  }
});

function compile(config: DynamicConfig, previous?: Snapshot): ReturnType<typeof compileSnapshot> {
  const result = compileSnapshot(config, (previous?.version ?? 0) + 1, previous, deps);
  snapshots.push(result.snapshot);
  return result;
}

const isOpen = (e: Endpoint): boolean => !e.pool.closed && !e.pool.destroyed;

describe('compileSnapshot: endpoints across a reload', () => {
  it('a policy change retires the cluster but the new one shares its endpoints; closing the retired one keeps them open', async () => {
    const first = compile(dynamic({ svc: { endpoints: [A, B] } })).snapshot;
    const old = first.clusters.get('svc')!;
    const second = compile(dynamic({ svc: { endpoints: [A, B], retries: { maxAttempts: 4 } } }), first);
    const next = second.snapshot.clusters.get('svc')!;
    expect(next).not.toBe(old);
    expect(second.retired).toEqual([old]);
    expect(next.endpoints).toEqual(old.endpoints);
    expect(next.endpoints[0]).toBe(old.endpoints[0]);

    await Promise.all(second.retired.map((c) => c.close()));
    second.retire();
    expect(next.endpoints.every(isOpen)).toBe(true);
  });

  it('an unchanged upstream keeps its Cluster; a removed one is retired and its pools close', async () => {
    const first = compile(dynamic({ a: { endpoints: [A] }, b: { endpoints: [B] } })).snapshot;
    const second = compile(dynamic({ a: { endpoints: [A] } }), first);
    expect(second.snapshot.clusters.get('a')).toBe(first.clusters.get('a'));
    expect(second.retired).toEqual([first.clusters.get('b')]);
    await Promise.all(second.retired.map((c) => c.close()));
    expect(isOpen(first.clusters.get('b')!.endpoints[0]!)).toBe(false);
  });

  it('a compile that fails leaves the serving snapshot as it was: endpoints open, state unchanged', async () => {
    const first = compile(dynamic({ a: { endpoints: [A] }, b: { endpoints: [B] } })).snapshot;
    const a = first.clusters.get('a')!.endpoints[0]!;
    a.healthy = false;
    const bad = dynamic({ a: { endpoints: [A], retries: { maxAttempts: 3 } }, b: { endpoints: [B] } });
    // Past validation, as a bug would: the pool constructor throws for the second upstream.
    (bad.upstreams.b!.pool as { connections: number }).connections = -1;
    expect(() => compileSnapshot(bad, 2, first, deps)).toThrow(/connections/);
    await new Promise((r) => setTimeout(r, 10));
    // The new cluster for `a` had taken `a` over (and, without health checks, made it healthy).
    expect(a.healthy).toBe(false);
    expect(isOpen(a)).toBe(true);
    expect(first.clusters.get('a')!.endpoints).toEqual([a]);
    // And the next good reload still takes the endpoint over.
    const good = compile(
      dynamic({ a: { endpoints: [A], retries: { maxAttempts: 3 } }, b: { endpoints: [B] } }),
      first,
    );
    expect(good.snapshot.clusters.get('a')!.endpoints[0]).toBe(a);
  });

  it('the fingerprint is the policy: an endpoint-only change keeps the cluster, and the discovery sync applies the list as a diff', async () => {
    const discovery = new Discovery({ ...deps, factories: { dns: () => ({ start() {}, close() {} }) } });
    const first = compile(dynamic({ a: { endpoints: [A, B] } })).snapshot;
    discovery.sync(first);
    const cluster = first.clusters.get('a')!;
    const [a, b] = cluster.endpoints;
    const second = compile(
      dynamic({ a: { endpoints: [{ url: A, weight: 7 }, 'http://127.0.0.1:9003'] } }),
      first,
    );
    expect(second.snapshot.clusters.get('a')).toBe(cluster);
    expect(second.retired).toEqual([]);
    discovery.sync(second.snapshot);
    expect(cluster.endpoints.map((e) => [e.id, e.weight])).toEqual([
      [A, 7],
      ['http://127.0.0.1:9003', 1],
    ]);
    expect(cluster.endpoints[0]).toBe(a);
    await new Promise((r) => setTimeout(r, 10));
    expect(isOpen(b!)).toBe(false);
    await discovery.close();
  });
});

describe('compileSnapshotInSlices', () => {
  it('gives the event loop turns while it compiles, and compiles what compileSnapshot does', async () => {
    const upstreams = Object.fromEntries(
      Array.from({ length: 20 }, (_, i) => [`u${i}`, { endpoints: [`http://127.0.0.1:${9100 + i}`] }]),
    );
    const config = dynamic(upstreams);
    config.routes = Array.from({ length: 300 }, (_, i) =>
      RouteSchema.parse({
        name: `r${i}`,
        upstream: `u${i % 20}`,
        match: i % 3 === 0 ? { host: `h${i}.example.com` } : { path: `/p${i}` },
      }),
    );
    let turns = 0;
    let running = true;
    const tick = (): void => {
      turns++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    // A slice of 0 ms ends at every step: one per route, host and upstream.
    const result = await compileSnapshotInSlices(config, 1, undefined, deps, 0);
    running = false;
    snapshots.push(result.snapshot);
    expect(turns).toBeGreaterThan(300);
    const reference = compile(config).snapshot;
    expect(result.snapshot.routes.routes.map((r) => r.name)).toEqual(
      reference.routes.routes.map((r) => r.name),
    );
    expect([...result.snapshot.clusters.keys()]).toEqual([...reference.clusters.keys()]);
    expect(result.snapshot.routes.match('h3.example.com', '/x', 'GET', {})?.route.name).toBe('r3');
  });
});
