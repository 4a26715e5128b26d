import type { Endpoint } from './endpoint.ts';

/** Per-request input a balancer may use (hash keys for consistent hashing, later). */
export interface PickContext {
  readonly hashKey?: string;
}

/**
 * Chooses an endpoint for one attempt. Implementations keep their own state; `update` is called
 * when the endpoint set changes (reload, discovery) and must keep state for endpoints that stay.
 */
export interface Balancer {
  readonly kind: string;
  pick(ctx?: PickContext): Endpoint | undefined;
  update(endpoints: readonly Endpoint[]): void;
}
