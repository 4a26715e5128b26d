import { describe, expect, it } from 'vitest';
import {
  expectedIdentity,
  isIdentityPattern,
  isSpiffeId,
  isTrustDomain,
  isWorkloadId,
  parseSpiffeId,
} from '../../../src/tls/spiffe.ts';

describe('SPIFFE IDs', () => {
  it('accepts well-formed IDs only', () => {
    expect(isSpiffeId('spiffe://prod.example/ns/orders/sa/api')).toBe(true);
    expect(isSpiffeId('spiffe://prod.example')).toBe(true);
    for (const bad of [
      'spiffe://Prod.example/x',
      'spiffe://prod.example/ns/../admin',
      'spiffe://prod.example/ns//x',
      'spiffe://prod.example/x?y',
      'spiffe://prod.example:443/x',
      'spiffe://user@prod.example/x',
      'https://prod.example/x',
      'spiffe://prod.example/x/',
    ])
      expect(isSpiffeId(bad), bad).toBe(false);
  });

  it('a workload ID has a path; a trust domain is the part before it', () => {
    expect(isWorkloadId('spiffe://prod.example/ns/a/sa/b')).toBe(true);
    expect(isWorkloadId('spiffe://prod.example')).toBe(false);
    expect(parseSpiffeId('spiffe://prod.example/ns/a')).toEqual({
      trustDomain: 'prod.example',
      path: '/ns/a',
    });
    expect(isTrustDomain('prod.example')).toBe(true);
    expect(isTrustDomain('Prod.example')).toBe(false);
    expect(isTrustDomain('prod.example/ns')).toBe(false);
  });
});

describe('expected identities', () => {
  it('a list matches exactly', () => {
    const e = expectedIdentity({ expect: ['spiffe://prod.example/ns/orders/sa/api'] }, 'ignored');
    expect(e.expected).toEqual(['spiffe://prod.example/ns/orders/sa/api']);
    expect(e.matches('spiffe://prod.example/ns/orders/sa/api')).toBe(true);
    expect(e.matches('spiffe://prod.example/ns/orders/sa/api2')).toBe(false);
    expect(e.matches('spiffe://prod.example/ns/orders/sa/API')).toBe(false);
  });

  it('a pattern follows the service name; `*` is one whole segment', () => {
    const e = expectedIdentity({ expectPattern: 'spiffe://prod.example/ns/*/sa/{service}' }, 'orders');
    expect(e.expected).toEqual(['spiffe://prod.example/ns/*/sa/orders']);
    expect(e.matches('spiffe://prod.example/ns/shop/sa/orders')).toBe(true);
    expect(e.matches('spiffe://prod.example/ns/billing/sa/orders')).toBe(true);
    for (const no of [
      'spiffe://prod.example/ns/shop/sa/payments',
      'spiffe://prod.example/ns/a/b/sa/orders',
      'spiffe://prod.example/ns/sa/orders',
      'spiffe://other.example/ns/shop/sa/orders',
      'spiffe://prod.example/ns/../sa/orders',
      'spiffe://prod.example/ns/shop/sa/orders/x',
    ])
      expect(e.matches(no), no).toBe(false);
  });

  it('validates patterns: literal trust domain, `*` only as a whole segment, a path', () => {
    expect(isIdentityPattern('spiffe://prod.example/ns/*/sa/{service}')).toBe(true);
    expect(isIdentityPattern('spiffe://prod.example/ns/default/sa/api')).toBe(true);
    for (const bad of [
      'spiffe://*/ns/x',
      'spiffe://{service}/ns/x',
      'spiffe://prod.example/ns/a*/sa/x',
      'spiffe://prod.example',
      'spiffe://prod.example/ns/{other}',
      'spiffe://prod.example/sa/svc-{service}',
      'https://prod.example/ns/{service}',
    ])
      expect(isIdentityPattern(bad), bad).toBe(false);
  });
});
