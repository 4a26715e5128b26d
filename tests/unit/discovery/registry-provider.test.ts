/**
 * The registry provider over a real memory store (fake lease clock): what it publishes for
 * registrations, drains, deregistrations, expiries and filter changes, one delta per change; and,
 * with the store's health driven by the test, that an out-of-sync store leaves the endpoints alone.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { DiscoveredEndpoint, EndpointProvider, EndpointSink } from '../../../src/discovery/provider.ts';
import { createRegistryProviderFactory } from '../../../src/discovery/registry-provider.ts';
import type { RegistryFilter } from '../../../src/discovery/schema.ts';
import type { InstanceSpec, RegistryStore, StoreHealth } from '../../../src/registry/store.ts';
import { type FakeClockStore, memoryStore, silentLogger } from '../../helpers/registry.ts';

type Publication =
  | { replace: string[] }
  | { upsert: string; state?: string; weight?: number }
  | { remove: string }
  | { fail: string };

/** A sink that records what it was told, endpoints shortened to `url state weight`. */
function recordingSink(): EndpointSink & { log: Publication[]; take(): Publication[] } {
  const log: Publication[] = [];
  const short = (e: DiscoveredEndpoint) => `${e.url} ${e.state} ${e.weight}`;
  return {
    log,
    replace: (list) => log.push({ replace: list.map(short).sort() }),
    upsert: (e) => log.push({ upsert: short(e) }),
    remove: (url) => log.push({ remove: url }),
    fail: (reason, detail) => log.push({ fail: `${reason}: ${detail}` }),
    take: () => log.splice(0),
  };
}

const open: { close(): unknown }[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const o of open.splice(0).reverse()) await o.close();
});

function fakeClockStore(): FakeClockStore {
  const s = memoryStore();
  open.push(s);
  return s;
}

function spec(port: number, extra: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    address: '10.0.0.1',
    port,
    protocol: 'http',
    zone: null,
    version: null,
    weight: 1,
    metadata: {},
    ...extra,
  };
}

async function register(
  store: RegistryStore,
  id: string,
  s: InstanceSpec,
  opts: { service?: string; state?: 'active' | 'draining'; ttlMs?: number } = {},
): Promise<void> {
  await store.register(
    {
      service: opts.service ?? 'users',
      id,
      spec: s,
      state: opts.state ?? 'active',
      ttlMs: opts.ttlMs ?? 10_000,
    },
    'gw-test',
  );
}

function provide(
  store: RegistryStore,
  filter: RegistryFilter = {},
  healthIntervalMs?: number,
): { provider: EndpointProvider; sink: ReturnType<typeof recordingSink> } {
  const provider = createRegistryProviderFactory(store, { healthIntervalMs })(
    { registry: 'users', filter },
    { upstream: 'svc', logger: silentLogger },
  );
  open.push(provider);
  const sink = recordingSink();
  provider.start(sink);
  return { provider, sink };
}

describe('registry provider over a memory store', () => {
  it('publishes the matching instances at once, then one delta per change', async () => {
    const { store, elapse } = fakeClockStore();
    await register(store, 'u1', spec(8001, { zone: 'eu-1' }));
    await register(store, 'u2', spec(8002, { zone: 'eu-2' }));
    await register(store, 'o1', spec(9001, { zone: 'eu-1' }), { service: 'orders' });
    const { sink, provider } = provide(store, { zone: 'eu-1' });
    expect(sink.take()).toEqual([{ replace: ['http://10.0.0.1:8001 active 1'] }]);

    await register(store, 'u3', spec(8003, { zone: 'eu-1', weight: 5 }));
    await register(store, 'u4', spec(8004, { zone: 'eu-2' })); // filtered out: nothing
    await register(store, 'o2', spec(9002, { zone: 'eu-1' }), { service: 'orders' }); // another service
    expect(sink.take()).toEqual([{ upsert: 'http://10.0.0.1:8003 active 5' }]);

    await store.renew('users', 'u3', 'gw-test'); // a renewal is not a change
    await store.drain('users', 'u3', 'gw-test');
    expect(sink.take()).toEqual([{ upsert: 'http://10.0.0.1:8003 draining 5' }]);

    await store.deregister('users', 'u3');
    expect(sink.take()).toEqual([{ remove: 'http://10.0.0.1:8003' }]);

    // Moved out of the filter (a new zone), then back in on another port.
    await register(store, 'u1', spec(8001, { zone: 'eu-2' }));
    expect(sink.take()).toEqual([{ remove: 'http://10.0.0.1:8001' }]);
    await register(store, 'u1', spec(8011, { zone: 'eu-1' }));
    expect(sink.take()).toEqual([{ upsert: 'http://10.0.0.1:8011 active 1' }]);
    await register(store, 'u1', spec(8012, { zone: 'eu-1' }));
    expect(sink.take()).toEqual([
      { remove: 'http://10.0.0.1:8011' },
      { upsert: 'http://10.0.0.1:8012 active 1' },
    ]);

    // Silence: the lease expires, the endpoint goes.
    await elapse(10_001);
    expect(sink.log).toContainEqual({ remove: 'http://10.0.0.1:8012' });
    expect(provider.describe?.()).toMatchObject({
      service: 'users',
      filter: { zone: 'eu-1' },
      instances: 0,
      store: { store: 'memory', synced: true },
    });
  });

  it('filters on version and metadata too', async () => {
    const { store } = fakeClockStore();
    await register(store, 'a', spec(8001, { version: 'v2', metadata: { canary: 'true', rack: 'r1' } }));
    await register(store, 'b', spec(8002, { version: 'v2', metadata: { canary: 'false' } }));
    await register(store, 'c', spec(8003, { version: 'v1', metadata: { canary: 'true' } }));
    const { sink } = provide(store, { version: 'v2', metadata: { canary: 'true' } });
    expect(sink.take()).toEqual([{ replace: ['http://10.0.0.1:8001 active 1'] }]);
  });

  it('two instances on one origin are one endpoint: it stays while either does, active before draining', async () => {
    const { store } = fakeClockStore();
    await register(store, 'old', spec(8001, { weight: 2 }), { state: 'draining' });
    const { sink } = provide(store);
    expect(sink.take()).toEqual([{ replace: ['http://10.0.0.1:8001 draining 2'] }]);
    await register(store, 'new', spec(8001, { weight: 3 }));
    expect(sink.take()).toEqual([{ upsert: 'http://10.0.0.1:8001 active 3' }]);
    await store.deregister('users', 'old');
    expect(sink.take()).toEqual([{ upsert: 'http://10.0.0.1:8001 active 3' }]);
    await store.deregister('users', 'new');
    expect(sink.take()).toEqual([{ remove: 'http://10.0.0.1:8001' }]);
  });

  it('publishes nothing after close', async () => {
    const { store } = fakeClockStore();
    const { sink, provider } = provide(store);
    sink.take();
    await provider.close();
    await register(store, 'u1', spec(8001));
    expect(sink.log).toEqual([]);
  });
});

/** The memory store with its health (and first sync) in the test's hands. */
function steeredStore(inner: RegistryStore): RegistryStore & {
  health$: { synced: boolean; lastError: StoreHealth['lastError'] };
  sync(): void;
} {
  const health$ = { synced: false, lastError: null as StoreHealth['lastError'] };
  let resolve!: () => void;
  const first = new Promise<void>((r) => (resolve = r));
  return Object.assign(Object.create(inner) as RegistryStore, {
    health$,
    health: (): StoreHealth => ({
      store: 'redis',
      synced: health$.synced,
      lastSync: null,
      lastError: health$.lastError,
    }),
    synced: () => first,
    sync() {
      health$.synced = true;
      resolve();
    },
  });
}

describe('registry provider and the store’s health', () => {
  it('waits for the first sync; a store not in sync by the first check shows as failing', async () => {
    vi.useFakeTimers();
    const { store: inner } = fakeClockStore();
    await register(inner, 'u1', spec(8001));
    const store = steeredStore(inner);
    const { sink } = provide(store, {}, 1000);
    expect(sink.log).toEqual([]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(sink.take()).toEqual([
      {
        fail: 'unavailable: the redis registry store is out of sync with its backend; keeping the last known instances',
      },
    ]);
    await vi.advanceTimersByTimeAsync(3000); // once per outage, not once per check
    expect(sink.log).toEqual([]);
    store.sync();
    await vi.advanceTimersByTimeAsync(0);
    expect(sink.take()).toEqual([{ replace: ['http://10.0.0.1:8001 active 1'] }]);
  });

  it('out of sync: the source fails once and changes wait; back in sync: the whole set again', async () => {
    vi.useFakeTimers();
    const { store: inner } = fakeClockStore();
    await register(inner, 'u1', spec(8001));
    await register(inner, 'u2', spec(8002));
    const store = steeredStore(inner);
    store.sync();
    const { sink } = provide(store, {}, 1000);
    expect(sink.take()).toEqual([
      { replace: ['http://10.0.0.1:8001 active 1', 'http://10.0.0.1:8002 active 1'] },
    ]);

    store.health$.synced = false;
    store.health$.lastError = { message: 'connect ECONNREFUSED', at: '2026-12-07T10:00:00.000Z' };
    await vi.advanceTimersByTimeAsync(1000);
    expect(sink.take()).toEqual([
      {
        fail: 'unavailable: the redis registry store is out of sync with its backend (last error at 2026-12-07T10:00:00.000Z: connect ECONNREFUSED); keeping the last known instances',
      },
    ]);
    // What the view does meanwhile is not published piecemeal...
    await inner.deregister('users', 'u1');
    await register(inner, 'u3', spec(8003));
    await vi.advanceTimersByTimeAsync(2000);
    expect(sink.log).toEqual([]);
    // ...but as one set once the store is in sync again.
    store.health$.synced = true;
    await vi.advanceTimersByTimeAsync(1000);
    expect(sink.take()).toEqual([
      { replace: ['http://10.0.0.1:8002 active 1', 'http://10.0.0.1:8003 active 1'] },
    ]);
    await inner.deregister('users', 'u2');
    expect(sink.take()).toEqual([{ remove: 'http://10.0.0.1:8002' }]);
  });
});
