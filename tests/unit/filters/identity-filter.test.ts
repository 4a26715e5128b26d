import { describe, expect, it } from 'vitest';
import {
  compileIdentityPatterns,
  createIdentityFilter,
} from '../../../src/dataplane/filters/identity/identity-filter.ts';
import { RouteIdentitySchema } from '../../../src/dataplane/filters/identity/schema.ts';
import type { ScalarCell } from '../../../src/telemetry/metric-cells.ts';

describe('identity patterns', () => {
  const m = compileIdentityPatterns([
    'spiffe://prod.example/ns/payments/*',
    'spiffe://prod.example/ns/web/sa/front',
  ]);

  it('matches exact identities', () => {
    expect(m.matches('spiffe://prod.example/ns/web/sa/front')).toBe(true);
    expect(m.matches('spiffe://prod.example/ns/web/sa/front2')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/web/sa')).toBe(false);
  });

  it('matches one or more segments below a /* prefix, and nothing else', () => {
    expect(m.matches('spiffe://prod.example/ns/payments/sa/api')).toBe(true);
    expect(m.matches('spiffe://prod.example/ns/payments/x')).toBe(true);
    expect(m.matches('spiffe://prod.example/ns/payments')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments/')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments-evil/sa/api')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments/../admin')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments/./x')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments//x')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments/%2e%2e/admin')).toBe(false);
    expect(m.matches('spiffe://prod.example/ns/payments/x?y')).toBe(false);
    expect(m.matches('spiffe://other.example/ns/payments/sa/api')).toBe(false);
  });

  it('accepts URIs and trailing /* only in the schema', () => {
    const ok = (p: string) => RouteIdentitySchema.safeParse({ allow: [p] }).success;
    expect(ok('spiffe://prod.example/ns/payments/*')).toBe(true);
    expect(ok('spiffe://prod.example/*')).toBe(true);
    expect(ok('spiffe://prod.example/ns/payments/sa/api')).toBe(true);
    expect(ok('*')).toBe(false);
    expect(ok('spiffe://*')).toBe(false);
    expect(ok('spiffe://prod.example/ns/*/sa/api')).toBe(false);
    expect(ok('spiffe://prod.example/ns/**')).toBe(false);
    expect(ok('payments')).toBe(false);
    expect(ok('spiffe://prod.example/a b')).toBe(false);
    expect(RouteIdentitySchema.safeParse({ allow: [] }).success).toBe(false);
  });
});

describe('identity filter', () => {
  function cells() {
    const made = new Map<string, ScalarCell>();
    return {
      made,
      authDecisionCell(route: string, provider: string, result: string, reason: string): ScalarCell {
        const key = [route, provider, result, reason].join('|');
        let cell = made.get(key);
        if (!cell) {
          cell = { labels: {}, value: 0 };
          made.set(key, cell);
        }
        return cell;
      },
    };
  }

  it('refuses a missing identity with MTLS_REQUIRED and a foreign one with IDENTITY_DENIED, counting each', () => {
    const metrics = cells();
    const filter = createIdentityFilter(
      'payments',
      { allow: ['spiffe://prod.example/ns/payments/*'] },
      metrics,
    );
    expect(filter.check(undefined)?.code).toBe('MTLS_REQUIRED');
    expect(filter.check(undefined)?.status).toBe(403);
    expect(filter.check('spiffe://prod.example/ns/orders/sa/api')?.code).toBe('IDENTITY_DENIED');
    expect(filter.check('spiffe://prod.example/ns/payments/sa/api')).toBeUndefined();
    expect(metrics.made.get('payments|_mtls|deny|mtls_required')?.value).toBe(2);
    expect(metrics.made.get('payments|_mtls|deny|identity_denied')?.value).toBe(1);
    expect(metrics.made.get('payments|_mtls|allow|ok')?.value).toBe(1);
  });
});
