import { hostname } from 'node:os';
import type { Endpoint } from './endpoint.ts';
import { hash32 } from './hash.ts';
import type { ApertureConfig, ReplicaConfig } from './policy-schema.ts';

/**
 * Where this gateway process sits among its replicas: the same for every upstream it serves.
 * With `index` and `count` (the static `replica` setting) the replicas' windows tile each ring;
 * without, the offset comes from a hash of the host name and process id.
 */
export interface ReplicaPosition {
  /** In [0, 1): where the window starts on a ring. */
  readonly offset: number;
  readonly index?: number | undefined;
  readonly count?: number | undefined;
}

export function replicaPosition(
  cfg: ReplicaConfig | undefined,
  id = `${hostname()}/${process.pid}`,
): ReplicaPosition {
  if (cfg !== undefined) return { offset: cfg.index / cfg.count, index: cfg.index, count: cfg.count };
  return { offset: hash32(id) / 2 ** 32 };
}

/** Widening asks for this much room over the load that triggered it, so it does not widen again at once. */
const HEADROOM = 1.5;

/** Ring keys, per endpoint object: its id's hash never changes. */
const ringKeys = new WeakMap<Endpoint, number>();

function ringKey(e: Endpoint): number {
  let k = ringKeys.get(e);
  if (k === undefined) {
    k = hash32(e.id);
    ringKeys.set(e, k);
  }
  return k;
}

function byRingKey(a: Endpoint, b: Endpoint): number {
  return ringKey(a) - ringKey(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** What changed in the set since the last `setMembers`. */
export interface MemberChange {
  readonly added: readonly Endpoint[];
  readonly removed: readonly Endpoint[];
}

/**
 * The ring after `change`: the endpoints that stay keep their order, the newcomers are sorted and
 * merged in. O(n) with lookups only in the (small) change, where sorting the whole set again would
 * look keys up n log n times.
 */
function changeRing(previous: readonly Endpoint[], change: MemberChange): Endpoint[] {
  const gone = new Set(change.removed);
  const kept = gone.size === 0 ? previous : previous.filter((e) => !gone.has(e));
  return merge(kept, [...change.added].sort(byRingKey));
}

function merge(kept: readonly Endpoint[], added: readonly Endpoint[]): Endpoint[] {
  if (added.length === 0) return [...kept];
  const ring: Endpoint[] = [];
  let i = 0;
  let j = 0;
  while (i < kept.length && j < added.length)
    ring.push(byRingKey(kept[i]!, added[j]!) <= 0 ? kept[i++]! : added[j++]!);
  while (i < kept.length) ring.push(kept[i++]!);
  while (j < added.length) ring.push(added[j++]!);
  return ring;
}

/** Non-negative `a mod n`. */
function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

export interface ApertureDescription {
  /** Endpoints balanced over now (at most `size`; fewer when not enough are eligible). */
  inUse: number;
  /** How many the window holds: its base size, or more under load. */
  size: number;
  /** The base: minEndpoints, or this replica's share of the ring when `replica` is set. */
  baseSize: number;
  minEndpoints: number;
  maxLoad: number;
  /** Where the window starts on the ring, in [0, 1). */
  offset: number;
  replica: { index: number; count: number } | null;
}

/**
 * Deterministic aperture (Finagle's, in the form this gateway needs): the upstream's endpoints sit
 * on a ring in the order of a hash of their ids, the same in every replica, and this replica
 * balances over the `size` eligible endpoints from its offset onward. Joining or leaving moves an
 * endpoint into or out of one place in the ring, so a window changes by about one endpoint per
 * change; an ineligible endpoint inside the window is stepped over (the window reaches one further),
 * so failures widen it rather than shrink it.
 *
 * The base size is `minEndpoints`; with `replica: { index, count }` it is a whole number `c` of
 * ring shares (c = ⌈count × minEndpoints / ring⌉), and window `index` starts at share `index`: every
 * endpoint is then in exactly `c` replicas' windows. Under load the window widens (`grow`, called
 * from the attempt path when attempts in flight pass size × maxLoad) and narrows again when a
 * period's peak would fit (`shrink`), never below the base.
 */
export class Aperture {
  readonly #cfg: ApertureConfig;
  readonly #replica: ReplicaPosition;
  #ring: Endpoint[] = [];
  #start = 0;
  #baseSize = 0;
  /** What the load asks for (0: nothing beyond the base). */
  #loadSize = 0;
  #inUse = 0;
  /** The ring entries the last window walked over: in use, and stepped over (ineligible). */
  #watched: readonly Endpoint[] = [];

  constructor(cfg: ApertureConfig, replica: ReplicaPosition) {
    this.#cfg = cfg;
    this.#replica = replica;
  }

  /** Endpoints the window holds when enough are eligible. */
  get size(): number {
    return Math.max(this.#baseSize, this.#loadSize);
  }

  /** The size without load: minEndpoints, or this replica's share of the ring. */
  get baseSize(): number {
    return this.#baseSize;
  }

  get maxLoad(): number {
    return this.#cfg.maxLoad;
  }

  /**
   * The live set changed (joined or left, not health): place it on the ring. With `change` (what
   * joined and left since the last call), only that is looked at.
   */
  setMembers(members: readonly Endpoint[], change?: MemberChange): void {
    const ring = change === undefined ? [...members].sort(byRingKey) : changeRing(this.#ring, change);
    this.#ring = ring;
    const r = ring.length;
    const { index, count } = this.#replica;
    const min = this.#cfg.minEndpoints;
    if (r === 0) {
      this.#start = 0;
      this.#baseSize = 0;
    } else if (index !== undefined && count !== undefined) {
      const shares = Math.min(count, Math.max(1, Math.ceil((count * min) / r)));
      const from = Math.ceil((index * r) / count);
      this.#start = mod(from, r);
      this.#baseSize = Math.max(1, Math.ceil(((index + shares) * r) / count) - from);
    } else {
      this.#start = Math.min(r - 1, Math.floor(this.#replica.offset * r));
      this.#baseSize = Math.min(r, min);
    }
  }

  /**
   * The endpoints to balance over, among `candidates` (the eligible endpoints, or all of them in
   * panic mode; `isCandidate` says the same of one endpoint, faster than a set of them): `candidates`
   * itself when the window would hold them all, else a new array in ring order. Also sets `watched`.
   */
  choose(candidates: readonly Endpoint[], isCandidate?: (e: Endpoint) => boolean): readonly Endpoint[] {
    const size = this.size;
    if (size >= candidates.length) {
      this.#inUse = candidates.length;
      this.#watched = this.#ring;
      return candidates;
    }
    const eligible = isCandidate === undefined ? new Set(candidates) : { has: isCandidate };
    const ring = this.#ring;
    const r = ring.length;
    const chosen: Endpoint[] = [];
    let walked = 0;
    while (walked < r && chosen.length < size) {
      const e = ring[(this.#start + walked) % r]!;
      walked++;
      if (eligible.has(e)) chosen.push(e);
    }
    const watched: Endpoint[] = [];
    for (let k = 0; k < walked; k++) watched.push(ring[(this.#start + k) % r]!);
    this.#watched = watched;
    this.#inUse = chosen.length;
    return chosen;
  }

  /**
   * The ring entries the last `choose` walked over: what this replica uses, and the ineligible
   * endpoints inside its window, which it will use again once they recover. Health checks run at
   * the full rate for these (docs/resilience.md#active-health-checks).
   */
  get watched(): readonly Endpoint[] {
    return this.#watched;
  }

  /** Widen with headroom when `inFlight` attempts pass size × maxLoad. True when the size changed. */
  grow(inFlight: number): boolean {
    if (inFlight <= this.size * this.#cfg.maxLoad) return false;
    const wanted = Math.min(this.#ring.length, Math.ceil((inFlight * HEADROOM) / this.#cfg.maxLoad));
    if (wanted <= this.size) return false;
    this.#loadSize = wanted;
    return true;
  }

  /** At the end of a period whose peak was `peak` attempts in flight: narrow when it fits. */
  shrink(peak: number): boolean {
    if (this.#loadSize <= this.#baseSize) return false;
    const wanted = Math.ceil((peak * HEADROOM) / this.#cfg.maxLoad);
    if (wanted >= this.#loadSize) return false;
    this.#loadSize = wanted <= this.#baseSize ? 0 : wanted;
    return true;
  }

  describe(): ApertureDescription {
    const { index, count } = this.#replica;
    return {
      inUse: this.#inUse,
      size: this.size,
      baseSize: this.#baseSize,
      minEndpoints: this.#cfg.minEndpoints,
      maxLoad: this.#cfg.maxLoad,
      offset: this.#ring.length === 0 ? this.#replica.offset : this.#start / this.#ring.length,
      replica: index !== undefined && count !== undefined ? { index, count } : null,
    };
  }
}
