import type { UpstreamConfig } from '../../config/schema.ts';
import type { Balancer } from './balancer.ts';
import { Endpoint } from './endpoint.ts';
import { RoundRobinBalancer } from './round-robin.ts';

/**
 * An upstream by name: its endpoints, their pools and the balancer. A cluster is runtime state: a
 * reload that leaves the upstream's config unchanged keeps the same Cluster object.
 */
export class Cluster {
  readonly name: string;
  readonly config: UpstreamConfig;
  /** Canonical JSON of the config, to decide whether a reload changed this upstream. */
  readonly fingerprint: string;
  readonly endpoints: readonly Endpoint[];
  readonly balancer: Balancer;
  inFlight = 0;
  #closed = false;

  constructor(name: string, config: UpstreamConfig) {
    this.name = name;
    this.config = config;
    this.fingerprint = JSON.stringify(config);
    this.endpoints = config.endpoints.map((origin) => new Endpoint(origin, config));
    this.balancer = new RoundRobinBalancer(this.endpoints);
  }

  /** Graceful: in-flight requests finish on their pools. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.endpoints.map((e) => e.close()));
  }

  async destroy(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.endpoints.map((e) => e.destroy()));
  }
}
