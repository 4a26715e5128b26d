/**
 * The registry on Redis, shared by every gateway replica. Writes are Lua scripts (redis-scripts.ts)
 * that change the data and publish a change event with a revision number in one step. Each replica
 * keeps a view (view.ts) that it fills with a full read and then follows through the events:
 *
 * - a lease expires on Redis's clock even when no gateway is alive: every read and write treats a
 *   lease past its expiry as gone. Live replicas sweep expired leases when the earliest lease can
 *   have ended (never sooner than `sweepInterval` after the last sweep) and publish the expiries,
 *   so every replica sees a registration, drain or expiry within a second. Each sweep answers the
 *   earliest lease end left; a lease that ends sooner reaches every replica in its registration's
 *   event and brings the sweep forward. While a replica is not following the events (no
 *   subscription, no first read), it sweeps every `sweepInterval`, as it cannot know;
 * - a replica re-reads everything at start, whenever either connection comes back, when an event's
 *   revision shows it missed one (or the data set's epoch changed: Redis flushed or replaced), and
 *   every `resyncInterval` as a backstop;
 * - while Redis is unreachable the view stays as it was last confirmed: a failed read changes
 *   nothing. Writes fail fast (RegistryUnavailableError), and the client retries.
 *
 * A replica applies its own writes to its view at once (read-your-writes); the event for the same
 * revision is then skipped.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { RedisConnection } from '../stores/redis.ts';
import type { RegistryMetrics, RegistryResyncReason, RegistryStoreOperation } from '../telemetry/metrics.ts';
import {
  DEREGISTER_SCRIPT,
  DRAIN_SCRIPT,
  REGISTER_SCRIPT,
  REGISTRY_CHANNEL,
  REGISTRY_KEYS,
  RENEW_SCRIPT,
  RENEWALS_SCRIPT,
  renewalsPrefix,
  SNAPSHOT_SCRIPT,
  SWEEP_SCRIPT,
} from './redis-scripts.ts';
import {
  type ChangeCause,
  type Instance,
  type InstanceSpec,
  type RegisterOutcome,
  type RegisterResult,
  type Registration,
  RegistryLimitError,
  type RegistryStore,
  RegistryUnavailableError,
  type StoreHealth,
  type StoreLimits,
} from './store.ts';
import { type LeaseTimes, ViewedStore } from './view.ts';

export interface RedisStoreOptions {
  readonly limits: StoreLimits;
  /** Milliseconds between sweeps of expired leases. */
  readonly sweepInterval: number;
  /** Milliseconds between full re-reads (a backstop for lost events). */
  readonly resyncInterval: number;
  readonly metrics: RegistryMetrics;
  readonly logger: Logger;
  /** Milliseconds a renewal waits for others to share its script (default RENEW_BATCH_MS). */
  readonly renewBatchMs?: number;
  /** Milliseconds from a renewal to its announcement to other replicas (default RENEWALS_ANNOUNCE_MS). */
  readonly announceMs?: number;
}

/**
 * A renewal waits this long for the renewals after it, and they go to Redis in one script: a fleet
 * of 1,000 instances renewing every 5 s (200/s) pays about one round trip per 20 renewals instead
 * of one each, and the heartbeat's answer comes at most this much later (a client renews a third
 * of the way into its lease, so a lease of 15 s has 10 s left). 50 ms until December 2026: each
 * batch's command, reply and wakeup cost about as much as ten renewals' share of them
 * (docs/decisions.md, "Renewal batches: one argument, one reply string, keys prefixed once").
 */
export const RENEW_BATCH_MS = 100;

/** At most this many leases are expired, or renewals announced, per script (one script must stay short). */
const SWEEP_BATCH = 500;

/**
 * The leases renewed through a replica are announced to the others at most this long after the
 * first of them (one event for all): other replicas show a renewed expiry within it. Renewals
 * move lease times only, which nothing but the registry API's answers shows; at 200 renewals a
 * second an announcement every sweepInterval (250 ms) was four round trips and four events a second.
 */
export const RENEWALS_ANNOUNCE_MS = 1000;

type Script = (...args: (string | number)[]) => Promise<unknown>;

/** A renewal waiting for its batch's script. */
interface PendingRenewal {
  readonly service: string;
  readonly id: string;
  readonly resolve: (instance: Instance | undefined | Promise<Instance | undefined>) => void;
  readonly reject: (err: unknown) => void;
}

interface ChangeEvent {
  readonly epoch: string;
  readonly rev: number;
  /** `renewals`: lease times of several instances (`leases`), renewed through one replica. */
  readonly op: 'set' | 'renew' | 'del' | 'renewals';
  readonly cause: ChangeCause | 'renewed';
  /** Origin gateway's wall clock (ms) when it sent the write, for the propagation histogram. */
  readonly at?: number;
  readonly key: string;
  readonly spec: InstanceSpec | null;
  readonly lease: Lease | null;
  readonly leases?: Readonly<Record<string, Lease>>;
}

interface Lease {
  readonly state: 'active' | 'draining';
  readonly ttlMs: number;
  readonly expiresAt: number;
  readonly lastHeartbeat: number;
  readonly registeredAt: number;
  readonly registeredVia: string;
}

/** Spec as stored: keys in a fixed order and metadata sorted, so equal specs are equal strings. */
export function canonicalSpec(spec: InstanceSpec): string {
  const metadata: Record<string, string> = {};
  for (const k of Object.keys(spec.metadata).sort()) metadata[k] = spec.metadata[k]!;
  return JSON.stringify({
    address: spec.address,
    port: spec.port,
    protocol: spec.protocol,
    zone: spec.zone,
    version: spec.version,
    weight: spec.weight,
    metadata,
  });
}

/**
 * Offered with every script as the data set's epoch, taken only when Redis has none (a new or
 * flushed data set). Fresh each time, so a flushed Redis never gets back an epoch a replica knows.
 */
function newEpoch(): string {
  return randomUUID();
}

function splitKey(key: string): [service: string, id: string] {
  const slash = key.indexOf('/');
  return [key.slice(0, slash), key.slice(slash + 1)];
}

function toInstance(key: string, spec: InstanceSpec, lease: Lease): Instance {
  const [service, id] = splitKey(key);
  if (!service || !id || typeof spec.address !== 'string' || typeof lease.expiresAt !== 'number')
    throw new Error(`malformed registry record ${JSON.stringify(key)}`);
  return {
    service,
    id,
    address: spec.address,
    port: spec.port,
    protocol: spec.protocol,
    zone: spec.zone ?? null,
    version: spec.version ?? null,
    weight: spec.weight,
    metadata: spec.metadata ?? {},
    state: lease.state,
    ttlMs: lease.ttlMs,
    expiresAt: lease.expiresAt,
    lastHeartbeat: lease.lastHeartbeat,
    registeredAt: lease.registeredAt,
    registeredVia: lease.registeredVia,
  };
}

export class RedisRegistryStore extends ViewedStore implements RegistryStore {
  readonly kind = 'redis';
  readonly #redis: RedisConnection;
  readonly #subscriber: RedisConnection;
  readonly #opts: RedisStoreOptions;
  readonly #channel: string;
  /** REGISTRY_KEYS with the connection's prefix (the client adds none). */
  readonly #keys: readonly string[];
  readonly #scripts: Record<
    'register' | 'renew' | 'renewals' | 'drain' | 'deregister' | 'sweep' | 'snapshot',
    Script
  >;
  /** This replica in its `renewals` events (JSON), and how those events begin. */
  readonly #origin = JSON.stringify(randomUUID());
  readonly #ownRenewals = renewalsPrefix(JSON.parse(this.#origin) as string);
  /** `registeredVia` as the scripts take it (JSON), made once per gateway name. */
  readonly #viaJson = new Map<string, string>();
  /** Keys renewed through this replica since the last announcement, announced together. */
  #renewed = new Set<string>();
  #announceTimer: NodeJS.Timeout | undefined;
  readonly #announceMs: number;
  /** The next sweep: its timer and when it fires (this process's clock; +∞ when none is armed). */
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweepAt = Number.POSITIVE_INFINITY;
  #lastSweep = Number.NEGATIVE_INFINITY;
  /** Redis's clock minus this process's, from the last reply that carried it (lease ends are Redis's). */
  #clockOffset = 0;
  /** Renewals gathered for the next renew script, all through the gateway `#pendingVia`. */
  #pending: PendingRenewal[] = [];
  #pendingVia = '';
  #renewTimer: NodeJS.Timeout | undefined;
  /** Settled once every renew script sent so far has been answered (close waits for it). */
  #renewing: Promise<void> = Promise.resolve();
  readonly #renewBatchMs: number;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #unlisten: (() => void)[] = [];
  /** Epoch and revision the view corresponds to; undefined before the first full read. */
  #epoch: string | undefined;
  #rev = 0;
  /**
   * Revision of the last change this replica applied per key (its own writes included, removals
   * too), so an older event for the same key is skipped. Entries at or below #rev are dropped.
   */
  readonly #keyRevs = new Map<string, number>();
  #subscribed = false;
  #subscribing = false;
  #resyncing: Promise<void> | undefined;
  #resyncAgain: RegistryResyncReason | undefined;
  /** Events that arrived during a full read, applied after it. */
  #buffer: ChangeEvent[] | undefined;
  #everSynced = false;
  #lastSync: string | null = null;
  #lastError: { message: string; at: string } | null = null;
  #firstSync: { promise: Promise<void>; resolve: () => void };
  #closed = false;

  constructor(redis: RedisConnection, opts: RedisStoreOptions) {
    super((err) => opts.logger.error({ err }, 'registry watcher failed on a change'));
    this.#redis = redis;
    this.#opts = opts;
    this.#renewBatchMs = opts.renewBatchMs ?? RENEW_BATCH_MS;
    this.#announceMs = opts.announceMs ?? RENEWALS_ANNOUNCE_MS;
    this.#channel = `${redis.config.keyPrefix}${REGISTRY_CHANNEL}`;
    let resolve!: () => void;
    this.#firstSync = { promise: new Promise<void>((r) => (resolve = r)), resolve };
    const client = redis.client;
    this.#keys = REGISTRY_KEYS.map((k) => `${redis.ownKeyPrefix}${k}`);
    const keys = this.#keys;
    const define = (name: string, lua: string): Script => {
      // Shared client: the command names are the registry's own. KEYS are prefixed here, once.
      const command = `peregrineRegistry${name}`;
      client.defineCommand(command, { numberOfKeys: keys.length, lua });
      const fn = (client as unknown as Record<string, Script>)[command]!.bind(client);
      return (...args) => fn(...keys, ...args);
    };
    this.#scripts = {
      register: define('Register', REGISTER_SCRIPT),
      renew: define('Renew', RENEW_SCRIPT),
      renewals: define('Renewals', RENEWALS_SCRIPT),
      drain: define('Drain', DRAIN_SCRIPT),
      deregister: define('Deregister', DEREGISTER_SCRIPT),
      sweep: define('Sweep', SWEEP_SCRIPT),
      snapshot: define('Snapshot', SNAPSHOT_SCRIPT),
    };

    this.#subscriber = redis.subscriber();
    this.#subscriber.client.on('message', this.#onMessage);
    // A lost connection means events may be missed: sweep every sweepInterval until followed again.
    redis.client.on('close', this.#onConnectionLost);
    this.#subscriber.client.on('close', this.#onConnectionLost);
    this.#unlisten.push(
      () => this.#subscriber.client.off('message', this.#onMessage),
      () => redis.client.off('close', this.#onConnectionLost),
      () => this.#subscriber.client.off('close', this.#onConnectionLost),
      this.#subscriber.onReady(() => void this.#subscribe()),
      redis.onReady(() => this.#maybeResync(this.#everSynced ? 'reconnect' : 'start')),
    );
    if (this.#subscriber.ready) void this.#subscribe();

    // The first sweep after sweepInterval, as every one until this replica follows the events.
    this.#lastSweep = Date.now();
    this.#sweepSoon();
    // Also while unsubscribed: without events, a periodic read still keeps the view close.
    const resync = setInterval(() => this.#maybeResync('periodic', true), opts.resyncInterval);
    resync.unref();
    this.#timers.push(resync);
  }

  // --- writes ----------------------------------------------------------------------------------

  async register(reg: Registration, via: string): Promise<RegisterResult> {
    const key = `${reg.service}/${reg.id}`;
    const spec = canonicalSpec(reg.spec);
    const reply = (await this.#run('register', () =>
      this.#scripts.register(
        key,
        reg.service,
        spec,
        reg.state,
        reg.ttlMs,
        this.#via(via),
        this.#opts.limits.maxServices,
        this.#opts.limits.maxInstancesPerService,
        this.#channel,
        newEpoch(),
        Date.now(),
      ),
    )) as [string, string, number, string];
    if (reply[0] === 'err') {
      const reason = reply[1] as 'too_many_instances' | 'too_many_services';
      const { maxServices, maxInstancesPerService } = this.#opts.limits;
      throw new RegistryLimitError(
        reason,
        reason === 'too_many_services'
          ? `the registry holds its maximum of ${maxServices} services`
          : `service ${reg.service} has its maximum of ${maxInstancesPerService} instances`,
      );
    }
    const [outcome, lease, rev, epoch] = reply;
    const instance = toInstance(key, JSON.parse(spec) as InstanceSpec, JSON.parse(lease) as Lease);
    const previous = this.view.get(reg.service, reg.id);
    const cause: ChangeCause =
      outcome === 'created'
        ? 'registered'
        : instance.state === 'draining' && previous?.state !== 'draining'
          ? 'drained'
          : 'updated';
    this.#applyOwn(key, rev, epoch, () => this.view.upsert(instance, cause));
    // The lease began at Redis's now: the offset of its clock comes with it.
    this.#clockOffset = instance.lastHeartbeat - Date.now();
    this.#sweepBy(instance.expiresAt);
    return { outcome: outcome as RegisterOutcome, instance };
  }

  /**
   * Renew in a script that publishes nothing: lease times are no change for watchers, and an event
   * per renewal would wake every replica for each heartbeat. Renewals within RENEW_BATCH_MS of
   * each other share the script (one round trip). This replica's view takes the new times at once;
   * the others get them with the next announcement (#announceRenewals, within announceMs).
   */
  renew(service: string, id: string, via: string): Promise<Instance | undefined> {
    if (this.#pending.length > 0 && via !== this.#pendingVia) this.#flushRenewals();
    return new Promise<Instance | undefined>((resolve, reject) => {
      this.#pendingVia = via;
      this.#pending.push({ service, id, resolve, reject });
      if (this.#pending.length >= SWEEP_BATCH) this.#flushRenewals();
      else this.#renewTimer ??= setTimeout(this.#flushRenewals, this.#renewBatchMs);
    });
  }

  /** Send the gathered renewals in one script and answer each from its part of the reply. */
  readonly #flushRenewals = (): void => {
    clearTimeout(this.#renewTimer);
    this.#renewTimer = undefined;
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    const via = this.#pendingVia;
    const keys = batch.map((r) => `${r.service}/${r.id}`);
    const sent = this.#run('renew', () =>
      this.#scripts.renew(this.#via(via), this.#channel, newEpoch(), Date.now(), keys.join(' ')),
    ).then(
      (reply) => {
        // `epoch now expiresAt…`: one per renewal, in order.
        const parts = typeof reply === 'string' ? reply.split(' ') : [];
        const now = Number(parts[1]);
        if (parts.length !== batch.length + 2 || !Number.isSafeInteger(now)) {
          const err = new RegistryUnavailableError('the registry store (Redis) gave an unexpected reply');
          for (const r of batch) r.reject(err);
          return;
        }
        const epoch = parts[0]!;
        this.#clockOffset = now - Date.now();
        for (let i = 0; i < batch.length; i++) {
          const r = batch[i]!;
          const expiresAt = Number(parts[i + 2]);
          if (!(expiresAt > 0)) r.resolve(undefined);
          else
            r.resolve(
              this.#renewalOf(keys[i]!, r, { expiresAt, lastHeartbeat: now, registeredVia: via }, epoch),
            );
        }
      },
      (err: unknown) => {
        for (const r of batch) r.reject(err);
      },
    );
    this.#renewing = Promise.all([this.#renewing, sent]).then(() => undefined);
  };

  /**
   * One renewal's part of the reply (its new lease times): the instance renewed. The view holds the
   * rest of it; one it lacks, or any on another epoch, is read from Redis.
   */
  #renewalOf(
    key: string,
    r: PendingRenewal,
    lease: LeaseTimes,
    epoch: string,
  ): Instance | Promise<Instance | undefined> {
    if (epoch === this.#epoch) {
      this.#renewed.add(key);
      if (this.#announceTimer === undefined) {
        this.#announceTimer = setTimeout(this.#announceDue, this.#announceMs);
        this.#announceTimer.unref();
      }
      // The view's record, renewed, is the answer when it holds these times: no second copy.
      const renewed = this.view.renew(r.service, r.id, lease);
      if (renewed !== undefined)
        return renewed.lastHeartbeat === lease.lastHeartbeat ? renewed : { ...renewed, ...lease };
    }
    // Out of step with Redis (an instance the view lacks, or another data set): re-read all.
    this.#maybeResync('gap');
    return this.#run('renew', () => this.#readInstance(key)) as Promise<Instance | undefined>;
  }

  /** An instance as Redis holds it (spec and lease), or undefined when it has none. */
  async #readInstance(key: string): Promise<Instance | undefined> {
    const client = this.#redis.client;
    const [spec, lease] = await Promise.all([
      client.hget(this.#keys[0]!, key),
      client.hget(this.#keys[1]!, key),
    ]);
    if (spec === null || lease === null) return undefined;
    return toInstance(key, JSON.parse(spec) as InstanceSpec, JSON.parse(lease) as Lease);
  }

  async drain(service: string, id: string, via: string): Promise<Instance | undefined> {
    const key = `${service}/${id}`;
    const reply = (await this.#run('drain', () =>
      this.#scripts.drain(key, this.#via(via), this.#channel, newEpoch(), Date.now()),
    )) as [string, string, number, string] | null;
    if (reply === null) return undefined;
    const [lease, spec, rev, epoch] = reply;
    const instance = toInstance(key, JSON.parse(spec) as InstanceSpec, JSON.parse(lease) as Lease);
    if (rev > 0) this.#applyOwn(key, rev, epoch, () => this.view.upsert(instance, 'drained'));
    return instance;
  }

  #via(via: string): string {
    let json = this.#viaJson.get(via);
    if (json === undefined) {
      json = JSON.stringify(via);
      if (this.#viaJson.size < 16) this.#viaJson.set(via, json);
    }
    return json;
  }

  readonly #announceDue = (): void => {
    this.#announceTimer = undefined;
    if (this.#closed) return;
    // Kept for when Redis answers again (the others re-read on reconnect anyway).
    if (this.#redis.ready) void this.#announceRenewals();
    else {
      this.#announceTimer = setTimeout(this.#announceDue, this.#announceMs);
      this.#announceTimer.unref();
    }
  };

  /** Publish the leases renewed through this replica since the last call, as one event. */
  async #announceRenewals(): Promise<void> {
    clearTimeout(this.#announceTimer);
    this.#announceTimer = undefined;
    if (this.#renewed.size === 0) return;
    const keys = [...this.#renewed];
    this.#renewed = new Set();
    try {
      for (let i = 0; i < keys.length; i += SWEEP_BATCH)
        await this.#scripts.renewals(
          this.#channel,
          newEpoch(),
          Date.now(),
          this.#origin,
          keys.slice(i, i + SWEEP_BATCH).join(' '),
        );
    } catch (err) {
      // Other replicas show older expiries until the next batch or resync; routing is unaffected.
      this.#failed('renew', err);
    }
  }

  async deregister(service: string, id: string): Promise<Instance | undefined> {
    const key = `${service}/${id}`;
    const reply = (await this.#run('deregister', () =>
      this.#scripts.deregister(key, this.#channel, newEpoch(), Date.now()),
    )) as [string, string, number, string] | null;
    if (reply === null) return undefined;
    const [lease, spec, rev, epoch] = reply;
    const instance = toInstance(key, JSON.parse(spec) as InstanceSpec, JSON.parse(lease) as Lease);
    this.#applyOwn(key, rev, epoch, () => this.view.remove(service, id, 'deregistered'));
    return instance;
  }

  /** Run a store command; failures are counted and become RegistryUnavailableError. */
  async #run(operation: RegistryStoreOperation, command: () => Promise<unknown>): Promise<unknown> {
    try {
      return await command();
    } catch (err) {
      this.#failed(operation, err);
      throw new RegistryUnavailableError('the registry store (Redis) is unavailable', { cause: err });
    }
  }

  #failed(operation: RegistryStoreOperation, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.#lastError = { message, at: new Date().toISOString() };
    this.#opts.metrics.recordStoreError('redis', operation);
    this.#redis.recordCommandError(err);
    this.#opts.logger.debug({ operation, error: message }, 'registry store operation failed');
  }

  /** Apply this replica's own write now, unless the view is on another epoch (a resync will catch up). */
  #applyOwn(key: string, rev: number, epoch: string, apply: () => void): void {
    if (epoch !== this.#epoch) {
      this.#maybeResync('gap');
      return;
    }
    const known = this.#keyRevs.get(key);
    if (rev <= this.#rev || (known !== undefined && rev <= known)) return;
    this.#keyRevs.set(key, rev);
    apply();
  }

  // --- reads (list, get, services, watch: ViewedStore) -----------------------------------------

  synced(): Promise<void> {
    return this.#firstSync.promise;
  }

  health(): StoreHealth {
    return {
      store: 'redis',
      synced: this.#everSynced && this.#redis.ready && this.#subscriber.ready && this.#subscribed,
      lastSync: this.#lastSync,
      lastError: this.#lastError,
    };
  }

  // --- following Redis -------------------------------------------------------------------------

  async #subscribe(): Promise<void> {
    this.#subscribed = false;
    this.#subscribing = true;
    try {
      await this.#subscriber.client.subscribe(this.#channel);
    } catch (err) {
      // Retried when the subscriber is ready again, or by the next tick.
      this.#failed('event', err);
      return;
    } finally {
      this.#subscribing = false;
    }
    this.#subscribed = true;
    this.#maybeResync(this.#everSynced ? 'reconnect' : 'start');
  }

  /** Whether this replica follows every change: only then can its sweeps wait for a lease's end. */
  #following(): boolean {
    return this.#subscribed && this.#subscriber.ready && this.#redis.ready && this.#epoch !== undefined;
  }

  /** Sweep at the next time sweepInterval allows (the periodic sweep of a replica not following). */
  #sweepSoon(): void {
    this.#sweepAt = Number.POSITIVE_INFINITY;
    this.#sweepBy(Number.NEGATIVE_INFINITY, true);
  }

  /**
   * Make sure a sweep runs once a lease ending at `expiresAt` (Redis's clock) has ended, and not
   * sooner than sweepInterval after the last sweep. `local`: the time is this process's already.
   */
  #sweepBy(expiresAt: number, local = false): void {
    if (this.#closed) return;
    const due = local ? expiresAt : expiresAt - this.#clockOffset + 1;
    const at = Math.max(due, this.#lastSweep + this.#opts.sweepInterval);
    if (at >= this.#sweepAt) return;
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = at;
    this.#sweepTimer = setTimeout(this.#sweepDue, Math.max(1, at - Date.now()));
    this.#sweepTimer.unref();
  }

  readonly #sweepDue = (): void => {
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    void this.#tick();
  };

  #onConnectionLost = (): void => {
    if (!this.#closed) this.#sweepBy(Number.NEGATIVE_INFINITY, true);
  };

  /**
   * Expire leases, then arm the next sweep: at the earliest lease end left when this replica follows
   * every change, else after sweepInterval. Also retries what failed (subscription, first read).
   */
  async #tick(): Promise<void> {
    if (this.#closed) return;
    this.#lastSweep = Date.now();
    this.#pruneKeyRevs();
    // A subscription lost with its connection is renewed when the subscriber is ready again; one
    // that failed on a ready connection is retried here.
    if (!this.#subscriber.ready) this.#subscribed = false;
    else if (!this.#subscribed && !this.#subscribing) void this.#subscribe();
    if (!this.#redis.ready) {
      this.#sweepSoon();
      return;
    }
    if (this.#epoch === undefined && this.#resyncing === undefined) this.#maybeResync('start');
    let reply: (string | number)[];
    try {
      reply = (await this.#scripts.sweep(this.#channel, newEpoch(), Date.now(), SWEEP_BATCH)) as (
        | string
        | number
      )[];
    } catch (err) {
      this.#failed('sweep', err);
      this.#sweepSoon();
      return;
    }
    const now = Number(reply[0]);
    const next = Number(reply[1]);
    this.#clockOffset = now - Date.now();
    for (let i = 2; i < reply.length; i++) {
      const [service, id] = splitKey(String(reply[i]));
      this.#opts.metrics.recordExpiration(service);
      this.#opts.logger.info({ service, id }, 'registry lease expired');
    }
    if (this.#closed) return;
    // A full batch may have left more expired leases; a replica not following cannot know of
    // leases registered elsewhere since.
    if (reply.length - 2 >= SWEEP_BATCH || !this.#following()) this.#sweepSoon();
    else if (next > 0) this.#sweepBy(next);
  }

  #pruneKeyRevs(): void {
    for (const [key, rev] of this.#keyRevs) if (rev <= this.#rev) this.#keyRevs.delete(key);
  }

  #onMessage = (channel: string, message: string): void => {
    if (channel !== this.#channel || this.#closed) return;
    let event: ChangeEvent;
    try {
      event = this.#ownRenewalsEvent(message) ?? (JSON.parse(message) as ChangeEvent);
      if (typeof event.rev !== 'number' || typeof event.key !== 'string')
        throw new Error('not a change event');
    } catch (err) {
      this.#failed('event', err);
      this.#maybeResync('gap');
      return;
    }
    if (this.#buffer !== undefined || this.#epoch === undefined) {
      this.#buffer?.push(event);
      return;
    }
    this.#apply(event);
  };

  /**
   * This replica's own `renewals` event as its epoch and revision, with no leases: the view took
   * each of them from its renewal's reply, and whatever is newer came or comes in the event of the
   * replica that renewed it later. Undefined for every other message (parsed in full).
   */
  #ownRenewalsEvent(message: string): ChangeEvent | undefined {
    const prefix = this.#ownRenewals;
    if (!message.startsWith(prefix)) return undefined;
    const epochEnd = message.indexOf('","rev":', prefix.length);
    const revEnd = message.indexOf(',', epochEnd + 8);
    if (epochEnd === -1 || revEnd === -1) return undefined;
    const rev = Number(message.slice(epochEnd + 8, revEnd));
    if (!Number.isSafeInteger(rev)) return undefined;
    return {
      epoch: message.slice(prefix.length, epochEnd),
      rev,
      op: 'renewals',
      cause: 'renewed',
      key: '',
      spec: null,
      lease: null,
    };
  }

  #apply(event: ChangeEvent): void {
    if (event.epoch !== this.#epoch) {
      this.#maybeResync('gap');
      return;
    }
    if (event.rev <= this.#rev) return;
    const gap = event.rev !== this.#rev + 1;
    this.#rev = event.rev;
    if (typeof event.at === 'number') this.#opts.metrics.observePropagation((Date.now() - event.at) / 1000);
    const known = this.#keyRevs.get(event.key);
    if (known === undefined || event.rev > known) {
      try {
        this.#applyEvent(event);
      } catch (err) {
        this.#failed('event', err);
        this.#maybeResync('gap');
        return;
      }
    }
    if (gap) this.#maybeResync('gap');
  }

  #applyEvent(event: ChangeEvent): void {
    const [service, id] = splitKey(event.key);
    if (event.op === 'del') {
      this.view.remove(service, id, event.cause as ChangeCause);
      return;
    }
    if (event.op === 'renewals') {
      for (const [key, lease] of Object.entries(event.leases ?? {})) {
        const known = this.#keyRevs.get(key);
        if (known !== undefined && known >= event.rev) continue;
        const [s, i] = splitKey(key);
        // Every lease in the batch was live at its revision: one this view lacks is a missed change.
        if (this.view.renew(s, i, lease) === undefined)
          throw new Error(`renewal of an instance this replica does not know: ${key}`);
      }
      return;
    }
    const lease = event.lease;
    if (lease === null) throw new Error(`change event without a lease for ${event.key}`);
    this.#sweepBy(lease.expiresAt);
    if (event.op === 'renew' && event.spec === null) {
      const current = this.view.get(service, id);
      if (current === undefined)
        throw new Error(`renewal of an instance this replica does not know: ${event.key}`);
      this.view.upsert({ ...current, ...lease }, 'updated');
      return;
    }
    if (event.spec === null) throw new Error(`change event without a spec for ${event.key}`);
    const cause = event.cause === 'renewed' ? 'updated' : event.cause;
    this.view.upsert(toInstance(event.key, event.spec, lease), cause);
  }

  /**
   * Start a full re-read, or queue one after the read in progress. Only once subscribed (a read
   * before the subscription is live could miss the changes in between), unless `unsubscribedToo`.
   */
  #maybeResync(reason: RegistryResyncReason, unsubscribedToo = false): void {
    if (this.#closed || !this.#redis.ready || !(this.#subscribed || unsubscribedToo)) return;
    if (this.#resyncing !== undefined) {
      this.#resyncAgain ??= reason;
      return;
    }
    this.#resyncing = this.#resync(reason).finally(() => {
      this.#resyncing = undefined;
      const again = this.#resyncAgain;
      this.#resyncAgain = undefined;
      if (again !== undefined) this.#maybeResync(again);
    });
  }

  async #resync(reason: RegistryResyncReason): Promise<void> {
    this.#buffer = [];
    let reply: string[];
    try {
      reply = (await this.#scripts.snapshot(newEpoch())) as string[];
    } catch (err) {
      // Keep the view as last confirmed; events that came meanwhile still apply on top of it.
      this.#failed('resync', err);
      this.#opts.metrics.recordResync(reason, 'failure');
      this.#drainBuffer();
      return;
    }
    let instances: Instance[];
    try {
      instances = [];
      for (let i = 2; i + 2 < reply.length; i += 3) {
        instances.push(
          toInstance(
            reply[i]!,
            JSON.parse(reply[i + 1]!) as InstanceSpec,
            JSON.parse(reply[i + 2]!) as Lease,
          ),
        );
      }
    } catch (err) {
      this.#failed('resync', err);
      this.#opts.metrics.recordResync(reason, 'failure');
      this.#drainBuffer();
      return;
    }
    const epochChanged = this.#epoch !== undefined && this.#epoch !== reply[0];
    this.#epoch = reply[0]!;
    this.#rev = Number(reply[1]);
    this.#keyRevs.clear();
    const changes = this.view.replaceAll(instances);
    let earliest = Number.POSITIVE_INFINITY;
    for (const instance of instances) if (instance.expiresAt < earliest) earliest = instance.expiresAt;
    if (earliest !== Number.POSITIVE_INFINITY) this.#sweepBy(earliest);
    this.#lastSync = new Date().toISOString();
    this.#opts.metrics.recordResync(reason, 'success');
    const log = changes > 0 || epochChanged || reason !== 'periodic' ? 'info' : 'debug';
    this.#opts.logger[log](
      { reason, instances: instances.length, changes, epochChanged },
      'registry view re-read from Redis',
    );
    if (!this.#everSynced) {
      this.#everSynced = true;
      this.#firstSync.resolve();
    }
    this.#drainBuffer();
  }

  #drainBuffer(): void {
    const buffered = this.#buffer ?? [];
    this.#buffer = undefined;
    if (this.#epoch === undefined) return;
    for (const event of buffered) this.#apply(event);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#sweepTimer);
    for (const off of this.#unlisten) off();
    // Renewals still gathering are sent now, not dropped.
    this.#flushRenewals();
    await this.#renewing;
    // The other replicas take the last renewals now rather than at their next re-read.
    if (this.#redis.ready) await this.#announceRenewals();
    clearTimeout(this.#announceTimer);
    await this.#resyncing?.catch(() => undefined);
    if (this.#subscribed && this.#subscriber.ready)
      await this.#subscriber.client.unsubscribe(this.#channel).catch(() => undefined);
  }
}
