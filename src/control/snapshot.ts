import type { Logger } from 'pino';
import type { DynamicConfig } from '../config/schema.ts';
import type { CarriedState } from '../dataplane/filters/carried-state.ts';
import { compilePlanSteps, type RoutePlan } from '../dataplane/filters/chain.ts';
import type { PolicyState } from '../dataplane/filters/filter.ts';
import { type AuthProviders, createAuthProviders } from '../dataplane/filters/jwt/providers.ts';
import { POLICY_KINDS } from '../dataplane/filters/kinds.ts';
import { type RouteTable, routeTableSteps } from '../dataplane/routing/route-table.ts';
import type { ReplicaPosition } from '../dataplane/upstream/aperture.ts';
import { Cluster, upstreamFingerprint } from '../dataplane/upstream/cluster.ts';
import { runInSlices, runNow, type Steps } from '../slices.ts';
import type { RedisConnection } from '../stores/redis.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';
import type { UpstreamTlsSet } from '../tls/upstream-tls.ts';

export type { RoutePlan } from '../dataplane/filters/chain.ts';

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
  /** Each route's policy chain (dataplane/filters/chain.ts). */
  readonly plans: ReadonlyMap<string, RoutePlan>;
  readonly clusters: ReadonlyMap<string, Cluster>;
  readonly auth: AuthProviders;
  /** What the route policies keep across reloads, by policy name and config fingerprint. */
  readonly policyState: CarriedState<PolicyState>;
}

export interface SnapshotDeps {
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The upstreams' TLS, shared across snapshots (endpoints hold it, not the snapshot). */
  readonly tls?: UpstreamTlsSet | undefined;
  /** The shared Redis connection, for policies that count in Redis (absent: none may). */
  readonly redis?: RedisConnection | undefined;
  /** This process among its replicas (the static `replica`), for every upstream's aperture. */
  readonly replica?: ReplicaPosition | undefined;
}

export interface CompileResult {
  readonly snapshot: Snapshot;
  /**
   * Clusters of the previous snapshot that the new one no longer uses: close after the swap.
   * Closing one leaves open the endpoints its successor took over.
   */
  readonly retired: readonly Cluster[];
  /**
   * Release the previous snapshot's auth providers and policy state (what the new one took over
   * stays open).
   */
  retire(): void;
}

/**
 * Compile a validated dynamic config. Clusters whose policy did not change (the fingerprint leaves
 * out the endpoint source: a changed `endpoints` list is applied to the kept cluster's live set by
 * the discovery sync after the swap), and auth providers and route policies whose config did not
 * change, are carried over from `previous`, so their runtime state (pools, breaker, EWMA, health,
 * key sets, rate limit counters) survives the reload. An upstream whose policy changed gets a new
 * Cluster, which takes over the previous one's live endpoint set; endpoints whose transport
 * settings did not change are shared, pools and keep-alive connections included, and closing the
 * retired cluster leaves them open. Throws when a part cannot be built; then nothing of it is kept
 * and `previous` is left as it was.
 */
export function compileSnapshot(
  config: DynamicConfig,
  version: number,
  previous: Snapshot | undefined,
  deps: SnapshotDeps,
): CompileResult {
  return runNow(compileSteps(config, version, previous, deps));
}

/**
 * compileSnapshot for a gateway that is serving: the work runs in slices of about `sliceMs`, with
 * a turn of the event loop between them, so requests keep flowing (on `previous`) while 10,000
 * routes compile.
 */
export function compileSnapshotInSlices(
  config: DynamicConfig,
  version: number,
  previous: Snapshot | undefined,
  deps: SnapshotDeps,
  sliceMs: number,
): Promise<CompileResult> {
  return runInSlices(compileSteps(config, version, previous, deps), sliceMs);
}

/** The compile, yielding after each route and each upstream (src/slices.ts). */
function* compileSteps(
  config: DynamicConfig,
  version: number,
  previous: Snapshot | undefined,
  deps: SnapshotDeps,
): Steps<CompileResult> {
  const routes = yield* routeTableSteps(config.routes);
  const auth = createAuthProviders(config.auth, previous?.auth, {
    metrics: deps.metrics,
    logger: deps.logger,
  });
  const clusters = new Map<string, Cluster>();
  const created: Cluster[] = [];
  let policyState: CarriedState<PolicyState> | undefined;
  try {
    const compiled = yield* compilePlanSteps(
      routes.routes,
      config.policies,
      previous?.policyState,
      { metrics: deps.metrics, logger: deps.logger, auth, redis: deps.redis },
      POLICY_KINDS,
      config.upstreams,
    );
    policyState = compiled.state;
    const plans = compiled.plans;
    for (const [name, upstream] of Object.entries(config.upstreams)) {
      const old = previous?.clusters.get(name);
      const fingerprint = upstreamFingerprint(upstream);
      if (old && old.fingerprint === fingerprint) clusters.set(name, old);
      else {
        const cluster = new Cluster(name, upstream, {
          logger: deps.logger,
          metrics: deps.metrics,
          fingerprint,
          previous: old,
          tls: deps.tls,
          replica: deps.replica,
        });
        created.push(cluster);
        clusters.set(name, cluster);
      }
      yield;
    }
    const retired: Cluster[] = [];
    if (previous) {
      for (const [name, old] of previous.clusters) {
        if (clusters.get(name) !== old) retired.push(old);
      }
    }
    const snapshot: Snapshot = Object.freeze({
      version,
      createdAt: new Date(),
      config,
      routes,
      plans,
      clusters,
      auth,
      policyState,
    });
    return {
      snapshot,
      retired,
      retire: () => {
        previous?.auth.close();
        previous?.policyState.close();
      },
    };
  } catch (err) {
    for (const c of created) void c.abandon();
    auth.close();
    policyState?.close();
    throw err;
  }
}
