import { describe, expect, it } from 'vitest';
import { ConfigError, formatIssue, parseConfigText } from '../../../src/config/loader.ts';
import { UpstreamSchema } from '../../../src/config/schema.ts';
import { endpointSourceOf } from '../../../src/discovery/schema.ts';

function issues(input: Record<string, unknown>): string[] {
  const r = UpstreamSchema.safeParse(input);
  expect(r.success).toBe(false);
  return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('upstream endpoint source: exactly one of endpoints, discovery.registry, discovery.dns', () => {
  it.each([
    [
      {},
      'endpoints: an upstream needs `endpoints: [...]` or `discovery: { registry: <service> }` / `{ dns: <name>, ... }`',
    ],
    [
      { endpoints: ['http://a:1'], discovery: { registry: 'users' } },
      'discovery: an upstream takes its endpoints from one source: `endpoints` or `discovery`, not both',
    ],
    [{ discovery: {} }, 'discovery: discovery needs `registry: <service>` or `dns: <name>`'],
    [
      { discovery: { registry: 'users', dns: 'users.internal' } },
      'discovery: discovery names one source: `registry` or `dns`, not both',
    ],
    [{ discovery: { dns: 'users.internal' } }, 'discovery.port: `port` is required: A records carry no port'],
    [
      { discovery: { dns: 'users.internal', type: 'AAAA' } },
      'discovery.port: `port` is required: AAAA records carry no port',
    ],
    [
      { discovery: { dns: '_http._tcp.users', type: 'SRV', port: 80 } },
      'discovery.port: SRV records carry their own ports; remove `port`',
    ],
    [
      { discovery: { registry: 'users', port: 80 } },
      'discovery.port: `port` belongs to DNS discovery (`dns: <name>`)',
    ],
    [
      { discovery: { registry: 'users', refresh: {} } },
      'discovery.refresh: `refresh` belongs to DNS discovery (`dns: <name>`)',
    ],
    [
      { discovery: { dns: 'users.internal', port: 80, filter: {} } },
      'discovery.filter: `filter` belongs to registry discovery (`registry: <service>`)',
    ],
    [
      { discovery: { dns: 'users.internal', port: 80, refresh: { min: '1m', max: '10s' } } },
      'discovery.refresh.min: refresh.min is longer than refresh.max',
    ],
    [
      { discovery: { dns: 'users internal', port: 80 } },
      'discovery.dns: expected a DNS name, e.g. users.internal or _http._tcp.users.internal',
    ],
    [
      { discovery: { dns: 'users.internal', port: 70000 } },
      'discovery.port: Too big: expected number to be <=65535',
    ],
    [
      { discovery: { dns: 'users.internal', port: 80, type: 'MX' } },
      'discovery.type: Invalid option: expected one of "A"|"AAAA"|"SRV"',
    ],
    [
      { discovery: { registry: 'users', filter: { zone: 'a', colour: 'b' } } },
      'discovery.filter: Unrecognized key: "colour"',
    ],
    [
      { discovery: { registry: '-users' } },
      'discovery.registry: service names use lower-case letters, digits, _ . - (at most 63, starting and ending with a letter or digit)',
    ],
    [
      // The registry takes no upper case: such an upstream could never find an instance.
      { discovery: { registry: 'Users' } },
      'discovery.registry: service names use lower-case letters, digits, _ . - (at most 63, starting and ending with a letter or digit)',
    ],
  ])('rejects %j', (input, message) => {
    expect(issues(input)).toContain(message);
  });

  it('accepts each form, with defaults, keeping the written shape', () => {
    expect(UpstreamSchema.parse({ discovery: { dns: 'users.internal.', port: 8080 } }).discovery).toEqual({
      dns: 'users.internal.',
      type: 'A',
      port: 8080,
      protocol: 'http',
      refresh: { min: 5000, max: 60_000 },
    });
    expect(
      UpstreamSchema.parse({
        discovery: {
          dns: '_api._tcp.users',
          type: 'SRV',
          protocol: 'https',
          refresh: { min: '1s', max: '1m' },
        },
      }).discovery,
    ).toEqual({
      dns: '_api._tcp.users',
      type: 'SRV',
      port: undefined,
      protocol: 'https',
      refresh: { min: 1000, max: 60_000 },
    });
    const registry = UpstreamSchema.parse({
      discovery: {
        registry: 'users',
        filter: { zone: 'eu-1', version: 'v2', metadata: { canary: 'false' } },
      },
    });
    expect(registry.discovery).toEqual({
      registry: 'users',
      filter: { zone: 'eu-1', version: 'v2', metadata: { canary: 'false' } },
    });
    expect(registry.endpoints).toBeUndefined();
  });

  it('endpointSourceOf gives the code a discriminated union', () => {
    expect(endpointSourceOf(UpstreamSchema.parse({ endpoints: ['http://a:1'] }))).toEqual({
      kind: 'static',
      endpoints: ['http://a:1'],
    });
    expect(endpointSourceOf(UpstreamSchema.parse({ discovery: { registry: 'users' } }))).toEqual({
      kind: 'registry',
      registry: 'users',
      filter: {},
    });
    expect(endpointSourceOf(UpstreamSchema.parse({ discovery: { dns: 'u', port: 1 } }))).toMatchObject({
      kind: 'dns',
      dns: 'u',
      port: 1,
    });
  });

  it('reports at the file line, as `peregrine validate` prints it', () => {
    const text = [
      'listeners: [{ name: edge, address: "127.0.0.1:0" }]',
      'upstreams:',
      '  users:',
      '    discovery:',
      '      dns: users.internal',
      '      type: SRV',
      '      port: 8080',
      '  orders:',
      '    timeouts: { connect: 1s }',
      'routes: []',
    ].join('\n');
    let error: unknown;
    try {
      parseConfigText(text, 'gw.yaml', {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.map(formatIssue)).toEqual([
      'gw.yaml:7 upstreams.users.discovery.port: SRV records carry their own ports; remove `port`',
      'gw.yaml:8 upstreams.orders.endpoints: an upstream needs `endpoints: [...]` or `discovery: { registry: <service> }` / `{ dns: <name>, ... }`',
    ]);
  });
});
