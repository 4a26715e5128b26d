/**
 * The route stage: authorisation (scopes, roles → 403 with the RFC 6750 challenge), claims as
 * upstream headers (sanitised), owned headers, optional mode, provider selection by issuer,
 * token sources, and the token cache never outliving `exp`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RequestContext } from '../../../../src/dataplane/context.ts';
import { createJwtFilter, type JwtFilter } from '../../../../src/dataplane/filters/jwt/jwt-filter.ts';
import { type AuthProviders, createAuthProviders } from '../../../../src/dataplane/filters/jwt/providers.ts';
import { AuthError } from '../../../../src/dataplane/filters/jwt/reasons.ts';
import type { GatewayMetrics } from '../../../../src/telemetry/metrics.ts';
import { createTestKey, jwksOf, mintToken, type TestKey } from '../../../helpers/tokens.ts';
import {
  authConfig,
  makeContext,
  metricValue,
  newMetrics,
  routeAuth,
  runFilter,
  silentLogger,
} from './harness.ts';

let es: TestKey;
let rsa: TestKey;
let partner: TestKey;
let metrics: GatewayMetrics;
let providers: AuthProviders;
const PARTNER = 'https://partner.example/';

beforeAll(async () => {
  [es, rsa, partner] = await Promise.all([
    createTestKey('ES256'),
    createTestKey('RS256'),
    createTestKey('EdDSA'),
  ]);
  metrics = newMetrics();
  providers = createAuthProviders(
    authConfig({
      main: { jwks: jwksOf(es, rsa), tokenFrom: { header: 'X-Api-Token', cookie: 'session' } },
      partner: {
        issuer: PARTNER,
        audiences: ['orders-api'],
        algorithms: ['EdDSA'],
        publicKeys: [{ kid: partner.kid, pem: partner.pem }],
      },
    }),
    undefined,
    { metrics, logger: silentLogger },
  );
  await providers.start();
});

afterAll(() => {
  providers.close();
});

function filterFor(cfg: Record<string, unknown>, route = 'orders'): JwtFilter {
  return createJwtFilter(route, routeAuth(cfg), providers, metrics)!;
}

describe('createJwtFilter', () => {
  it('builds nothing for mode none', () => {
    expect(createJwtFilter('open', routeAuth({ mode: 'none' }), providers, metrics)).toBeUndefined();
  });

  it('refuses to build with an unknown provider', () => {
    expect(() => filterFor({ providers: ['nope'] })).toThrow(/unknown auth provider nope/);
  });

  it('owns the claim headers and, unless forwarded, the credential headers', () => {
    const f = filterFor({ providers: ['main'], forwardClaims: { 'X-User-Id': 'sub', 'x-tenant': 'tenant' } });
    expect([...f.ownedHeaders].sort()).toEqual(['authorization', 'x-api-token', 'x-tenant', 'x-user-id']);
    const g = filterFor({
      providers: ['partner'],
      forwardAuthorization: true,
      forwardClaims: { 'x-user-id': 'sub' },
    });
    expect([...g.ownedHeaders]).toEqual(['x-user-id']);
  });
});

describe('scopes and roles', () => {
  const scoped = () => filterFor({ scopes: ['orders:read', 'orders:write'] });

  it('403 insufficient_scope with the required scopes in the challenge', async () => {
    const run = await runFilter(scoped(), await mintToken(es, { claims: { scope: 'orders:read profile' } }));
    expect(run.error?.status).toBe(403);
    expect(run.error?.code).toBe('INSUFFICIENT_SCOPE');
    expect(run.error?.reason).toBe('insufficient_scope');
    expect(run.error?.headers?.['www-authenticate']).toBe(
      'Bearer realm="peregrine", error="insufficient_scope", ' +
        'error_description="The access token lacks a required scope", scope="orders:read orders:write"',
    );
    // Who was refused is still known (access log, span).
    expect(run.ctx.subject).toBe('user-1');
    expect(
      await metricValue(metrics, 'peregrine_auth_decisions_total', {
        route: 'orders',
        provider: 'main',
        result: 'deny',
        reason: 'insufficient_scope',
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  it('accepts scope (space-separated) and scp (list), also from the cache', async () => {
    const f = scoped();
    for (const claims of [
      { scope: 'profile orders:write orders:read' },
      { scp: ['orders:read', 'orders:write'] },
      { scope: 'orders:read', scp: ['orders:write'] },
    ]) {
      const token = await mintToken(es, { claims });
      expect((await runFilter(f, token)).error).toBeUndefined();
      const again = await runFilter(f, token);
      expect(again.error).toBeUndefined();
      expect(again.sync).toBe(true);
    }
    const none = await runFilter(f, await mintToken(es));
    expect(none.error?.reason).toBe('insufficient_scope');
  });

  it('a cached token is still checked against each route', async () => {
    const token = await mintToken(es, { claims: { scope: 'orders:read' } });
    expect((await runFilter(filterFor({ scopes: ['orders:read'] }), token)).error).toBeUndefined();
    const other = await runFilter(filterFor({ scopes: ['admin'] }, 'admin'), token);
    expect(other.sync).toBe(true);
    expect(other.error?.reason).toBe('insufficient_scope');
  });

  it('roles: any of the listed values in the role claim path', async () => {
    const f = filterFor({ roles: { claim: 'realm_access.roles', anyOf: ['admin', 'ops'] } });
    const mint = (claims: Record<string, unknown>) => mintToken(es, { claims });
    expect(
      (await runFilter(f, await mint({ realm_access: { roles: ['user', 'ops'] } }))).error,
    ).toBeUndefined();
    expect((await runFilter(f, await mint({ realm_access: { roles: 'admin' } }))).error).toBeUndefined();
    for (const claims of [
      { realm_access: { roles: ['user'] } },
      { realm_access: 'admin' },
      { roles: ['admin'] },
      { realm_access: { roles: [{ name: 'admin' }] } },
      {},
    ]) {
      const run = await runFilter(f, await mint(claims));
      expect(run.error?.status).toBe(403);
      expect(run.error?.code).toBe('FORBIDDEN');
      expect(run.error?.reason).toBe('insufficient_role');
      expect(run.error?.headers?.['www-authenticate']).toBe(
        'Bearer realm="peregrine", error="insufficient_scope", error_description="The access token lacks a required role"',
      );
    }
  });

  it('a role claim path given as segments (claim names with dots)', async () => {
    const f = filterFor({ roles: { claim: ['https://example.com/claims', 'roles'], anyOf: ['admin'] } });
    const token = await mintToken(es, { claims: { 'https://example.com/claims': { roles: ['admin'] } } });
    expect((await runFilter(f, token)).error).toBeUndefined();
  });
});

describe('claims forwarded as headers', () => {
  const f = () =>
    filterFor({
      providers: ['main'],
      forwardClaims: {
        'X-User-Id': 'sub',
        'x-tenant': 'tenant',
        'x-groups': 'groups',
        'x-org': 'org',
        'x-admin': 'admin',
        'x-level': 'level',
        'x-missing': 'nope',
        'x-null': 'nothing',
        'x-split': 'realm_access.roles',
        'x-crlf': 'evil',
        'x-nul': 'nul',
        'x-long': 'long',
        'x-unicode': 'name',
        'x-proto': 'constructor',
      },
    });

  it('renders strings, numbers, booleans, lists and objects; drops unsafe values whole', async () => {
    const token = await mintToken(es, {
      claims: {
        tenant: 'acme',
        groups: ['eng', 'ops', 3],
        org: { id: 7, name: 'Acme' },
        admin: false,
        level: 3.5,
        nothing: null,
        realm_access: { roles: ['a', 'b'] },
        evil: 'alice\r\nx-admin: true',
        nul: 'a\u0000b',
        long: 'x'.repeat(1025),
        name: 'José',
      },
    });
    const run = await runFilter(f(), token);
    expect(run.error).toBeUndefined();
    const headers = run.ctx.upstreamHeaders!;
    const pairs = Object.fromEntries(
      Array.from({ length: headers.length / 2 }, (_, i) => [headers[2 * i]!, headers[2 * i + 1]!]),
    );
    expect(pairs).toEqual({
      'x-user-id': 'user-1',
      'x-tenant': 'acme',
      'x-groups': 'eng,ops,3',
      'x-org': '{"id":7,"name":"Acme"}',
      'x-admin': 'false',
      'x-level': '3.5',
      'x-split': 'a,b',
    });
    const dropped = run.ctx.decisions!.filter((d) => d.detail.includes('dropped')).map((d) => d.detail);
    expect(dropped).toEqual([
      'claim header x-crlf dropped (not printable ASCII or over 1024 characters)',
      'claim header x-nul dropped (not printable ASCII or over 1024 characters)',
      'claim header x-long dropped (not printable ASCII or over 1024 characters)',
      'claim header x-unicode dropped (not printable ASCII or over 1024 characters)',
    ]);
  });

  it('a value of exactly 1024 characters is kept', async () => {
    const token = await mintToken(es, { claims: { long: 'y'.repeat(1024) } });
    const run = await runFilter(f(), token);
    expect(run.ctx.upstreamHeaders).toContain('y'.repeat(1024));
  });

  it('appends to headers other filters set', async () => {
    const ctx = makeContext({ authorization: `Bearer ${await mintToken(es)}` });
    ctx.upstreamHeaders = ['x-other', '1'];
    await f().onRequest(ctx);
    expect(ctx.upstreamHeaders).toEqual(['x-other', '1', 'x-user-id', 'user-1']);
  });

  it('claims are frozen: a later stage cannot alter the cached verification', async () => {
    const token = await mintToken(es, { claims: { realm_access: { roles: ['user'] } } });
    const run = await runFilter(f(), token);
    expect(Object.isFrozen(run.ctx.claims)).toBe(true);
    expect(Object.isFrozen((run.ctx.claims as { realm_access: object }).realm_access)).toBe(true);
  });
});

describe('modes, sources, providers', () => {
  it('optional: anonymous passes, a presented token must be valid', async () => {
    const f = filterFor({ mode: 'optional', forwardClaims: { 'x-user-id': 'sub' } });
    const anon = await runFilter(f, undefined);
    expect(anon.error).toBeUndefined();
    expect(anon.sync).toBe(true);
    expect(anon.ctx.claims).toBeUndefined();
    expect(anon.ctx.upstreamHeaders).toBeUndefined();
    expect(f.ownedHeaders.has('x-user-id')).toBe(true);
    const bad = await runFilter(f, 'garbage.token.here');
    expect(bad.error?.status).toBe(401);
    const good = await runFilter(f, await mintToken(es));
    expect(good.ctx.subject).toBe('user-1');
    expect(
      await metricValue(metrics, 'peregrine_auth_decisions_total', {
        route: 'orders',
        provider: '_none',
        result: 'allow',
        reason: 'missing',
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  it('picks the provider by issuer and records the decision', async () => {
    const f = filterFor({});
    const fromPartner = await runFilter(f, await mintToken(partner, { issuer: PARTNER }));
    expect(fromPartner.error).toBeUndefined();
    expect(fromPartner.ctx.decisions).toEqual([{ stage: 'auth', detail: 'allow partner' }]);
    const main = await mintToken(rsa);
    expect((await runFilter(f, main)).ctx.decisions).toEqual([{ stage: 'auth', detail: 'allow main' }]);
    expect((await runFilter(f, main)).ctx.decisions).toEqual([
      { stage: 'auth', detail: 'allow main (cached)' },
    ]);
    // A partner-issued token signed with main's key: partner's keys do not verify it.
    const crossed = await runFilter(f, await mintToken(es, { issuer: PARTNER }));
    expect(crossed.error?.reason).toBe('algorithm_not_allowed');
    const stranger = await runFilter(f, await mintToken(es, { issuer: 'https://stranger.example/' }));
    expect(stranger.error?.reason).toBe('wrong_issuer');
    expect(stranger.error?.provider).toBe('_none');
    // A route limited to one provider refuses the other's tokens.
    const onlyMain = await runFilter(
      filterFor({ providers: ['main'] }),
      await mintToken(partner, { issuer: PARTNER }),
    );
    expect(onlyMain.error?.reason).toBe('wrong_issuer');
  });

  it('reads the token from Authorization, then the token header, then the cookie', async () => {
    const f = filterFor({ providers: ['main'] });
    const token = await mintToken(es, { subject: 'from-elsewhere' });
    for (const headers of [
      { 'x-api-token': token },
      { 'x-api-token': `Bearer ${token}` },
      { cookie: `theme=dark; session=${token}; other=1` },
      { cookie: `session="${token}"` },
      { authorization: `bearer   ${token}` },
    ]) {
      const run = await runFilter(f, undefined, headers);
      expect(run.error, JSON.stringify(headers).slice(0, 40)).toBeUndefined();
      expect(run.ctx.subject).toBe('from-elsewhere');
    }
    // Authorization wins over the others.
    const run = await runFilter(f, await mintToken(es, { subject: 'first' }), { 'x-api-token': token });
    expect(run.ctx.subject).toBe('first');
    // A cookie whose name only ends with the configured one is not it.
    expect((await runFilter(f, undefined, { cookie: `xsession=${token}` })).error?.reason).toBe('missing');
  });

  it('removes the token cookie from the raw headers it forwards, unless credentials are forwarded', async () => {
    const token = await mintToken(es);
    const cookie = `theme=dark; session=${token}; sessions=keep`;
    const run = await runFilter(filterFor({ providers: ['main'] }), undefined, { cookie });
    expect(run.error).toBeUndefined();
    expect(run.ctx.req.rawHeaders).toEqual(['cookie', 'theme=dark; sessions=keep']);
    // `req.headers` keeps what the client sent (consistent hashing may read a cookie).
    expect(run.ctx.req.headers.cookie).toBe(cookie);
    // Also when the token came from elsewhere, and on a refused request.
    const viaHeader = await runFilter(filterFor({ providers: ['main'] }), token, { cookie });
    expect(viaHeader.error).toBeUndefined();
    expect(viaHeader.ctx.req.rawHeaders).toContain('theme=dark; sessions=keep');
    const alone = await runFilter(filterFor({ providers: ['main'] }), undefined, { cookie: 'session=bad' });
    expect(alone.error?.reason).toBe('malformed');
    expect(alone.ctx.req.rawHeaders).toEqual([]);

    const forwarding = filterFor({ providers: ['main'], forwardAuthorization: true });
    const forwarded = await runFilter(forwarding, undefined, { cookie });
    expect(forwarded.ctx.req.rawHeaders).toEqual(['cookie', cookie]);
    // A route whose providers read no cookie leaves Cookie alone.
    const partnerOnly = await runFilter(
      filterFor({ providers: ['partner'] }),
      await mintToken(partner, { issuer: PARTNER }),
      { cookie },
    );
    expect(partnerOnly.error).toBeUndefined();
    expect(partnerOnly.ctx.req.rawHeaders).toContain(cookie);
  });

  it('verifies a burst of requests carrying the same new token once', async () => {
    const f = filterFor({ providers: ['main'] });
    const token = await mintToken(es, { subject: 'burst' });
    const runs = await Promise.all(Array.from({ length: 10 }, () => runFilter(f, token)));
    expect(runs.every((r) => r.error === undefined && r.ctx.subject === 'burst')).toBe(true);
    expect(runs[0]!.ctx.claims).toBe(runs[9]!.ctx.claims);
  });
});

describe('the token cache never outlives exp', () => {
  const T = 1_900_000_000;
  let clock = T * 1000;
  let timed: AuthProviders;
  let key: TestKey;

  beforeAll(async () => {
    key = await createTestKey('ES256');
    timed = createAuthProviders(
      authConfig({
        strict: { jwks: jwksOf(key), clockTolerance: '0s' },
        lenient: { issuer: 'https://lenient.example/', jwks: jwksOf(key), clockTolerance: '30s' },
      }),
      undefined,
      { metrics, logger: silentLogger, now: () => clock },
    );
    await timed.start();
  });

  afterEach(() => {
    clock = T * 1000;
  });

  afterAll(() => timed.close());

  it('serves from the cache until exp, then verifies again', async () => {
    const f = createJwtFilter('timed', routeAuth({ providers: ['strict'] }), timed, metrics)!;
    const token = await mintToken(key, { now: T, exp: T + 60 });
    expect((await runFilter(f, token)).sync).toBe(false);
    clock = (T + 59) * 1000 + 999;
    const cached = await runFilter(f, token);
    expect(cached.error).toBeUndefined();
    expect(cached.sync).toBe(true);
    clock = (T + 60) * 1000;
    const expired = await runFilter(f, token);
    expect(expired.sync).toBe(false);
    expect(expired.error?.reason).toBe('expired');
  });

  it('within the clock tolerance after exp, every request is verified afresh (never cached)', async () => {
    const f = createJwtFilter('timed', routeAuth({ providers: ['lenient'] }), timed, metrics)!;
    const token = await mintToken(key, { issuer: 'https://lenient.example/', now: T, exp: T + 60 });
    await runFilter(f, token);
    clock = (T + 70) * 1000;
    for (let i = 0; i < 2; i++) {
      const run = await runFilter(f, token);
      expect(run.error).toBeUndefined();
      expect(run.sync).toBe(false);
      expect(run.ctx.decisions).toEqual([{ stage: 'auth', detail: 'allow lenient' }]);
    }
    clock = (T + 91) * 1000;
    expect((await runFilter(f, token)).error?.reason).toBe('expired');
  });
});

describe('through a real HTTP exchange', () => {
  let server: Server;
  let url: string;

  beforeAll(async () => {
    const f = filterFor({ scopes: ['orders:read'], forwardClaims: { 'x-user-id': 'sub' } });
    server = createServer(async (req, res) => {
      const ctx = new RequestContext(req, res, {} as never, 0);
      try {
        await f.onRequest(ctx);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(ctx.upstreamHeaders ?? []));
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        res.writeHead(err.status, { 'content-type': 'application/problem+json', ...err.headers });
        res.end(JSON.stringify({ code: err.code, detail: err.message }));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('the challenge and forwarded values are valid header values on the wire', async () => {
    const missing = await fetch(url);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toBe('Bearer realm="peregrine"');
    const invalid = await fetch(url, { headers: { authorization: 'Bearer a.b.c' } });
    expect(invalid.status).toBe(401);
    expect(invalid.headers.get('www-authenticate')).toBe(
      'Bearer realm="peregrine", error="invalid_token", error_description="The access token is malformed"',
    );
    const forbidden = await fetch(url, { headers: { authorization: `Bearer ${await mintToken(es)}` } });
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers.get('www-authenticate')).toContain('scope="orders:read"');
    const ok = await fetch(url, {
      headers: { authorization: `Bearer ${await mintToken(es, { claims: { scope: 'orders:read' } })}` },
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual(['x-user-id', 'user-1']);
  });
});
