import { type Balancer, drawTwo, type PickContext, WeightedSampler } from './balancer.ts';
import type { Random } from './clock.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * Least request by the power of two choices: two endpoints drawn at random (by weight), the one
 * with fewer attempts in flight per unit of weight wins. Sampling two rather than scanning all
 * avoids herding onto one endpoint that looked idle a moment ago, and costs O(1) (O(log n) with
 * unequal weights). Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing".
 */
export class LeastRequestBalancer implements Balancer {
  readonly kind = 'least_request';
  readonly #random: Random;
  #list: readonly Endpoint[] = [];
  #sampler = new WeightedSampler([]);
  readonly #pair: Endpoint[] = [];

  constructor(endpoints: readonly Endpoint[], random: Random) {
    this.#random = random;
    this.update(endpoints);
  }

  pick(ctx?: PickContext): Endpoint | undefined {
    const list = this.#list;
    if (list.length <= 1) return list[0];
    const pair = this.#pair;
    drawTwo(list, this.#sampler, this.#random, ctx?.tried, pair);
    const a = pair[0]!;
    const b = pair[1]!;
    return b.inFlight / b.weight < a.inFlight / a.weight ? b : a;
  }

  update(endpoints: readonly Endpoint[]): void {
    this.#list = endpoints;
    this.#sampler = new WeightedSampler(endpoints);
  }
}
