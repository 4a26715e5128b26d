/**
 * JWKS rotation and outages against a real JWKS server, asserted with exact request counters and
 * generous time bounds. The refetch rate limit reads the providers' clock: the tests that wait
 * for it to allow a refetch hold that clock and move it (`clock.advance`) instead of sleeping.
 * Fetch timeouts, retries and background refreshes run on real timers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createJwtFilter, type JwtFilter } from '../../../../src/dataplane/filters/jwt/jwt-filter.ts';
import { type AuthProviders, createAuthProviders } from '../../../../src/dataplane/filters/jwt/providers.ts';
import type { GatewayMetrics } from '../../../../src/telemetry/metrics.ts';
import { type JwksServer, startJwksServer } from '../../../helpers/jwks-server.ts';
import { createTestKey, jwksOf, mintToken, randomKid, type TestKey } from '../../../helpers/tokens.ts';
import {
  authConfig,
  eventually,
  metricValue,
  newMetrics,
  routeAuth,
  runFilter,
  silentLogger,
} from './harness.ts';

interface Setup {
  server: JwksServer;
  metrics: GatewayMetrics;
  providers: AuthProviders;
  filter: JwtFilter;
  clock: Clock;
}

/** The providers' clock for tests that pass one: it stands still until advanced. */
interface Clock {
  now(): number;
  advance(ms: number): void;
}

function heldClock(): Clock {
  let t = Date.now();
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
  };
}

const open: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

async function setup(keys: TestKey[], jwksCache: Record<string, unknown>, clock?: Clock): Promise<Setup> {
  const server = await startJwksServer(jwksOf(...keys));
  const metrics = newMetrics();
  const providers = createAuthProviders(authConfig({ main: { jwksUri: server.url, jwksCache } }), undefined, {
    metrics,
    logger: silentLogger,
    now: clock === undefined ? undefined : () => clock.now(),
  });
  open.push(async () => {
    providers.close();
    await server.close();
  });
  await providers.start();
  const filter = createJwtFilter('orders', routeAuth(), providers, metrics)!;
  return { server, metrics, providers, filter, clock: clock ?? { now: Date.now, advance: () => {} } };
}

describe('key rotation', () => {
  it('accepts a new kid with exactly one refetch for N concurrent requests', async () => {
    const [a, b] = await Promise.all([createTestKey('ES256'), createTestKey('ES256')]);
    const { server, filter, metrics, clock } = await setup([a], { minRefetchInterval: '100ms' }, heldClock());
    expect(server.requests).toBe(1);
    clock.advance(150);
    server.setKeys(jwksOf(a, b));
    // Distinct tokens, so per-token deduplication cannot hide refetches.
    const tokens = await Promise.all(
      Array.from({ length: 20 }, (_, i) => mintToken(b, { subject: `u${i}` })),
    );
    const runs = await Promise.all(tokens.map((t) => runFilter(filter, t)));
    expect(runs.map((r) => r.error?.reason)).toEqual(runs.map(() => undefined));
    expect(server.requests).toBe(2);
    expect(await metricValue(metrics, 'peregrine_jwks_kid_misses_total', { provider: 'main' })).toBe(20);
    // Old kid still fine, no further fetch.
    expect((await runFilter(filter, await mintToken(a))).error).toBeUndefined();
    expect(server.requests).toBe(2);
  });

  it('rate-limits refetches for a flood of random kids', async () => {
    const a = await createTestKey('ES256');
    const attacker = await createTestKey('ES256');
    // Real time: the flood runs for a second and the bound is refetches per 300 ms of it.
    const { server, filter } = await setup([a], { minRefetchInterval: '300ms', timeout: '500ms' });
    const started = Date.now();
    let sent = 0;
    while (Date.now() - started < 1000) {
      const batch = await Promise.all(
        Array.from({ length: 20 }, async () =>
          runFilter(filter, await mintToken(attacker, { kid: randomKid() })),
        ),
      );
      sent += batch.length;
      for (const r of batch) expect(r.error?.reason).toBe('unknown_kid');
    }
    const elapsed = Date.now() - started;
    const refetches = server.requests - 1;
    expect(sent).toBeGreaterThan(100);
    expect(refetches).toBeGreaterThanOrEqual(1);
    expect(refetches).toBeLessThanOrEqual(Math.floor(elapsed / 300) + 1);
  });

  it('implausible tokens (expired) never trigger a refetch', async () => {
    const a = await createTestKey('ES256');
    const { server, filter, clock } = await setup([a], { minRefetchInterval: '50ms' }, heldClock());
    clock.advance(80);
    const now = Math.floor(clock.now() / 1000);
    const run = await runFilter(
      filter,
      await mintToken(a, { kid: randomKid(), exp: now - 3600, iat: now - 7200 }),
    );
    expect(run.error?.reason).toBe('unknown_kid');
    expect(server.requests).toBe(1);
  });

  it('drops cached verifications made with a key that left the set', async () => {
    const [a, b] = await Promise.all([createTestKey('ES256'), createTestKey('ES256')]);
    const { server, filter, providers } = await setup([a, b], {
      refreshInterval: '200ms',
      minRefreshInterval: '100ms',
      maxRefreshInterval: '200ms',
      minRefetchInterval: '100ms',
    });
    const tokenA = await mintToken(a);
    expect((await runFilter(filter, tokenA)).error).toBeUndefined();
    expect((await runFilter(filter, tokenA)).sync).toBe(true);
    server.setKeys(jwksOf(b));
    // Background refresh at 90% of 200 ms picks up the removal.
    await eventually(() => providers.describe()[0]!.kids.length === 1, 3000);
    const run = await runFilter(filter, tokenA);
    expect(run.error?.reason).toBe('unknown_kid');
    expect((await runFilter(filter, await mintToken(b))).error).toBeUndefined();
  });
});

describe('JWKS outages', () => {
  it('black-holed JWKS: an unknown kid is refused within the fetch timeout; known kids keep working', async () => {
    const a = await createTestKey('ES256');
    // minRefetchInterval 800 ms: the retry after the failed refetch comes 800 ms later (backoff
    // starts at min(1 s, minRefetchInterval)), which leaves a window to see an immediate refusal.
    const { server, filter, clock } = await setup(
      [a],
      { minRefetchInterval: '800ms', timeout: '400ms' },
      heldClock(),
    );
    clock.advance(850);
    server.setMode('blackhole');
    const before = server.requests;
    const unknown1 = runFilter(filter, await mintToken(a, { kid: randomKid() }));
    await server.waitForRequests(before + 1);
    // While the refetch hangs: a second unknown kid waits on the same flight, a known kid does not wait.
    const unknown2 = runFilter(filter, await mintToken(a, { kid: randomKid() }));
    const known = await runFilter(filter, await mintToken(a, { subject: 'during-outage' }));
    expect(known.error).toBeUndefined();
    expect(known.ms).toBeLessThan(200);
    const [r1, r2] = await Promise.all([unknown1, unknown2]);
    for (const r of [r1, r2]) expect(r.error?.reason).toBe('unknown_kid');
    // Documented bound: one fetch timeout (400 ms) plus a margin.
    expect(r1.ms).toBeGreaterThanOrEqual(350);
    expect(r1.ms).toBeLessThan(400 + 600);
    expect(server.requests).toBe(before + 1);
    // Within minRefetchInterval of that attempt, the next unknown kid is refused at once.
    const immediate = await runFilter(filter, await mintToken(a, { kid: randomKid() }));
    expect(immediate.error?.reason).toBe('unknown_kid');
    expect(immediate.ms).toBeLessThan(100);
  });

  it('JWKS down at start: not ready, then ready once it comes up', async () => {
    const a = await createTestKey('ES256');
    const server = await startJwksServer(jwksOf(a));
    await server.down();
    const metrics = newMetrics();
    const providers = createAuthProviders(
      authConfig({
        main: { jwksUri: server.url, jwksCache: { minRefetchInterval: '200ms', timeout: '300ms' } },
      }),
      undefined,
      { metrics, logger: silentLogger },
    );
    open.push(async () => {
      providers.close();
      await server.close();
    });
    await providers.start();
    expect(providers.providersReady()).toEqual({ ready: false, notReady: ['main'] });
    const status = providers.describe()[0]!;
    expect(status.lastFetch?.outcome).toBe('error');
    expect(status.lastError?.message).toMatch(/ECONNREFUSED/);
    const filter = createJwtFilter('orders', routeAuth(), providers, metrics)!;
    const refused = await runFilter(filter, await mintToken(a));
    expect(refused.error?.status).toBe(503);
    expect(refused.error?.code).toBe('AUTH_UNAVAILABLE');
    expect(refused.error?.reason).toBe('jwks_unavailable');
    expect(
      await metricValue(metrics, 'peregrine_jwks_fetches_total', { provider: 'main', outcome: 'error' }),
    ).toBeGreaterThan(0);
    await server.up();
    await eventually(() => providers.providersReady().ready, 3000);
    expect((await runFilter(filter, await mintToken(a))).error).toBeUndefined();
    expect(await metricValue(metrics, 'peregrine_jwks_keys', { provider: 'main' })).toBe(1);
  });

  it('serves the last good keys while refreshes fail, reports it, and stops at maxStale', async () => {
    const a = await createTestKey('ES256');
    const { server, filter, providers, metrics } = await setup([a], {
      refreshInterval: '200ms',
      minRefreshInterval: '100ms',
      maxRefreshInterval: '200ms',
      minRefetchInterval: '100ms',
      timeout: '200ms',
      maxStale: '1200ms',
    });
    const cachedToken = await mintToken(a, { subject: 'cached' });
    expect((await runFilter(filter, cachedToken)).error).toBeUndefined();
    server.setMode('error');
    await eventually(() => providers.describe()[0]!.stale, 2000);
    const status = providers.describe()[0]!;
    expect(status.ready).toBe(true);
    expect(status.lastError?.message).toBe('HTTP 500');
    // The endpoint's body never reaches the admin view or the logs.
    expect(JSON.stringify(status)).not.toContain('hunter2');
    expect(await metricValue(metrics, 'peregrine_jwks_stale', { provider: 'main' })).toBe(1);
    expect(
      await metricValue(metrics, 'peregrine_jwks_keyset_age_seconds', { provider: 'main' }),
    ).toBeGreaterThan(0.2);
    expect(
      await metricValue(metrics, 'peregrine_jwks_fetches_total', { provider: 'main', outcome: 'http_error' }),
    ).toBeGreaterThan(0);
    // Still verifying: a new token and the cached one.
    expect((await runFilter(filter, await mintToken(a))).error).toBeUndefined();
    expect((await runFilter(filter, cachedToken)).error).toBeUndefined();
    // Past maxStale the keys are dropped: fail closed, cached verifications included.
    await eventually(() => !providers.providersReady().ready, 3000);
    for (const token of [cachedToken, await mintToken(a)]) {
      const run = await runFilter(filter, token);
      expect(run.error?.reason).toBe('jwks_unavailable');
    }
    expect(await metricValue(metrics, 'peregrine_jwks_keys', { provider: 'main' })).toBe(0);
    // And recovers when the endpoint does.
    server.setMode('serve');
    await eventually(() => providers.providersReady().ready, 3000);
    expect((await runFilter(filter, cachedToken)).error).toBeUndefined();
  });
});
