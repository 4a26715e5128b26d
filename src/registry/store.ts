/**
 * The registry's storage boundary. A `RegistryStore` keeps leases of service instances and gives
 * each gateway replica a view of them it can read synchronously (`list`, `services`) and follow
 * (`watch`). Two implementations, one conformance suite (tests/conformance/registry-store.ts):
 * `MemoryRegistryStore` (embedded, one process) and `RedisRegistryStore` (shared by every replica).
 *
 * Reads never wait on the network: they answer from the replica's view, which a store keeps as
 * the last state it could confirm. A store that cannot reach its backend keeps that view (never an
 * empty set from a failed read); writes then fail with `RegistryUnavailableError`.
 */

export type InstanceProtocol = 'http' | 'https';
export type InstanceState = 'active' | 'draining';
export const INSTANCE_STATES: readonly InstanceState[] = ['active', 'draining'];

/** What a registration says about an instance (everything but the lease). */
export interface InstanceSpec {
  /** An IP address (v4 dotted quad, or v6 in canonical form without brackets). */
  readonly address: string;
  readonly port: number;
  readonly protocol: InstanceProtocol;
  readonly zone: string | null;
  readonly version: string | null;
  /** Relative share of traffic, 1-1000. */
  readonly weight: number;
  /** String keys to string values, keys sorted. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** A registered instance and its lease, as a replica sees it. Times are ms since the epoch, on the store's clock. */
export interface Instance extends InstanceSpec {
  readonly service: string;
  readonly id: string;
  /** `draining`: no new requests; requests in flight finish. */
  readonly state: InstanceState;
  readonly ttlMs: number;
  readonly expiresAt: number;
  readonly lastHeartbeat: number;
  readonly registeredAt: number;
  /** The gateway (registry.gatewayId) that last registered, renewed or drained it. */
  readonly registeredVia: string;
}

export interface Registration {
  readonly service: string;
  readonly id: string;
  readonly spec: InstanceSpec;
  readonly state: InstanceState;
  readonly ttlMs: number;
}

/**
 * created: a new lease; updated: the spec or state changed (a drain is an update to `draining`);
 * renewed: same spec and state, lease extended.
 */
export type RegisterOutcome = 'created' | 'updated' | 'renewed';

export interface RegisterResult {
  readonly outcome: RegisterOutcome;
  readonly instance: Instance;
}

/**
 * Why an instance appeared, changed or went away. `resync`: a full re-read found it different
 * from what the replica knew (a change whose event was missed).
 */
export type ChangeCause = 'registered' | 'updated' | 'drained' | 'deregistered' | 'expired' | 'resync';

/**
 * One change of a replica's view. `upsert`: the instance is new or its spec/state changed;
 * `remove`: it is gone (`instance` is what it was). Lease renewals are not changes: `list()`
 * shows the new expiry, watchers are not called.
 */
export interface InstanceChange {
  readonly type: 'upsert' | 'remove';
  readonly cause: ChangeCause;
  readonly instance: Instance;
}

export type WatchListener = (change: InstanceChange) => void;

/** `watch(ALL_SERVICES, …)` follows every service (service names cannot be `*`). */
export const ALL_SERVICES = '*';

export interface ServiceSummary {
  readonly service: string;
  readonly instances: number;
  readonly active: number;
  readonly draining: number;
}

export interface StoreHealth {
  /** `remote`: a view of a registry elsewhere, followed through its watch API (follower.ts). */
  readonly store: 'memory' | 'redis' | 'remote';
  /** The view reflects the store (false before the first full read, and while the store is unreachable). */
  readonly synced: boolean;
  /** When the view was last confirmed by a full read (ISO 8601), or null. */
  readonly lastSync: string | null;
  readonly lastError: { readonly message: string; readonly at: string } | null;
}

export interface RegistryStore {
  readonly kind: 'memory' | 'redis';
  /** Create or renew a lease (idempotent: the same registration again renews it). */
  register(registration: Registration, via: string): Promise<RegisterResult>;
  /** Renew a lease for its own TTL; undefined when there is no such lease (the client re-registers). */
  renew(service: string, id: string, via: string): Promise<Instance | undefined>;
  /** Put an instance into `draining`; undefined when there is no such lease. */
  drain(service: string, id: string, via: string): Promise<Instance | undefined>;
  /** Remove a lease; undefined when there was none. */
  deregister(service: string, id: string): Promise<Instance | undefined>;
  /** The instances of a service, from this replica's view (no I/O), sorted by id. */
  list(service: string): readonly Instance[];
  get(service: string, id: string): Instance | undefined;
  /** Every service with at least one instance, sorted by name. */
  services(): readonly ServiceSummary[];
  /**
   * Call `listener` on every change of `service`'s instances (or of every service, with
   * ALL_SERVICES), synchronously as the view changes. Read `list()` and call `watch()` in the same
   * tick to miss nothing. Returns the function that stops it.
   */
  watch(service: string, listener: WatchListener): () => void;
  /** Resolves once the view has been filled from the store for the first time. */
  synced(): Promise<void>;
  health(): StoreHealth;
  /** Stop timers and subscriptions. Leases are left to expire. Safe to call twice. */
  close(): Promise<void>;
}

/** The store refused a registration because a bound would be exceeded. */
export class RegistryLimitError extends Error {
  readonly reason: 'too_many_instances' | 'too_many_services';
  constructor(reason: 'too_many_instances' | 'too_many_services', message: string) {
    super(message);
    this.name = 'RegistryLimitError';
    this.reason = reason;
  }
}

/** The store's backend could not be reached (or did not answer in time); nothing was changed for sure. */
export class RegistryUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RegistryUnavailableError';
  }
}

export interface StoreLimits {
  readonly maxServices: number;
  readonly maxInstancesPerService: number;
}

/** What follows a registry's instances without writing: the stores, and a remote registry's follower. */
export type RegistryReader = Pick<RegistryStore, 'list' | 'watch' | 'synced' | 'health'>;
