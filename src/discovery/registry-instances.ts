/**
 * What a registry provider needs to turn a service's registered instances into endpoints: the
 * filter of `discovery.registry` upstreams and the instance → endpoint mapping. A registry
 * provider is then a small adapter over its store, e.g.:
 *
 *   registry: (cfg, ctx) => {
 *     let stop = () => {};
 *     const publish = (all) => sink.replace(all.filter((i) => matchesFilter(i, cfg.filter)).map(endpointOfInstance));
 *     return {
 *       start(sink) {
 *         store.list(cfg.registry).then(publish, (err) => sink.fail('unavailable', String(err)));
 *         stop = store.watch(cfg.registry, () => store.list(cfg.registry).then(publish, ...));
 *       },
 *       close: () => stop(),
 *     };
 *   }
 *
 * Two instances on one address and port are one endpoint (the origin is an endpoint's identity):
 * a provider that publishes deltas must not `remove` an origin another instance still has.
 */
import { isIP } from 'node:net';
import type { DiscoveredEndpoint } from './provider.ts';
import type { RegistryFilter } from './schema.ts';

/** A registered instance, as far as discovery reads it. */
export interface RegisteredInstance {
  readonly id: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: 'http' | 'https';
  readonly zone?: string | undefined;
  readonly version?: string | undefined;
  readonly weight?: number | undefined;
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  readonly state: 'active' | 'draining';
}

/** Whether an instance passes an upstream's `discovery.filter` (every given field must match). */
export function matchesFilter(instance: RegisteredInstance, filter: RegistryFilter): boolean {
  if (filter.zone !== undefined && instance.zone !== filter.zone) return false;
  if (filter.version !== undefined && instance.version !== filter.version) return false;
  if (filter.metadata !== undefined) {
    const metadata = instance.metadata ?? {};
    for (const [k, v] of Object.entries(filter.metadata)) if (metadata[k] !== v) return false;
  }
  return true;
}

/** The endpoint an instance is: its origin, weight, zone, version, metadata and state. */
export function endpointOfInstance(instance: RegisteredInstance): DiscoveredEndpoint {
  const host = isIP(instance.address) === 6 ? `[${instance.address}]` : instance.address;
  return {
    url: `${instance.protocol}://${host}:${instance.port}`,
    weight: instance.weight,
    zone: instance.zone,
    version: instance.version,
    metadata: instance.metadata,
    state: instance.state,
  };
}
