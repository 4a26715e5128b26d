import { describe, expect, it } from 'vitest';
import { canonicalIp, createAddressPolicy } from '../../../src/registry/address-policy.ts';
import { RegistrySchema } from '../../../src/registry/schema.ts';

const policy = (addresses: unknown = {}) =>
  createAddressPolicy(RegistrySchema.parse({ addresses }).addresses);
const allowed = (p: ReturnType<typeof policy>, a: string) => p(a).ok;

describe('canonicalIp', () => {
  it('accepts IP literals only, in canonical form', () => {
    expect(canonicalIp('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIp('2001:DB8::0:1')).toBe('2001:db8::1');
    expect(canonicalIp('::ffff:169.254.169.254')).toBe('169.254.169.254');
    expect(canonicalIp('::ffff:a9fe:a9fe')).toBe('169.254.169.254');
    expect(canonicalIp('::FFFF:7f00:1')).toBe('127.0.0.1');
    for (const bad of [
      'localhost',
      '127.1',
      '0x7f000001',
      '0177.0.0.1',
      'fe80::1%eth0',
      '',
      '1.2.3.4.5',
      '[::1]',
    ])
      expect(canonicalIp(bad), bad).toBeUndefined();
  });
});

describe('address policy', () => {
  it('by default: ordinary addresses yes; loopback, link-local, unspecified, multicast, broadcast no', () => {
    const p = policy();
    for (const ok of ['10.1.2.3', '192.168.1.1', '8.8.8.8', '2001:db8::1', 'fd00::1'])
      expect(allowed(p, ok), ok).toBe(true);
    for (const no of [
      '127.0.0.1',
      '127.255.0.9',
      '::1',
      '::ffff:127.0.0.1',
      '169.254.169.254',
      '::ffff:a9fe:a9fe',
      'fe80::1',
      'febf::1',
      '0.0.0.0',
      '0.1.2.3',
      '::',
      '224.0.0.1',
      'ff02::1',
      '255.255.255.255',
    ])
      expect(allowed(p, no), no).toBe(false);
  });

  it('loopback and link-local can be allowed; unspecified and multicast never', () => {
    const p = policy({ allowLoopback: true, allowLinkLocal: true });
    expect(allowed(p, '127.0.0.1')).toBe(true);
    expect(allowed(p, '::1')).toBe(true);
    expect(allowed(p, '169.254.1.1')).toBe(true);
    expect(allowed(p, '0.0.0.0')).toBe(false);
    expect(allowed(p, '224.0.0.1')).toBe(false);
  });

  it('allow limits registrations to its CIDRs; deny wins over allow', () => {
    const p = policy({ allow: ['10.0.0.0/8', '2001:db8::/32'], deny: ['10.66.0.0/16', '10.1.2.3'] });
    expect(allowed(p, '10.1.2.4')).toBe(true);
    expect(allowed(p, '2001:db8::5')).toBe(true);
    expect(allowed(p, '192.168.1.1')).toBe(false);
    expect(allowed(p, '10.66.0.1')).toBe(false);
    expect(allowed(p, '10.1.2.3')).toBe(false);
    // A broad allow does not lift the default denials.
    expect(allowed(policy({ allow: ['0.0.0.0/0'] }), '169.254.169.254')).toBe(false);
  });

  it('says why', () => {
    const v = policy()('169.254.169.254');
    expect(v).toEqual({ ok: false, detail: expect.stringContaining('link-local') });
    expect(policy()('metadata.internal')).toEqual({
      ok: false,
      detail: expect.stringContaining('not an IP address'),
    });
  });
});
