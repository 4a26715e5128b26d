import type { Balancer, BalancerDeps } from './balancer.ts';
import { ConsistentHashBalancer } from './consistent-hash.ts';
import type { Endpoint } from './endpoint.ts';
import { LeastRequestBalancer } from './least-request.ts';
import { PeakEwmaBalancer } from './peak-ewma.ts';
import type { BalancerConfig } from './policy-schema.ts';
import { WeightedRoundRobinBalancer } from './weighted-round-robin.ts';

/** Defaults of the peak-EWMA estimate, also kept (for the admin API) under other balancers. */
export const DEFAULT_DECAY_MS = 10_000;
export const DEFAULT_RTT_MS = 30;

/** A balancer's own settings: the aperture is the cluster's (aperture.ts). */
type BalancerSettings = BalancerConfig extends infer C
  ? C extends unknown
    ? Omit<C, 'aperture'>
    : never
  : never;

export function createBalancer(
  cfg: BalancerSettings,
  endpoints: readonly Endpoint[],
  deps: BalancerDeps,
): Balancer {
  switch (cfg.kind) {
    case 'round_robin':
      return new WeightedRoundRobinBalancer(endpoints);
    case 'least_request':
      return new LeastRequestBalancer(endpoints, deps.random);
    case 'peak_ewma':
      return new PeakEwmaBalancer(endpoints, { now: deps.now, random: deps.random, decayMs: cfg.decay });
    case 'consistent_hash':
      return new ConsistentHashBalancer(endpoints, cfg.hashOn, deps.random);
  }
}
