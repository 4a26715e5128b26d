/**
 * The control plane's side of endpoint discovery: one SourceBinding per upstream, started from
 * the upstream's source config (`endpoints`, `discovery.dns`, `discovery.registry`) and kept in
 * step with the snapshot. `sync()` runs after every snapshot swap: an upstream whose source config
 * is unchanged keeps its binding (and its provider, timers and status), pointed at the upstream's
 * current cluster; a changed source gets a new provider, whose first publication replaces the set
 * (the old source's endpoints serve until then); a removed upstream's provider stops.
 *
 * Publications go straight to the live cluster: no snapshot is compiled, no route table rebuilt.
 */
import type { Logger } from 'pino';
import type { Cluster } from '../dataplane/upstream/cluster.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';
import type { EndpointProvider, ProviderContext, ProviderFactories } from './provider.ts';
import { type EndpointSourceConfig, endpointSourceOf, type SourceFields } from './schema.ts';
import { SourceBinding, type SourceStatus } from './source-binding.ts';
import { createStaticProvider, createUnavailableProvider } from './static-provider.ts';

export interface DiscoveryDeps {
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly factories: ProviderFactories;
  /** Wall-clock ms (Date.now by default), for the status times. */
  readonly now?: (() => number) | undefined;
}

/**
 * What `sync` reads of a snapshot: each upstream's config (its source) and its cluster. A cluster
 * kept across reloads keeps the config it was built with, so the source is read from the snapshot.
 */
export interface DiscoveryTargets {
  readonly config: { readonly upstreams: Readonly<Record<string, SourceFields>> };
  readonly clusters: ReadonlyMap<string, Cluster>;
}

export class Discovery {
  readonly #deps: DiscoveryDeps;
  readonly #bindings = new Map<string, SourceBinding>();
  #closed = false;

  constructor(deps: DiscoveryDeps) {
    this.#deps = deps;
  }

  /** Bring the bindings in step with the upstreams now serving (after a snapshot swap). */
  sync(snapshot: DiscoveryTargets): void {
    if (this.#closed) return;
    const clusters = snapshot.clusters;
    for (const [name, cluster] of clusters) {
      const source = endpointSourceOf(snapshot.config.upstreams[name] ?? cluster.config);
      const current = this.#bindings.get(name);
      if (current !== undefined && current.key === JSON.stringify(source)) {
        current.attach(cluster);
        continue;
      }
      void current?.close();
      this.#bind(name, source, cluster);
    }
    for (const [name, binding] of this.#bindings) {
      if (clusters.has(name)) continue;
      this.#bindings.delete(name);
      void binding.close();
    }
  }

  #bind(name: string, source: EndpointSourceConfig, cluster: Cluster): void {
    const { logger, metrics, now } = this.#deps;
    const binding = new SourceBinding(name, source, cluster, {
      logger: logger.child({ upstream: name, source: source.kind }),
      metrics,
      now: now ?? Date.now,
    });
    this.#bindings.set(name, binding);
    binding.start(this.#provider(source, { upstream: name, logger: binding.logger }));
  }

  #provider(source: EndpointSourceConfig, ctx: ProviderContext): EndpointProvider {
    const factories = this.#deps.factories;
    try {
      switch (source.kind) {
        case 'static':
          return createStaticProvider(source.endpoints);
        case 'dns': {
          const { kind: _kind, ...config } = source;
          return factories.dns(config, ctx);
        }
        case 'registry': {
          const { kind: _kind, ...config } = source;
          return factories.registry === undefined
            ? createUnavailableProvider('no service registry runs in this gateway')
            : factories.registry(config, ctx);
        }
      }
    } catch (err) {
      return createUnavailableProvider(`the ${source.kind} provider could not be built: ${String(err)}`);
    }
  }

  /** The status of an upstream's endpoint source. */
  status(upstream: string): SourceStatus | undefined {
    return this.#bindings.get(upstream)?.describe();
  }

  statuses(): SourceStatus[] {
    return [...this.#bindings.values()].map((b) => b.describe());
  }

  /**
   * Upstreams whose source has not answered yet (neither a publication nor a failure): the
   * gateway is not ready until each has, so that the first requests do not meet an empty set.
   */
  pending(): string[] {
    const names: string[] = [];
    for (const [name, b] of this.#bindings) if (b.state === 'pending') names.push(name);
    return names;
  }

  /** Upstreams whose source's last refresh failed (they serve their last known endpoints). */
  failing(): string[] {
    const names: string[] = [];
    for (const [name, b] of this.#bindings) if (b.state === 'failing') names.push(name);
    return names;
  }

  /** Stop every provider. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const bindings = [...this.#bindings.values()];
    this.#bindings.clear();
    await Promise.all(bindings.map((b) => b.close()));
  }
}
