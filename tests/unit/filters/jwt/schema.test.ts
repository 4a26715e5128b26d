import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../../../src/config/loader.ts';
import { ConfigSchema, crossCheck } from '../../../../src/config/schema.ts';
import { AuthProviderSchema, RouteAuthSchema } from '../../../../src/dataplane/filters/jwt/schema.ts';

const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const EC_PEM = ec.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const EC_PRIVATE_PEM = ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const EC_JWK = ec.publicKey.export({ format: 'jwk' });

function issues(input: unknown): string[] {
  const r = AuthProviderSchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

const base = { issuer: 'https://idp.example/', algorithms: ['ES256'] };

describe('AuthProviderSchema', () => {
  it('fills the documented defaults', () => {
    const p = AuthProviderSchema.parse({ ...base, jwksUri: 'https://idp.example/jwks.json' });
    expect(p).toEqual({
      ...base,
      jwksUri: 'https://idp.example/jwks.json',
      requiredClaims: [],
      clockTolerance: 30_000,
      maxTokenSize: 8192,
      allowInsecureJwksUri: false,
      jwksCache: {
        refreshInterval: 600_000,
        minRefreshInterval: 60_000,
        maxRefreshInterval: 3_600_000,
        minRefetchInterval: 30_000,
        timeout: 2000,
        maxStale: 86_400_000,
        maxResponseSize: 1_048_576,
      },
      tokenCache: { maxEntries: 10_000 },
    });
  });

  it('requires exactly one key source', () => {
    expect(issues(base)).toEqual([': a provider needs keys: one of jwksUri, jwks or publicKeys']);
    expect(issues({ ...base, jwksUri: 'https://idp.example/k', publicKeys: [EC_PEM] })).toEqual([
      ': use exactly one of jwksUri, jwks or publicKeys (found jwksUri, publicKeys)',
    ]);
  });

  it('requires an algorithm allow-list, asymmetric only', () => {
    expect(issues({ issuer: 'x', jwksUri: 'https://a/k' })[0]).toMatch(/^algorithms:/);
    expect(issues({ ...base, algorithms: [], jwksUri: 'https://a/k' })).toEqual([
      'algorithms: list the accepted algorithms, e.g. [ES256]',
    ]);
    for (const alg of ['HS256', 'none']) {
      expect(issues({ ...base, algorithms: [alg], jwksUri: 'https://a/k' })[0]).toMatch(/^algorithms\.0:/);
    }
  });

  it('refuses plain-HTTP JWKS URIs except loopback or when explicitly allowed', () => {
    expect(issues({ ...base, jwksUri: 'http://idp.example/k' })).toEqual([
      'jwksUri: use https (keys fetched over plain HTTP can be replaced in transit), or set allowInsecureJwksUri',
    ]);
    expect(issues({ ...base, jwksUri: 'http://127.0.0.1:8080/k' })).toEqual([]);
    expect(issues({ ...base, jwksUri: 'http://idp.internal/k', allowInsecureJwksUri: true })).toEqual([]);
    expect(issues({ ...base, jwksUri: 'ftp://idp.example/k' })).toEqual([
      'jwksUri: expected an https:// URL',
    ]);
  });

  it('checks configured keys: public only, parseable, fitting the algorithms', () => {
    expect(issues({ ...base, publicKeys: [EC_PEM, { kid: 'k2', pem: EC_PEM }] })).toEqual([]);
    expect(issues({ ...base, publicKeys: [EC_PRIVATE_PEM] })).toEqual([
      'publicKeys.0: this is a private key; configure the public key',
    ]);
    expect(
      issues({ ...base, publicKeys: ['-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----'] }),
    ).toEqual(['publicKeys.0: not a PEM public key (-----BEGIN PUBLIC KEY-----) or certificate']);
    expect(issues({ ...base, algorithms: ['RS256'], publicKeys: [EC_PEM] })).toEqual([
      'algorithms: no configured key can verify RS256 (e.g. an RSA key needs RS256 or PS256)',
    ]);
    expect(issues({ ...base, jwks: { keys: [EC_JWK] } })).toEqual([]);
    expect(issues({ ...base, jwks: { keys: [{ ...EC_JWK, d: 'secret' }] } })).toEqual([
      'jwks.keys.0: private or symmetric key material; only public keys belong here',
    ]);
    expect(issues({ ...base, jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'AA' }] } })).toEqual([
      'jwks.keys.0: not a valid public JWK',
    ]);
  });

  it('checks the cache bounds', () => {
    expect(
      issues({ ...base, jwksUri: 'https://a/k', jwksCache: { refreshInterval: '2h', maxStale: '30m' } }),
    ).toEqual([
      'jwksCache.refreshInterval: expected minRefreshInterval <= refreshInterval <= maxRefreshInterval',
      'jwksCache.maxStale: maxStale must be at least maxRefreshInterval',
    ]);
    expect(issues({ ...base, jwksUri: 'https://a/k', jwksCache: { timeout: 0 } })).toEqual([
      'jwksCache.timeout: must be > 0',
    ]);
  });

  it('token sources: Authorization is not a token header', () => {
    expect(issues({ ...base, jwksUri: 'https://a/k', tokenFrom: { header: 'Authorization' } })).toEqual([
      'tokenFrom.header: Authorization is always read; use tokenFrom.cookie for cookies',
    ]);
  });
});

describe('RouteAuthSchema', () => {
  it('defaults to required with nothing else', () => {
    expect(RouteAuthSchema.parse({})).toEqual({
      mode: 'required',
      scopes: [],
      forwardClaims: {},
      forwardAuthorization: false,
    });
  });

  it('scopes and roles need mode required; reserved headers cannot be set from claims', () => {
    const r = RouteAuthSchema.safeParse({
      mode: 'optional',
      scopes: ['a b'],
      forwardClaims: { Host: 'sub', 'X-Forwarded-For': 'sub', 'x-ok': 'sub', 'bad header': 'sub' },
    });
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).sort()).toEqual([
      'forwardClaims.Host: this header is reserved (hop-by-hop, framing, credentials, forwarding or tracing)',
      'forwardClaims.X-Forwarded-For: this header is reserved (hop-by-hop, framing, credentials, forwarding or tracing)',
      'forwardClaims.bad header: a header name',
      'mode: scopes and roles need mode: required',
      'scopes.0: a scope is printable ASCII without spaces',
    ]);
    const dup = RouteAuthSchema.safeParse({ forwardClaims: { 'X-User': 'sub', 'x-user': 'sub' } });
    expect(dup.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      'forwardClaims.x-user: header names are case-insensitive: duplicate',
    ]);
    const modes = RouteAuthSchema.safeParse({ mode: 'optional', scopes: ['a'] });
    expect(modes.error?.issues.map((i) => i.message)).toEqual(['scopes and roles need mode: required']);
  });
});

describe('config integration', () => {
  const yaml = (auth: string, routeAuth: string) => `
listeners:
  - name: edge
    address: 127.0.0.1:8080
upstreams:
  u:
    endpoints: ['http://127.0.0.1:9000']
${auth}
routes:
  - name: orders
    upstream: u
${routeAuth}
`;

  it('auth defaults to no providers; a route without auth has none', () => {
    const cfg = parseConfigText(yaml('', ''), 'test.yaml');
    expect(cfg.auth).toEqual({ providers: {} });
    expect(cfg.routes[0]!.auth).toBeUndefined();
  });

  it('parses providers and route auth, with an environment variable as PEM key', () => {
    const cfg = parseConfigText(
      yaml(
        `auth:
  providers:
    main:
      issuer: https://idp.example/
      algorithms: [ES256]
      publicKeys: ['\${IDP_PEM}']`,
        `    auth:
      scopes: [orders:read]
      forwardClaims: { x-user-id: sub }`,
      ),
      'test.yaml',
      { IDP_PEM: EC_PEM },
    );
    expect(cfg.auth.providers.main!.publicKeys).toEqual([EC_PEM]);
    expect(cfg.routes[0]!.auth?.scopes).toEqual(['orders:read']);
  });

  it('cross-checks route providers: unknown, none configured, same issuer', () => {
    const auth = {
      providers: {
        a: { issuer: 'https://same/', algorithms: ['ES256'], publicKeys: [EC_PEM] },
        b: { issuer: 'https://same/', algorithms: ['ES256'], publicKeys: [EC_PEM] },
        c: { issuer: 'https://other/', algorithms: ['ES256'], publicKeys: [EC_PEM] },
      },
    };
    const route = (name: string, a: unknown) => ({ name, upstream: 'u', auth: a });
    const cfg = {
      listeners: [{ name: 'edge', address: '127.0.0.1:1' }],
      upstreams: { u: { endpoints: ['http://127.0.0.1:2'] } },
      auth,
      routes: [
        route('r0', { providers: ['a', 'nope'] }),
        route('r1', {}),
        route('r2', { providers: ['a', 'c'] }),
        route('r3', { mode: 'none', providers: ['nope'] }),
      ],
    };
    expect(crossCheck(cfg)).toEqual([
      { path: ['routes', 0, 'auth', 'providers', 1], message: 'unknown auth provider "nope"' },
      {
        path: ['routes', 1, 'auth'],
        message: 'providers a and b have the same issuer; a route picks its provider by issuer',
      },
    ]);
    expect(crossCheck({ ...cfg, auth: undefined, routes: [route('r', {})] })).toEqual([
      { path: ['routes', 0, 'auth'], message: 'the route needs a token but auth.providers is empty' },
    ]);
    // An unusable providers section is not judged again through references.
    expect(crossCheck({ ...cfg, auth: { providers: 'x' } })).toEqual([]);
    expect(ConfigSchema.safeParse(cfg).success).toBe(false);
  });
});
