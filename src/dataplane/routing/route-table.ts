/**
 * The route table: compiled once per snapshot, read on every request.
 *
 * Precedence (the first route in this order whose every condition matches wins):
 * 1. higher `priority`;
 * 2. host: exact host, then wildcard host (longer suffix first), then no host;
 * 3. path type: exact, then template, then prefix; within a type the more specific first: exact and
 *    prefix by length (longer first), templates segment by segment from the left (literal beats
 *    `:param` beats `*`, see compareTemplates);
 * 4. more constraints first: `methods` counts one, each header counts one;
 * 5. configuration order.
 *
 * How a request is matched cheaply: the precedence order is computed once. For every configured
 * exact host, every wildcard suffix, and "any other host", the table precomputes the routes that
 * host can match, indexed by path anchor (see PathIndex). A request finds its index through a
 * bounded cache keyed by the raw Host value, gets the few candidate lists for its path with Map
 * lookups, and checks candidates in precedence order: a method bit test, a string compare, header
 * lookups. A route without params returns a preallocated, frozen RouteMatch.
 *
 * Matching rules are in docs/routing.md: HEAD does not match a GET-only route; a prefix `/api`
 * matches `/api`, `/api/` and `/api/x` but a prefix `/api/` does not match `/api`.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RouteConfig } from '../../config/schema.ts';
import {
  HOST_EXACT,
  HOST_NONE,
  HOST_WILDCARD,
  methodBit,
  PATH_TEMPLATE,
  RouteCompileError,
  RouteImpl,
} from './compiled-route.ts';
import { normalizeHost, wildcardMatches } from './host.ts';
import { PathIndex } from './path-index.ts';
import { buildParams, compareTemplates } from './path-template.ts';

export { RouteCompileError };

export interface CompiledRoute {
  readonly name: string;
  /** Upstream name. */
  readonly upstream: string;
  readonly priority: number;
  /** The validated config it came from. */
  readonly config: RouteConfig;
  readonly preserveHost: boolean;
  /** rewrite.host */
  readonly hostRewrite: string | undefined;
  /** Path (no query) sent upstream: applies rewrite.stripPrefix then rewrite.addPrefix; identity when no rewrite (return the same string). */
  rewritePath(path: string): string;
}

export interface RouteMatch {
  readonly route: CompiledRoute;
  readonly params: Readonly<Record<string, string>> | undefined;
}

export interface RouteTable {
  /** In precedence order. */
  readonly routes: readonly CompiledRoute[];
  /** host: Host header value as received (may carry :port, any case, may be undefined); path: normalised path without query string; method upper-case. */
  match(
    host: string | undefined,
    path: string,
    method: string,
    headers: IncomingHttpHeaders,
  ): RouteMatch | undefined;
}

/** Distinct Host values remembered; past this the cache starts over, so random Hosts cost CPU, not memory. */
const HOST_CACHE_LIMIT = 1024;

type Plan = PathIndex<RouteImpl>;

/** Negative when `a` takes precedence over `b`. */
function comparePrecedence(a: RouteImpl, b: RouteImpl): number {
  if (a.priority !== b.priority) return a.priority > b.priority ? -1 : 1;
  if (a.hostKind !== b.hostKind) return b.hostKind - a.hostKind;
  if (a.hostKind === HOST_WILDCARD && a.host.length !== b.host.length) return b.host.length - a.host.length;
  if (a.pathKind !== b.pathKind) return b.pathKind - a.pathKind;
  const byPath =
    a.pathKind === PATH_TEMPLATE ? compareTemplates(a.template!, b.template!) : b.path.length - a.path.length;
  if (byPath !== 0) return byPath;
  if (a.constraints !== b.constraints) return b.constraints - a.constraints;
  return a.index - b.index;
}

function hostAccepts(r: RouteImpl, host: string): boolean {
  if (r.hostKind === HOST_NONE) return true;
  if (r.hostKind === HOST_EXACT) return r.host === host;
  return wildcardMatches(r.host, host);
}

function check(
  r: RouteImpl,
  path: string,
  bit: number,
  headers: IncomingHttpHeaders,
  captures: Int32Array,
): RouteMatch | undefined {
  if ((r.methodMask & bit) === 0 || !r.matchesPath(path, captures) || !r.matchesHeaders(headers))
    return undefined;
  const template = r.template;
  if (template === undefined) return r.plainMatch;
  return { route: r, params: buildParams(template, path, captures) };
}

class Table implements RouteTable {
  readonly routes: readonly CompiledRoute[];
  readonly #anyHost: Plan;
  readonly #exactHosts: ReadonlyMap<string, Plan>;
  /** Wildcard suffixes, longest first, each with the plan for hosts whose longest matching suffix it is. */
  readonly #wildcards: readonly { readonly suffix: string; readonly plan: Plan }[];
  readonly #hostAware: boolean;
  readonly #hostCache = new Map<string, Plan>();
  // Scratch space for one match at a time (matching is synchronous).
  readonly #lists: (readonly RouteImpl[])[];
  readonly #cursors: Int32Array;
  readonly #captures: Int32Array;

  constructor(ordered: readonly RouteImpl[]) {
    this.routes = Object.freeze(ordered.slice());
    const plans: Plan[] = [];
    const plan = (routes: RouteImpl[]): Plan => {
      const p = new PathIndex(routes);
      plans.push(p);
      return p;
    };

    this.#anyHost = plan(ordered.filter((r) => r.hostKind === HOST_NONE));
    const exact = new Map<string, Plan>();
    const suffixes = new Set<string>();
    for (const r of ordered) {
      if (r.hostKind === HOST_EXACT && !exact.has(r.host)) {
        const host = r.host;
        exact.set(host, plan(ordered.filter((o) => hostAccepts(o, host))));
      }
      if (r.hostKind === HOST_WILDCARD) suffixes.add(r.host);
    }
    this.#exactHosts = exact;
    // The wildcard suffixes matching one host are nested (each is a suffix of the longest, and all
    // start with a dot), so the longest matching suffix determines the whole set of wildcard routes.
    this.#wildcards = [...suffixes]
      .sort((a, b) => b.length - a.length)
      .map((suffix) => ({
        suffix,
        plan: plan(
          ordered.filter(
            (o) => o.hostKind === HOST_NONE || (o.hostKind === HOST_WILDCARD && suffix.endsWith(o.host)),
          ),
        ),
      }));
    this.#hostAware = exact.size > 0 || suffixes.size > 0;

    const maxLists = Math.max(0, ...plans.map((p) => p.maxLists));
    this.#lists = Array.from({ length: maxLists }, () => ordered);
    this.#cursors = new Int32Array(maxLists);
    const maxParams = Math.max(0, ...ordered.map((r) => r.template?.names.length ?? 0));
    this.#captures = new Int32Array(2 * maxParams);
  }

  match(
    host: string | undefined,
    path: string,
    method: string,
    headers: IncomingHttpHeaders,
  ): RouteMatch | undefined {
    const lists = this.#lists;
    const n = this.#planFor(host).collect(path, lists);
    if (n === 0) return undefined;
    const bit = methodBit(method);
    if (n === 1) {
      const list = lists[0]!;
      for (let k = 0; k < list.length; k++) {
        const found = check(list[k]!, path, bit, headers, this.#captures);
        if (found !== undefined) return found;
      }
      return undefined;
    }
    // Merge the candidate lists by precedence rank.
    const cursors = this.#cursors;
    for (let j = 0; j < n; j++) cursors[j] = 0;
    for (;;) {
      let best = -1;
      let bestRank = Number.MAX_SAFE_INTEGER;
      for (let j = 0; j < n; j++) {
        const list = lists[j]!;
        const c = cursors[j]!;
        if (c < list.length && list[c]!.rank < bestRank) {
          bestRank = list[c]!.rank;
          best = j;
        }
      }
      if (best === -1) return undefined;
      const c = cursors[best]!;
      cursors[best] = c + 1;
      const found = check(lists[best]![c]!, path, bit, headers, this.#captures);
      if (found !== undefined) return found;
    }
  }

  #planFor(rawHost: string | undefined): Plan {
    if (rawHost === undefined || !this.#hostAware) return this.#anyHost;
    const cached = this.#hostCache.get(rawHost);
    if (cached !== undefined) return cached;
    const plan = this.#resolve(normalizeHost(rawHost));
    if (this.#hostCache.size >= HOST_CACHE_LIMIT) this.#hostCache.clear();
    this.#hostCache.set(rawHost, plan);
    return plan;
  }

  #resolve(host: string): Plan {
    if (host === '') return this.#anyHost;
    const exact = this.#exactHosts.get(host);
    if (exact !== undefined) return exact;
    for (const w of this.#wildcards) if (wildcardMatches(w.suffix, host)) return w.plan;
    return this.#anyHost;
  }
}

/** Compile routes (validated by RouteSchema) into a table. Throws RouteCompileError for a bad route. */
export function createRouteTable(routes: readonly RouteConfig[]): RouteTable {
  const ordered = routes.map((config, index) => new RouteImpl(config, index)).sort(comparePrecedence);
  for (let i = 0; i < ordered.length; i++) ordered[i]!.rank = i;
  return new Table(ordered);
}
