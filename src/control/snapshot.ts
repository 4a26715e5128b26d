import type { DynamicConfig } from '../config/schema.ts';
import { createRouteTable, type RouteTable } from '../dataplane/routing/route-table.ts';
import { Cluster } from '../dataplane/upstream/cluster.ts';

/**
 * Everything a request needs from the dynamic configuration, compiled once and never mutated.
 * A request captures the snapshot current when it arrives and finishes on it, whatever reloads
 * happen meanwhile.
 */
export interface Snapshot {
  readonly version: number;
  readonly createdAt: Date;
  readonly config: DynamicConfig;
  readonly routes: RouteTable;
  readonly clusters: ReadonlyMap<string, Cluster>;
}

export interface CompileResult {
  readonly snapshot: Snapshot;
  /** Clusters of the previous snapshot that the new one no longer uses: close after the swap. */
  readonly retired: readonly Cluster[];
}

/**
 * Compile a validated dynamic config. Clusters whose upstream config did not change are carried
 * over from `previous` so their pools (and, later, breaker/health state) survive the reload.
 */
export function compileSnapshot(config: DynamicConfig, version: number, previous?: Snapshot): CompileResult {
  const routes = createRouteTable(config.routes);
  const clusters = new Map<string, Cluster>();
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    const old = previous?.clusters.get(name);
    if (old && old.fingerprint === JSON.stringify(upstream)) clusters.set(name, old);
    else clusters.set(name, new Cluster(name, upstream));
  }
  const retired: Cluster[] = [];
  if (previous) {
    for (const [name, old] of previous.clusters) {
      if (clusters.get(name) !== old) retired.push(old);
    }
  }
  const snapshot: Snapshot = Object.freeze({ version, createdAt: new Date(), config, routes, clusters });
  return { snapshot, retired };
}
