/**
 * The admin API's view of rate limiting (`GET /v1/ratelimits`): every rate limit policy of the
 * snapshot serving now, as configured, where it applies (the routes whose chain lists it, the
 * upstreams whose admission asks it), and whether its store is failing right now.
 */
import type { Snapshot } from '../../../control/snapshot.ts';
import type { RateLimiter } from './rate-limiter.ts';
import type { RateLimitConfig } from './schema.ts';

export interface RateLimitDescription {
  readonly name: string;
  readonly limits: readonly {
    readonly name: string;
    readonly points: number;
    readonly windowSeconds: number;
    readonly blockSeconds: number | null;
    readonly burst: { readonly points: number; readonly windowSeconds: number } | null;
  }[];
  /** What a request is counted by (`limitBy`). */
  readonly countedBy: readonly string[];
  /** What a request without it gets (`ifMissing`). */
  readonly whenMissing: RateLimitConfig['ifMissing'];
  readonly per: RateLimitConfig['per'];
  readonly cost: RateLimitConfig['cost'];
  readonly exempt: { readonly identities: readonly string[]; readonly addresses: readonly string[] } | null;
  readonly store: RateLimitConfig['store'];
  /** The most keys each limit holds in memory (memory store, or a Redis store's insurance). */
  readonly maxKeys: number;
  /** Keys the fullest limit holds in memory now. */
  readonly keys: number;
  readonly dryRun: boolean;
  readonly headers: RateLimitConfig['headers'];
  readonly appliesTo: { readonly routes: readonly string[]; readonly upstreams: readonly string[] };
  /** The store failed on its last call and the degradation decides (Redis stores only). */
  readonly degraded: boolean;
}

export function describeRateLimits(snapshot: Snapshot): RateLimitDescription[] {
  const out: RateLimitDescription[] = [];
  for (const [name, policy] of Object.entries(snapshot.config.policies)) {
    if (policy.kind !== 'rate_limit') continue;
    const cfg = policy as unknown as RateLimitConfig;
    const routes: string[] = [];
    for (const [route, plan] of snapshot.plans)
      if (plan.policies.some((p) => p.name === name)) routes.push(route);
    const upstreams = Object.entries(snapshot.config.upstreams)
      .filter(([, u]) => u.policies?.includes(name))
      .map(([u]) => u);
    const limiter = snapshot.policyState.get(`rate_limit/${name}`) as RateLimiter | undefined;
    out.push({
      name,
      limits: cfg.limits.map((l, i) => ({
        name: limiter?.fields.names[i] ?? l.name ?? name,
        points: l.points,
        windowSeconds: l.duration,
        blockSeconds: l.blockDuration ?? null,
        burst: l.burst === undefined ? null : { points: l.burst.points, windowSeconds: l.burst.duration },
      })),
      countedBy: cfg.limitBy,
      whenMissing: cfg.ifMissing,
      per: cfg.per,
      cost: cfg.cost,
      exempt: cfg.exempt ?? null,
      store: cfg.store,
      maxKeys: cfg.maxKeys,
      keys: limiter?.counters.keys ?? 0,
      dryRun: cfg.dryRun,
      headers: cfg.headers,
      appliesTo: { routes, upstreams },
      degraded: limiter?.degraded ?? false,
    });
  }
  return out;
}
