import type { Logger } from 'pino';
import type { DynamicConfig } from '../config/schema.ts';
import type { RequestFilter } from '../dataplane/filters/filter.ts';
import { createIdentityFilter } from '../dataplane/filters/identity/identity-filter.ts';
import { createJwtFilter } from '../dataplane/filters/jwt/jwt-filter.ts';
import { type AuthProviders, createAuthProviders } from '../dataplane/filters/jwt/providers.ts';
import { type RouteTable, routeTableSteps } from '../dataplane/routing/route-table.ts';
import { Cluster, upstreamFingerprint } from '../dataplane/upstream/cluster.ts';
import { runInSlices, runNow, type Steps } from '../slices.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';
import type { UpstreamTlsSet } from '../tls/upstream-tls.ts';

/** What a route runs between matching and forwarding, compiled once per snapshot. */
export interface RoutePlan {
  /** In order: identity (mTLS allow-list), then JWT. Null when the route has none. */
  readonly filters: readonly RequestFilter[] | null;
  /** Client headers the route's filters own (set from claims, or Authorization to strip). */
  readonly stripHeaders: ReadonlySet<string> | null;
}

const EMPTY_PLAN: RoutePlan = Object.freeze({ filters: null, stripHeaders: null });

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
  readonly plans: ReadonlyMap<string, RoutePlan>;
  readonly clusters: ReadonlyMap<string, Cluster>;
  readonly auth: AuthProviders;
}

export interface SnapshotDeps {
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The upstreams' TLS, shared across snapshots (endpoints hold it, not the snapshot). */
  readonly tls?: UpstreamTlsSet | undefined;
}

export interface CompileResult {
  readonly snapshot: Snapshot;
  /**
   * Clusters of the previous snapshot that the new one no longer uses: close after the swap.
   * Closing one leaves open the endpoints its successor took over.
   */
  readonly retired: readonly Cluster[];
  /** Release the previous snapshot's auth providers (shared ones are reference-counted). */
  retire(): void;
}

/**
 * Compile a validated dynamic config. Clusters whose policy did not change (the fingerprint leaves
 * out the endpoint source: a changed `endpoints` list is applied to the kept cluster's live set by
 * the discovery sync after the swap) and auth providers whose config did not change are carried
 * over from `previous`, so their runtime state (pools, breaker, EWMA, health, key sets) survives
 * the reload. An upstream whose policy changed gets a new Cluster, which takes over the previous
 * one's live endpoint set; endpoints whose transport settings did not change are shared, pools
 * and keep-alive connections included, and closing the retired cluster leaves them open. Throws
 * when a part cannot be built; then nothing of it is kept and `previous` is left as it was.
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
  try {
    const plans = new Map<string, RoutePlan>();
    for (const route of routes.routes) {
      const filters: RequestFilter[] = [];
      let strip: Set<string> | null = null;
      const identity = route.config.identity;
      if (identity) filters.push(createIdentityFilter(route.name, identity, deps.metrics));
      const routeAuth = route.config.auth;
      if (routeAuth) {
        const jwt = createJwtFilter(route.name, routeAuth, auth, deps.metrics);
        if (jwt) {
          filters.push(jwt);
          if (jwt.ownedHeaders.size > 0) strip = new Set(jwt.ownedHeaders);
        }
      }
      plans.set(
        route.name,
        filters.length === 0 && strip === null
          ? EMPTY_PLAN
          : Object.freeze({ filters: filters.length ? filters : null, stripHeaders: strip }),
      );
      yield;
    }
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
    });
    return {
      snapshot,
      retired,
      retire: () => previous?.auth.close(),
    };
  } catch (err) {
    for (const c of created) void c.abandon();
    auth.close();
    throw err;
  }
}
