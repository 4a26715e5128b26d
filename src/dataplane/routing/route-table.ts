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
 * How a request is matched cheaply: the precedence order is computed once, and each route gets
 * its rank in it. The routes of each exact host, of each wildcard suffix, and the host-less ones
 * are indexed by path anchor, each group on its own (see PathIndex). For every exact host and
 * wildcard suffix the table lists the indexes a request for it must consult (its own, the
 * wildcard suffixes it falls under, the host-less one). A request finds that plan through a
 * bounded cache keyed by the raw Host value, gets the ids of the few candidate lists for its path
 * from hash-table probes, and checks candidates in rank order, merging the lists: a method bit
 * test, a string compare, header lookups. A route without params returns a preallocated, frozen
 * RouteMatch.
 *
 * Matching rules are in docs/routing.md: HEAD does not match a GET-only route; a prefix `/api`
 * matches `/api`, `/api/` and `/api/x` but a prefix `/api/` does not match `/api`.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RouteConfig } from '../../config/schema.ts';
import { BIG_STEP, runNow, type Steps } from '../../slices.ts';
import {
  HOST_EXACT,
  HOST_NONE,
  HOST_WILDCARD,
  methodBit,
  PATH_TEMPLATE,
  RouteCompileError,
  RouteImpl,
} from './compiled-route.ts';
import { normalizeHost } from './host.ts';
import { ListStore, PathIndex } from './path-index.ts';
import { buildParams, compareTemplates } from './path-template.ts';

export { RouteCompileError };

export interface CompiledRoute {
  readonly name: string;
  /** Upstream name. */
  readonly upstream: string;
  readonly priority: number;
  /**
   * The path template the route matches, as the span attribute `http.route` (and the metric
   * label `http_route`) carries it: an exact path as it is, a template as written (`/users/:id`),
   * a prefix as the template that matches what it does (`/users` → `/users/*`).
   */
  readonly httpRoute: string;
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

/** Sizes of what the table precomputed: linear in routes and hosts, whatever the mix. */
export interface RouteTableStats {
  /** Routes held by the path indexes: every route exactly once. */
  readonly indexedRoutes: number;
  /** One for the host-less routes, one per wildcard suffix, one per exact host. */
  readonly pathIndexes: number;
  /** Index references in the per-host plans: a few per exact host and wildcard suffix. */
  readonly planEntries: number;
}

export interface RouteTable {
  /** In precedence order. */
  readonly routes: readonly CompiledRoute[];
  readonly stats: RouteTableStats;
  /** host: Host header value as received (may carry :port, any case, may be undefined); path: normalised path without query string; method upper-case. */
  match(
    host: string | undefined,
    path: string,
    method: string,
    headers: IncomingHttpHeaders,
  ): RouteMatch | undefined;
}

/**
 * Distinct Host values remembered, at least; past the limit the cache starts over, so random Hosts
 * cost CPU, not memory. The limit grows with the configured hosts so that traffic spread over all
 * of them still hits the cache.
 */
const HOST_CACHE_MIN = 1024;

type Index = PathIndex<RouteImpl>;
/**
 * The path indexes a request for one host is matched against, most specific host first: the
 * exact host's own routes, those of each wildcard suffix the host falls under (longest first),
 * the host-less routes. Each route sits in exactly one index, so the table grows linearly with
 * the routes however many hosts they name; the global precedence rank merges the candidates.
 */
type Plan = readonly Index[];

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

/** Routes grouped by a key, each group in the order of `ordered` (precedence). */
function groupBy(ordered: readonly RouteImpl[], kind: number): Map<string, RouteImpl[]> {
  const groups = new Map<string, RouteImpl[]>();
  for (const r of ordered) {
    if (r.hostKind !== kind) continue;
    const group = groups.get(r.host);
    if (group === undefined) groups.set(r.host, [r]);
    else group.push(r);
  }
  return groups;
}

/**
 * The longest key of `suffixes` that `host` ends with, one or more labels before it (as
 * wildcardMatches requires): every suffix starts with a dot, so only the dots of `host` after its
 * first character can start one.
 */
function longestSuffix<T>(suffixes: ReadonlyMap<string, T>, host: string): T | undefined {
  for (let dot = host.indexOf('.', 1); dot !== -1; dot = host.indexOf('.', dot + 1)) {
    const found = suffixes.get(host.slice(dot));
    if (found !== undefined) return found;
  }
  return undefined;
}

class Table implements RouteTable {
  readonly routes: readonly CompiledRoute[];
  readonly stats: RouteTableStats;
  readonly #anyHost: Plan;
  readonly #exactHosts: ReadonlyMap<string, Plan>;
  /** Wildcard suffix (`.example.com`) → the plan of hosts whose longest matching suffix it is. */
  readonly #wildcards: ReadonlyMap<string, Plan>;
  readonly #hostAware: boolean;
  readonly #hostCache = new Map<string, Plan>();
  readonly #hostCacheLimit: number;
  /** Every candidate list of the path indexes, by the ids collect returns. */
  readonly #lists: readonly (readonly RouteImpl[])[];
  // Scratch space for one match at a time (matching is synchronous).
  readonly #ids: Int32Array;
  readonly #cursors: Int32Array;
  readonly #captures: Int32Array;

  constructor(ordered: readonly RouteImpl[], parts: TableParts) {
    this.routes = Object.freeze(ordered.slice());
    const { anyIndex, suffixIndexes, wildcards, exact, store } = parts;
    const tail: Plan = anyIndex.size > 0 ? [anyIndex] : [];
    this.#anyHost = tail;
    this.#wildcards = wildcards;
    this.#exactHosts = exact;
    this.#hostAware = exact.size > 0 || wildcards.size > 0;
    this.#hostCacheLimit = Math.max(HOST_CACHE_MIN, 2 * (exact.size + wildcards.size));

    let maxLists = 0;
    let planEntries = tail.length;
    for (const plans of [exact, wildcards]) {
      for (const plan of plans.values()) {
        planEntries += plan.length;
        maxLists = Math.max(
          maxLists,
          plan.reduce((sum, index) => sum + index.maxLists, 0),
        );
      }
    }
    maxLists = Math.max(maxLists, anyIndex.maxLists);
    this.stats = Object.freeze({
      indexedRoutes: anyIndex.size + sumSizes(suffixIndexes.values()) + sumSizes(firstIndexes(exact)),
      pathIndexes: 1 + suffixIndexes.size + exact.size,
      planEntries,
    });
    this.#lists = store.lists;
    this.#ids = new Int32Array(maxLists);
    this.#cursors = new Int32Array(maxLists);
    let maxParams = 0;
    for (const r of ordered) maxParams = Math.max(maxParams, r.template?.names.length ?? 0);
    this.#captures = new Int32Array(2 * maxParams);
  }

  match(
    host: string | undefined,
    path: string,
    method: string,
    headers: IncomingHttpHeaders,
  ): RouteMatch | undefined {
    const lists = this.#lists;
    const ids = this.#ids;
    const plan = this.#planFor(host);
    let n = 0;
    for (let k = 0; k < plan.length; k++) n = plan[k]!.collect(path, ids, n);
    if (n === 0) return undefined;
    const bit = methodBit(method);
    if (n === 1) {
      const list = lists[ids[0]!]!;
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
        const list = lists[ids[j]!]!;
        const c = cursors[j]!;
        if (c < list.length && list[c]!.rank < bestRank) {
          bestRank = list[c]!.rank;
          best = j;
        }
      }
      if (best === -1) return undefined;
      const c = cursors[best]!;
      cursors[best] = c + 1;
      const found = check(lists[ids[best]!]![c]!, path, bit, headers, this.#captures);
      if (found !== undefined) return found;
    }
  }

  #planFor(rawHost: string | undefined): Plan {
    if (rawHost === undefined || !this.#hostAware) return this.#anyHost;
    const cached = this.#hostCache.get(rawHost);
    if (cached !== undefined) return cached;
    const plan = this.#resolve(normalizeHost(rawHost));
    if (this.#hostCache.size >= this.#hostCacheLimit) this.#hostCache.clear();
    this.#hostCache.set(rawHost, plan);
    return plan;
  }

  #resolve(host: string): Plan {
    if (host === '') return this.#anyHost;
    return this.#exactHosts.get(host) ?? longestSuffix(this.#wildcards, host) ?? this.#anyHost;
  }
}

function* firstIndexes(plans: ReadonlyMap<string, Plan>): Iterable<Index> {
  for (const plan of plans.values()) yield plan[0]!;
}

function sumSizes(indexes: Iterable<Index>): number {
  let n = 0;
  for (const index of indexes) n += index.size;
  return n;
}

/** Compile routes (validated by RouteSchema) into a table. Throws RouteCompileError for a bad route. */
export function createRouteTable(routes: readonly RouteConfig[]): RouteTable {
  return runNow(routeTableSteps(routes));
}

/** createRouteTable in steps (src/slices.ts): it yields after each route and each host. */
export function* routeTableSteps(routes: readonly RouteConfig[]): Steps<RouteTable> {
  const ordered: RouteImpl[] = [];
  for (let i = 0; i < routes.length; i++) {
    ordered.push(new RouteImpl(routes[i]!, i));
    yield;
  }
  yield BIG_STEP;
  ordered.sort(comparePrecedence);
  for (let i = 0; i < ordered.length; i++) ordered[i]!.rank = i;
  yield;
  return new Table(ordered, yield* indexSteps(ordered));
}

interface TableParts {
  /** The host-less routes. */
  readonly anyIndex: Index;
  readonly suffixIndexes: ReadonlyMap<string, Index>;
  readonly wildcards: ReadonlyMap<string, Plan>;
  readonly exact: ReadonlyMap<string, Plan>;
  /** The candidate lists of all the indexes above. */
  readonly store: ListStore<RouteImpl>;
}

function* indexSteps(ordered: readonly RouteImpl[]): Steps<TableParts> {
  const store = new ListStore<RouteImpl>();
  const anyIndex = new PathIndex(
    ordered.filter((r) => r.hostKind === HOST_NONE),
    store,
  );
  const tail: Plan = anyIndex.size > 0 ? [anyIndex] : [];
  // A suffix's wildcard part: its own index, then those of the shorter suffixes it ends with
  // (all of them match any host it matches), longest first.
  const suffixIndexes = new Map<string, Index>();
  for (const [suffix, routes] of groupBy(ordered, HOST_WILDCARD)) {
    suffixIndexes.set(suffix, new PathIndex(routes, store));
    yield;
  }
  const wildcards = new Map<string, Plan>();
  for (const suffix of suffixIndexes.keys()) {
    const chain: Index[] = [];
    for (let dot = 0; dot !== -1; dot = suffix.indexOf('.', dot + 1)) {
      const index = suffixIndexes.get(suffix.slice(dot));
      if (index !== undefined) chain.push(index);
    }
    wildcards.set(suffix, [...chain, ...tail]);
  }
  const exact = new Map<string, Plan>();
  for (const [host, routes] of groupBy(ordered, HOST_EXACT)) {
    exact.set(host, [new PathIndex(routes, store), ...(longestSuffix(wildcards, host) ?? tail)]);
    yield;
  }
  return { anyIndex, suffixIndexes, wildcards, exact, store };
}
