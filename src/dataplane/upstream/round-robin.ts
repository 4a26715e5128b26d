import type { Balancer } from './balancer.ts';
import type { Endpoint } from './endpoint.ts';

/** Plain round robin over the current endpoint list. */
export class RoundRobinBalancer implements Balancer {
  readonly kind = 'round_robin';
  #endpoints: readonly Endpoint[];
  #next = 0;

  constructor(endpoints: readonly Endpoint[]) {
    this.#endpoints = endpoints;
  }

  pick(): Endpoint | undefined {
    const list = this.#endpoints;
    if (list.length === 0) return undefined;
    if (this.#next >= list.length) this.#next = 0;
    return list[this.#next++];
  }

  update(endpoints: readonly Endpoint[]): void {
    this.#endpoints = endpoints;
  }
}
