/**
 * The provider set across reloads: unchanged providers carried over (same object, same keys and
 * token cache, no refetch), changed ones replaced, reference-counted closing, readiness and the
 * admin view.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createJwtFilter } from '../../../../src/dataplane/filters/jwt/jwt-filter.ts';
import { type AuthProviders, createAuthProviders } from '../../../../src/dataplane/filters/jwt/providers.ts';
import { type JwksServer, startJwksServer } from '../../../helpers/jwks-server.ts';
import { createTestKey, jwksOf, mintToken } from '../../../helpers/tokens.ts';
import { authConfig, metricValue, newMetrics, routeAuth, runFilter, silentLogger } from './harness.ts';

const cleanup: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function jwksServer(): Promise<{ server: JwksServer; key: Awaited<ReturnType<typeof createTestKey>> }> {
  const key = await createTestKey('ES256');
  const server = await startJwksServer(jwksOf(key));
  cleanup.push(() => server.close());
  return { server, key };
}

describe('createAuthProviders', () => {
  it('keeps unchanged providers across a reload, keys and token cache included', async () => {
    const { server, key } = await jwksServer();
    const metrics = newMetrics();
    const deps = { metrics, logger: silentLogger };
    const v1 = createAuthProviders(
      authConfig({ main: { jwksUri: server.url }, other: { issuer: 'https://o/', jwks: jwksOf(key) } }),
      undefined,
      deps,
    );
    await v1.start();
    const token = await mintToken(key);
    const f1 = createJwtFilter('r', routeAuth({ providers: ['main'] }), v1, metrics)!;
    expect((await runFilter(f1, token)).error).toBeUndefined();

    const v2 = createAuthProviders(
      authConfig({ main: { jwksUri: server.url }, other: { issuer: 'https://changed/', jwks: jwksOf(key) } }),
      v1,
      deps,
    );
    expect(v2.get('main')).toBe(v1.get('main'));
    expect(v2.get('other')).not.toBe(v1.get('other'));
    v1.close();
    v1.close();
    // main is still open (v2 holds it): no refetch, the token is still cached.
    await v2.start();
    expect(server.requests).toBe(1);
    const f2 = createJwtFilter('r', routeAuth({ providers: ['main'] }), v2, metrics)!;
    const run = await runFilter(f2, token);
    expect(run.error).toBeUndefined();
    expect(run.sync).toBe(true);
    expect(v1.get('other')!.closed).toBe(true);
    expect(v2.providersReady()).toEqual({ ready: true, notReady: [] });
    v2.close();
    expect(v2.get('main')!.closed).toBe(true);
  });

  it('closing a discarded new set leaves the serving one intact', async () => {
    const { server, key } = await jwksServer();
    const metrics = newMetrics();
    const deps = { metrics, logger: silentLogger };
    const cfg = authConfig({ main: { jwksUri: server.url } });
    const serving = createAuthProviders(cfg, undefined, deps);
    cleanup.push(() => serving.close());
    await serving.start();
    const discarded = createAuthProviders(cfg, serving, deps);
    discarded.close();
    expect(serving.get('main')!.closed).toBe(false);
    const f = createJwtFilter('r', routeAuth(), serving, metrics)!;
    expect((await runFilter(f, await mintToken(key))).error).toBeUndefined();
    expect(await metricValue(metrics, 'peregrine_jwks_keys', { provider: 'main' })).toBe(1);
  });

  it('removing a provider drops its JWKS gauges; replacing one keeps them', async () => {
    const { server } = await jwksServer();
    const metrics = newMetrics();
    const deps = { metrics, logger: silentLogger };
    const v1 = createAuthProviders(authConfig({ main: { jwksUri: server.url } }), undefined, deps);
    await v1.start();
    const v2 = createAuthProviders(
      authConfig({ main: { jwksUri: server.url, maxTokenSize: '4KiB' } }),
      v1,
      deps,
    );
    await v2.start();
    v1.close();
    expect(await metricValue(metrics, 'peregrine_jwks_keys', { provider: 'main' })).toBe(1);
    const v3 = createAuthProviders(authConfig({}), v2, deps);
    v2.close();
    const json = await metrics.registry.getMetricsAsJSON();
    expect(json.find((m) => m.name === 'peregrine_jwks_keys')?.values).toEqual([]);
    expect(v3.names).toEqual([]);
    expect(v3.providersReady()).toEqual({ ready: true, notReady: [] });
    v3.close();
  });

  it('describe() is the admin view', async () => {
    const { server, key } = await jwksServer();
    const metrics = newMetrics();
    const providers = createAuthProviders(
      authConfig({
        main: { jwksUri: server.url.replace('http://', 'http://user:secret@') },
        local: { issuer: 'https://local/', publicKeys: [key.pem] },
      }),
      undefined,
      { metrics, logger: silentLogger },
    );
    cleanup.push(() => providers.close());
    expect(providers.providersReady()).toEqual({ ready: false, notReady: ['main', 'local'] });
    await providers.start();
    const [main, local] = providers.describe();
    expect(main).toMatchObject({
      name: 'main',
      issuer: 'https://idp.test.example/',
      source: 'jwksUri',
      // As configured: the admin API redacts every view it shows in one place (admin-redaction.test.ts).
      jwksUri: server.url.replace('http://', 'http://user:secret@'),
      ready: true,
      keys: 1,
      kids: [key.kid],
      stale: false,
      lastFetch: { outcome: 'success' },
      lastError: undefined,
      cachedTokens: 0,
    });
    expect(main!.keysetAgeSeconds).toBeGreaterThanOrEqual(0);
    expect(Date.parse(main!.nextRefreshAt!)).toBeGreaterThan(Date.now());
    expect(local).toMatchObject({ name: 'local', source: 'publicKeys', ready: true, keys: 1, kids: [] });
  });

  it('start() never rejects, whatever the endpoints do', async () => {
    const { server } = await jwksServer();
    server.setMode('not-json');
    const providers: AuthProviders = createAuthProviders(
      authConfig({ main: { jwksUri: server.url, jwksCache: { timeout: '200ms' } } }),
      undefined,
      { metrics: newMetrics(), logger: silentLogger },
    );
    cleanup.push(() => providers.close());
    await expect(providers.start()).resolves.toBeUndefined();
    expect(providers.describe()[0]!.lastError?.message).toBe('response is not JSON');
  });
});
