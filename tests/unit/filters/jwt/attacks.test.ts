/**
 * Threat catalogue group E at the filter's boundary: every attack token against a real JWKS
 * server with real keys is refused with 401, the right reason, and an RFC 6750 challenge that
 * carries no internal detail; none of them makes the gateway fetch anything it should not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJwtFilter, type JwtFilter } from '../../../../src/dataplane/filters/jwt/jwt-filter.ts';
import { type AuthProviders, createAuthProviders } from '../../../../src/dataplane/filters/jwt/providers.ts';
import type { GatewayMetrics } from '../../../../src/telemetry/metrics.ts';
import { type JwksServer, startJwksServer } from '../../../helpers/jwks-server.ts';
import {
  algNoneToken,
  createTestKey,
  defaultPayload,
  hs256WithPublicKey,
  jweToken,
  jwksOf,
  mintToken,
  rawToken,
  selfKeyedToken,
  type TestKey,
  tamper,
} from '../../../helpers/tokens.ts';
import {
  authConfig,
  type FilterRun,
  metricValue,
  newMetrics,
  routeAuth,
  runFilter,
  silentLogger,
} from './harness.ts';

const CHALLENGE_RE = /^Bearer realm="peregrine", error="invalid_token", error_description="[A-Za-z ]+"$/;

let server: JwksServer;
let es: TestKey;
let rsa: TestKey;
let es384: TestKey;
let attacker: TestKey;
let metrics: GatewayMetrics;
let providers: AuthProviders;
let filter: JwtFilter;
let typedFilter: JwtFilter;

beforeAll(async () => {
  [es, rsa, es384, attacker] = await Promise.all([
    createTestKey('ES256'),
    createTestKey('RS256'),
    createTestKey('ES384'),
    createTestKey('ES256'),
  ]);
  server = await startJwksServer(jwksOf(es, rsa, es384));
  metrics = newMetrics();
  providers = createAuthProviders(
    authConfig({
      main: { jwksUri: server.url },
      typed: { issuer: 'https://typed.example/', jwksUri: server.url, requiredType: 'at+jwt' },
    }),
    undefined,
    { metrics, logger: silentLogger },
  );
  await providers.start();
  filter = createJwtFilter('orders', routeAuth({ providers: ['main'] }), providers, metrics)!;
  typedFilter = createJwtFilter('typed', routeAuth({ providers: ['typed'] }), providers, metrics)!;
});

afterAll(async () => {
  providers.close();
  await server.close();
});

function expectInvalid(run: FilterRun, reason: string): void {
  expect(run.error, `expected a refusal (${reason})`).toBeDefined();
  const err = run.error!;
  expect(err.status).toBe(401);
  expect(err.code).toBe('INVALID_TOKEN');
  expect(err.reason).toBe(reason);
  const challenge = err.headers?.['www-authenticate'];
  expect(challenge).toMatch(CHALLENGE_RE);
  // The problem detail is the same fixed description: nothing from jose or the token.
  expect(challenge).toContain(`error_description="${err.message}"`);
  expect(run.ctx.claims).toBeUndefined();
  expect(run.ctx.upstreamHeaders).toBeUndefined();
}

describe('JWT attacks (threat catalogue E)', () => {
  it('accepts the genuine tokens the attacks start from', async () => {
    for (const key of [es, rsa]) {
      const run = await runFilter(filter, await mintToken(key));
      expect(run.error).toBeUndefined();
      expect(run.ctx.subject).toBe('user-1');
    }
  });

  it('refuses a request without a token with a bare challenge (no error code)', async () => {
    const run = await runFilter(filter, undefined);
    expect(run.error?.status).toBe(401);
    expect(run.error?.code).toBe('AUTH_REQUIRED');
    expect(run.error?.reason).toBe('missing');
    expect(run.error?.headers).toEqual({ 'www-authenticate': 'Bearer realm="peregrine"' });
    // A non-Bearer scheme is no token either.
    const basic = await runFilter(filter, undefined, { authorization: 'Basic dXNlcjpwYXNz' });
    expect(basic.error?.reason).toBe('missing');
  });

  it('alg: none', async () => {
    expectInvalid(await runFilter(filter, algNoneToken(es.kid)), 'algorithm_not_allowed');
    expectInvalid(
      await runFilter(filter, rawToken({ alg: 'NONE', kid: es.kid }, defaultPayload())),
      'algorithm_not_allowed',
    );
  });

  it('HS256 signed with the RSA public key as the HMAC secret', async () => {
    expectInvalid(await runFilter(filter, hs256WithPublicKey(rsa)), 'algorithm_not_allowed');
  });

  it('an algorithm outside the allow-list, even with a matching key in the JWKS', async () => {
    // The JWKS publishes an ES384 key, but the provider allows ES256 and RS256 only.
    expectInvalid(await runFilter(filter, await mintToken(es384)), 'algorithm_not_allowed');
  });

  it('unknown kid (a key the JWKS never had)', async () => {
    const before = server.requests;
    expectInvalid(await runFilter(filter, await mintToken(attacker)), 'unknown_kid');
    // minRefetchInterval (30 s) has not passed since start: refused without fetching.
    expect(server.requests).toBe(before);
  });

  it('injected kid values', async () => {
    for (const kid of ['../../../../dev/null', "' OR '1'='1", 'x'.repeat(2000), `${es.kid}\u0000`]) {
      expectInvalid(await runFilter(filter, await mintToken(attacker, { kid })), 'unknown_kid');
    }
    // A kid that is not a string.
    expectInvalid(
      await runFilter(filter, rawToken({ alg: 'ES256', kid: 7 }, defaultPayload(), 'AAAA')),
      'malformed',
    );
  });

  it('a real kid with the attacker signature', async () => {
    expectInvalid(await runFilter(filter, await mintToken(attacker, { kid: es.kid })), 'bad_signature');
    // The RSA key's kid under ES256: that key cannot verify ES256.
    expectInvalid(await runFilter(filter, await mintToken(attacker, { kid: rsa.kid })), 'bad_signature');
  });

  it('a tampered payload, also of a token already verified and cached', async () => {
    const token = await mintToken(es);
    expect((await runFilter(filter, token)).error).toBeUndefined();
    expect((await runFilter(filter, token)).sync).toBe(true);
    expectInvalid(await runFilter(filter, tamper(token, defaultPayload({ sub: 'admin' }))), 'bad_signature');
  });

  it('jku / x5u / jwk / x5c headers are refused and never fetched', async () => {
    const before = server.requests;
    const attackerUrl = `http://127.0.0.1:${server.port}/attacker-keys`;
    for (const param of ['jwk', 'jku', 'x5u', 'x5c'] as const) {
      expectInvalid(await runFilter(filter, await selfKeyedToken(attacker, param)), 'forbidden_header');
      // Also with the victim's kid, so a key lookup would have found something.
      expectInvalid(
        await runFilter(filter, await selfKeyedToken(attacker, param, es.kid)),
        'forbidden_header',
      );
    }
    const jku = await mintToken(attacker, { header: { jku: attackerUrl } });
    expectInvalid(await runFilter(filter, jku), 'forbidden_header');
    expect(server.byPath.get('/attacker-keys')).toBeUndefined();
    expect(server.requests).toBe(before);
  });

  it('expired, not yet valid, missing exp', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Past the 30 s default tolerance.
    expectInvalid(
      await runFilter(filter, await mintToken(es, { exp: now - 120, iat: now - 600 })),
      'expired',
    );
    expectInvalid(await runFilter(filter, await mintToken(es, { nbf: now + 3600 })), 'not_yet_valid');
    expectInvalid(await runFilter(filter, await mintToken(es, { exp: null })), 'missing_claim');
    expectInvalid(
      await runFilter(filter, await mintToken(es, { claims: { exp: 'tomorrow' }, exp: null })),
      'malformed',
    );
  });

  it('wrong iss, aud, typ', async () => {
    expectInvalid(
      await runFilter(filter, await mintToken(es, { issuer: 'https://evil.example/' })),
      'wrong_issuer',
    );
    expectInvalid(await runFilter(filter, await mintToken(es, { issuer: undefined })), 'missing_claim');
    expectInvalid(
      await runFilter(filter, await mintToken(es, { audience: 'billing-api' })),
      'wrong_audience',
    );
    expectInvalid(await runFilter(filter, await mintToken(es, { audience: undefined })), 'missing_claim');
    const typed = { issuer: 'https://typed.example/' };
    expectInvalid(
      await runFilter(typedFilter, await mintToken(es, { ...typed, header: { typ: 'JWT' } })),
      'wrong_type',
    );
    expectInvalid(await runFilter(typedFilter, await mintToken(es, typed)), 'wrong_type');
    const ok = await runFilter(typedFilter, await mintToken(es, { ...typed, header: { typ: 'at+jwt' } }));
    expect(ok.error).toBeUndefined();
  });

  it('unknown crit', async () => {
    const token = await mintToken(es, {
      header: { crit: ['urn:example:must-understand'], 'urn:example:must-understand': 1 },
      crit: { 'urn:example:must-understand': true },
    });
    expectInvalid(await runFilter(filter, token), 'forbidden_header');
  });

  it('a 100 KB token is refused before any parsing', async () => {
    // Not even a JWT: parsing it would say malformed; the size check answers first, synchronously.
    const huge = `${'!'.repeat(50_000)}.${'?'.repeat(50_000)}.x`;
    const run = await runFilter(filter, huge);
    expectInvalid(run, 'too_large');
    expect(run.sync).toBe(true);
    const bigButValid = await mintToken(es, { claims: { pad: 'a'.repeat(100_000) } });
    expectInvalid(await runFilter(filter, bigButValid), 'too_large');
  });

  it('a JWE (five segments)', async () => {
    const token = await jweToken();
    expect(token.split('.')).toHaveLength(5);
    expectInvalid(await runFilter(filter, token), 'malformed');
  });

  it('malformed base64 / JSON / shape', async () => {
    const good = await mintToken(es);
    const [h, p, s] = good.split('.');
    for (const token of [
      'not-a-jwt',
      'a.b',
      `${h}.${p}`,
      `${h}.${p}.${s}.x`,
      `${h}.${p}.`,
      `${h}!.${p}.${s}`,
      `${h}.${p}=.${s}`,
      `${h}.${p}.${s}+/`,
      `eyJhbGciOiJFUzI1NiJ9.${Buffer.from('not json').toString('base64url')}.${s}`,
      `${Buffer.from('[1,2]').toString('base64url')}.${p}.${s}`,
      `${Buffer.from('{"alg":"ES256"').toString('base64url')}.${p}.${s}`,
      `${h}.${Buffer.from('"a string"').toString('base64url')}.${s}`,
    ]) {
      expectInvalid(await runFilter(filter, token), 'malformed');
    }
  });

  it('counts every refusal by reason', async () => {
    expect(
      await metricValue(metrics, 'peregrine_auth_decisions_total', {
        route: 'orders',
        provider: 'main',
        result: 'deny',
        reason: 'forbidden_header',
      }),
    ).toBeGreaterThanOrEqual(9);
    expect(
      await metricValue(metrics, 'peregrine_auth_decisions_total', {
        route: 'orders',
        provider: 'main',
        result: 'allow',
        reason: 'ok',
      }),
    ).toBeGreaterThanOrEqual(2);
  });
});
