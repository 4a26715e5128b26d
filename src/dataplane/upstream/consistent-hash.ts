import type { IncomingHttpHeaders } from 'node:http';
import { type Balancer, drawOne, type PickContext, wasTried } from './balancer.ts';
import type { Random } from './clock.ts';
import type { Endpoint } from './endpoint.ts';
import { hash32 } from './hash.ts';
import type { HashOnConfig } from './policy-schema.ts';

/** Ring points per endpoint of the smallest weight; heavier endpoints get proportionally more. */
export const POINTS_PER_ENDPOINT = 160;
/** Bound on the ring size, whatever the weights. */
const MAX_POINTS = 100_000;

type KeyOf = (ctx: PickContext | undefined) => string | undefined;

function headerValue(headers: IncomingHttpHeaders | undefined, name: string): string | undefined {
  const v = headers?.[name];
  if (typeof v === 'string') return v === '' ? undefined : v;
  return Array.isArray(v) ? v[0] : undefined;
}

/** The value of cookie `name` in a Cookie header, without splitting the whole header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  let from = 0;
  while (from < header.length) {
    const at = header.indexOf(name, from);
    if (at < 0) return undefined;
    const end = at + name.length;
    const startsPair = at === 0 || header[at - 1] === ' ' || header[at - 1] === ';';
    if (startsPair && header[end] === '=') {
      const semi = header.indexOf(';', end + 1);
      const value = header.slice(end + 1, semi < 0 ? header.length : semi).trim();
      return value === '' ? undefined : value;
    }
    from = end;
  }
  return undefined;
}

function keyFunction(hashOn: HashOnConfig): KeyOf {
  switch (hashOn.source) {
    case 'header': {
      const name = hashOn.name.toLowerCase();
      return function headerKey(ctx) {
        return headerValue(ctx?.headers, name);
      };
    }
    case 'cookie': {
      const name = hashOn.name;
      return function cookieKey(ctx) {
        return cookieValue(headerValue(ctx?.headers, 'cookie'), name);
      };
    }
    case 'client_address':
      return function addressKey(ctx) {
        return ctx?.clientAddress || undefined;
      };
  }
}

/**
 * Consistent hashing on a ring (Karger et al.; ketama's layout): each endpoint owns points
 * hash(`id#i`) in proportion to its weight, and a key goes to the owner of the first point at or
 * after hash(key). Adding or removing one of N endpoints moves only the keys of the points it owns
 * or gains, about 1/N of them; the others keep their endpoint. A ring rather than Maglev: it has a
 * natural "next endpoint" for retries and exclusions, and its rebuild cost only matters on
 * endpoint-set changes. A request without a key goes to a random endpoint.
 */
export class ConsistentHashBalancer implements Balancer {
  readonly kind = 'consistent_hash';
  readonly #keyOf: KeyOf;
  readonly #random: Random;
  #list: readonly Endpoint[] = [];
  #points = new Uint32Array(0);
  #owners: Endpoint[] = [];

  constructor(endpoints: readonly Endpoint[], hashOn: HashOnConfig, random: Random) {
    this.#keyOf = keyFunction(hashOn);
    this.#random = random;
    this.update(endpoints);
  }

  pick(ctx?: PickContext): Endpoint | undefined {
    const list = this.#list;
    if (list.length <= 1) return list[0];
    const tried = ctx?.tried;
    const key = ctx?.hashKey ?? this.#keyOf(ctx);
    if (key === undefined) return drawOne(list, this.#random, tried);
    const points = this.#points;
    const owners = this.#owners;
    const h = hash32(key);
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    const start = lo === points.length ? 0 : lo;
    if (tried === undefined || tried.length === 0) return owners[start];
    for (let k = 0; k < owners.length; k++) {
      const e = owners[(start + k) % owners.length]!;
      if (!wasTried(tried, e)) return e;
    }
    return owners[start];
  }

  /** The endpoint a key maps to, ignoring exclusions (for tests and the admin API). */
  owner(key: string): Endpoint | undefined {
    return this.pick({ hashKey: key });
  }

  update(endpoints: readonly Endpoint[]): void {
    this.#list = endpoints;
    if (endpoints.length === 0) {
      this.#points = new Uint32Array(0);
      this.#owners = [];
      return;
    }
    let minWeight = Infinity;
    let totalWeight = 0;
    for (const e of endpoints) {
      minWeight = Math.min(minWeight, e.weight);
      totalWeight += e.weight;
    }
    const scale = Math.min(POINTS_PER_ENDPOINT / minWeight, MAX_POINTS / totalWeight);
    // Ties (a 32-bit collision) go to the lower id, so every replica builds the same ring: the
    // rank by id rides in the low bits of each sort key (point × 2^20 + rank, exact in a double).
    const byId = [...endpoints].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const points = byId.map((e) => pointsOf(e, Math.max(1, Math.round(e.weight * scale))));
    let total = 0;
    for (const p of points) total += p.length;
    const keys = new Float64Array(total);
    let k = 0;
    for (let rank = 0; rank < byId.length; rank++)
      for (const point of points[rank]!) keys[k++] = point * RANKS + rank;
    keys.sort();
    const ring = new Uint32Array(total);
    const owners = new Array<Endpoint>(total);
    for (let i = 0; i < total; i++) {
      const rank = keys[i]! % RANKS;
      ring[i] = (keys[i]! - rank) / RANKS;
      owners[i] = byId[rank]!;
    }
    this.#points = ring;
    this.#owners = owners;
  }
}

/** Room for the rank of an endpoint in a ring sort key: up to 2^20 endpoints. */
const RANKS = 2 ** 20;

/** An endpoint's ring points for a point count, computed once: a rebuild then only sorts. */
const pointCache = new WeakMap<Endpoint, Uint32Array>();

function pointsOf(e: Endpoint, count: number): Uint32Array {
  const cached = pointCache.get(e);
  if (cached !== undefined && cached.length === count) return cached;
  const points = new Uint32Array(count);
  for (let i = 0; i < count; i++) points[i] = hash32(`${e.id}#${i}`);
  pointCache.set(e, points);
  return points;
}
