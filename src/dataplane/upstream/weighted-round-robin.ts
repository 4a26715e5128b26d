import { type Balancer, wasTried } from './balancer.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * Weighted round robin, nginx's "smooth" variant: each pick adds every endpoint's weight to its
 * running score and takes the highest, which then gives back the total. Weights 5,1,1 give
 * a a b a c a a rather than a a a a a b c. Equal weights take a plain cursor instead.
 */
export class WeightedRoundRobinBalancer implements Balancer {
  readonly kind = 'round_robin';
  #list: readonly Endpoint[] = [];
  #weights = new Float64Array(0);
  #scores = new Float64Array(0);
  #total = 0;
  #uniform = true;
  #next = 0;

  constructor(endpoints: readonly Endpoint[]) {
    this.update(endpoints);
  }

  pick(ctx?: { readonly tried?: readonly Endpoint[] | undefined }): Endpoint | undefined {
    const list = this.#list;
    const n = list.length;
    if (n <= 1) return list[0];
    const tried = ctx?.tried;
    if (this.#uniform) {
      for (let k = 0; k < n; k++) {
        if (this.#next >= n) this.#next = 0;
        const e = list[this.#next++]!;
        if (tried === undefined || !wasTried(tried, e)) return e;
      }
      if (this.#next >= n) this.#next = 0;
      return list[this.#next++];
    }
    const weights = this.#weights;
    const scores = this.#scores;
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
    const oldScores = this.#scores;
    const following = old[this.#next];
    const n = endpoints.length;
    const weights = new Float64Array(n);
    const scores = new Float64Array(n);
    let total = 0;
    let uniform = true;
    for (let i = 0; i < n; i++) {
      const e = endpoints[i]!;
      weights[i] = e.weight;
      total += e.weight;
      if (e.weight !== endpoints[0]!.weight) uniform = false;
      const before = old.indexOf(e);
      if (before >= 0) scores[i] = oldScores[before]!;
    }
    this.#list = [...endpoints];
    this.#weights = weights;
    this.#scores = scores;
    this.#total = total;
    this.#uniform = uniform;
    // Keep the rotation where it was: the endpoint that was next stays next.
    const at = following === undefined ? -1 : this.#list.indexOf(following);
    this.#next = at >= 0 ? at : 0;
  }
}
