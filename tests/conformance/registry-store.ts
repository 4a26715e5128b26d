/**
 * The RegistryStore contract, run against every implementation (registry-store.test.ts): leases
 * created, renewed, updated, drained, removed and expired; what `list`, `get`, `services` show;
 * what watchers hear (and what they do not: renewals); the size limits.
 *
 * Time: each harness says how lease time passes. The memory store runs on a fake clock; the Redis
 * store on Redis's own clock, so its tests use short real TTLs and wait with generous bounds.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { EndpointSink } from '../../src/discovery/provider.ts';
import { createRegistryProviderFactory } from '../../src/discovery/registry-provider.ts';
import {
  ALL_SERVICES,
  type Instance,
  type InstanceChange,
  type InstanceSpec,
  type Registration,
  RegistryLimitError,
  type RegistryStore,
  type StoreLimits,
} from '../../src/registry/store.ts';
import { silentLogger } from '../helpers/registry.ts';

export interface StoreHarness {
  readonly store: RegistryStore;
  /** Let `ms` of lease time pass, and the store notice what expired in it. */
  elapse(ms: number): Promise<void>;
  close(): Promise<void>;
}

export interface ConformanceOptions {
  /** Lease TTL the tests register with (ms). */
  readonly ttlMs: number;
  create(limits?: Partial<StoreLimits>): Promise<StoreHarness>;
}

export const VIA = 'gateway-a';

/** An endpoint sink that counts what it is told (an endpoint set published, changed, or failed). */
export function countingSink(): EndpointSink & { calls: Record<keyof EndpointSink, number> } {
  const calls = { replace: 0, upsert: 0, remove: 0, fail: 0 };
  return {
    calls,
    replace: () => void calls.replace++,
    upsert: () => void calls.upsert++,
    remove: () => void calls.remove++,
    fail: () => void calls.fail++,
  };
}

export function spec(overrides: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    address: '10.0.0.1',
    port: 8080,
    protocol: 'http',
    zone: null,
    version: null,
    weight: 1,
    metadata: {},
    ...overrides,
  };
}

export function registration(
  service: string,
  id: string,
  ttlMs: number,
  overrides: Partial<Omit<Registration, 'spec'>> & { spec?: Partial<InstanceSpec> } = {},
): Registration {
  return { service, id, state: 'active', ttlMs, ...overrides, spec: spec(overrides.spec) };
}

/** Wait until `check` passes (the memory store passes at once; Redis events take a moment). */
export async function eventually(check: () => void | Promise<void>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(10);
    }
  }
}

export function registryStoreConformance(name: string, opts: ConformanceOptions): void {
  describe(`RegistryStore conformance: ${name}`, () => {
    const ttl = opts.ttlMs;
    const open: StoreHarness[] = [];
    const harness = async (limits?: Partial<StoreLimits>): Promise<StoreHarness> => {
      const h = await opts.create(limits);
      open.push(h);
      await h.store.synced();
      return h;
    };
    const changes = (store: RegistryStore, service = ALL_SERVICES) => {
      const seen: InstanceChange[] = [];
      const stop = store.watch(service, (c) => seen.push(c));
      return {
        seen,
        stop,
        summary: () => seen.map((c) => `${c.type}:${c.cause}:${c.instance.service}/${c.instance.id}`),
      };
    };

    afterEach(async () => {
      for (const h of open.splice(0)) await h.close();
    });

    it('registers an instance: created, listed, summarised, and watchers hear of it', async () => {
      const { store } = await harness();
      const w = changes(store);
      const fields = {
        address: '10.1.2.3',
        port: 9000,
        protocol: 'https',
        zone: 'eu-1a',
        version: '1.4.2',
        weight: 5,
      } as const;
      const reg = registration('payments', 'p-1', ttl, { spec: { ...fields, metadata: { b: '2', a: '1' } } });
      const before = Date.now();
      const result = await store.register(reg, VIA);
      expect(result.outcome).toBe('created');
      const i = result.instance;
      expect(i).toMatchObject({
        service: 'payments',
        id: 'p-1',
        ...fields,
        metadata: { a: '1', b: '2' },
        state: 'active',
        ttlMs: ttl,
        registeredVia: VIA,
      });
      expect(i.expiresAt - i.lastHeartbeat).toBe(ttl);
      expect(i.registeredAt).toBe(i.lastHeartbeat);
      // Store clocks: the memory harness may run a fake clock; Redis's is real.
      if (name === 'redis') expect(Math.abs(i.lastHeartbeat - before)).toBeLessThan(2000);
      expect(store.list('payments')).toEqual([i]);
      expect(store.get('payments', 'p-1')).toEqual(i);
      expect(store.services()).toEqual([{ service: 'payments', instances: 1, active: 1, draining: 0 }]);
      expect(w.summary()).toEqual(['upsert:registered:payments/p-1']);
      expect(store.list('nobody')).toEqual([]);
      expect(store.get('payments', 'p-2')).toBeUndefined();
    });

    it('registering the same instance again renews its lease, silently', async () => {
      const { store, elapse } = await harness();
      const first = (await store.register(registration('payments', 'p-1', ttl), VIA)).instance;
      const w = changes(store);
      await elapse(Math.floor(ttl / 4));
      const again = await store.register(registration('payments', 'p-1', ttl), 'gateway-b');
      expect(again.outcome).toBe('renewed');
      expect(again.instance.expiresAt).toBeGreaterThan(first.expiresAt);
      expect(again.instance.registeredAt).toBe(first.registeredAt);
      expect(again.instance.registeredVia).toBe('gateway-b');
      await eventually(() => expect(store.get('payments', 'p-1')?.expiresAt).toBe(again.instance.expiresAt));
      expect(w.seen).toEqual([]);
    });

    it('a registration with a changed spec updates the instance and tells watchers', async () => {
      const { store } = await harness();
      await store.register(registration('payments', 'p-1', ttl), VIA);
      const w = changes(store);
      const updated = await store.register(
        registration('payments', 'p-1', ttl, { spec: { weight: 7 } }),
        VIA,
      );
      expect(updated.outcome).toBe('updated');
      expect(store.get('payments', 'p-1')?.weight).toBe(7);
      expect(w.summary()).toEqual(['upsert:updated:payments/p-1']);
      const meta = await store.register(
        registration('payments', 'p-1', ttl, { spec: { weight: 7, metadata: { canary: 'true' } } }),
        VIA,
      );
      expect(meta.outcome).toBe('updated');
      expect(w.seen.length).toBe(2);
    });

    it('renew extends the lease; an unknown lease is undefined (the client re-registers)', async () => {
      const { store, elapse } = await harness();
      const first = (await store.register(registration('payments', 'p-1', ttl), VIA)).instance;
      const w = changes(store);
      await elapse(Math.floor(ttl / 4));
      const renewed = await store.renew('payments', 'p-1', 'gateway-b');
      expect(renewed).toBeDefined();
      expect(renewed!.expiresAt).toBeGreaterThan(first.expiresAt);
      expect(renewed!.lastHeartbeat).toBeGreaterThan(first.lastHeartbeat);
      expect(renewed!.registeredVia).toBe('gateway-b');
      expect(renewed!.expiresAt - renewed!.lastHeartbeat).toBe(ttl);
      expect(store.get('payments', 'p-1')?.lastHeartbeat).toBe(renewed!.lastHeartbeat);
      expect(await store.renew('payments', 'p-2', VIA)).toBeUndefined();
      expect(await store.renew('orders', 'p-1', VIA)).toBeUndefined();
      expect(w.seen).toEqual([]);
    });

    it('renewals are no change: no watcher hears of them and no endpoint set is published again', async () => {
      const { store, elapse } = await harness();
      await store.register(registration('payments', 'p-1', ttl), VIA);
      await store.register(registration('payments', 'p-2', ttl, { spec: { port: 8081 } }), VIA);
      const w = changes(store);
      const sink = countingSink();
      const provider = createRegistryProviderFactory(store, { healthIntervalMs: 60_000 })(
        {
          registry: 'payments',
          filter: {},
        },
        { upstream: 'payments', logger: silentLogger },
      );
      provider.start(sink);
      expect(sink.calls).toEqual({ replace: 1, upsert: 0, remove: 0, fail: 0 });
      let last: Instance | undefined;
      for (let i = 0; i < 10; i++) {
        await elapse(Math.floor(ttl / 20));
        last = await store.renew('payments', 'p-1', VIA);
        expect(await store.renew('payments', 'p-2', VIA)).toBeDefined();
        expect((await store.register(registration('payments', 'p-1', ttl), VIA)).outcome).toBe('renewed');
      }
      expect(store.get('payments', 'p-1')?.lastHeartbeat).toBeGreaterThanOrEqual(last!.lastHeartbeat);
      // A real change afterwards is heard exactly once, so the silence above was not a deaf watcher.
      await store.drain('payments', 'p-2', VIA);
      await eventually(() => expect(w.summary()).toEqual(['upsert:drained:payments/p-2']));
      expect(sink.calls).toEqual({ replace: 1, upsert: 1, remove: 0, fail: 0 });
      provider.close();
    });

    it('heartbeats keep a lease alive past its TTL; silence expires it', async () => {
      const { store, elapse } = await harness();
      await store.register(registration('payments', 'kept', ttl), VIA);
      await store.register(registration('payments', 'silent', ttl), VIA);
      const w = changes(store);
      for (let i = 0; i < 4; i++) {
        await elapse(Math.floor(ttl / 3));
        expect(await store.renew('payments', 'kept', VIA)).toBeDefined();
      }
      await eventually(() => expect(store.list('payments').map((i) => i.id)).toEqual(['kept']));
      expect(w.summary()).toEqual(['remove:expired:payments/silent']);
      expect(await store.renew('payments', 'silent', VIA)).toBeUndefined();
      await elapse(ttl);
      await eventually(() => expect(store.list('payments')).toEqual([]));
      expect(store.services()).toEqual([]);
    });

    it('an expired lease is gone for every operation, swept or not', async () => {
      const { store, elapse } = await harness();
      await store.register(registration('payments', 'p-1', ttl), VIA);
      await elapse(ttl + 1);
      expect(await store.renew('payments', 'p-1', VIA)).toBeUndefined();
      expect(await store.drain('payments', 'p-1', VIA)).toBeUndefined();
      expect(await store.deregister('payments', 'p-1')).toBeUndefined();
      const again = await store.register(registration('payments', 'p-1', ttl), VIA);
      expect(again.outcome).toBe('created');
    });

    it('drain marks an instance draining without ending its lease', async () => {
      const { store } = await harness();
      const first = (await store.register(registration('payments', 'p-1', ttl), VIA)).instance;
      const w = changes(store, 'payments');
      const drained = await store.drain('payments', 'p-1', 'gateway-b');
      expect(drained?.state).toBe('draining');
      expect(drained?.expiresAt).toBe(first.expiresAt);
      expect(store.get('payments', 'p-1')?.state).toBe('draining');
      expect(store.services()).toEqual([{ service: 'payments', instances: 1, active: 0, draining: 1 }]);
      expect(w.summary()).toEqual(['upsert:drained:payments/p-1']);
      expect((await store.drain('payments', 'p-1', VIA))?.state).toBe('draining');
      expect(w.seen.length).toBe(1);
      // Heartbeats keep a draining instance draining.
      expect((await store.renew('payments', 'p-1', VIA))?.state).toBe('draining');
      expect(await store.drain('payments', 'nope', VIA)).toBeUndefined();
      // A registration says the state it wants.
      const back = await store.register(registration('payments', 'p-1', ttl), VIA);
      expect(back.outcome).toBe('updated');
      expect(back.instance.state).toBe('active');
      expect(w.summary().at(-1)).toBe('upsert:updated:payments/p-1');
      const viaPut = await store.register(registration('payments', 'p-1', ttl, { state: 'draining' }), VIA);
      expect(viaPut.outcome).toBe('updated');
      expect(w.summary().at(-1)).toBe('upsert:drained:payments/p-1');
    });

    it('deregister removes the instance and tells watchers; unknown is undefined', async () => {
      const { store } = await harness();
      await store.register(registration('payments', 'p-1', ttl), VIA);
      await store.register(registration('payments', 'p-2', ttl), VIA);
      const w = changes(store);
      const removed = await store.deregister('payments', 'p-1');
      expect(removed?.id).toBe('p-1');
      expect(store.list('payments').map((i) => i.id)).toEqual(['p-2']);
      expect(w.summary()).toEqual(['remove:deregistered:payments/p-1']);
      expect(await store.deregister('payments', 'p-1')).toBeUndefined();
      await store.deregister('payments', 'p-2');
      expect(store.services()).toEqual([]);
    });

    it('keeps services apart; list is sorted by id, services by name', async () => {
      const { store } = await harness();
      for (const id of ['c', 'a', 'b']) await store.register(registration('payments', id, ttl), VIA);
      await store.register(registration('orders', 'a', ttl, { spec: { port: 9999 } }), VIA);
      expect(store.list('payments').map((i) => i.id)).toEqual(['a', 'b', 'c']);
      expect(store.get('orders', 'a')?.port).toBe(9999);
      expect(store.get('payments', 'a')?.port).toBe(8080);
      expect(store.services().map((s) => s.service)).toEqual(['orders', 'payments']);
      await store.deregister('orders', 'a');
      expect(store.list('payments').length).toBe(3);
    });

    it('watch(service) hears that service only, watch(ALL) every one; unwatch stops both', async () => {
      const { store } = await harness();
      const one = changes(store, 'payments');
      const all = changes(store, ALL_SERVICES);
      await store.register(registration('payments', 'p-1', ttl), VIA);
      await store.register(registration('orders', 'o-1', ttl), VIA);
      expect(one.summary()).toEqual(['upsert:registered:payments/p-1']);
      expect(all.summary()).toEqual(['upsert:registered:payments/p-1', 'upsert:registered:orders/o-1']);
      one.stop();
      all.stop();
      await store.deregister('payments', 'p-1');
      expect(one.seen.length).toBe(1);
      expect(all.seen.length).toBe(2);
    });

    it('a watcher that throws does not stop the others or the change', async () => {
      const { store } = await harness();
      store.watch(ALL_SERVICES, () => {
        throw new Error('watcher bug');
      });
      const w = changes(store);
      await store.register(registration('payments', 'p-1', ttl), VIA);
      expect(w.seen.length).toBe(1);
      expect(store.list('payments').length).toBe(1);
    });

    it('refuses more instances per service, and more services, than its limits', async () => {
      const { store } = await harness({ maxInstancesPerService: 2, maxServices: 2 });
      await store.register(registration('payments', 'p-1', ttl), VIA);
      await store.register(registration('payments', 'p-2', ttl), VIA);
      const tooMany = await store
        .register(registration('payments', 'p-3', ttl), VIA)
        .catch((e: unknown) => e);
      expect(tooMany).toBeInstanceOf(RegistryLimitError);
      expect((tooMany as RegistryLimitError).reason).toBe('too_many_instances');
      // Renewing and updating existing instances is still fine.
      expect(
        (await store.register(registration('payments', 'p-2', ttl, { spec: { weight: 3 } }), VIA)).outcome,
      ).toBe('updated');
      await store.register(registration('orders', 'o-1', ttl), VIA);
      const services = await store.register(registration('users', 'u-1', ttl), VIA).catch((e: unknown) => e);
      expect((services as RegistryLimitError).reason).toBe('too_many_services');
      // Freed slots can be taken again.
      await store.deregister('payments', 'p-1');
      expect((await store.register(registration('payments', 'p-3', ttl), VIA)).outcome).toBe('created');
      await store.deregister('orders', 'o-1');
      expect((await store.register(registration('users', 'u-1', ttl), VIA)).outcome).toBe('created');
      expect(store.list('payments').map((i: Instance) => i.id)).toEqual(['p-2', 'p-3']);
    });

    it('reports its health and closes twice without error', async () => {
      const h = await harness();
      const health = h.store.health();
      expect(health.store).toBe(h.store.kind);
      expect(health.synced).toBe(true);
      expect(health.lastSync).not.toBeNull();
      await h.store.close();
      await h.store.close();
    });
  });
}
