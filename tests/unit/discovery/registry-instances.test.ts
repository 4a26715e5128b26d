import { describe, expect, it } from 'vitest';
import {
  endpointOfInstance,
  matchesFilter,
  type RegisteredInstance,
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
    expect(matchesFilter({ ...base, metadata: undefined }, { metadata: { canary: 'false' } })).toBe(false);
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
  });
});
