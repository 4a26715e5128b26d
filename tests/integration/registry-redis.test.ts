/**
 * Gateway replicas sharing the registry through a real redis-server: a change at one replica
 * reaches the others within a second; leases expire on Redis's clock with no gateway alive; a
 * restarted Redis is re-read in full (nothing lost, nothing invented); an unreachable or stalled
 * Redis never empties a replica's view; missed events are detected and repaired.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createRegistryProviderFactory } from '../../src/discovery/registry-provider.ts';
import { REGISTRY_CHANNEL } from '../../src/registry/redis-scripts.ts';
import { RENEWALS_ANNOUNCE_MS } from '../../src/registry/redis-store.ts';
import { RegistryUnavailableError } from '../../src/registry/store.ts';
import { countingSink, eventually, registration, VIA } from '../conformance/registry-store.ts';
import { monitorRedis, startRedis, type TestRedis } from '../helpers/redis.ts';
import {
  metricOf,
  newPrefix,
  type RedisReplica,
  redisConnection,
  redisReplica,
  SWEEP_MS,
  silentLogger,
  testMetrics,
} from '../helpers/registry.ts';

const TTL = 1500;

let redis: TestRedis;
const replicas: RedisReplica[] = [];

function replica(prefix: string, resyncInterval?: number): RedisReplica {
  const r = redisReplica(redis.url, prefix, {}, resyncInterval);
  replicas.push(r);
  return r;
}

const metric = (r: RedisReplica, name: string, labels: Record<string, string> = {}) =>
  metricOf(r.metrics, name, labels);

/** Two replicas of a fresh registry (key prefix returned too), both synced. */
async function twoReplicas(resyncInterval?: number): Promise<[RedisReplica, RedisReplica, string]> {
  const prefix = newPrefix();
  const a = replica(prefix, resyncInterval);
  const b = replica(prefix, resyncInterval);
  await Promise.all([a.store.synced(), b.store.synced()]);
  return [a, b, prefix];
}

/** The ids of a service in a replica's view. */
const ids = (r: RedisReplica, service = 'payments') => r.store.list(service).map((i) => i.id);

beforeAll(async () => {
  redis = await startRedis({ persistent: true });
});
afterEach(async () => {
  for (const r of replicas.splice(0)) await r.close();
  if (!redis.running) await redis.start();
});
afterAll(async () => {
  await redis?.close();
});

describe('two replicas on one Redis', () => {
  it('a registration, a drain and a deregistration through A reach B within 1 s', async () => {
    const [a, b] = await twoReplicas();
    const arrivals: { what: string; ms: number }[] = [];
    let sentAt = 0;
    b.store.watch('payments', (c) =>
      arrivals.push({ what: `${c.type}:${c.cause}`, ms: performance.now() - sentAt }),
    );

    sentAt = performance.now();
    await a.store.register(registration('payments', 'p-1', 60_000), 'gateway-a');
    await eventually(() => expect(ids(b)).toEqual(['p-1']), 1000);
    expect(b.store.get('payments', 'p-1')?.registeredVia).toBe('gateway-a');

    sentAt = performance.now();
    await a.store.drain('payments', 'p-1', 'gateway-a');
    await eventually(() => expect(b.store.get('payments', 'p-1')?.state).toBe('draining'), 1000);

    sentAt = performance.now();
    await a.store.deregister('payments', 'p-1');
    await eventually(() => expect(ids(b)).toEqual([]), 1000);

    expect(arrivals.map((x) => x.what)).toEqual([
      'upsert:registered',
      'upsert:drained',
      'remove:deregistered',
    ]);
    for (const x of arrivals) expect(x.ms).toBeLessThan(1000);
    // B measured how long the changes took to arrive.
    expect(await metric(b, 'peregrine_registry_propagation_seconds_count')).toBeGreaterThanOrEqual(3);
  });

  it('renewals through A move the lease B shows (within RENEWALS_ANNOUNCE_MS), and keep the instance alive at both', async () => {
    const [a, b] = await twoReplicas();
    // Long enough for B to show each renewal before the next one is due.
    const ttl = 3 * RENEWALS_ANNOUNCE_MS;
    await a.store.register(registration('payments', 'p-1', ttl), 'gateway-a');
    let interval = ttl / 3;
    for (let i = 0; i < 4; i++) {
      await sleep(interval);
      const renewed = await a.store.renew('payments', 'p-1', 'gateway-a');
      expect(renewed).toBeDefined();
      const since = Date.now();
      await eventually(
        () => expect(b.store.get('payments', 'p-1')?.expiresAt).toBe(renewed!.expiresAt),
        RENEWALS_ANNOUNCE_MS + 1000,
      );
      interval = Math.max(0, ttl / 3 - (Date.now() - since));
    }
    expect(ids(a)).toEqual(['p-1']);
    expect(ids(b)).toEqual(['p-1']);
  });

  it('renewals that come within a moment of each other share one script: one round trip to Redis', async () => {
    const [a] = await twoReplicas();
    const keys = Array.from({ length: 20 }, (_, n) => `p-${n}`);
    for (const id of keys) await a.store.register(registration('payments', id, 60_000), VIA);
    await a.store.register(registration('payments', 'gone', TTL), VIA);
    await a.store.deregister('payments', 'gone');
    // The renew script is the one whose first argument is the gateway's name as JSON.
    const monitor = await monitorRedis(redis.url);
    const scripts = () =>
      monitor.commands
        .filter(
          (args) => args[0]?.toLowerCase().startsWith('eval') && args[9] === JSON.stringify('gateway-b'),
        )
        .map((args) => args.slice(13));
    try {
      const before = new Map(keys.map((id) => [id, a.store.get('payments', id)!.expiresAt]));
      const renewed = await Promise.all(
        [...keys, 'gone'].map((id) => a.store.renew('payments', id, 'gateway-b')),
      );
      expect(renewed.at(-1)).toBeUndefined();
      for (const [n, id] of keys.entries()) {
        expect(renewed[n]?.id).toBe(id);
        expect(renewed[n]?.registeredVia).toBe('gateway-b');
        expect(renewed[n]!.expiresAt).toBeGreaterThanOrEqual(before.get(id)!);
        expect(a.store.get('payments', id)?.lastHeartbeat).toBe(renewed[n]!.lastHeartbeat);
      }
      await eventually(() => expect(scripts()).toHaveLength(1), 1000);
      // All of them in one argument, separated by spaces.
      expect(scripts()[0]).toEqual([[...keys, 'gone'].map((id) => `payments/${id}`).join(' ')]);
    } finally {
      monitor.close();
    }
  });

  it('a renewal of an instance the replica does not know yet answers it as Redis holds it, and re-reads', async () => {
    const [a, b, prefix] = await twoReplicas();
    await a.store.register(registration('payments', 'p-1', 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1']), 1000);
    // An instance written straight to Redis's data: no event, no revision; B's view lacks it.
    const field = async (hash: string) =>
      (await redis.command('HGET', `${prefix}registry:${hash}`, 'payments/p-1')).split('\r\n')[1]!;
    await redis.command('HSET', `${prefix}registry:spec`, 'payments/p-9', await field('spec'));
    await redis.command('HSET', `${prefix}registry:lease`, 'payments/p-9', await field('lease'));
    await redis.command('ZADD', `${prefix}registry:expiry`, String(Date.now() + 60_000), 'payments/p-9');
    expect(b.store.get('payments', 'p-9')).toBeUndefined();
    const renewed = await b.store.renew('payments', 'p-9', 'gateway-b');
    expect(renewed).toMatchObject({
      service: 'payments',
      id: 'p-9',
      address: a.store.get('payments', 'p-1')!.address,
      registeredVia: 'gateway-b',
    });
    expect(renewed!.expiresAt).toBeGreaterThan(Date.now() + 30_000);
    await eventually(() => expect(ids(b)).toEqual(['p-1', 'p-9']), 1000);
    expect(b.store.get('payments', 'p-9')?.lastHeartbeat).toBe(renewed!.lastHeartbeat);
  });

  it('renewals publish no event each: A announces them in batches, B takes the leases and hears no change', async () => {
    const [a, b, prefix] = await twoReplicas();
    const keys = ['p-1', 'p-2', 'p-3'];
    for (const [n, id] of keys.entries())
      await a.store.register(registration('payments', id, 60_000, { spec: { port: 8080 + n } }), VIA);
    await eventually(() => expect(ids(b)).toEqual(keys), 1000);
    const events: { op: string; key: string; leases?: Record<string, unknown> }[] = [];
    const listener = redisConnection(redis.url, prefix, testMetrics());
    const channel = `${prefix}${REGISTRY_CHANNEL}`;
    const subscriber = listener.subscriber();
    subscriber.client.on('message', (_: string, m: string) => events.push(JSON.parse(m)));
    await eventually(() => expect(subscriber.ready).toBe(true));
    await subscriber.client.subscribe(channel);
    const heard = { a: [] as string[], b: [] as string[] };
    a.store.watch('payments', (c) => heard.a.push(`${c.type}:${c.cause}`));
    b.store.watch('payments', (c) => heard.b.push(`${c.type}:${c.cause}`));
    const sink = countingSink();
    const provider = createRegistryProviderFactory(b.store, { healthIntervalMs: 60_000 })(
      {
        registry: 'payments',
        filter: {},
      },
      { upstream: 'payments', logger: silentLogger },
    );
    provider.start(sink);
    // Who reads the announcements: this test's listener and B; A, which announced them, does not.
    const parse = vi.spyOn(JSON, 'parse');
    const announcementsParsed = () =>
      parse.mock.calls.filter(([text]) => typeof text === 'string' && text.includes('"op":"renewals"'))
        .length;
    try {
      // Ten rounds in which every instance renews, as a fleet's heartbeats come.
      const rounds = 10;
      const renewals = rounds * keys.length;
      const last = new Map<string, number>();
      for (let round = 0; round < rounds; round++) {
        const renewed = await Promise.all(keys.map((id) => a.store.renew('payments', id, 'gateway-a')));
        for (const [n, id] of keys.entries()) last.set(id, renewed[n]!.expiresAt);
        if (round % 3 === 2) await sleep(SWEEP_MS);
      }
      // A renewal reaches B with the next announcement: up to RENEWALS_ANNOUNCE_MS after its batch.
      for (const [id, expiresAt] of last)
        await eventually(
          () => expect(b.store.get('payments', id)?.expiresAt).toBe(expiresAt),
          RENEWALS_ANNOUNCE_MS + 1000,
        );
      // No event per renewal: batches (at most one per sweep), naming every renewed instance.
      expect(events.filter((e) => e.op !== 'renewals')).toEqual([]);
      expect(events.length).toBeGreaterThan(0);
      expect(events.length).toBeLessThan(renewals);
      expect(new Set(events.flatMap((e) => Object.keys(e.leases ?? {})))).toEqual(
        new Set(keys.map((id) => `payments/${id}`)),
      );
      expect(heard).toEqual({ a: [], b: [] });
      expect(sink.calls).toEqual({ replace: 1, upsert: 0, remove: 0, fail: 0 });
      await eventually(() => expect(announcementsParsed()).toBe(2 * events.length), 1000);
      // A real change is heard once at each, and changes B's endpoint set once.
      await a.store.drain('payments', 'p-2', 'gateway-a');
      await eventually(() => expect(heard).toEqual({ a: ['upsert:drained'], b: ['upsert:drained'] }), 1000);
      expect(sink.calls).toEqual({ replace: 1, upsert: 1, remove: 0, fail: 0 });
      expect(await metric(b, 'peregrine_registry_resyncs_total', { reason: 'gap' })).toBe(0);
      // A kept count of the revisions all the same: B's change reaches it with no re-read.
      await b.store.drain('payments', 'p-3', 'gateway-b');
      await eventually(() => expect(a.store.get('payments', 'p-3')?.state).toBe('draining'), 1000);
      expect(await metric(a, 'peregrine_registry_resyncs_total', { reason: 'gap' })).toBe(0);
    } finally {
      parse.mockRestore();
      provider.close();
      await listener.close();
    }
  });

  it('an expiry is seen by both replicas, and counted once', async () => {
    const [a, b] = await twoReplicas();
    const removed: string[] = [];
    a.store.watch('payments', (c) => removed.push(`a:${c.type}:${c.cause}`));
    b.store.watch('payments', (c) => removed.push(`b:${c.type}:${c.cause}`));
    const { instance } = await a.store.register(registration('payments', 'p-1', TTL), 'gateway-a');
    await eventually(() => expect(ids(b)).toEqual(['p-1']), 1000);
    removed.length = 0;
    await eventually(() => {
      expect(ids(a)).toEqual([]);
      expect(ids(b)).toEqual([]);
    }, TTL + 3000);
    // Both saw it within a second of the lease's end (the sweep runs every SWEEP_MS).
    expect(Date.now() - instance.expiresAt).toBeLessThan(1000 + SWEEP_MS);
    expect(removed.sort()).toEqual(['a:remove:expired', 'b:remove:expired']);
    const expirations =
      (await metric(a, 'peregrine_registry_expirations_total')) +
      (await metric(b, 'peregrine_registry_expirations_total'));
    expect(expirations).toBe(1);
  });

  it('replicas following the events sweep when a lease can have ended: none while every lease has long to run', async () => {
    const [a, b, prefix] = await twoReplicas();
    for (const id of ['p-1', 'p-2']) await a.store.register(registration('payments', id, 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1', 'p-2']), 1000);
    // Past the sweeps of starting up (every SWEEP_MS until a replica follows the events).
    await sleep(5 * SWEEP_MS);
    const monitor = await monitorRedis(redis.url);
    try {
      await sleep(40 * SWEEP_MS);
      const ours = monitor.commands.filter((args) => args.some((arg) => arg.startsWith(prefix)));
      // Every SWEEP_MS, each replica used to run the sweep script: about 80 scripts here.
      expect(ours).toEqual([]);
    } finally {
      monitor.close();
    }
    expect(ids(a)).toEqual(['p-1', 'p-2']);
  });

  it('a lease registered through a replica that stops is expired on time by another, whose sweep it brought forward', async () => {
    const [a, b] = await twoReplicas();
    // B's next sweep is due when this lease ends, a minute away.
    await b.store.register(registration('payments', 'long', 60_000), VIA);
    await eventually(() => expect(ids(a)).toEqual(['long']), 1000);
    const { instance } = await a.store.register(registration('payments', 'short', TTL), 'gateway-a');
    await eventually(() => expect(ids(b)).toEqual(['long', 'short']), 1000);
    const removed: string[] = [];
    b.store.watch('payments', (c) => removed.push(`${c.type}:${c.cause}:${c.instance.id}`));
    await a.close();
    await eventually(() => expect(ids(b)).toEqual(['long']), TTL + 3000);
    expect(Date.now() - instance.expiresAt).toBeLessThan(1000);
    expect(removed).toEqual(['remove:expired:short']);
    expect(await metric(b, 'peregrine_registry_expirations_total')).toBe(1);
  });

  it('a fleet renewing all the time is announced to the others once per RENEWALS_ANNOUNCE_MS, not per sweep', async () => {
    const [a, b, prefix] = await twoReplicas();
    const keys = ['p-1', 'p-2', 'p-3'];
    for (const id of keys) await a.store.register(registration('payments', id, 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(keys), 1000);
    const listener = redisConnection(redis.url, prefix, testMetrics());
    const announcements: string[] = [];
    const subscriber = listener.subscriber();
    subscriber.client.on('message', (_: string, m: string) => {
      if (m.includes('"op":"renewals"')) announcements.push(m);
    });
    await eventually(() => expect(subscriber.ready).toBe(true));
    await subscriber.client.subscribe(`${prefix}${REGISTRY_CHANNEL}`);
    try {
      const started = performance.now();
      let renewals = 0;
      while (performance.now() - started < 2.5 * RENEWALS_ANNOUNCE_MS) {
        await Promise.all(keys.map((id) => a.store.renew('payments', id, 'gateway-a')));
        renewals += keys.length;
        await sleep(SWEEP_MS);
      }
      const elapsed = performance.now() - started;
      // Every SWEEP_MS (50 ms) this was an announcement: about 50 of them here.
      expect(renewals).toBeGreaterThan(30);
      expect(announcements.length).toBeGreaterThanOrEqual(1);
      expect(announcements.length).toBeLessThanOrEqual(Math.ceil(elapsed / RENEWALS_ANNOUNCE_MS));
      // The last renewals reach B all the same.
      for (const id of keys) {
        const expiresAt = a.store.get('payments', id)!.expiresAt;
        await eventually(
          () => expect(b.store.get('payments', id)?.expiresAt).toBe(expiresAt),
          RENEWALS_ANNOUNCE_MS + 1000,
        );
      }
    } finally {
      await listener.close();
    }
  });

  it("renewals leave the keys' TTLs alone while they cover every lease with half the grace to spare", async () => {
    const [a, , prefix] = await twoReplicas();
    const keys = ['p-1', 'p-2', 'p-3'];
    for (const id of keys) await a.store.register(registration('payments', id, 20_000), VIA);
    const monitor = await monitorRedis(redis.url);
    try {
      for (let round = 0; round < 5; round++) {
        await Promise.all(keys.map((id) => a.store.renew('payments', id, VIA)));
        await sleep(SWEEP_MS);
      }
      // Each renew script used to set the four keys' TTLs again: 20 PEXPIREs here.
      const pexpires = monitor.commands.filter(
        (args) => args[0]?.toLowerCase() === 'pexpire' && args[1]?.startsWith(prefix),
      );
      expect(pexpires).toEqual([]);
    } finally {
      monitor.close();
    }
    const latest = Math.max(...keys.map((id) => a.store.get('payments', id)!.expiresAt));
    for (const key of ['spec', 'lease', 'expiry', 'count']) {
      const pttl = Number((await redis.command('PTTL', `${prefix}registry:${key}`)).slice(1));
      expect(Date.now() + pttl).toBeGreaterThan(latest);
    }
  });

  it('a lease expires with no gateway alive: a replica started later never sees it', async () => {
    const prefix = newPrefix();
    const a = replica(prefix);
    await a.store.synced();
    await a.store.register(registration('payments', 'gone', TTL), VIA);
    await a.store.register(registration('payments', 'kept', 60_000), VIA);
    await a.close();
    await sleep(TTL + 200);
    // Nobody swept: the lease is still in Redis, past its time.
    expect(await redis.command('ZSCORE', `${prefix}registry:expiry`, 'payments/gone')).toMatch(/^\$\d+/);
    const c = replica(prefix);
    await c.store.synced();
    expect(ids(c)).toEqual(['kept']);
    expect(await c.store.renew('payments', 'gone', VIA)).toBeUndefined();
    // Every key carries a TTL covering its longest lease, so a registry left alone empties itself.
    const pttl = Number((await redis.command('PTTL', `${prefix}registry:spec`)).slice(1));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000 + 60_000);
  });
});

describe('Redis outages', () => {
  it('Redis down: every replica keeps its last-known view; writes fail fast; nothing is emptied', async () => {
    const [a, b] = await twoReplicas(200);
    await a.store.register(registration('payments', 'p-1', TTL), VIA);
    await a.store.register(registration('payments', 'p-2', 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1', 'p-2']), 1000);
    const removals: string[] = [];
    b.store.watch('payments', (c) => removals.push(c.instance.id));

    await redis.stop();
    await eventually(() => expect(b.store.health().synced).toBe(false), 2000);
    const started = performance.now();
    const write = await a.store.register(registration('payments', 'p-3', TTL), VIA).catch((e: unknown) => e);
    expect(write).toBeInstanceOf(RegistryUnavailableError);
    expect(performance.now() - started).toBeLessThan(1500);
    // Past p-1's lease and many resync intervals: the replicas still route to what they knew.
    await sleep(TTL + 500);
    expect(ids(a)).toEqual(['p-1', 'p-2']);
    expect(ids(b)).toEqual(['p-1', 'p-2']);
    expect(removals).toEqual([]);
    expect(await metric(a, 'peregrine_registry_store_errors_total', { operation: 'register' })).toBe(1);
    expect(
      await metric(b, 'peregrine_redis_connection_state', { connection: 'commands', state: 'ready' }),
    ).toBe(0);
  });

  it('a replica started while Redis is down starts empty, retries, and syncs once Redis is up', async () => {
    const prefix = newPrefix();
    const a = replica(prefix);
    await a.store.synced();
    await a.store.register(registration('payments', 'p-1', 60_000), VIA);
    await redis.stop();
    const late = replica(prefix);
    await sleep(300);
    expect(late.store.health().synced).toBe(false);
    expect(ids(late)).toEqual([]);
    await redis.start();
    await late.store.synced();
    expect(ids(late)).toEqual(['p-1']);
    expect(
      await metric(late, 'peregrine_registry_resyncs_total', { reason: 'start', outcome: 'success' }),
    ).toBe(1);
  });

  it('Redis restarted with its data: both replicas resync; nothing lost, nothing invented', async () => {
    const [a, b] = await twoReplicas();
    for (const id of ['p-1', 'p-2']) await a.store.register(registration('payments', id, 60_000), VIA);
    // p-3 expires while Redis is down: after the restart it must be gone, not kept.
    await a.store.register(registration('payments', 'p-3', TTL), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1', 'p-2', 'p-3']), 1000);

    await redis.stop();
    await sleep(TTL + 200);
    expect(ids(b)).toEqual(['p-1', 'p-2', 'p-3']);
    await redis.start();

    await eventually(async () => {
      expect(
        await metric(b, 'peregrine_registry_resyncs_total', { reason: 'reconnect', outcome: 'success' }),
      ).toBeGreaterThan(0);
    }, 5000);
    await eventually(() => {
      expect(ids(a)).toEqual(['p-1', 'p-2']);
      expect(ids(b)).toEqual(['p-1', 'p-2']);
    }, 3000);
    await eventually(() => expect(b.store.health().synced).toBe(true), 3000);
    // The subscription is live again: a change through B reaches A.
    await b.store.register(registration('payments', 'p-4', 60_000), 'gateway-b');
    await eventually(() => expect(ids(a)).toEqual(['p-1', 'p-2', 'p-4']), 1000);
  });

  it('Redis restarted empty: the replicas mirror it (no stale instances kept); re-registrations refill it', async () => {
    const [a, b] = await twoReplicas();
    await a.store.register(registration('payments', 'p-1', 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1']), 1000);
    // What a Redis that lost its data looks like to the replicas: a new data set (epoch).
    await redis.command('FLUSHALL');
    await a.store.register(registration('payments', 'p-2', 60_000), VIA);
    await eventually(() => {
      expect(ids(a)).toEqual(['p-2']);
      expect(ids(b)).toEqual(['p-2']);
    }, 2000);
    expect(
      await metric(b, 'peregrine_registry_resyncs_total', { reason: 'gap', outcome: 'success' }),
    ).toBeGreaterThan(0);
    // The old instance's client renews, gets "unknown", and registers again.
    expect(await a.store.renew('payments', 'p-1', VIA)).toBeUndefined();
    await a.store.register(registration('payments', 'p-1', 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1', 'p-2']), 1000);
  });

  it('a stalled Redis (reads time out) leaves the view as it was', async () => {
    const prefix = newPrefix();
    const a = replica(prefix, 100);
    await a.store.synced();
    await a.store.register(registration('payments', 'p-1', 60_000), VIA);
    const removals: string[] = [];
    a.store.watch('payments', (c) => removals.push(c.instance.id));
    const failuresBefore = await metric(a, 'peregrine_registry_resyncs_total', { outcome: 'failure' });
    // Every client's commands wait 2.5 s: the periodic re-reads (every 100 ms) time out at 1 s.
    await redis.command('CLIENT', 'PAUSE', '2500', 'ALL');
    await sleep(2000);
    expect(ids(a)).toEqual(['p-1']);
    expect(removals).toEqual([]);
    expect(await metric(a, 'peregrine_registry_resyncs_total', { outcome: 'failure' })).toBeGreaterThan(
      failuresBefore,
    );
    expect(await metric(a, 'peregrine_redis_errors_total', { kind: 'timeout' })).toBeGreaterThan(0);
    await sleep(1000);
    await eventually(async () => {
      await a.store.register(registration('payments', 'p-2', 60_000), VIA);
      expect(ids(a)).toEqual(['p-1', 'p-2']);
    }, 3000);
  });

  it('a missed event (a gap in the revisions) makes a replica re-read everything', async () => {
    const [a, b, prefix] = await twoReplicas();
    await a.store.register(registration('payments', 'p-1', 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1']), 1000);
    // A change B never hears of: written straight to Redis's data, its event not published.
    await redis.command(
      'HSET',
      `${prefix}registry:spec`,
      'payments/p-9',
      (await redis.command('HGET', `${prefix}registry:spec`, 'payments/p-1')).split('\r\n')[1]!,
    );
    await redis.command(
      'HSET',
      `${prefix}registry:lease`,
      'payments/p-9',
      (await redis.command('HGET', `${prefix}registry:lease`, 'payments/p-1')).split('\r\n')[1]!,
    );
    await redis.command('ZADD', `${prefix}registry:expiry`, String(Date.now() + 60_000), 'payments/p-9');
    await redis.command('INCR', `${prefix}registry:rev`);
    expect(ids(b)).toEqual(['p-1']);
    // The next event's revision skips one: B notices and re-reads.
    await a.store.register(registration('payments', 'p-2', 60_000), VIA);
    await eventually(() => expect(ids(b)).toEqual(['p-1', 'p-2', 'p-9']), 1000);
    expect(await metric(b, 'peregrine_registry_resyncs_total', { reason: 'gap', outcome: 'success' })).toBe(
      1,
    );
  });
});
