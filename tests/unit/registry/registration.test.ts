import { describe, expect, it } from 'vitest';
import { createRegistrationParser } from '../../../src/registry/registration.ts';
import { RegistrySchema } from '../../../src/registry/schema.ts';
import { spec } from '../../conformance/registry-store.ts';

const parse = createRegistrationParser(RegistrySchema.parse({ limits: { maxMetadataBytes: 64 } }));

describe('registration body', () => {
  it('fills defaults and sorts metadata', () => {
    const r = parse('payments', 'p-1', { port: 8080, metadata: { z: '1', a: '2' } });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.address).toBeUndefined();
    const reg = r.build('10.0.0.1');
    expect(reg).toEqual({
      service: 'payments',
      id: 'p-1',
      state: 'active',
      ttlMs: 15_000,
      spec: spec({ address: '10.0.0.1', port: 8080, metadata: { a: '2', z: '1' } }),
    });
    expect(Object.keys(reg.spec.metadata)).toEqual(['a', 'z']);
  });

  it('takes ttl as a duration or milliseconds, within bounds', () => {
    const ttl = (v: unknown) => {
      const r = parse('s', 'i', { port: 1, ttl: v });
      return r.ok ? r.build('10.0.0.1').ttlMs : r.problems;
    };
    expect(ttl('30s')).toBe(30_000);
    expect(ttl(2000)).toBe(2000);
    expect(ttl('500ms')).toEqual([
      { field: 'ttl', message: expect.stringContaining('between 1000 ms and 300000 ms') },
    ]);
    expect(ttl('10m')).toEqual([expect.objectContaining({ field: 'ttl' })]);
  });

  it('reports every problem with its field', () => {
    const r = parse('s', 'i', {
      port: 70_000,
      weight: 0,
      zone: 'a b',
      extra: 1,
      metadata: { k: 'x'.repeat(100) },
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems.map((p) => p.field).sort()).toEqual(['(body)', 'port', 'weight', 'zone']);
    const big = parse('s', 'i', { port: 1, metadata: { k: 'x'.repeat(100) } });
    expect(!big.ok && big.problems).toEqual([
      { field: 'metadata', message: expect.stringContaining('at most 64') },
    ]);
    expect(parse('s', 'i', null).ok).toBe(false);
    expect(parse('s', 'i', [1]).ok).toBe(false);
  });
});
