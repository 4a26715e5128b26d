import { describe, expect, it } from 'vitest';
import {
  claimAt,
  claimHeaderValue,
  grantedScopes,
  hasAnyRole,
} from '../../../../src/dataplane/filters/jwt/claims.ts';
import { cookieValue, extractToken, inspectToken } from '../../../../src/dataplane/filters/jwt/token.ts';
import { TokenCache, type VerifiedToken } from '../../../../src/dataplane/filters/jwt/token-cache.ts';
import { defaultPayload, rawToken } from '../../../helpers/tokens.ts';

describe('extractToken', () => {
  it('reads Bearer case-insensitively and ignores other schemes', () => {
    expect(extractToken({ authorization: 'Bearer abc' }, [], [])).toBe('abc');
    expect(extractToken({ authorization: 'BEARER  abc' }, [], [])).toBe('abc');
    expect(extractToken({ authorization: 'Bearer ' }, [], [])).toBeUndefined();
    expect(extractToken({ authorization: 'Basic abc' }, [], [])).toBeUndefined();
    expect(extractToken({ authorization: 'Bearerabc' }, [], [])).toBeUndefined();
  });

  it('falls back to headers and cookies in order', () => {
    const headers = { 'x-token': 'h', cookie: 'a=1; s=c' };
    expect(extractToken(headers, ['x-token'], ['s'])).toBe('h');
    expect(extractToken({ cookie: 'a=1; s=c' }, ['x-token'], ['s'])).toBe('c');
    expect(extractToken({}, ['x-token'], ['s'])).toBeUndefined();
  });
});

describe('cookieValue', () => {
  it('finds the first exact name', () => {
    expect(cookieValue('a=1; b=2', 'b')).toBe('2');
    expect(cookieValue('a=1;b=2', 'b')).toBe('2');
    expect(cookieValue('ab=1; b=2; b=3', 'b')).toBe('2');
    expect(cookieValue('xb=1', 'b')).toBeUndefined();
    expect(cookieValue('b=', 'b')).toBeUndefined();
    expect(cookieValue('b="quoted"', 'b')).toBe('quoted');
    expect(cookieValue(undefined, 'b')).toBeUndefined();
  });
});

describe('inspectToken', () => {
  it('returns alg, kid and the unverified payload of a well-formed JWS', () => {
    const t = inspectToken(rawToken({ alg: 'ES256', kid: 'k' }, { iss: 'i' }, 'c2ln'));
    expect(t).toEqual({ alg: 'ES256', kid: 'k', payload: { iss: 'i' } });
  });

  it('names what is wrong', () => {
    const p = defaultPayload();
    expect(inspectToken(rawToken({ alg: 'none' }, p))).toBe('algorithm_not_allowed');
    expect(inspectToken(rawToken({ alg: 'ES256', jwk: {} }, p, 'c2ln'))).toBe('forbidden_header');
    expect(inspectToken(rawToken({ alg: 'ES256', crit: ['exp'] }, p, 'c2ln'))).toBe('forbidden_header');
    expect(inspectToken(rawToken({ alg: '' }, p, 'c2ln'))).toBe('malformed');
    expect(inspectToken(rawToken({ alg: 'ES256', kid: '' }, p, 'c2ln'))).toBe('malformed');
    expect(inspectToken(rawToken({ alg: 'ES256' }, p, ''))).toBe('malformed');
    expect(inspectToken('a.b.c.d.e')).toBe('malformed');
    expect(inspectToken('')).toBe('malformed');
  });
});

describe('claims', () => {
  const token = (claims: Record<string, unknown>): VerifiedToken => ({
    claims,
    subject: undefined,
    expiresAt: Number.POSITIVE_INFINITY,
    fingerprint: 'fp',
    scopes: undefined,
  });

  it('claimAt reads own properties only', () => {
    expect(claimAt({ a: { b: 1 } }, ['a', 'b'])).toBe(1);
    expect(claimAt({ a: 'x' }, ['a', 'length'])).toBeUndefined();
    expect(claimAt({}, ['constructor'])).toBeUndefined();
    expect(claimAt({}, ['__proto__'])).toBeUndefined();
  });

  it('grantedScopes merges scope and scp once, and caches the set on the token', () => {
    const t = token({ scope: 'a  b', scp: ['c', 1] });
    const s = grantedScopes(t);
    expect([...s]).toEqual(['a', 'b', 'c']);
    expect(grantedScopes(t)).toBe(s);
    expect(grantedScopes(token({ scp: 'x y' })).has('y')).toBe(true);
  });

  it('hasAnyRole', () => {
    const roles = new Set(['admin']);
    expect(hasAnyRole({ r: ['user', 'admin'] }, ['r'], roles)).toBe(true);
    expect(hasAnyRole({ r: 'admin' }, ['r'], roles)).toBe(true);
    expect(hasAnyRole({ r: { admin: true } }, ['r'], roles)).toBe(false);
  });

  it('claimHeaderValue sanitises', () => {
    expect(claimHeaderValue('ok value')).toBe('ok value');
    expect(claimHeaderValue(42)).toBe('42');
    expect(claimHeaderValue(Number.NaN)).toBeUndefined();
    expect(claimHeaderValue(['a', 1, true, null, { x: 1 }])).toBe('a,1,true,{"x":1}');
    expect(claimHeaderValue({ a: 'b' })).toBe('{"a":"b"}');
    expect(claimHeaderValue('a\nb')).toBeUndefined();
    expect(claimHeaderValue('a\rb')).toBeUndefined();
    expect(claimHeaderValue('a\tb')).toBeUndefined();
    expect(claimHeaderValue('a\u007fb')).toBeUndefined();
    expect(claimHeaderValue('é')).toBeUndefined();
    expect(claimHeaderValue({ a: 'line\nbreak' })).toBe('{"a":"line\\nbreak"}');
    expect(claimHeaderValue('x'.repeat(1024))).toHaveLength(1024);
    expect(claimHeaderValue('x'.repeat(1025))).toBeUndefined();
  });
});

describe('TokenCache', () => {
  const entry = (expiresAt: number, fingerprint = 'a'): VerifiedToken => ({
    claims: {},
    subject: undefined,
    expiresAt,
    fingerprint,
    scopes: undefined,
  });

  it('never serves an entry at or after its expiry', () => {
    const c = new TokenCache(10);
    c.set('t', entry(1000), 0);
    expect(c.get('t', 999)).toBeDefined();
    expect(c.get('t', 1000)).toBeUndefined();
    expect(c.size).toBe(0);
    c.set('expired', entry(1000), 1000);
    expect(c.size).toBe(0);
  });

  it('is bounded: the oldest goes first, expired ones with it', () => {
    const c = new TokenCache(3);
    c.set('a', entry(10), 0);
    c.set('b', entry(100), 0);
    c.set('c', entry(100), 0);
    c.set('d', entry(100), 50);
    expect([c.get('a', 50), c.get('b', 50), c.get('c', 50), c.get('d', 50)].map(Boolean)).toEqual([
      false,
      true,
      true,
      true,
    ]);
    for (let i = 0; i < 100; i++) c.set(`x${i}`, entry(1000), 60);
    expect(c.size).toBe(3);
    expect(new TokenCache(0).size).toBe(0);
    const off = new TokenCache(0);
    off.set('a', entry(100), 0);
    expect(off.get('a', 0)).toBeUndefined();
  });

  it('a token that shares the key suffix with a cached one is a miss, not a hit', () => {
    const c = new TokenCache(10);
    const signature = 's'.repeat(86);
    const genuine = `header.payload.${signature}`;
    const forged = `header.forged-payload.${signature}`;
    c.set(genuine, entry(100), 0);
    expect(c.get(forged, 0)).toBeUndefined();
    expect(c.get(genuine, 0)).toBeDefined();
    // Short tokens are keyed whole.
    c.set('short', entry(100), 0);
    expect(c.get('short', 0)).toBeDefined();
    expect(c.get('hort', 0)).toBeUndefined();
  });

  it('retain drops entries verified with keys that left the set', () => {
    const c = new TokenCache(10);
    c.set('a', entry(100, 'k1'), 0);
    c.set('b', entry(100, 'k2'), 0);
    c.retain(new Set(['k2']));
    expect(c.get('a', 0)).toBeUndefined();
    expect(c.get('b', 0)).toBeDefined();
  });
});
