/**
 * The match workload of the scale benchmark: a route table of `routes` generated routes and the
 * requests it is matched against, shared by bench/scale.ts (time per match) and
 * bench/match-instructions.ts (instructions per match).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { type RouteConfig, RouteSchema } from '../../src/config/schema.ts';
import { createRouteTable, type RouteTable } from '../../src/dataplane/routing/route-table.ts';
import { scaleRequest, scaleRoute, scaleUpstreams } from './scale-config.ts';

/**
 * A string as the HTTP parser hands it over: flat, made from bytes. A template literal longer than
 * 12 characters is a cons string, which every charCodeAt walks through until a garbage collection
 * happens to flatten it; which requests got flattened then depended on each process's GC history,
 * not on the table (callgrind once counted 13% more instructions in match at 10 routes than at
 * 10,000 for this alone).
 */
function asParsed(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

export interface MatchWorkload {
  readonly table: RouteTable;
  readonly headers: IncomingHttpHeaders;
  readonly reqs: readonly { host: string; path: string; method: string }[];
  /** Match request i mod reqs.length n times; the number of matches found. */
  run(n: number): number;
}

/**
 * The table at `routes` routes, with the requests of its first ten routes (the same requests at
 * every size: what the table's size costs a request) or of all of them (`spread`: what touching
 * that many routes costs, CPU caches).
 */
export function matchWorkload(routes: number, spread: boolean): MatchWorkload {
  const u = scaleUpstreams(routes);
  const configs: RouteConfig[] = Array.from({ length: routes }, (_, i) =>
    RouteSchema.parse(scaleRoute(i, u)),
  );
  const table = createRouteTable(configs);
  const headers: IncomingHttpHeaders = { accept: '*/*' };
  const reqs = Array.from({ length: spread ? routes : Math.min(10, routes) }, (_, i) => {
    const r = scaleRequest(i);
    return { host: asParsed(r.host ?? 'gateway.example.com:8080'), path: asParsed(r.path), method: r.method };
  });
  for (const r of reqs)
    if (!table.match(r.host, r.path, r.method, headers)) throw new Error(`no match ${r.path}`);
  const run = (n: number) => {
    let found = 0;
    for (let i = 0; i < n; i++) {
      const r = reqs[i % reqs.length]!;
      if (table.match(r.host, r.path, r.method, headers) !== undefined) found++;
    }
    return found;
  };
  return { table, headers, reqs, run };
}
