import { type Balancer, wasTried } from './balancer.ts';
import type { Endpoint } from './endpoint.ts';

/** Where a rotation stands: the next index (equal weights) or the running scores (smooth). */
interface Rotation {
  next: number;
  scores: Float64Array;
}

/**
 * Weighted round robin, nginx's "smooth" variant: each pick adds every endpoint's weight to its
 * running score and takes the highest, which then gives back the total. Weights 5,1,1 give
 * a a b a c a a rather than a a a a a b c. Equal weights take a plain cursor instead.
 *
 * Retries (picks with tried endpoints) take turns in a rotation of their own. Were they to move the
 * shared one, each retry away from a failing endpoint would hand the next first attempt back to it:
 * with two endpoints and a sequential client, every first attempt would go to the failing one.
 */
export class WeightedRoundRobinBalancer implements Balancer {
  readonly kind = 'round_robin';
  #list: readonly Endpoint[] = [];
  #weights = new Float64Array(0);
  #total = 0;
  #uniform = true;
  readonly #first: Rotation = { next: 0, scores: new Float64Array(0) };
  readonly #retries: Rotation = { next: 0, scores: new Float64Array(0) };

  constructor(endpoints: readonly Endpoint[]) {
    this.update(endpoints);
  }

  pick(ctx?: { readonly tried?: readonly Endpoint[] | undefined }): Endpoint | undefined {
    const list = this.#list;
    const n = list.length;
    if (n <= 1) return list[0];
    const tried = ctx?.tried;
    const rotation = tried !== undefined && tried.length > 0 ? this.#retries : this.#first;
    if (this.#uniform) {
      for (let k = 0; k < n; k++) {
        if (rotation.next >= n) rotation.next = 0;
        const e = list[rotation.next++]!;
        if (tried === undefined || !wasTried(tried, e)) return e;
      }
      if (rotation.next >= n) rotation.next = 0;
      return list[rotation.next++];
    }
    const weights = this.#weights;
    const scores = rotation.scores;
    let best = -1;
    let bestAny = 0;
    for (let i = 0; i < n; i++) {
      const s = scores[i]! + weights[i]!;
      scores[i] = s;
      if (s > scores[bestAny]!) bestAny = i;
      if (tried !== undefined && wasTried(tried, list[i]!)) continue;
      if (best < 0 || s > scores[best]!) best = i;
    }
    if (best < 0) best = bestAny;
    scores[best]! -= this.#total;
    return list[best];
  }

  update(endpoints: readonly Endpoint[]): void {
    const old = this.#list;
    const n = endpoints.length;
    const weights = new Float64Array(n);
    let total = 0;
    let uniform = true;
    for (let i = 0; i < n; i++) {
      const e = endpoints[i]!;
      weights[i] = e.weight;
      total += e.weight;
      if (e.weight !== endpoints[0]!.weight) uniform = false;
    }
    this.#list = [...endpoints];
    this.#weights = weights;
    this.#total = total;
    this.#uniform = uniform;
    carryOver(this.#first, old, this.#list);
    carryOver(this.#retries, old, this.#list);
  }
}

/** Keep a rotation where it was across `update`: the endpoint that was next stays next, scores stay. */
function carryOver(rotation: Rotation, old: readonly Endpoint[], list: readonly Endpoint[]): void {
  const following = old[rotation.next];
  const scores = new Float64Array(list.length);
  for (let i = 0; i < list.length; i++) {
    const before = old.indexOf(list[i]!);
    if (before >= 0) scores[i] = rotation.scores[before]!;
  }
  rotation.scores = scores;
  const at = following === undefined ? -1 : list.indexOf(following);
  rotation.next = at >= 0 ? at : 0;
}
