import type { IncomingHttpHeaders } from 'node:http';
import { describe, expect, it } from 'vitest';
import { type RouteConfig, RouteSchema } from '../../../src/config/schema.ts';
import { anchorKey } from '../../../src/dataplane/routing/path-index.ts';
import {
  type CompiledRoute,
  createRouteTable,
  RouteCompileError,
  type RouteTable,
} from '../../../src/dataplane/routing/route-table.ts';

function route(
  name: string,
  match: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): RouteConfig {
  return RouteSchema.parse({ name, upstream: `${name}-up`, match, ...extra });
}

/** A route whose path skips the schema's check, to exercise the compiler's own. */
function unchecked(
  name: string,
  match: Record<string, unknown> & { path: string },
  extra: Record<string, unknown> = {},
): RouteConfig {
  const valid = route(name, { ...match, path: '/' }, extra);
  return { ...valid, match: { ...valid.match, path: match.path } };
}

/** The schema's message for a route's path, or undefined when it accepts the route. */
function schemaIssue(match: Record<string, unknown>): string | undefined {
  const result = RouteSchema.safeParse({ name: 'r', upstream: 'u', match });
  if (result.success) return undefined;
  expect(result.error.issues.map((i) => i.path.join('.'))).toEqual(['match.path']);
  return result.error.issues[0]!.message;
}

function table(...routes: RouteConfig[]): RouteTable {
  return createRouteTable(routes);
}

interface Req {
  host?: string;
  path?: string;
  method?: string;
  headers?: IncomingHttpHeaders;
}

function hit(t: RouteTable, req: Req = {}): string | undefined {
  return t.match(req.host, req.path ?? '/', req.method ?? 'GET', req.headers ?? {})?.route.name;
}

function names(routes: readonly CompiledRoute[]): string[] {
  return routes.map((r) => r.name);
}

describe('createRouteTable', () => {
  it('gives each route its path template as http.route: exact as is, templates as written, prefixes as /*', () => {
    const t = table(
      route('exact', { path: '/health', pathType: 'exact' }),
      route('template', { path: '/users/:id/orders/*', pathType: 'template' }),
      route('prefix', { path: '/api' }),
      route('raw-prefix', { path: '/files/' }),
      route('everything', { path: '/' }),
      route('normalised', { path: '/a/./b//c', pathType: 'exact' }),
    );
    expect(Object.fromEntries(t.routes.map((r) => [r.name, r.httpRoute]))).toEqual({
      exact: '/health',
      template: '/users/:id/orders/*',
      prefix: '/api/*',
      'raw-prefix': '/files/*',
      everything: '/*',
      normalised: '/a/b/c',
    });
  });

  it('a table with no routes matches nothing', () => {
    const t = table();
    expect(t.routes).toEqual([]);
    expect(t.match('example.com', '/', 'GET', {})).toBeUndefined();
    expect(t.match(undefined, '/x', 'POST', {})).toBeUndefined();
  });

  it('exposes the compiled route fields', () => {
    const config = route(
      'r',
      { host: 'api.example.com' },
      { priority: 3, preserveHost: false, rewrite: { host: 'x:81' } },
    );
    const [r] = table(config).routes;
    expect(r).toMatchObject({
      name: 'r',
      upstream: 'r-up',
      priority: 3,
      preserveHost: false,
      hostRewrite: 'x:81',
    });
    expect(r!.config).toBe(config);
    expect(table(route('d')).routes[0]).toMatchObject({
      preserveHost: true,
      hostRewrite: undefined,
      priority: 0,
    });
  });

  it('routes serialise to their public fields', () => {
    const config = route('r', { path: '/x' });
    const json = JSON.parse(JSON.stringify(table(config).routes));
    expect(json).toEqual([
      { name: 'r', upstream: 'r-up', priority: 0, config: JSON.parse(JSON.stringify(config)) },
    ]);
  });

  describe('precedence', () => {
    it('priority overrides specificity, across host buckets', () => {
      const t = table(
        route('exact-host-exact-path', { host: 'api.example.com', path: '/users', pathType: 'exact' }),
        route('catch-all', { path: '/' }, { priority: 10 }),
      );
      expect(hit(t, { host: 'api.example.com', path: '/users' })).toBe('catch-all');
      expect(names(t.routes)).toEqual(['catch-all', 'exact-host-exact-path']);
    });

    it('a negative priority goes after everything at the default', () => {
      const t = table(
        route('low', { path: '/users', pathType: 'exact' }, { priority: -1 }),
        route('all', { path: '/' }),
      );
      expect(hit(t, { path: '/users' })).toBe('all');
    });

    it('exact path beats template beats prefix', () => {
      const t = table(
        route('prefix', { path: '/users/me' }),
        route('template', { path: '/users/:id', pathType: 'template' }),
        route('exact', { path: '/users/me', pathType: 'exact' }),
      );
      expect(names(t.routes)).toEqual(['exact', 'template', 'prefix']);
      expect(hit(t, { path: '/users/me' })).toBe('exact');
      expect(hit(t, { path: '/users/42' })).toBe('template');
      expect(hit(t, { path: '/users/me/x' })).toBe('prefix');
    });

    it('a longer prefix beats a shorter one whatever the config order', () => {
      const t = table(
        route('root', { path: '/' }),
        route('api', { path: '/api' }),
        route('v1', { path: '/api/v1' }),
      );
      expect(names(t.routes)).toEqual(['v1', 'api', 'root']);
      expect(hit(t, { path: '/api/v1/users' })).toBe('v1');
      expect(hit(t, { path: '/api/v2' })).toBe('api');
      expect(hit(t, { path: '/other' })).toBe('root');
    });

    it('templates: literal segments beat params, params beat the wildcard', () => {
      const t = table(
        route('star', { path: '/files/*', pathType: 'template' }),
        route('param', { path: '/files/:name', pathType: 'template' }),
        route('literal', { path: '/files/readme', pathType: 'template' }),
        route('param-first', { path: '/:dir/readme', pathType: 'template' }),
      );
      expect(names(t.routes)).toEqual(['literal', 'param', 'star', 'param-first']);
      expect(hit(t, { path: '/files/readme' })).toBe('literal');
      expect(hit(t, { path: '/files/a' })).toBe('param');
      expect(hit(t, { path: '/files/a/b' })).toBe('star');
      expect(hit(t, { path: '/docs/readme' })).toBe('param-first');
    });

    it('exact host beats wildcard host beats no host; a longer wildcard beats a shorter one', () => {
      const t = table(
        route('none', { path: '/' }),
        route('wild', { host: '*.example.com' }),
        route('wild-deep', { host: '*.api.example.com' }),
        route('exact', { host: 'api.example.com' }),
      );
      expect(names(t.routes)).toEqual(['exact', 'wild-deep', 'wild', 'none']);
      expect(hit(t, { host: 'api.example.com' })).toBe('exact');
      expect(hit(t, { host: 'v1.api.example.com' })).toBe('wild-deep');
      expect(hit(t, { host: 'www.example.com' })).toBe('wild');
      expect(hit(t, { host: 'example.com' })).toBe('none');
      expect(hit(t, { host: 'example.org' })).toBe('none');
      expect(hit(t, {})).toBe('none');
    });

    it('host specificity outranks path specificity', () => {
      const t = table(
        route('no-host-exact', { path: '/x', pathType: 'exact' }),
        route('host-prefix', { host: 'a.example.com', path: '/' }),
      );
      expect(hit(t, { host: 'a.example.com', path: '/x' })).toBe('host-prefix');
      expect(hit(t, { host: 'b.example.com', path: '/x' })).toBe('no-host-exact');
    });

    it('falls through to less specific hosts when the specific routes do not match the path', () => {
      const t = table(
        route('exact-host', { host: 'api.example.com', path: '/v1' }),
        route('wild', { host: '*.example.com', path: '/v2' }),
        route('none', { path: '/' }),
      );
      expect(hit(t, { host: 'api.example.com', path: '/v1/x' })).toBe('exact-host');
      expect(hit(t, { host: 'api.example.com', path: '/v2/x' })).toBe('wild');
      expect(hit(t, { host: 'api.example.com', path: '/v3' })).toBe('none');
    });

    it('routes with more constraints come first, then config order', () => {
      const t = table(
        route('plain', { path: '/a' }),
        route('method', { path: '/a', methods: ['GET'] }),
        route('method-header', { path: '/a', methods: ['GET'], headers: { 'x-env': 'canary' } }),
        route('plain-2', { path: '/a' }),
      );
      expect(names(t.routes)).toEqual(['method-header', 'method', 'plain', 'plain-2']);
      expect(hit(t, { path: '/a', headers: { 'x-env': 'canary' } })).toBe('method-header');
      expect(hit(t, { path: '/a' })).toBe('method');
      expect(hit(t, { path: '/a', method: 'POST' })).toBe('plain');
    });

    it('the example in docs/routing.md', () => {
      const routes = [
        route('admin', { host: 'admin.example.com' }),
        route('tenants', { host: '*.example.com', path: '/api' }),
        route('user', { path: '/users/:id', pathType: 'template' }),
        route('users-write', { path: '/users', methods: ['POST'] }),
        route('users', { path: '/users' }),
      ];
      const t = table(...routes);
      expect(hit(t, { host: 'admin.example.com', path: '/x' })).toBe('admin');
      expect(hit(t, { host: 'admin.example.com', path: '/users/1' })).toBe('admin');
      expect(hit(t, { host: 'a.example.com', path: '/api/v1' })).toBe('tenants');
      expect(hit(t, { host: 'a.example.com', path: '/users/1' })).toBe('user');
      expect(hit(t, { path: '/users', method: 'POST' })).toBe('users-write');
      expect(hit(t, { path: '/users/1/orders' })).toBe('users');
      const withEverything = table(route('everything', { path: '/' }, { priority: 10 }), ...routes);
      expect(hit(withEverything, { host: 'admin.example.com', path: '/x' })).toBe('everything');
      expect(hit(withEverything, { path: '/users/1' })).toBe('everything');
    });

    // Each host's routes, each wildcard suffix's and the host-less ones are indexed apart and
    // merged by rank per request: these pin the orders where candidates from several indexes meet.
    describe('candidates from several host indexes', () => {
      it('same path and priority: exact host, then the longer wildcard, then the shorter, then none', () => {
        const t = table(
          route('none', { path: '/a', pathType: 'exact' }),
          route('wild', { host: '*.example.com', path: '/a', pathType: 'exact' }),
          route('wild-deep', { host: '*.b.example.com', path: '/a', pathType: 'exact' }),
          route('exact', { host: 'x.b.example.com', path: '/a', pathType: 'exact' }),
        );
        expect(hit(t, { host: 'x.b.example.com', path: '/a' })).toBe('exact');
        expect(hit(t, { host: 'y.b.example.com', path: '/a' })).toBe('wild-deep');
        expect(hit(t, { host: 'b.example.com', path: '/a' })).toBe('wild');
        expect(hit(t, { host: 'example.com', path: '/a' })).toBe('none');
        // Method constraints drop each in turn: the next index in rank order answers.
        const constrained = table(
          route('none', { path: '/a' }),
          route('wild', { host: '*.example.com', path: '/a', methods: ['POST', 'PUT'] }),
          route('wild-deep', { host: '*.b.example.com', path: '/a', methods: ['PUT'] }),
          route('exact', { host: 'x.b.example.com', path: '/a', methods: ['DELETE'] }),
        );
        const on = (method: string) => hit(constrained, { host: 'x.b.example.com', path: '/a/1', method });
        expect([on('DELETE'), on('PUT'), on('POST'), on('GET')]).toEqual([
          'exact',
          'wild-deep',
          'wild',
          'none',
        ]);
      });

      it('a host-less route at a higher priority beats every host; at a lower one it loses to all', () => {
        const t = table(
          route('exact', { host: 'a.example.com', path: '/a/b/c', pathType: 'exact' }),
          route('wild', { host: '*.example.com', path: '/a/b' }, { priority: 1 }),
          route('none-high', { path: '/a' }, { priority: 2 }),
          route('none-low', { path: '/a/b/c', pathType: 'exact' }, { priority: -1 }),
        );
        expect(hit(t, { host: 'a.example.com', path: '/a/b/c' })).toBe('none-high');
        const without = table(...t.routes.filter((r) => r.name !== 'none-high').map((r) => r.config));
        // priority 1 (wildcard) before 0 (exact host) before -1 (host-less, most specific path).
        expect(hit(without, { host: 'a.example.com', path: '/a/b/c' })).toBe('wild');
        expect(hit(without, { host: 'a.example.com', path: '/a/x' })).toBeUndefined();
        const lowOnly = table(
          route('exact', { host: 'a.example.com', path: '/z' }),
          route('none-low', { path: '/a/b/c', pathType: 'exact' }, { priority: -1 }),
        );
        expect(hit(lowOnly, { host: 'a.example.com', path: '/a/b/c' })).toBe('none-low');
      });

      it('at equal priority and host, path kind and length decide across anchors of one host', () => {
        const t = table(
          route('h-root', { host: 'a.example.com', path: '/' }),
          route('h-a', { host: 'a.example.com', path: '/a' }),
          route('h-item', { host: 'a.example.com', path: '/a/:id', pathType: 'template' }),
          route('none-exact', { path: '/a/1', pathType: 'exact' }, { priority: 0 }),
        );
        expect(hit(t, { host: 'a.example.com', path: '/a/1' })).toBe('h-item');
        expect(hit(t, { host: 'a.example.com', path: '/a/1/2' })).toBe('h-a');
        expect(hit(t, { host: 'a.example.com', path: '/b' })).toBe('h-root');
        expect(hit(t, { host: 'b.example.com', path: '/a/1' })).toBe('none-exact');
      });

      it('an exact host under a wildcard falls through to the wildcard, then to the host-less routes', () => {
        const t = table(
          route('exact', { host: 'a.example.com', path: '/v1' }),
          route('wild', { host: '*.example.com', path: '/v2' }),
          route('wild-top', { host: '*.com', path: '/v3' }),
          route('none', { path: '/v4' }),
        );
        for (const [path, want] of [
          ['/v1', 'exact'],
          ['/v2', 'wild'],
          ['/v3', 'wild-top'],
          ['/v4', 'none'],
          ['/v5', undefined],
        ] as const) {
          expect(hit(t, { host: 'a.example.com', path })).toBe(want);
          expect(hit(t, { host: 'A.Example.com.:8443', path })).toBe(want);
        }
        expect(hit(t, { host: 'b.example.com', path: '/v1' })).toBeUndefined();
        expect(hit(t, { host: 'example.com', path: '/v3' })).toBe('wild-top');
        expect(hit(t, { host: 'example.com', path: '/v2' })).toBeUndefined();
        expect(hit(t, { host: 'example.org', path: '/v3' })).toBeUndefined();
      });
    });

    it('config order breaks a complete tie', () => {
      const a = table(route('first', { path: '/x' }), route('second', { path: '/x' }));
      const b = table(route('second', { path: '/x' }), route('first', { path: '/x' }));
      expect(hit(a, { path: '/x' })).toBe('first');
      expect(hit(b, { path: '/x' })).toBe('second');
    });
  });

  describe('host matching', () => {
    const t = table(
      route('exact', { host: 'Api.Example.com' }),
      route('wild', { host: '*.example.com' }),
      route('ipv4', { host: '10.0.0.1' }),
      route('fallback', { path: '/' }),
    );

    it('ignores case and the port', () => {
      expect(hit(t, { host: 'api.example.com' })).toBe('exact');
      expect(hit(t, { host: 'API.EXAMPLE.COM' })).toBe('exact');
      expect(hit(t, { host: 'api.example.com:8443' })).toBe('exact');
      expect(hit(t, { host: 'API.example.COM:80' })).toBe('exact');
      expect(hit(t, { host: '10.0.0.1:8080' })).toBe('ipv4');
    });

    it('treats a fully qualified name (trailing dot) as the name', () => {
      expect(hit(t, { host: 'api.example.com.' })).toBe('exact');
      expect(hit(t, { host: 'api.example.com.:443' })).toBe('exact');
    });

    it('wildcards match one or more labels, never the apex or a substring', () => {
      expect(hit(t, { host: 'a.example.com' })).toBe('wild');
      expect(hit(t, { host: 'a.b.example.com:9000' })).toBe('wild');
      expect(hit(t, { host: 'example.com' })).toBe('fallback');
      expect(hit(t, { host: 'badexample.com' })).toBe('fallback');
      expect(hit(t, { host: 'a.example.com.evil.org' })).toBe('fallback');
      expect(hit(t, { host: 'example.com.a' })).toBe('fallback');
      expect(hit(t, { host: '.example.com' })).toBe('fallback');
    });

    it('exact hosts are never substrings or suffixes', () => {
      expect(hit(t, { host: 'xapi.example.com' })).toBe('wild');
      expect(hit(t, { host: 'api.example.comx' })).toBe('fallback');
      expect(hit(t, { host: '10.0.0.10' })).toBe('fallback');
    });

    it('handles IPv6 literals, absent and empty hosts', () => {
      expect(hit(t, { host: '[::1]:80' })).toBe('fallback');
      expect(hit(t, { host: '[::1]' })).toBe('fallback');
      expect(hit(t, { host: undefined })).toBe('fallback');
      expect(hit(t, { host: '' })).toBe('fallback');
      expect(hit(t, { host: ':80' })).toBe('fallback');
    });

    it('a host-only table matches nothing for other hosts', () => {
      const only = table(route('a', { host: 'a.example.com' }));
      expect(hit(only, { host: 'b.example.com' })).toBeUndefined();
      expect(hit(only, {})).toBeUndefined();
      expect(hit(only, { host: 'A.example.com:1' })).toBe('a');
    });

    it('stays correct when the Host cache overflows', () => {
      for (let i = 0; i < 3000; i++) {
        expect(hit(t, { host: `h${i}.example.com` })).toBe('wild');
        expect(hit(t, { host: `h${i}.example.org` })).toBe('fallback');
        if (i % 500 === 0) expect(hit(t, { host: 'API.example.com:1' })).toBe('exact');
      }
    });
  });

  describe('path matching', () => {
    it('prefix matches on segment boundaries', () => {
      const t = table(route('users', { path: '/users' }));
      expect(hit(t, { path: '/users' })).toBe('users');
      expect(hit(t, { path: '/users/' })).toBe('users');
      expect(hit(t, { path: '/users/1' })).toBe('users');
      expect(hit(t, { path: '/usersx' })).toBeUndefined();
      expect(hit(t, { path: '/user' })).toBeUndefined();
      expect(hit(t, { path: '/' })).toBeUndefined();
    });

    it('a prefix with a trailing slash does not match the bare path', () => {
      const t = table(route('api', { path: '/api/' }));
      expect(hit(t, { path: '/api/' })).toBe('api');
      expect(hit(t, { path: '/api/x' })).toBe('api');
      expect(hit(t, { path: '/api' })).toBeUndefined();
      expect(hit(t, { path: '/apix' })).toBeUndefined();
    });

    it('prefix / matches everything (and is the default)', () => {
      const t = table(route('root'));
      for (const p of ['/', '/a', '/a/b/', '/%41']) expect(hit(t, { path: p })).toBe('root');
    });

    it('exact matches only the same path; a trailing slash is significant', () => {
      const t = table(route('exact', { path: '/health', pathType: 'exact' }));
      expect(hit(t, { path: '/health' })).toBe('exact');
      expect(hit(t, { path: '/health/' })).toBeUndefined();
      expect(hit(t, { path: '/healthz' })).toBeUndefined();
      expect(hit(t, { path: '/Health' })).toBeUndefined();
    });

    it('configured paths are compared in normal form', () => {
      const t = table(
        route('exact', { path: '/a//b/./%7euser', pathType: 'exact' }),
        route('prefix', { path: '/x/../y' }),
      );
      expect(t.routes.find((r) => r.name === 'exact')).toBeDefined();
      expect(hit(t, { path: '/a/b/~user' })).toBe('exact');
      expect(hit(t, { path: '/y/1' })).toBe('prefix');
    });

    it('rejects configured paths that can never match', () => {
      expect(() => table(unchecked('bad', { path: '/a%2Fb' }))).toThrow(RouteCompileError);
      try {
        table(route('ok'), unchecked('bad', { path: '/a\\b' }));
        expect.unreachable();
      } catch (err) {
        expect(err).toMatchObject({ route: 'bad', keyPath: 'routes.1.match.path' });
      }
      expect(() => table(unchecked('bad', { path: '/a?x=1', pathType: 'exact' }))).toThrow(/query/);
      // The schema refuses the same paths, so validation needs no table to find them.
      expect(schemaIssue({ path: '/a%2Fb' })).toBe('path "/a%2Fb" is invalid (encoded-slash)');
      expect(schemaIssue({ path: '/a\\b' })).toMatch(/invalid \(backslash\)/);
      expect(schemaIssue({ path: '/a?x=1', pathType: 'exact' })).toMatch(/query or fragment/);
      expect(schemaIssue({ path: '/a/b', pathType: 'exact' })).toBeUndefined();
    });

    it('many exact routes, including same path with different constraints', () => {
      const routes = [];
      for (let i = 0; i < 10; i++) routes.push(route(`e${i}`, { path: `/e/${i}`, pathType: 'exact' }));
      routes.push(route('e3-post', { path: '/e/3', pathType: 'exact', methods: ['POST'] }));
      routes.push(route('e3-header', { path: '/e/3', pathType: 'exact', headers: { 'x-a': '1' } }));
      routes.push(route('prefix', { path: '/e' }));
      const t = table(...routes);
      expect(hit(t, { path: '/e/7' })).toBe('e7');
      expect(hit(t, { path: '/e/3' })).toBe('e3');
      expect(hit(t, { path: '/e/3', method: 'POST' })).toBe('e3-post');
      expect(hit(t, { path: '/e/3', headers: { 'x-a': '1' } })).toBe('e3-header');
      expect(hit(t, { path: '/e/10' })).toBe('prefix');
      expect(hit(t, { path: '/e/7/' })).toBe('prefix');
    });
  });

  describe('templates', () => {
    const t = table(
      route('orders', { path: '/users/:id/orders/:orderId', pathType: 'template' }),
      route('user', { path: '/users/:id', pathType: 'template' }),
      route('files', { path: '/files/*', pathType: 'template' }),
      route('slash', { path: '/s/:id/', pathType: 'template' }),
    );

    it('returns params as raw segments', () => {
      expect(t.match(undefined, '/users/42/orders/7', 'GET', {})?.params).toEqual({ id: '42', orderId: '7' });
      expect(t.match(undefined, '/users/a%20b', 'GET', {})?.params).toEqual({ id: 'a%20b' });
      const m = t.match(undefined, '/users/42', 'GET', {});
      expect(m?.route.name).toBe('user');
      expect(m?.params).toEqual({ id: '42' });
    });

    it('a param matches exactly one non-empty segment; a trailing slash is significant', () => {
      expect(hit(t, { path: '/users/' })).toBeUndefined();
      expect(hit(t, { path: '/users' })).toBeUndefined();
      expect(hit(t, { path: '/users/1/' })).toBeUndefined();
      expect(hit(t, { path: '/users/1/orders' })).toBeUndefined();
      expect(hit(t, { path: '/users/1/orders/2/3' })).toBeUndefined();
      expect(hit(t, { path: '/s/1/' })).toBe('slash');
      expect(hit(t, { path: '/s/1' })).toBeUndefined();
    });

    it('a trailing * matches the rest, possibly empty', () => {
      expect(t.match(undefined, '/files/a/b/c.txt', 'GET', {})?.params).toEqual({ '*': 'a/b/c.txt' });
      expect(t.match(undefined, '/files/', 'GET', {})?.params).toEqual({ '*': '' });
      expect(t.match(undefined, '/files', 'GET', {})?.params).toEqual({ '*': '' });
      expect(hit(t, { path: '/filesx' })).toBeUndefined();
      expect(hit(t, { path: '/filesx/a' })).toBeUndefined();
    });

    it('routes without params have params undefined', () => {
      const p = table(route('p', { path: '/p' }));
      expect(p.match(undefined, '/p', 'GET', {})).toEqual({ route: p.routes[0], params: undefined });
    });

    it('params of one match are not overwritten by the next', () => {
      const a = t.match(undefined, '/users/1/orders/2', 'GET', {});
      const b = t.match(undefined, '/users/3/orders/4', 'GET', {});
      expect(a?.params).toEqual({ id: '1', orderId: '2' });
      expect(b?.params).toEqual({ id: '3', orderId: '4' });
    });

    it.each([
      ['/a/*/b', /last segment/],
      ['/a/:', /parameter name/],
      ['/a/:1x', /parameter name/],
      ['/a/:__proto__', /parameter name/],
      ['/a/:id/:id', /duplicate/],
    ])('rejects the template %s', (path, message) => {
      expect(() => table(unchecked('bad', { path, pathType: 'template' }))).toThrow(message);
      expect(() => table(unchecked('bad', { path, pathType: 'template' }))).toThrow(RouteCompileError);
      expect(schemaIssue({ path, pathType: 'template' })).toMatch(message);
    });
  });

  describe('methods and headers', () => {
    it('methods restrict the route; HEAD does not match GET', () => {
      const t = table(route('read', { methods: ['GET'] }), route('write', { methods: ['POST', 'PUT'] }));
      expect(hit(t, { method: 'GET' })).toBe('read');
      expect(hit(t, { method: 'POST' })).toBe('write');
      expect(hit(t, { method: 'PUT' })).toBe('write');
      expect(hit(t, { method: 'HEAD' })).toBeUndefined();
      expect(hit(t, { method: 'DELETE' })).toBeUndefined();
      expect(hit(t, { method: 'get' })).toBeUndefined();
    });

    it('methods outside the schema list match only routes without methods', () => {
      const t = table(route('get', { methods: ['GET'] }), route('any', { path: '/' }));
      expect(hit(t, { method: 'PROPFIND' })).toBe('any');
      expect(hit(t, { method: 'GET' })).toBe('get');
    });

    it('each configured header must be present with exactly that value', () => {
      const t = table(
        route('both', { headers: { 'X-Env': 'canary', 'x-tenant': 'acme' } }),
        route('env', { headers: { 'x-env': 'canary' } }),
        route('any'),
      );
      expect(hit(t, { headers: { 'x-env': 'canary', 'x-tenant': 'acme' } })).toBe('both');
      expect(hit(t, { headers: { 'x-env': 'canary' } })).toBe('env');
      expect(hit(t, { headers: { 'x-env': 'Canary' } })).toBe('any');
      expect(hit(t, { headers: { 'x-env': 'canary2' } })).toBe('any');
      expect(hit(t, { headers: { 'x-env': '' } })).toBe('any');
      expect(hit(t, {})).toBe('any');
    });

    it('multi-valued headers match when any value equals', () => {
      const t = table(route('env', { headers: { 'x-env': 'canary' } }), route('any'));
      expect(hit(t, { headers: { 'x-env': ['prod', 'canary'] } })).toBe('env');
      // Node joins repeated header lines with ", ".
      expect(hit(t, { headers: { 'x-env': 'prod, canary' } })).toBe('env');
      expect(hit(t, { headers: { 'x-env': 'canary,prod' } })).toBe('env');
      expect(hit(t, { headers: { 'x-env': 'prod, canary , x' } })).toBe('env');
      expect(hit(t, { headers: { 'x-env': ['prod', 'dev'] } })).toBe('any');
      expect(hit(t, { headers: { 'x-env': 'prod, canaryx' } })).toBe('any');
      expect(hit(t, { headers: { 'x-env': 'xcanary, prod' } })).toBe('any');
      expect(hit(t, { headers: { 'x-env': 'canary-2, prod' } })).toBe('any');
    });
  });

  describe('rewritePath', () => {
    const rewrite = (r: Record<string, string>) => table(route('r', {}, { rewrite: r })).routes[0]!;

    it('is the identity, returning the same string, without a path rewrite', () => {
      const path = ['/a', 'b'].join('/');
      expect(table(route('r')).routes[0]!.rewritePath(path)).toBe(path);
      expect(rewrite({ host: 'h' }).rewritePath(path)).toBe(path);
    });

    it('strips a prefix on segment boundaries', () => {
      const r = rewrite({ stripPrefix: '/users' });
      expect(r.rewritePath('/users/1')).toBe('/1');
      expect(r.rewritePath('/users')).toBe('/');
      expect(r.rewritePath('/users/')).toBe('/');
      expect(r.rewritePath('/usersx')).toBe('/usersx');
      expect(r.rewritePath('/other')).toBe('/other');
      expect(rewrite({ stripPrefix: '/users/' }).rewritePath('/users/1')).toBe('/1');
      expect(rewrite({ stripPrefix: '/' }).rewritePath('/users/1')).toBe('/users/1');
    });

    it('adds a prefix', () => {
      const r = rewrite({ addPrefix: '/v2' });
      expect(r.rewritePath('/users/1')).toBe('/v2/users/1');
      expect(r.rewritePath('/')).toBe('/v2/');
      expect(rewrite({ addPrefix: '/v2/' }).rewritePath('/users')).toBe('/v2/users');
    });

    it('strips then adds', () => {
      const r = rewrite({ stripPrefix: '/api/users', addPrefix: '/internal' });
      expect(r.rewritePath('/api/users/1')).toBe('/internal/1');
      expect(r.rewritePath('/api/users')).toBe('/internal');
      expect(r.rewritePath('/api/users/')).toBe('/internal/');
      expect(r.rewritePath('/api/other')).toBe('/internal/api/other');
    });
  });

  it('never lets a path-hash collision produce a wrong match', () => {
    // Find two same-length paths whose anchor keys collide (birthday search over 2^30 keys).
    const seen = new Map<number, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; pair === undefined; i++) {
      const p = `/c${i.toString(36).padStart(5, '0')}`;
      const key = anchorKey(p);
      const other = seen.get(key);
      if (other !== undefined) pair = [other, p];
      else seen.set(key, p);
    }
    const [a, b] = pair;
    const t = table(
      route('a-exact', { path: a, pathType: 'exact' }),
      route('b-prefix', { path: b }),
      route('b-item', { path: `${b}/:id`, pathType: 'template' }),
    );
    expect(hit(t, { path: a })).toBe('a-exact');
    expect(hit(t, { path: b })).toBe('b-prefix');
    expect(hit(t, { path: `${b}/x/y` })).toBe('b-prefix');
    expect(t.match(undefined, `${b}/7`, 'GET', {})?.params).toEqual({ id: '7' });
    expect(hit(t, { path: `${a}/7` })).toBeUndefined();
    expect(hit(t, { path: `${a}/` })).toBeUndefined();
    // Only one of the pair configured: the other collides with it and must not match.
    const single = table(route('a-prefix', { path: a }));
    expect(hit(single, { path: `${b}/x` })).toBeUndefined();
    expect(hit(single, { path: `${a}/x` })).toBe('a-prefix');
    // `b` is only a prefix of a longer anchor and shares its slot's key with the anchor `a`, which
    // nothing continues: the pass over `${b}/x/y/z` must go on past `b` to find `${b}/x/y`.
    const nested = table(
      route('a-exact', { path: a, pathType: 'exact' }),
      route('b-deep', { path: `${b}/x/y` }),
    );
    expect(hit(nested, { path: `${b}/x/y/z` })).toBe('b-deep');
    expect(hit(nested, { path: `${b}/x/y` })).toBe('b-deep');
    expect(hit(nested, { path: `${a}/x/y` })).toBeUndefined();
    expect(hit(nested, { path: a })).toBe('a-exact');
  });

  it('finds anchors below prefixes that are no anchor, and none past the deepest', () => {
    const t = table(
      route('deep', { path: '/a/b/c' }),
      route('item', { path: '/a/b/c/d/:id', pathType: 'template' }),
      route('other', { path: '/x/y', pathType: 'exact' }),
    );
    expect(hit(t, { path: '/a/b/c' })).toBe('deep');
    expect(hit(t, { path: '/a/b/c/d/7' })).toBe('item');
    expect(hit(t, { path: '/a/b/c/d/7/8' })).toBe('deep');
    expect(hit(t, { path: '/a/b/c/e/f/g/h' })).toBe('deep');
    expect(hit(t, { path: '/a/b' })).toBeUndefined();
    expect(hit(t, { path: '/a/bc' })).toBeUndefined();
    expect(hit(t, { path: '/x/y' })).toBe('other');
    expect(hit(t, { path: '/x/y/z' })).toBeUndefined();
    expect(hit(t, { path: '/x' })).toBeUndefined();
  });

  describe('size', () => {
    // The table once held, for every exact host, a copy of every host-less route (hosts ×
    // routes); these pin the linear layout: each route in one index, a few plan entries per host.
    function tenants(routes: number): RouteConfig[] {
      return Array.from({ length: routes }, (_, i) =>
        i % 4 === 0
          ? route(`t${i}`, { host: `t${i}.tenants.example.com`, path: '/' })
          : i % 4 === 1
            ? route(`p${i}`, { path: `/api/s${i}` })
            : i % 4 === 2
              ? route(`w${i}`, { host: `*.g${(i >> 2) % 40}.example.com`, path: `/w${i}` })
              : route(`i${i}`, { path: `/api/s${i}/:id`, pathType: 'template' }),
      );
    }

    it('grows linearly with routes when a quarter of them name a host of their own', () => {
      const sizes = [1000, 2000, 4000].map((n) => {
        const t = createRouteTable(tenants(n));
        return { n, ...t.stats };
      });
      for (const s of sizes) {
        expect(s.indexedRoutes).toBe(s.n);
        // One index per exact host (n/4) and per wildcard suffix (40), and the host-less one.
        expect(s.pathIndexes).toBe(s.n / 4 + 40 + 1);
        // Exact host: own + wildcard part + host-less; suffix: own + host-less; plus the host-less plan.
        expect(s.planEntries).toBeLessThanOrEqual(3 * (s.n / 4) + 2 * 40 + 1);
      }
      expect(sizes[2]!.planEntries / sizes[0]!.planEntries).toBeLessThan(4.1);
    });

    it('still matches every host of a large table correctly', () => {
      const t = createRouteTable(tenants(4000));
      expect(hit(t, { host: 't3996.tenants.example.com', path: '/api/s1/x' })).toBe('t3996');
      expect(hit(t, { host: 'other.example.com', path: '/api/s1/x' })).toBe('p1');
      // Route w{i} is under *.g{(i >> 2) mod 40}: w2 and w162 under g0, w6 under g1.
      expect(hit(t, { host: 'x.g0.example.com', path: '/w2' })).toBe('w2');
      expect(hit(t, { host: 'x.g0.example.com', path: '/w162' })).toBe('w162');
      expect(hit(t, { host: 'x.g1.example.com', path: '/w6' })).toBe('w6');
      expect(hit(t, { host: 'x.g1.example.com', path: '/w2' })).toBeUndefined();
      expect(t.match(undefined, '/api/s3/7', 'GET', {})?.params).toEqual({ id: '7' });
    });
  });

  // Differential check of the host plans, path index and Host cache against a naive matcher: the first
  // route of `routes` (whose order the tests above pin down) that matches by plain rules.
  describe('agrees with a naive matcher on random tables', () => {
    function rng(seed: number): () => number {
      let s = seed >>> 0;
      return () => {
        s = (s + 0x6d2b79f5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      };
    }
    const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

    function naive(routes: readonly CompiledRoute[], req: Required<Req>) {
      const m = /^(\[[^\]]*\]|[^:]*)/.exec(req.host ?? '');
      const host = (m?.[1] ?? '').toLowerCase().replace(/\.$/, '');
      for (const r of routes) {
        const c = r.config.match;
        if (c.host !== undefined) {
          const ok = c.host.startsWith('*.')
            ? new RegExp(`^[^]+${escapeRe(c.host.slice(1))}$`).test(host)
            : c.host === host;
          if (!ok) continue;
        }
        if (c.methods !== undefined && !(c.methods as string[]).includes(req.method)) continue;
        let headersOk = true;
        for (const [name, value] of Object.entries(c.headers ?? {})) {
          const actual = req.headers[name.toLowerCase()];
          const values = Array.isArray(actual) ? actual : actual === undefined ? [] : actual.split(/\s*,\s*/);
          if (!values.includes(value) && actual !== value) headersOk = false;
        }
        if (!headersOk) continue;
        let params: Record<string, string> | undefined;
        if (c.pathType === 'exact') {
          if (req.path !== c.path) continue;
        } else if (c.pathType === 'prefix') {
          const p = c.path;
          const ok =
            p === '/' ||
            (p.endsWith('/') ? req.path.startsWith(p) : req.path === p || req.path.startsWith(`${p}/`));
          if (!ok) continue;
        } else {
          const segs = c.path.split('/').slice(1);
          const keys: string[] = [];
          let source = '';
          for (const s of segs) {
            if (s === '*') {
              source += '(?:/(.*))?';
              keys.push('*');
            } else if (s.startsWith(':')) {
              source += '/([^/]+)';
              keys.push(s.slice(1));
            } else source += `/${escapeRe(s)}`;
          }
          const mm = new RegExp(`^${source}$`).exec(req.path);
          if (!mm) continue;
          params = Object.fromEntries(keys.map((k, i) => [k, mm[i + 1] ?? '']));
        }
        return { name: r.name, params };
      }
      return undefined;
    }

    it('for 300 random tables × 300 requests', () => {
      const next = rng(20240611);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
      const segs = ['a', 'b', 'ab'];
      const randomPath = (max: number) => {
        const n = Math.floor(next() * (max + 1));
        let p = '';
        for (let i = 0; i < n; i++) p += `/${pick(segs)}`;
        return p === '' || next() < 0.2 ? `${p}/` : p;
      };
      for (let round = 0; round < 300; round++) {
        const configs: RouteConfig[] = [];
        const count = 1 + Math.floor(next() * 15);
        for (let i = 0; i < count; i++) {
          const pathType = pick(['exact', 'exact', 'prefix', 'template'] as const);
          let path = randomPath(3);
          if (pathType === 'template') {
            const parts = path.split('/').slice(1);
            path = `/${parts.map((s, k) => (s !== '' && next() < 0.4 ? `:p${k}` : s)).join('/')}`;
            if (next() < 0.3) path = `${path.replace(/\/$/, '')}/*`;
          }
          const match: Record<string, unknown> = { path, pathType };
          const host = pick([
            undefined,
            undefined,
            'example.com',
            'a.example.com',
            'b.a.example.com',
            'x.org',
            '*.example.com',
            '*.a.example.com',
            '*.com',
          ]);
          if (host) match.host = host;
          if (next() < 0.3) match.methods = pick([['GET'], ['POST'], ['GET', 'HEAD']]);
          if (next() < 0.2) match.headers = { 'x-env': pick(['prod', 'dev']) };
          // Unchecked: the compiler's own rejection of a bad random template is part of the test.
          configs.push(unchecked(`r${i}`, { ...match, path }, { priority: pick([0, 0, 0, 1, -1]) }));
        }
        let t: RouteTable;
        try {
          t = createRouteTable(configs);
        } catch (err) {
          // Random templates may be invalid (e.g. `/*/` or `:p1` twice); skip those tables.
          expect(err).toBeInstanceOf(RouteCompileError);
          continue;
        }
        for (let k = 0; k < 300; k++) {
          const req: Required<Req> = {
            host: pick([
              undefined,
              'example.com',
              'EXAMPLE.com:8080',
              'a.example.com',
              'b.a.example.com.',
              'B.A.example.com:1',
              'c.b.a.example.com',
              'x.org',
              '[::1]:80',
            ]) as string,
            path: randomPath(4),
            method: pick(['GET', 'POST', 'HEAD', 'PROPFIND']),
            headers: pick([{}, { 'x-env': 'prod' }, { 'x-env': 'dev, prod' }, { 'x-env': ['dev', 'qa'] }]),
          };
          const got = t.match(req.host, req.path, req.method, req.headers);
          const want = naive(t.routes, req);
          expect(
            got && { name: got.route.name, params: got.params },
            JSON.stringify({ req, configs }),
          ).toEqual(want);
        }
      }
    });
  });
});
