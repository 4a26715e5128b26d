import { type Balancer, wasTried } from './balancer.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * Where a rotation stands: the next index (equal weights), or each endpoint's next deadline in a
 * binary min-heap of endpoint indexes (unequal weights).
 */
interface Rotation {
  next: number;
  /** The last deadline served: where the schedule's clock stands. */
  now: number;
  deadlines: Float64Array;
  /** heap[0] is the index of the endpoint with the earliest deadline (ties: the lower index). */
  heap: Int32Array;
}

function rotation(): Rotation {
  return { next: 0, now: 0, deadlines: new Float64Array(0), heap: new Int32Array(0) };
}

function earlier(d: Float64Array, a: number, b: number): boolean {
  return d[a]! < d[b]! || (d[a] === d[b] && a < b);
}

/** Restore the heap below `pos` (its entry may be late); O(log n). */
export function siftDown(heap: Int32Array, size: number, d: Float64Array, pos: number): void {
  const item = heap[pos]!;
  for (;;) {
    let child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && earlier(d, heap[child + 1]!, heap[child]!)) child++;
    if (!earlier(d, heap[child]!, item)) break;
    heap[pos] = heap[child]!;
    pos = child;
  }
  heap[pos] = item;
}

/** Restore the heap above `pos` (its entry may be early); O(log n). */
export function siftUp(heap: Int32Array, d: Float64Array, pos: number): void {
  const item = heap[pos]!;
  while (pos > 0) {
    const parent = (pos - 1) >> 1;
    if (!earlier(d, item, heap[parent]!)) break;
    heap[pos] = heap[parent]!;
    pos = parent;
  }
  heap[pos] = item;
}

/**
 * Weighted round robin by earliest deadline first (stride scheduling, as Envoy's and gRPC's
 * weighted round robin): endpoint i is due every 1/weight, its first turn half a stride in, and
 * each pick serves the earliest deadline, kept in a binary heap. Weights 5,1,1 give a a a b c a a;
 * over any whole period every endpoint gets exactly its weight's share. A pick costs O(log n),
 * whatever the set's size. Equal weights take a plain cursor instead (O(1)).
 *
 * Retries (picks with tried endpoints) take turns in a rotation of their own. Were they to move the
 * shared one, each retry away from a failing endpoint would hand the next first attempt back to it:
 * with two endpoints and a sequential client, every first attempt would go to the failing one.
 */
export class WeightedRoundRobinBalancer implements Balancer {
  readonly kind = 'round_robin';
  #list: readonly Endpoint[] = [];
  #strides = new Float64Array(0);
  #uniform = true;
  readonly #first = rotation();
  readonly #retries = rotation();
  /** Tried endpoints lifted off the heap while a retry looks past them (reused). */
  #lifted = new Int32Array(0);

  constructor(endpoints: readonly Endpoint[]) {
    this.update(endpoints);
  }

  pick(ctx?: { readonly tried?: readonly Endpoint[] | undefined }): Endpoint | undefined {
    const list = this.#list;
    const n = list.length;
    if (n <= 1) return list[0];
    const tried = ctx?.tried;
    const retry = tried !== undefined && tried.length > 0;
    const rotation = retry ? this.#retries : this.#first;
    if (this.#uniform) {
      for (let k = 0; k < n; k++) {
        if (rotation.next >= n) rotation.next = 0;
        const e = list[rotation.next++]!;
        if (!retry || !wasTried(tried, e)) return e;
      }
      if (rotation.next >= n) rotation.next = 0;
      return list[rotation.next++];
    }
    const { heap, deadlines: d } = rotation;
    const strides = this.#strides;
    if (!retry) {
      const i = heap[0]!;
      rotation.now = d[i]!;
      d[i]! += strides[i]!;
      siftDown(heap, n, d, 0);
      return list[i];
    }
    // Lift tried endpoints off the top until an untried one is there (at most tried.length).
    const lifted = this.#lifted;
    let size = n;
    let count = 0;
    while (count < tried.length && size > 1 && wasTried(tried, list[heap[0]!]!)) {
      lifted[count++] = heap[0]!;
      heap[0] = heap[--size]!;
      siftDown(heap, size, d, 0);
    }
    let chosen = heap[0]!;
    if (count > 0 && wasTried(tried, list[chosen]!)) {
      // All of them were tried: the earliest again.
      chosen = lifted[0]!;
      rotation.now = d[chosen]!;
      d[chosen]! += strides[chosen]!;
    } else {
      rotation.now = d[chosen]!;
      d[chosen]! += strides[chosen]!;
      siftDown(heap, size, d, 0);
    }
    for (let k = 0; k < count; k++) {
      heap[size] = lifted[k]!;
      siftUp(heap, d, size++);
    }
    return list[chosen];
  }

  /** The balancer keeps `endpoints` (the cluster never changes an array it handed over). */
  update(endpoints: readonly Endpoint[]): void {
    const old = this.#list;
    const n = endpoints.length;
    let uniform = true;
    const strides = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const w = endpoints[i]!.weight;
      strides[i] = 1 / w;
      if (w !== endpoints[0]!.weight) uniform = false;
    }
    const before = new Map<Endpoint, number>();
    for (let i = 0; i < old.length; i++) before.set(old[i]!, i);
    this.#list = endpoints;
    this.#strides = strides;
    this.#uniform = uniform;
    this.#lifted = new Int32Array(n);
    carryOver(this.#first, old, endpoints, before, strides);
    carryOver(this.#retries, old, endpoints, before, strides);
  }
}

/**
 * Keep a rotation where it was across `update`: the endpoint that was next stays next, deadlines
 * stay; a newcomer's first turn is half a stride after the schedule's clock.
 */
function carryOver(
  rotation: Rotation,
  old: readonly Endpoint[],
  list: readonly Endpoint[],
  before: ReadonlyMap<Endpoint, number>,
  strides: Float64Array,
): void {
  const n = list.length;
  const following = old[rotation.next];
  const at = following === undefined ? -1 : list.indexOf(following);
  rotation.next = at >= 0 ? at : 0;
  const deadlines = new Float64Array(n);
  const heap = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const was = before.get(list[i]!);
    deadlines[i] =
      was !== undefined && was < rotation.deadlines.length
        ? rotation.deadlines[was]!
        : rotation.now + strides[i]! / 2;
    heap[i] = i;
  }
  rotation.deadlines = deadlines;
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(heap, n, deadlines, i);
  rotation.heap = heap;
}
