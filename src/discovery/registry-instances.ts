/**
 * A service's registered instances as endpoints: the filter of `discovery.registry` upstreams and
 * the instance → endpoint mapping. Two instances on one address and port are one endpoint (the
 * origin is an endpoint's identity); `representative` decides which of them speaks for it.
 */
import { isIP } from 'node:net';
import type { Instance } from '../registry/store.ts';
import type { DiscoveredEndpoint } from './provider.ts';
import type { RegistryFilter } from './schema.ts';

/** What discovery reads of a registered instance. */
export type RegisteredInstance = Pick<
  Instance,
  'id' | 'address' | 'port' | 'protocol' | 'zone' | 'version' | 'weight' | 'metadata' | 'state'
>;

/** Whether an instance passes an upstream's `discovery.filter` (every given field must match). */
export function matchesFilter(instance: RegisteredInstance, filter: RegistryFilter): boolean {
  if (filter.zone !== undefined && instance.zone !== filter.zone) return false;
  if (filter.version !== undefined && instance.version !== filter.version) return false;
  if (filter.metadata !== undefined) {
    const metadata = instance.metadata;
    for (const [k, v] of Object.entries(filter.metadata)) if (metadata[k] !== v) return false;
  }
  return true;
}

/** The origin an instance is reached at: `http://10.0.0.5:8080`, `https://[fd00::7]:8443`. */
export function originOfInstance(instance: RegisteredInstance): string {
  const host = isIP(instance.address) === 6 ? `[${instance.address}]` : instance.address;
  return `${instance.protocol}://${host}:${instance.port}`;
}

/** The endpoint an instance is: its origin, weight, zone, version, metadata and state. */
export function endpointOfInstance(instance: RegisteredInstance): DiscoveredEndpoint {
  return {
    url: originOfInstance(instance),
    weight: instance.weight,
    zone: instance.zone ?? undefined,
    version: instance.version ?? undefined,
    metadata: instance.metadata,
    state: instance.state,
  };
}

/**
 * Of the instances registered on one origin, the one whose weight, zone, metadata and state the
 * endpoint takes: an active one before a draining one (an instance re-registered under a new id
 * while its old lease drains is serving), then the lowest id, so every gateway picks the same.
 */
export function representative(instances: Iterable<RegisteredInstance>): RegisteredInstance | undefined {
  let best: RegisteredInstance | undefined;
  for (const i of instances) {
    if (
      best === undefined ||
      (i.state === 'active' && best.state !== 'active') ||
      (i.state === best.state && i.id < best.id)
    )
      best = i;
  }
  return best;
}
