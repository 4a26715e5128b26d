import type { Logger } from 'pino';
import type { z } from 'zod';
import type { ErrorCode } from '../../errors.ts';
import type { RedisConnection } from '../../stores/redis.ts';
import type { GatewayMetrics } from '../../telemetry/metrics.ts';
import type { RequestContext } from '../context.ts';
import type { AdmissionGate } from '../upstream/cluster.ts';
import type { AuthProviders } from './jwt/providers.ts';

/**
 * One stage of a route's pipeline. Built once per route when a snapshot is compiled by a factory
 * `createX(config)` that validates and precomputes; `onRequest` does only per-request work.
 *
 * `onRequest` returns undefined when it finished synchronously (the common case: cached
 * verification) and a Promise only when it must wait (e.g. a JWKS fetch). It rejects a request by
 * throwing (or rejecting with) a GatewayError; it may set fields on the context (identity, claims,
 * headers to add upstream) and record a decision with `ctx.decide()`.
 */
export interface RequestFilter {
  readonly name: string;
  onRequest(ctx: RequestContext): undefined | Promise<void>;
  /**
   * Lower-case names of client request headers this filter owns: removed before forwarding, so a
   * client cannot pose as what the filter sets, and credentials it consumed stay at the gateway.
   */
  readonly ownedHeaders?: ReadonlySet<string>;
  /** Release timers, caches, connections. Safe to call twice. */
  close?(): void;
}

/** What every policy factory gets when a snapshot is compiled. */
export interface PolicyEnv {
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The token issuers (`auth.providers`), for policies that verify tokens. */
  readonly auth: AuthProviders;
  /** The shared Redis connection, when the gateway has one (the static `redis` section). */
  readonly redis?: RedisConnection | undefined;
}

/** Where a policy is listed, for checks that depend on it. */
export type PolicyPlacement =
  /** On a route, after the chain's policies of kinds `before` (inline ones included). */
  | { readonly before: readonly string[] }
  /** On an upstream (`upstreams.<name>.policies`): asked at admission. */
  | { readonly upstream: string };

/** One configured policy, as a route's chain refers to it. */
export interface Policy<C> {
  /**
   * The name routes list it by; `<route>#<key>` for the shorthand a route writes inline
   * (`auth:`, `identity:`), which no configured name can collide with.
   */
  readonly name: string;
  /** Its settings, validated, defaults applied (every key but `kind`). */
  readonly config: C;
}

/** What a kind keeps across reloads for one policy (counters, caches). */
export interface PolicyState {
  /** Called once no snapshot uses the policy with this config any more. */
  close(): void;
}

/** A problem found by a kind's cross-check, at its key path. */
export interface PolicyIssue {
  path: (string | number)[];
  message: string;
}

/**
 * A kind of route policy: a folder under `filters/` with its schema, factory and per-request
 * function, registered once in `kinds.ts`. Nothing else names a kind: the config schema, the
 * cross-checks, the snapshot's compile and the pipeline's report of denials read these fields.
 *
 * Methods, not function properties: a registry of kinds with different config types is then one
 * array type.
 */
export interface PolicyKind<C = unknown, S extends PolicyState | undefined = undefined> {
  /** The `kind:` of a named policy (`policies: { name: { kind: ... } }`). */
  readonly kind: string;
  /** The settings of one policy, every key but `kind`; defaults live here. */
  readonly schema: z.ZodObject;
  /**
   * The route key of the inline form that predates named policies (`auth`, `identity`), if any.
   * Inline policies run first, in registry order, then the route's `policies` in their order.
   */
  readonly routeKey?: string;
  /** A route may hold at most one policy of this kind (a second would only repeat the first). */
  readonly onePerRoute: boolean;
  /** The codes this kind refuses requests with: spans report them as `deny:<code>`. */
  readonly denials: readonly ErrorCode[];
  /**
   * Checks against the rest of the configuration (e.g. that named token issuers exist). Reads
   * defensively: it may run on input that failed validation. Appends to `issues`.
   */
  check?(
    settings: unknown,
    config: Readonly<Record<string, unknown>>,
    path: (string | number)[],
    issues: PolicyIssue[],
  ): void;
  /** Checks that depend on where the policy is listed (`path`: the listing). Appends to `issues`. */
  checkPlacement?(
    settings: unknown,
    place: PolicyPlacement,
    path: (string | number)[],
    issues: PolicyIssue[],
  ): void;
  /**
   * State that must survive a reload, one per policy (shared by every route that lists it). A
   * snapshot takes it over from the previous one when the policy's name and config fingerprint
   * are unchanged (carried-state.ts); otherwise this builds it anew.
   */
  createState?(policy: Policy<C>, env: PolicyEnv): S;
  /**
   * The policy's filter on one route (metric series are per route), or undefined when it has
   * nothing to do there (a JWT policy with `mode: none`). `upstream`: the route's. Throws when it
   * cannot be built.
   */
  create(
    policy: Policy<C>,
    route: string,
    env: PolicyEnv,
    state: S,
    upstream: string,
  ): RequestFilter | undefined;
  /**
   * The policy as an upstream's admission gate (`upstreams.<name>.policies`: an upstream ceiling).
   * Kinds without it cannot be listed on upstreams.
   */
  createGate?(policy: Policy<C>, upstream: string, env: PolicyEnv, state: S): AdmissionGate<RequestContext>;
}
