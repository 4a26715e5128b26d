import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  scaleConfig,
  scaleConfigYaml,
  scaleHosts,
  scaleRequest,
  scaleUpstreams,
} from '../../../bench/lib/scale-config.ts';
import { ConfigSchema } from '../../../src/config/schema.ts';
import { createRouteTable } from '../../../src/dataplane/routing/route-table.ts';

const opts = { listenPort: 1, adminPort: 2, upstreamOrigin: 'http://127.0.0.1:3' };

describe('bench scale configurations', () => {
  it('are valid, with routes/4 hosts and routes/10 upstreams, and the reload routes on top', () => {
    const config = ConfigSchema.parse(parse(scaleConfigYaml({ ...opts, routes: 1000, extraRoutes: 3 })));
    expect(config.routes).toHaveLength(1003);
    expect(Object.keys(config.upstreams)).toHaveLength(scaleUpstreams(1000));
    const hosts = new Set(config.routes.flatMap((r) => (r.match.host ? [r.match.host] : [])));
    expect(hosts.size).toBe(scaleHosts(1000));
    expect(scaleUpstreams(10_000)).toBe(1000);
    expect(scaleHosts(10_000)).toBe(2500);
  });

  it('the request for route i is matched by route i', () => {
    const config = ConfigSchema.parse(scaleConfig({ ...opts, routes: 400, extraRoutes: 2 }));
    const table = createRouteTable(config.routes);
    for (let i = 0; i < 400; i++) {
      const r = scaleRequest(i);
      expect(table.match(r.host ?? '127.0.0.1:8080', r.path, r.method, {})?.route.name).toBe(`r${i}`);
    }
    expect(table.match(undefined, '/reload/1', 'GET', {})?.route.name).toBe('reload-1');
  });
});
