/**
 * Micro-benchmark of the per-request routing work: RouteTable.match over a 50-route table, and
 * normalizePath. Not a test; run with `node bench/micro/route-match.ts` (Node 24).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { type RouteConfig, RouteSchema } from '../../src/config/schema.ts';
import { normalizePath } from '../../src/dataplane/routing/path-normalize.ts';
import { createRouteTable } from '../../src/dataplane/routing/route-table.ts';

function route(name: string, match: Record<string, unknown>, priority = 0): RouteConfig {
  return RouteSchema.parse({ name, upstream: 'svc', match, priority });
}

const SERVICES = ['users', 'orders', 'billing', 'catalog', 'search', 'auth', 'inventory', 'shipping'];

/** About 50 routes; `extraServices` adds 4 routes each under `/api/v1/svcN`. */
function buildRoutes(extraServices = 0): RouteConfig[] {
  const routes: RouteConfig[] = [];
  const services = [...SERVICES, ...Array.from({ length: extraServices }, (_, i) => `svc${i}`)];
  for (const s of services) {
    routes.push(route(`${s}-prefix`, { path: `/api/v1/${s}` }));
    routes.push(route(`${s}-item`, { path: `/api/v1/${s}/:id`, pathType: 'template' }));
    routes.push(route(`${s}-health`, { path: `/api/v1/${s}/health`, pathType: 'exact' }));
    routes.push(route(`${s}-write`, { path: `/api/v1/${s}`, methods: ['POST', 'PUT', 'DELETE'] }));
  }
  for (const h of ['admin', 'grafana', 'docs']) {
    routes.push(route(`${h}-host`, { host: `${h}.example.com` }));
    routes.push(route(`${h}-host-api`, { host: `${h}.example.com`, path: '/api' }));
  }
  routes.push(route('tenant-wild', { host: '*.tenants.example.com' }));
  routes.push(route('tenant-wild-api', { host: '*.tenants.example.com', path: '/api' }));
  routes.push(route('canary', { path: '/api/v1/users', headers: { 'x-canary': 'true' } }, 5));
  routes.push(route('static', { path: '/static/*', pathType: 'template' }));
  routes.push(route('health', { path: '/healthz', pathType: 'exact' }));
  routes.push(route('ready', { path: '/readyz', pathType: 'exact' }));
  routes.push(route('legacy', { path: '/legacy' }));
  routes.push(route('legacy-v2', { path: '/legacy/v2/' }));
  routes.push(route('metrics', { path: '/metrics', pathType: 'exact', methods: ['GET'] }));
  routes.push(route('tenant-item', { path: '/:tenant/items/:id', pathType: 'template' }));
  routes.push(
    route('graphql', {
      path: '/graphql',
      methods: ['POST'],
      headers: { 'content-type': 'application/json' },
    }),
  );
  routes.push(route('root', { path: '/' }));
  return routes;
}

interface Req {
  readonly host: string | undefined;
  readonly path: string;
  readonly method: string;
  readonly headers: IncomingHttpHeaders;
}

const H: IncomingHttpHeaders = { host: 'api.example.com', accept: 'application/json', 'user-agent': 'bench' };
const req = (path: string, method = 'GET', host = 'api.example.com:443', headers = H): Req => ({
  host,
  path,
  method,
  headers,
});

const scenarios: Record<string, Req[]> = {
  'exact path': [req('/healthz'), req('/api/v1/orders/health')],
  'prefix hit': [req('/api/v1/catalog'), req('/api/v1/search/a/b')],
  'template hit (params object)': [req('/api/v1/users/42'), req('/static/css/site.css')],
  'exact host': [req('/api/x', 'GET', 'admin.example.com'), req('/', 'GET', 'docs.example.com')],
  'wildcard host': [req('/api/x', 'GET', 'acme.tenants.example.com')],
  'fallback to /': [req('/nothing/here'), req('/api/v2/users')],
  'method/header constrained': [
    req('/api/v1/users', 'POST'),
    req('/api/v1/users', 'GET', 'api.example.com', { ...H, 'x-canary': 'true' }),
  ],
  'no Host': [req('/api/v1/orders', 'GET', undefined as unknown as string)],
};
scenarios['mixed (all of the above)'] = Object.values(scenarios).flat();

let sink = 0;

/** Warm up, then report the median of 5 timed rounds: this runs on shared, noisy machines. */
function measure(label: string, iterations: number, fn: (i: number) => number): void {
  for (let i = 0; i < 200_000; i++) sink += fn(i);
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) sink += fn(i);
    rounds.push(Number(process.hrtime.bigint() - start) / iterations);
  }
  const ns = rounds.sort((a, b) => a - b)[2]!;
  console.log(`${label.padEnd(44)} ${ns.toFixed(1).padStart(7)} ns/op`);
}

const routes = buildRoutes();
const table = createRouteTable(routes);
console.log(`routes: ${table.routes.length}, node ${process.version}`);
const N = 1_000_000;

for (const [label, reqs] of Object.entries(scenarios)) {
  // Each request must hit the route the scenario means; a bench that measures misses is useless.
  for (const r of reqs)
    if (!table.match(r.host, r.path, r.method, r.headers)) throw new Error(`no match: ${r.path}`);
  const n = reqs.length;
  measure(`match: ${label}`, N, (i) => {
    const r = reqs[i % n]!;
    return table.match(r.host, r.path, r.method, r.headers) === undefined ? 0 : 1;
  });
}

// Random Host values: every request misses the Host cache (bounded at 1024 entries).
const randomHosts = Array.from(
  { length: 4096 },
  (_, i) => `h${i}-${Math.random().toString(36).slice(2)}.example.org`,
);
measure('match: random Host each request', N, (i) => {
  const m = table.match(randomHosts[i & 4095], '/api/v1/users/42', 'GET', H);
  return m === undefined ? 0 : 1;
});

// Scaling: the same requests against a table ten times larger.
const big = createRouteTable(buildRoutes(113));
const mixed = scenarios['mixed (all of the above)']!;
measure(`match: mixed, ${big.routes.length} routes`, N, (i) => {
  const r = mixed[i % mixed.length]!;
  return big.match(r.host, r.path, r.method, r.headers) === undefined ? 0 : 1;
});

// Reference: a straightforward linear scan over the same routes in the same precedence order,
// with startsWith and one RegExp per template: what the index and host plans save.
const naive = table.routes.map((route) => {
  const m = route.config.match;
  const suffix = m.host?.startsWith('*.') ? m.host.slice(1) : undefined;
  const methods = m.methods ? new Set<string>(m.methods) : undefined;
  const headers = Object.entries(m.headers ?? {});
  const p = m.path;
  const re =
    m.pathType === 'template'
      ? new RegExp(`^${p.replace(/\/\*$/, '(?:/(.*))?').replace(/:([A-Za-z_]\w*)/g, '(?<$1>[^/]+)')}$`)
      : undefined;
  return (host: string, path: string, method: string, hdrs: IncomingHttpHeaders) => {
    if (m.host && (suffix ? !(host.endsWith(suffix) && host.length > suffix.length) : host !== m.host))
      return false;
    if (methods && !methods.has(method)) return false;
    for (const [k, v] of headers) if (hdrs[k] !== v) return false;
    if (m.pathType === 'exact') return path === p;
    if (re) return re.test(path);
    return p === '/' || path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`);
  };
});
measure('reference linear scan: mixed', N, (i) => {
  const r = mixed[i % mixed.length]!;
  const host = (r.host ?? '').replace(/:\d+$/, '').toLowerCase();
  for (const test of naive) if (test(host, r.path, r.method, r.headers)) return 1;
  return 0;
});

const clean = ['/api/v1/users/42', '/static/css/site.css', '/healthz'];
measure('normalizePath: already normal', N, (i) => {
  const n = normalizePath(clean[i % 3]!);
  return 'path' in n ? n.path.length : 0;
});
measure('normalizePath: with query', N, () => {
  const n = normalizePath('/api/v1/search?q=term&page=2');
  return 'path' in n ? n.path.length : 0;
});
measure('normalizePath: slow path (%XX, dot-segments)', N, () => {
  const n = normalizePath('/api/v1/%7Euser/./files/../a%2dlist');
  return 'path' in n ? n.path.length : 0;
});

if (sink === -1) console.log(sink);
