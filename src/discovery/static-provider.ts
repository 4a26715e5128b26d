/** The `endpoints: [...]` of the config file as a provider: it publishes the list once. */
import { endpointInfoOf } from '../dataplane/upstream/endpoint.ts';
import type { EndpointSpec } from '../dataplane/upstream/policy-schema.ts';
import type { EndpointProvider } from './provider.ts';

export function createStaticProvider(endpoints: readonly EndpointSpec[]): EndpointProvider {
  const list = endpoints.map(endpointInfoOf);
  return {
    start(sink) {
      sink.replace(list);
    },
    close() {},
  };
}

/** A source that cannot run in this gateway (a registry upstream without a registry). */
export function createUnavailableProvider(detail: string): EndpointProvider {
  return {
    start(sink) {
      sink.fail('unavailable', detail);
    },
    close() {},
  };
}
