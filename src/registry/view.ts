/**
 * A replica's view of the registry: instances by service, the watchers, and the diff that turns a
 * new state into change events. Both stores keep one; reads (`list`, `services`) come from here
 * and never touch the network.
 */
import {
  ALL_SERVICES,
  type ChangeCause,
  type Instance,
  type InstanceChange,
  type InstanceSpec,
  type ServiceSummary,
  type WatchListener,
} from './store.ts';

const EMPTY: readonly Instance[] = Object.freeze([]);

/** What a renewal changes: the lease's times and the gateway that renewed it. */
export type LeaseTimes = Pick<Instance, 'expiresAt' | 'lastHeartbeat' | 'registeredVia'>;

function sameMetadata(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}

/** Same spec (address, port, protocol, zone, version, weight, metadata). */
export function sameSpec(a: InstanceSpec, b: InstanceSpec): boolean {
  return (
    a.address === b.address &&
    a.port === b.port &&
    a.protocol === b.protocol &&
    a.zone === b.zone &&
    a.version === b.version &&
    a.weight === b.weight &&
    sameMetadata(a.metadata, b.metadata)
  );
}

/** What watchers see: the spec and the state (lease times and the renewing gateway are not changes). */
function sameRouting(a: Instance, b: Instance): boolean {
  return a.state === b.state && sameSpec(a, b);
}

export class RegistryView {
  readonly #services = new Map<string, Map<string, Instance>>();
  /** Sorted lists handed out by list(), rebuilt after a change of that service. */
  readonly #lists = new Map<string, readonly Instance[]>();
  readonly #watchers = new Map<string, Set<WatchListener>>();
  readonly #onListenerError: (err: unknown) => void;

  constructor(onListenerError: (err: unknown) => void) {
    this.#onListenerError = onListenerError;
  }

  get(service: string, id: string): Instance | undefined {
    return this.#services.get(service)?.get(id);
  }

  list(service: string): readonly Instance[] {
    const cached = this.#lists.get(service);
    if (cached !== undefined) return cached;
    const byId = this.#services.get(service);
    if (byId === undefined) return EMPTY;
    const list = Object.freeze([...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
    this.#lists.set(service, list);
    return list;
  }

  /** Instances of a service (0 when unknown). */
  count(service: string): number {
    return this.#services.get(service)?.size ?? 0;
  }

  get serviceCount(): number {
    return this.#services.size;
  }

  services(): ServiceSummary[] {
    const out: ServiceSummary[] = [];
    for (const [service, byId] of this.#services) {
      let draining = 0;
      for (const i of byId.values()) if (i.state === 'draining') draining++;
      out.push({ service, instances: byId.size, active: byId.size - draining, draining });
    }
    return out.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
  }

  *all(): IterableIterator<Instance> {
    for (const byId of this.#services.values()) yield* byId.values();
  }

  /**
   * Store `instance`. Watchers hear of it when it is new or its spec or state changed (`cause`);
   * a renewal (lease times only) updates the view silently. Returns the previous instance.
   */
  upsert(instance: Instance, cause: ChangeCause): Instance | undefined {
    let byId = this.#services.get(instance.service);
    if (byId === undefined) {
      byId = new Map();
      this.#services.set(instance.service, byId);
    }
    const previous = byId.get(instance.id);
    byId.set(instance.id, instance);
    this.#lists.delete(instance.service);
    if (previous === undefined || !sameRouting(previous, instance))
      this.#emit({ type: 'upsert', cause, instance });
    return previous;
  }

  /**
   * Take a renewal's lease times for an instance the view holds: no watcher hears of it (routing
   * is unchanged), nothing but the instance's record is touched. A renewal older than what the
   * view shows is ignored. Returns the instance as the view now holds it; undefined when unknown
   * (a renewal never brings an instance back).
   */
  renew(service: string, id: string, lease: LeaseTimes): Instance | undefined {
    const byId = this.#services.get(service);
    const current = byId?.get(id);
    if (byId === undefined || current === undefined) return undefined;
    if (
      lease.lastHeartbeat < current.lastHeartbeat ||
      (lease.lastHeartbeat === current.lastHeartbeat &&
        lease.expiresAt === current.expiresAt &&
        lease.registeredVia === current.registeredVia)
    )
      return current;
    const renewed: Instance = {
      ...current,
      expiresAt: lease.expiresAt,
      lastHeartbeat: lease.lastHeartbeat,
      registeredVia: lease.registeredVia,
    };
    byId.set(id, renewed);
    // list() is rebuilt when next asked for (reads are rare next to renewals).
    this.#lists.delete(service);
    return renewed;
  }

  /** Remove an instance; watchers hear of it. Returns what was removed. */
  remove(service: string, id: string, cause: ChangeCause): Instance | undefined {
    const byId = this.#services.get(service);
    const previous = byId?.get(id);
    if (byId === undefined || previous === undefined) return undefined;
    byId.delete(id);
    if (byId.size === 0) this.#services.delete(service);
    this.#lists.delete(service);
    this.#emit({ type: 'remove', cause, instance: previous });
    return previous;
  }

  /**
   * Make the view equal to `instances` (a full read of the store): instances not in it are removed,
   * new or changed ones upserted, all with cause `resync`. Returns how many changed.
   */
  replaceAll(instances: Iterable<Instance>): number {
    const seen = new Map<string, Set<string>>();
    let changes = 0;
    for (const instance of instances) {
      let ids = seen.get(instance.service);
      if (ids === undefined) {
        ids = new Set();
        seen.set(instance.service, ids);
      }
      ids.add(instance.id);
      const previous = this.get(instance.service, instance.id);
      if (previous === undefined || !sameRouting(previous, instance)) changes++;
      this.upsert(instance, 'resync');
    }
    for (const [service, byId] of [...this.#services]) {
      const keep = seen.get(service);
      for (const id of [...byId.keys()]) {
        if (keep?.has(id)) continue;
        this.remove(service, id, 'resync');
        changes++;
      }
    }
    return changes;
  }

  watch(service: string, listener: WatchListener): () => void {
    let set = this.#watchers.get(service);
    if (set === undefined) {
      set = new Set();
      this.#watchers.set(service, set);
    }
    set.add(listener);
    const watchers = this.#watchers;
    return function unwatch(): void {
      const s = watchers.get(service);
      if (s === undefined) return;
      s.delete(listener);
      if (s.size === 0) watchers.delete(service);
    };
  }

  #emit(change: InstanceChange): void {
    this.#notify(this.#watchers.get(change.instance.service), change);
    this.#notify(this.#watchers.get(ALL_SERVICES), change);
  }

  #notify(listeners: Set<WatchListener> | undefined, change: InstanceChange): void {
    if (listeners === undefined) return;
    for (const listener of listeners) {
      try {
        listener(change);
      } catch (err) {
        this.#onListenerError(err);
      }
    }
  }
}

/** The reads every store answers from its view (no I/O): stores extend this and keep `view` current. */
export abstract class ViewedStore {
  protected readonly view: RegistryView;

  constructor(onListenerError: (err: unknown) => void) {
    this.view = new RegistryView(onListenerError);
  }

  list(service: string): readonly Instance[] {
    return this.view.list(service);
  }

  get(service: string, id: string): Instance | undefined {
    return this.view.get(service, id);
  }

  services(): readonly ServiceSummary[] {
    return this.view.services();
  }

  watch(service: string, listener: WatchListener): () => void {
    return this.view.watch(service, listener);
  }

  /** Every instance in the view (for the instance gauge). */
  all(): IterableIterator<Instance> {
    return this.view.all();
  }
}
