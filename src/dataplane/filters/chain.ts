/**
 * A route's policies compiled into the chain its requests run: one filter per policy, in the
 * route's order, built by each policy's kind (kinds.ts), with the state each policy keeps across
 * reloads taken over from the previous snapshot by policy name and config fingerprint
 * (carried-state.ts). A route without policies gets EMPTY_PLAN, whose null fields the pipeline
 * skips with one comparison each.
 */
import type { ErrorCode, GatewayError } from '../../errors.ts';
import { runNow, type Steps } from '../../slices.ts';
import type { RequestContext } from '../context.ts';
import type { CompiledRoute } from '../routing/route-table.ts';
import type { AdmissionGate, AdmissionTicket } from '../upstream/cluster.ts';
import { CarriedState } from './carried-state.ts';
import type { PolicyEnv, PolicyState, RequestFilter } from './filter.ts';
import { type AnyPolicyKind, POLICY_KINDS } from './kinds.ts';
import { type PolicyConfig, routeChain } from './policy-schema.ts';

/** What a route runs between matching and forwarding, compiled once per snapshot. */
export interface RoutePlan {
  /** The route's policy filters in order; null when it has none. */
  readonly filters: readonly RequestFilter[] | null;
  /** Client headers the route's policies own (set from claims, or credentials to strip); null: none. */
  readonly stripHeaders: ReadonlySet<string> | null;
  /** The codes the route's policies refuse with (`deny:<code>` on spans); null when it has none. */
  readonly denials: ReadonlySet<ErrorCode> | null;
  /**
   * Upstream-side policies of the route's upstream (`upstreams.<name>.policies`: rate ceilings),
   * consulted by `Cluster.admit` before its breaker and bulkhead, for requests and WebSocket
   * handshakes alike. One gate per upstream, shared by every route to it; null when it lists none.
   */
  readonly admission: AdmissionGate<RequestContext> | null;
  /** The chain as configured, for the admin API. */
  readonly policies: readonly { readonly name: string; readonly kind: string }[];
}

export const EMPTY_PLAN: RoutePlan = Object.freeze({
  filters: null,
  stripHeaders: null,
  denials: null,
  admission: null,
  policies: Object.freeze([]),
});

export interface CompiledPlans {
  readonly plans: ReadonlyMap<string, RoutePlan>;
  /** The policies' state for this snapshot: close it when the snapshot is retired. */
  readonly state: CarriedState<PolicyState>;
}

function fingerprintOf(config: unknown): string {
  return JSON.stringify(config);
}

/** A named policy's settings without its `kind`, as its kind's schema describes them. */
function settingsOf(policy: PolicyConfig): Record<string, unknown> {
  const { kind: _kind, ...settings } = policy;
  return settings;
}

/** What the compile reads of an upstream: the policies it lists (its ceilings). */
export interface UpstreamPolicies {
  readonly policies?: readonly string[] | undefined;
}

/**
 * Compile every route's chain, and each upstream's admission gate from the policies it lists.
 * Throws when a policy cannot be built; the state this compile built is then released, and what it
 * took over from `previous` stays with `previous`.
 */
export function compilePlans(
  routes: readonly CompiledRoute[],
  policies: Readonly<Record<string, PolicyConfig>>,
  previous: CarriedState<PolicyState> | undefined,
  env: PolicyEnv,
  kinds: readonly AnyPolicyKind[] = POLICY_KINDS,
  upstreams: Readonly<Record<string, UpstreamPolicies>> = {},
): CompiledPlans {
  return runNow(compilePlanSteps(routes, policies, previous, env, kinds, upstreams));
}

/** compilePlans, yielding after each route (src/slices.ts). */
export function* compilePlanSteps(
  routes: readonly CompiledRoute[],
  policies: Readonly<Record<string, PolicyConfig>>,
  previous: CarriedState<PolicyState> | undefined,
  env: PolicyEnv,
  kinds: readonly AnyPolicyKind[] = POLICY_KINDS,
  upstreams: Readonly<Record<string, UpstreamPolicies>> = {},
): Steps<CompiledPlans> {
  const state = new CarriedState<PolicyState>(previous);
  const plans = new Map<string, RoutePlan>();
  try {
    const gates = compileGates(upstreams, policies, state, env, kinds);
    for (const route of routes) {
      plans.set(route.name, compileRoute(route, policies, state, env, kinds, gates.get(route.upstream)));
      yield;
    }
  } catch (err) {
    state.close();
    throw err;
  }
  state.seal();
  return { plans, state };
}

/** An upstream's admission policies, compiled: one gate, and the codes they refuse with. */
interface UpstreamGate {
  readonly gate: AdmissionGate<RequestContext>;
  readonly denials: readonly ErrorCode[];
}

/** The policy's state in this compile: taken over from the previous one when unchanged. */
function stateOf(
  kind: AnyPolicyKind,
  policy: { name: string; config: unknown },
  state: CarriedState<PolicyState>,
  env: PolicyEnv,
): PolicyState | undefined {
  return kind.createState === undefined
    ? undefined
    : state.take(
        `${kind.kind}/${policy.name}`,
        fingerprintOf(policy.config),
        () => kind.createState!(policy, env)!,
      );
}

function compileGates(
  upstreams: Readonly<Record<string, UpstreamPolicies>>,
  policies: Readonly<Record<string, PolicyConfig>>,
  state: CarriedState<PolicyState>,
  env: PolicyEnv,
  kinds: readonly AnyPolicyKind[],
): Map<string, UpstreamGate> {
  const gates = new Map<string, UpstreamGate>();
  for (const [upstream, cfg] of Object.entries(upstreams)) {
    const listed = cfg.policies;
    if (listed === undefined || listed.length === 0) continue;
    const built: AdmissionGate<RequestContext>[] = [];
    const denials: ErrorCode[] = [];
    for (const name of listed) {
      const settings = policies[name];
      const kind = settings === undefined ? undefined : kinds.find((k) => k.kind === settings.kind);
      if (settings === undefined || kind?.createGate === undefined)
        throw new Error(`upstream ${upstream}: policy ${name} cannot apply to an upstream`);
      const policy = { name, config: settingsOf(settings) };
      built.push(kind.createGate(policy, upstream, env, stateOf(kind, policy, state, env)));
      denials.push(...kind.denials);
    }
    gates.set(upstream, { gate: built.length === 1 ? built[0]! : new GateChain(built), denials });
  }
  return gates;
}

/** Several admission gates, asked in order; the first refusal stands. */
class GateChain<T extends AdmissionTicket> implements AdmissionGate<T> {
  readonly name: string;
  readonly #gates: readonly AdmissionGate<T>[];

  constructor(gates: readonly AdmissionGate<T>[]) {
    this.#gates = gates;
    this.name = gates.map((g) => g.name).join(',');
  }

  admit(req: T, from = 0): GatewayError | undefined | Promise<GatewayError | undefined> {
    const gates = this.#gates;
    for (let i = from; i < gates.length; i++) {
      const verdict = gates[i]!.admit(req);
      if (verdict === undefined) continue;
      if (verdict instanceof Promise) return verdict.then((refused) => refused ?? this.admit(req, i + 1));
      return verdict;
    }
    return undefined;
  }
}

function compileRoute(
  route: CompiledRoute,
  policies: Readonly<Record<string, PolicyConfig>>,
  state: CarriedState<PolicyState>,
  env: PolicyEnv,
  kinds: readonly AnyPolicyKind[],
  admission: UpstreamGate | undefined,
): RoutePlan {
  const chain = routeChain(route.config as unknown as Record<string, unknown>, policies, kinds);
  if (chain.length === 0 && admission === undefined) return EMPTY_PLAN;
  const filters: RequestFilter[] = [];
  const strip = new Set<string>();
  const denials = new Set<ErrorCode>(admission?.denials);
  const listed: { name: string; kind: string }[] = [];
  for (const link of chain) {
    const kind = link.kind;
    const name = link.name ?? `${route.name}#${kind.routeKey}`;
    const config = link.name === undefined ? link.settings : settingsOf(link.settings as PolicyConfig);
    const policy = { name, config };
    const policyState = stateOf(kind, policy, state, env);
    listed.push({ name, kind: kind.kind });
    const filter = kind.create(policy, route.name, env, policyState, route.upstream);
    if (filter === undefined) continue;
    filters.push(filter);
    if (filter.ownedHeaders !== undefined) for (const h of filter.ownedHeaders) strip.add(h);
    for (const code of kind.denials) denials.add(code);
  }
  return Object.freeze({
    filters: filters.length > 0 ? filters : null,
    stripHeaders: strip.size > 0 ? strip : null,
    denials: denials.size > 0 ? denials : null,
    admission: admission?.gate ?? null,
    policies: Object.freeze(listed),
  });
}
