/**
 * What a request is counted by: the client address through trusted proxies only, key parts
 * (identity, claims, headers) and their combinations without ambiguity, long keys bounded,
 * missing values reported, exemptions; and the RateLimit fields formatted as draft-11 has them.
 */
import { describe, expect, it } from 'vitest';
import type { RequestContext } from '../../../../src/dataplane/context.ts';
import { RateLimitFields, retryAfterOf } from '../../../../src/dataplane/filters/rate-limit/headers.ts';
import {
  clientAddressOf,
  compileExemptions,
  compileKey,
} from '../../../../src/dataplane/filters/rate-limit/key.ts';
import { RateLimitSchema } from '../../../../src/dataplane/filters/rate-limit/schema.ts';
import {
  createTrustCheck,
  forwardedClientAddress,
} from '../../../../src/dataplane/forward/trusted-proxies.ts';

const proxies = createTrustCheck(['10.0.0.0/8', '127.0.0.1']);

function ctx(fields: {
  peer?: string;
  headers?: Record<string, string | string[]>;
  identity?: string;
  claims?: Record<string, unknown>;
}): RequestContext {
  return {
    req: { headers: fields.headers ?? {} },
    clientAddress: fields.peer ?? '192.0.2.1',
    identity: fields.identity,
    claims: fields.claims,
    forwardedAddress: undefined,
    pipeline: { listener: { trust: proxies } },
  } as unknown as RequestContext;
}

describe('client address', () => {
  it("is the peer's own unless the peer is a trusted proxy", () => {
    expect(forwardedClientAddress('192.0.2.1', '203.0.113.9', proxies)).toBe('192.0.2.1');
    expect(forwardedClientAddress('10.1.1.1', undefined, proxies)).toBe('10.1.1.1');
  });

  it('walks X-Forwarded-For right to left past trusted proxies to the first other address', () => {
    expect(forwardedClientAddress('10.1.1.1', '203.0.113.9', proxies)).toBe('203.0.113.9');
    expect(forwardedClientAddress('10.1.1.1', '198.51.100.1, 203.0.113.9, 10.2.2.2', proxies)).toBe(
      '203.0.113.9',
    );
    // Every hop trusted: the leftmost is as far as the chain goes.
    expect(forwardedClientAddress('10.1.1.1', '10.3.3.3, 10.2.2.2', proxies)).toBe('10.3.3.3');
    expect(forwardedClientAddress('10.1.1.1', '::ffff:203.0.113.7', proxies)).toBe('203.0.113.7');
  });

  it('stops at an entry that is not an address: the trusted hop that reported it is the client', () => {
    expect(forwardedClientAddress('10.1.1.1', '203.0.113.9, unknown', proxies)).toBe('10.1.1.1');
    expect(forwardedClientAddress('10.1.1.1', '203.0.113.9, 10.2.2.2, x', proxies)).toBe('10.1.1.1');
    expect(forwardedClientAddress('10.1.1.1', 'junk, 10.2.2.2', proxies)).toBe('10.2.2.2');
  });

  it('is worked out once per request', () => {
    const c = ctx({ peer: '10.1.1.1', headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect(clientAddressOf(c)).toBe('203.0.113.9');
    (c.req.headers as Record<string, string>)['x-forwarded-for'] = '203.0.113.10';
    expect(clientAddressOf(c)).toBe('203.0.113.9');
  });
});

describe('keys', () => {
  it('read the address, identity, a claim (dotted path) or a header; undefined when the value is missing', () => {
    const full = ctx({
      identity: 'spiffe://prod/ns/a/sa/b',
      claims: { sub: 'alice', tenant: { id: 42 }, roles: ['x'] },
      headers: { 'x-api-key': 'k1' },
    });
    expect(compileKey(['address'])(full)).toBe('a:192.0.2.1');
    expect(compileKey(['identity'])(full)).toBe('i:spiffe://prod/ns/a/sa/b');
    expect(compileKey(['claim:sub'])(full)).toBe('c:alice');
    expect(compileKey(['claim:tenant.id'])(full)).toBe('c:42');
    expect(compileKey(['header:x-api-key'])(full)).toBe('h:k1');
    expect(compileKey([])(full)).toBe('');
    const bare = ctx({});
    for (const part of ['identity', 'claim:sub', 'header:x-api-key'])
      expect(compileKey([part])(bare)).toBeUndefined();
    // Only strings and numbers key: a list or an object claim is as good as missing.
    expect(compileKey(['claim:roles'])(full)).toBeUndefined();
    expect(compileKey(['claim:tenant'])(full)).toBeUndefined();
  });

  it('combine parts so that no value can pose as the boundary between two', () => {
    const key = compileKey(['header:x-a', 'header:x-b']);
    const one = key(ctx({ headers: { 'x-a': 'p:q', 'x-b': 'r' } }));
    const two = key(ctx({ headers: { 'x-a': 'p', 'x-b': 'q:r' } }));
    expect(one).not.toBe(two);
    expect(key(ctx({ headers: { 'x-a': 'p' } }))).toBeUndefined();
  });

  it('store a long key as its hash, so a client-chosen header cannot make long store keys', () => {
    const key = compileKey(['header:x-api-key']);
    const long = key(ctx({ headers: { 'x-api-key': 'k'.repeat(5000) } }))!;
    expect(long).toMatch(/^#[A-Za-z0-9_-]{43}$/);
    expect(key(ctx({ headers: { 'x-api-key': `${'k'.repeat(4999)}j` } }))).not.toBe(long);
  });
});

describe('exemptions', () => {
  it('match verified identities (exact or below a prefix) and client addresses by CIDR', () => {
    const ex = compileExemptions({ identities: ['spiffe://prod/ns/ops/*'], addresses: ['203.0.113.0/24'] })!;
    expect(ex.exempt(ctx({ identity: 'spiffe://prod/ns/ops/sa/probe' }))).toBe(true);
    expect(ex.exempt(ctx({ identity: 'spiffe://prod/ns/opsx/sa/probe' }))).toBe(false);
    expect(ex.exempt(ctx({ peer: '10.1.1.1', headers: { 'x-forwarded-for': '203.0.113.5' } }))).toBe(true);
    // A client behind no trusted proxy cannot claim an exempt address.
    expect(ex.exempt(ctx({ headers: { 'x-forwarded-for': '203.0.113.5' } }))).toBe(false);
    expect(compileExemptions({ identities: [], addresses: [] })).toBeUndefined();
  });
});

describe('RateLimit fields', () => {
  const limits = RateLimitSchema.parse({
    limits: [
      { points: 100, duration: '1m' },
      { points: 10, duration: '1s', name: 'burst' },
    ],
  }).limits;
  const fields = new RateLimitFields('api', limits);
  const res = (remainingPoints: number, msBeforeNext: number) => ({ remainingPoints, msBeforeNext }) as never;

  it('name each limit and quote the names as Structured Field strings', () => {
    expect(fields.names).toEqual(['api/60s', 'burst']);
    expect(fields.policyField).toBe('"api/60s";q=100;w=60, "burst";q=10;w=1');
    expect(new RateLimitFields('solo', [limits[0]!]).policyField).toBe('"solo";q=100;w=60');
  });

  it('report remaining points and whole seconds to the window end, 0 left once over, and the nearest limit for the legacy trio', () => {
    const results = [
      { res: res(57, 42_300), over: false },
      { res: res(0, 400), over: true },
    ];
    expect(fields.rateLimitField(results)).toBe('"api/60s";r=57;t=43, "burst";r=0;t=1');
    expect(fields.legacyFields(results)).toEqual(['10', '0', '1']);
    expect(retryAfterOf(results)).toBe(1);
    // A limit without an answer (its store failed, fail-open) is left out.
    expect(fields.rateLimitField([undefined, results[1]])).toBe('"burst";r=0;t=1');
    expect(fields.legacyFields([undefined, undefined])).toBeUndefined();
  });

  it('make Retry-After the longest wait among the limits that refused', () => {
    expect(
      retryAfterOf([
        { res: res(0, 30_001), over: true },
        { res: res(0, 999), over: true },
      ]),
    ).toBe(31);
  });
});
