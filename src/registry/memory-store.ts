/**
 * The embedded registry store: leases in this process, expired by a sweep every `sweepInterval`.
 * The default, so a single gateway needs nothing else; its leases live as long as the process (a
 * restarted gateway is refilled as clients renew: a renewal of an unknown lease answers 404 and
 * the client registers again).
 */
import type { Logger } from 'pino';
import type { RegistryMetrics } from '../telemetry/metrics.ts';
import {
  type Instance,
  type RegisterResult,
  type Registration,
  RegistryLimitError,
  type RegistryStore,
  type StoreHealth,
  type StoreLimits,
} from './store.ts';
import { sameSpec, ViewedStore } from './view.ts';

export interface MemoryStoreOptions {
  readonly limits: StoreLimits;
  /** Milliseconds between expiry sweeps. */
  readonly sweepInterval: number;
  readonly metrics: RegistryMetrics;
  readonly logger: Logger;
  /** Wall-clock milliseconds; injectable so tests drive lease time. */
  readonly now?: () => number;
}

export class MemoryRegistryStore extends ViewedStore implements RegistryStore {
  readonly kind = 'memory';
  readonly #limits: StoreLimits;
  readonly #now: () => number;
  readonly #metrics: RegistryMetrics;
  readonly #logger: Logger;
  readonly #timer: NodeJS.Timeout;
  readonly #startedAt = new Date().toISOString();
  #closed = false;

  constructor(opts: MemoryStoreOptions) {
    super((err) => opts.logger.error({ err }, 'registry watcher failed on a change'));
    this.#limits = opts.limits;
    this.#now = opts.now ?? Date.now;
    this.#metrics = opts.metrics;
    this.#logger = opts.logger;
    this.#timer = setInterval(() => this.sweep(), opts.sweepInterval);
    this.#timer.unref();
  }

  async register(reg: Registration, via: string): Promise<RegisterResult> {
    const now = this.#now();
    const existing = this.#live(reg.service, reg.id, now);
    if (existing === undefined) {
      if (this.view.count(reg.service) === 0 && this.view.serviceCount >= this.#limits.maxServices)
        throw new RegistryLimitError(
          'too_many_services',
          `the registry holds its maximum of ${this.#limits.maxServices} services`,
        );
      if (this.view.count(reg.service) >= this.#limits.maxInstancesPerService)
        throw new RegistryLimitError(
          'too_many_instances',
          `service ${reg.service} has its maximum of ${this.#limits.maxInstancesPerService} instances`,
        );
    }
    const instance: Instance = {
      service: reg.service,
      id: reg.id,
      ...reg.spec,
      state: reg.state,
      ttlMs: reg.ttlMs,
      expiresAt: now + reg.ttlMs,
      lastHeartbeat: now,
      registeredAt: existing?.registeredAt ?? now,
      registeredVia: via,
    };
    const outcome =
      existing === undefined
        ? 'created'
        : existing.state === reg.state && sameSpec(existing, reg.spec)
          ? 'renewed'
          : 'updated';
    const cause =
      outcome === 'created'
        ? 'registered'
        : reg.state === 'draining' && existing?.state !== 'draining'
          ? 'drained'
          : 'updated';
    this.view.upsert(instance, cause);
    return { outcome, instance };
  }

  async renew(service: string, id: string, via: string): Promise<Instance | undefined> {
    const now = this.#now();
    const existing = this.#live(service, id, now);
    if (existing === undefined) return undefined;
    return this.view.renew(service, id, {
      expiresAt: now + existing.ttlMs,
      lastHeartbeat: now,
      registeredVia: via,
    });
  }

  async drain(service: string, id: string, via: string): Promise<Instance | undefined> {
    const existing = this.#live(service, id, this.#now());
    if (existing === undefined) return undefined;
    if (existing.state === 'draining') return existing;
    const instance: Instance = { ...existing, state: 'draining', registeredVia: via };
    this.view.upsert(instance, 'drained');
    return instance;
  }

  async deregister(service: string, id: string): Promise<Instance | undefined> {
    const existing = this.#live(service, id, this.#now());
    if (existing === undefined) return undefined;
    return this.view.remove(service, id, 'deregistered');
  }

  synced(): Promise<void> {
    return Promise.resolve();
  }

  health(): StoreHealth {
    return { store: 'memory', synced: true, lastSync: this.#startedAt, lastError: null };
  }

  /** Remove every lease that has expired; returns how many. Runs every `sweepInterval`. */
  sweep(): number {
    if (this.#closed) return 0;
    const now = this.#now();
    const expired: Instance[] = [];
    for (const instance of this.view.all()) if (instance.expiresAt <= now) expired.push(instance);
    for (const instance of expired) this.#expire(instance);
    return expired.length;
  }

  /** The instance if its lease is live; an expired one is removed now (an expiry, not an absence). */
  #live(service: string, id: string, now: number): Instance | undefined {
    const existing = this.view.get(service, id);
    if (existing === undefined || existing.expiresAt > now) return existing;
    this.#expire(existing);
    return undefined;
  }

  #expire(instance: Instance): void {
    this.view.remove(instance.service, instance.id, 'expired');
    this.#metrics.recordExpiration(instance.service);
    this.#logger.info(
      { service: instance.service, id: instance.id, address: instance.address, port: instance.port },
      'registry lease expired',
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
  }
}
