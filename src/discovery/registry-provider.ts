/**
 * Registry discovery: an upstream's endpoints are the registered instances of a service (those
 * passing its `filter`), read from this gateway's registry store (or, in a sidecar, from its view
 * of a registry elsewhere, registry/follower.ts). The store answers from a view it
 * keeps in memory (no I/O per read) and calls watchers synchronously as the view changes, so the
 * provider publishes the whole set once, then one delta per change: an instance joining, changing
 * (weight, zone, metadata, draining) or leaving touches only its own endpoint.
 *
 * Last-known-good: a store that cannot reach its backend (Redis) keeps its view as last confirmed
 * and never empties it from a failed read. While its health says it is out of sync, the provider
 * reports the source as failing (the endpoints stay as they are) and stops publishing; once it is
 * in sync again, it publishes the whole set afresh, which takes in whatever changed meanwhile.
 */
import type { InstanceChange, RegistryReader, StoreHealth } from '../registry/store.ts';
import type { EndpointProvider, EndpointSink, ProviderFactory } from './provider.ts';
import {
  endpointOfInstance,
  matchesFilter,
  originOfInstance,
  type RegisteredInstance,
  representative,
} from './registry-instances.ts';
import type { RegistryDiscoveryConfig } from './schema.ts';

export interface RegistryProviderOptions {
  /**
   * How often the store's health is read (ms; default 1000): how soon an outage shows on the
   * source, and how long a store that has never been in sync holds readiness back.
   */
  readonly healthIntervalMs?: number | undefined;
}

const DEFAULT_HEALTH_INTERVAL_MS = 1000;

/** Registry providers reading `store` (the gateway's registry store: memory or Redis; or a follower). */
export function createRegistryProviderFactory(
  store: RegistryReader,
  opts: RegistryProviderOptions = {},
): ProviderFactory<RegistryDiscoveryConfig> {
  const intervalMs = opts.healthIntervalMs ?? DEFAULT_HEALTH_INTERVAL_MS;
  return function registryProvider(config) {
    return new RegistryProvider(store, config, intervalMs);
  };
}

function outOfSync(h: StoreHealth): string {
  const last = h.lastError === null ? '' : ` (last error at ${h.lastError.at}: ${h.lastError.message})`;
  return `the ${h.store} registry store is out of sync with its backend${last}; keeping the last known instances`;
}

class RegistryProvider implements EndpointProvider {
  readonly #store: RegistryReader;
  readonly #config: RegistryDiscoveryConfig;
  readonly #intervalMs: number;
  /** Matching instances by id, as last published. */
  readonly #instances = new Map<string, RegisteredInstance>();
  /** Matching instances by origin: several instances on one address and port are one endpoint. */
  readonly #byOrigin = new Map<string, Map<string, RegisteredInstance>>();
  #sink: EndpointSink | undefined;
  #unwatch: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** In sync with the store: the whole set was published, and changes are published as they come. */
  #live = false;
  /** The source was reported failing (once per outage). */
  #failed = false;
  #closed = false;

  constructor(store: RegistryReader, config: RegistryDiscoveryConfig, intervalMs: number) {
    this.#store = store;
    this.#config = config;
    this.#intervalMs = intervalMs;
  }

  start(sink: EndpointSink): void {
    this.#sink = sink;
    // Watching before the first full read, in the same tick: no change falls between the two.
    this.#unwatch = this.#store.watch(this.#config.registry, this.#onChange);
    this.#timer = setInterval(() => this.#check(true), this.#intervalMs);
    this.#timer.unref();
    this.#check(false);
    // A store that has never been in sync (Redis at start) answers here, not at the next tick.
    if (!this.#live)
      this.#store.synced().then(
        () => this.#check(false),
        () => undefined,
      );
  }

  /**
   * Follow the store's health. In sync: go live (publish the whole set). Out of sync: report the
   * source failing, the endpoints left as they are; before the first sync only from the first
   * periodic check on (`late`), so a store that syncs within it never shows as failing.
   */
  #check(late: boolean): void {
    if (this.#closed) return;
    const health = this.#store.health();
    if (health.synced) {
      if (!this.#live) this.#goLive();
      return;
    }
    if (this.#live) this.#live = false;
    else if (!late) return;
    if (this.#failed) return;
    this.#failed = true;
    this.#sink!.fail('unavailable', outOfSync(health));
  }

  #goLive(): void {
    this.#live = true;
    this.#failed = false;
    this.#instances.clear();
    this.#byOrigin.clear();
    for (const i of this.#store.list(this.#config.registry))
      if (matchesFilter(i, this.#config.filter)) this.#add(i);
    const endpoints = [];
    for (const at of this.#byOrigin.values())
      endpoints.push(endpointOfInstance(representative(at.values())!));
    this.#sink!.replace(endpoints);
  }

  #onChange = (change: InstanceChange): void => {
    // Out of sync, changes wait: going live again re-reads the whole set.
    if (!this.#live || this.#closed) return;
    const instance = change.instance;
    const previous = this.#instances.get(instance.id);
    const before = previous === undefined ? undefined : originOfInstance(previous);
    if (previous !== undefined) this.#delete(previous, before!);
    const matches = change.type === 'upsert' && matchesFilter(instance, this.#config.filter);
    const after = matches ? this.#add(instance) : undefined;
    if (before !== undefined && before !== after) this.#publish(before);
    if (after !== undefined) this.#publish(after);
  };

  #add(instance: RegisteredInstance): string {
    const origin = originOfInstance(instance);
    this.#instances.set(instance.id, instance);
    let at = this.#byOrigin.get(origin);
    if (at === undefined) {
      at = new Map();
      this.#byOrigin.set(origin, at);
    }
    at.set(instance.id, instance);
    return origin;
  }

  #delete(instance: RegisteredInstance, origin: string): void {
    this.#instances.delete(instance.id);
    const at = this.#byOrigin.get(origin);
    at?.delete(instance.id);
    if (at?.size === 0) this.#byOrigin.delete(origin);
  }

  /** The endpoint at `origin` as its instances now make it: upserted, or removed when none is left. */
  #publish(origin: string): void {
    const at = this.#byOrigin.get(origin);
    if (at === undefined) this.#sink!.remove(origin);
    else this.#sink!.upsert(endpointOfInstance(representative(at.values())!));
  }

  describe(): Readonly<Record<string, unknown>> {
    return {
      service: this.#config.registry,
      filter: this.#config.filter,
      instances: this.#instances.size,
      store: this.#store.health(),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#unwatch?.();
  }
}
