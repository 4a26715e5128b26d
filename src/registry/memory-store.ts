/**
 * The embedded registry store: leases in this process, expired by a sweep. The default, so a single
 * gateway needs nothing else; its leases live as long as the process (a restarted gateway is
 * refilled as clients renew: a renewal of an unknown lease answers 404 and the client registers
 * again).
 *
 * The sweep runs when the earliest lease can have expired, never sooner than `sweepInterval` after
 * the last one: a lease is removed at most `sweepInterval` after its expiry, as with a sweep every
 * `sweepInterval`, but a fleet renewing well before its leases end wakes no timer and has no scan
 * over every instance four times a second. A renewal only moves an expiry later, so it never moves
 * the sweep; a registration whose lease ends before the next sweep brings it forward.
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
  /** Least milliseconds between expiry sweeps (and most between an expiry and its sweep). */
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
  readonly #sweepInterval: number;
  #timer: NodeJS.Timeout | undefined;
  /** When the armed sweep runs (store clock); Infinity when none is armed. */
  #sweepAt = Number.POSITIVE_INFINITY;
  #lastSweep: number;
  readonly #startedAt = new Date().toISOString();
  #closed = false;

  constructor(opts: MemoryStoreOptions) {
    super((err) => opts.logger.error({ err }, 'registry watcher failed on a change'));
    this.#limits = opts.limits;
    this.#now = opts.now ?? Date.now;
    this.#metrics = opts.metrics;
    this.#logger = opts.logger;
    this.#sweepInterval = opts.sweepInterval;
    this.#lastSweep = this.#now();
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
    this.#sweepBy(instance.expiresAt);
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

  /** Remove every lease that has expired; returns how many. Arms the next sweep for the earliest lease left. */
  sweep(): number {
    if (this.#closed) return 0;
    const now = this.#now();
    this.#lastSweep = now;
    this.#disarm();
    const expired: Instance[] = [];
    let earliest = Number.POSITIVE_INFINITY;
    for (const instance of this.view.all()) {
      if (instance.expiresAt <= now) expired.push(instance);
      else if (instance.expiresAt < earliest) earliest = instance.expiresAt;
    }
    for (const instance of expired) this.#expire(instance);
    this.#sweepBy(earliest);
    return expired.length;
  }

  /** When the next sweep is armed (store clock ms), or undefined when no lease is held. */
  get nextSweepAt(): number | undefined {
    return this.#timer === undefined ? undefined : this.#sweepAt;
  }

  /** Make sure a sweep runs once a lease ending at `expiresAt` has ended (not sooner than the interval allows). */
  #sweepBy(expiresAt: number): void {
    if (this.#closed || expiresAt >= this.#sweepAt || expiresAt === Number.POSITIVE_INFINITY) return;
    const at = Math.max(expiresAt, this.#lastSweep + this.#sweepInterval);
    if (at >= this.#sweepAt) return;
    this.#disarm();
    this.#sweepAt = at;
    this.#timer = setTimeout(sweepStore, Math.max(1, at - this.#now()), this);
    this.#timer.unref();
  }

  #disarm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
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
    this.#disarm();
  }
}

function sweepStore(store: MemoryRegistryStore): void {
  store.sweep();
}
