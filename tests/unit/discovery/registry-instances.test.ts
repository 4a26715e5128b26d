import { describe, expect, it } from 'vitest';
import {
  endpointOfInstance,
  matchesFilter,
  type RegisteredInstance,
  representative,
} from '../../../src/discovery/registry-instances.ts';
import { checkEndpoint } from '../../../src/discovery/source-binding.ts';

const base: RegisteredInstance = {
  id: 'users-1',
  address: '10.0.0.5',
  port: 8080,
  protocol: 'http',
  zone: 'eu-1',
  version: 'v2',
  weight: 3,
  metadata: { canary: 'false', rack: 'r7' },
  state: 'active',
};

describe('registry instances as endpoints', () => {
  it('filters by zone, version and every listed metadata pair', () => {
    expect(matchesFilter(base, {})).toBe(true);
    expect(matchesFilter(base, { zone: 'eu-1', version: 'v2', metadata: { canary: 'false' } })).toBe(true);
    expect(matchesFilter(base, { zone: 'eu-2' })).toBe(false);
    expect(matchesFilter(base, { version: 'v1' })).toBe(false);
    expect(matchesFilter(base, { metadata: { canary: 'true' } })).toBe(false);
    expect(matchesFilter({ ...base, metadata: {} }, { metadata: { canary: 'false' } })).toBe(false);
    // The registry stores an absent zone or version as null: no filter value matches it.
    expect(matchesFilter({ ...base, zone: null, version: null }, {})).toBe(true);
    expect(matchesFilter({ ...base, zone: null }, { zone: 'eu-1' })).toBe(false);
    expect(matchesFilter({ ...base, version: null }, { version: 'v2' })).toBe(false);
  });

  it('maps an instance to an endpoint the control plane accepts (IPv6 bracketed, state kept)', () => {
    expect(endpointOfInstance(base)).toEqual({
      url: 'http://10.0.0.5:8080',
      weight: 3,
      zone: 'eu-1',
      version: 'v2',
      metadata: { canary: 'false', rack: 'r7' },
      state: 'active',
    });
    const v6 = endpointOfInstance({ ...base, address: 'fd00::7', protocol: 'https', state: 'draining' });
    expect(v6).toMatchObject({ url: 'https://[fd00::7]:8080', state: 'draining' });
    expect(checkEndpoint(v6)).toMatchObject({ url: 'https://[fd00::7]:8080', state: 'draining', weight: 3 });
    expect(endpointOfInstance({ ...base, zone: null, version: null })).toMatchObject({
      zone: undefined,
      version: undefined,
    });
  });

  it('one origin, several instances: an active one speaks for it, then the lowest id', () => {
    const a = { ...base, id: 'b', state: 'draining' as const };
    const b = { ...base, id: 'c', weight: 7 };
    const c = { ...base, id: 'd', weight: 9 };
    expect(representative([a, c, b])).toBe(b);
    expect(representative([a])).toBe(a);
    expect(representative([{ ...a, id: 'z' }, a])).toBe(a);
    expect(representative([])).toBeUndefined();
  });
});
