import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runValidate } from '../../../src/cli/validate.ts';
import { ConfigSchema } from '../../../src/config/schema.ts';
import { RegistrySchema } from '../../../src/registry/schema.ts';

const issues = (input: unknown) => {
  const r = ConfigSchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};
const base = { listeners: [{ name: 'edge', address: '0.0.0.0:8080' }] };
const token = { name: 't', env: 'T', services: ['x'] };

describe('registry configuration', () => {
  it('has working defaults: the memory store, no API', () => {
    const r = RegistrySchema.parse({});
    expect(r).toMatchObject({
      store: 'memory',
      lease: { defaultTtl: 15_000, minTtl: 1000, maxTtl: 300_000 },
      limits: {
        maxServices: 1000,
        maxInstancesPerService: 1000,
        maxMetadataBytes: 4096,
        maxWatchStreams: 64,
      },
      addresses: { allow: [], deny: [], allowLoopback: false, allowLinkLocal: false },
      sync: { sweepInterval: 250, resyncInterval: 30_000 },
    });
    expect(r.listener).toBeUndefined();
    expect(issues({ ...base, registry: {} })).toEqual([]);
  });

  it("keeps a registration client's connection open between renewals (a third of the TTL)", () => {
    const r = RegistrySchema.parse({
      listener: {},
      credentials: { tokens: [{ name: 'fleet', env: 'FLEET_TOKEN', services: ['payments'] }] },
    });
    expect(r.listener?.keepAliveTimeout).toBe(65_000);
    expect(r.listener!.keepAliveTimeout).toBeGreaterThan(r.lease.defaultTtl / 3);
  });

  it('checks what spans sections: redis for the Redis store, a port of its own, credentials for an API', () => {
    expect(issues({ ...base, registry: { store: 'redis' } })).toEqual([
      'registry.store: store redis needs the redis section',
    ]);
    expect(issues({ ...base, redis: {}, registry: { store: 'redis' } })).toEqual([]);
    expect(
      issues({
        ...base,
        registry: { listener: { address: '127.0.0.1:8080' }, credentials: { tokens: [token] } },
      }),
    ).toEqual([
      expect.stringContaining('registry.listener.address: the registration API needs a port of its own'),
    ]);
    expect(
      issues({
        ...base,
        registry: { listener: { address: '127.0.0.1:9901' }, credentials: { tokens: [token] } },
      }),
    ).toHaveLength(1);
    expect(issues({ ...base, registry: { listener: {} } })).toEqual([
      expect.stringContaining('registry.credentials: the registration API refuses every request'),
    ]);
  });

  it('checks credentials and bounds', () => {
    const bad = (registry: unknown) => issues({ ...base, registry });
    expect(bad({ credentials: { tokens: [{ name: 't', services: ['x'] }] } })).toEqual([
      expect.stringContaining('exactly one of env or file'),
    ]);
    expect(bad({ credentials: { identities: [{ spiffe: 'spiffe://a/b' }] } })).toEqual([
      expect.stringContaining('services is required'),
    ]);
    expect(bad({ credentials: { identities: [{ spiffe: 'spiffe://a/{service}/{service}' }] } })).toEqual([
      expect.stringContaining('only once'),
    ]);
    expect(bad({ credentials: { identities: [{ spiffe: 'https://a/b', services: ['x'] }] } })).toHaveLength(
      1,
    );
    expect(
      bad({
        listener: {},
        credentials: { identities: [{ spiffe: 'spiffe://a/{service}' }] },
      }),
    ).toEqual([expect.stringContaining('identities need client certificates')]);
    expect(bad({ lease: { minTtl: '10s', maxTtl: '5s' } })).toEqual([
      expect.stringContaining('maxTtl is below minTtl'),
    ]);
    expect(bad({ lease: { defaultTtl: '1h' } })).toEqual([expect.stringContaining('defaultTtl')]);
    expect(bad({ credentials: { tokens: [token, token] } })).toEqual([
      expect.stringContaining('duplicate token'),
    ]);
  });
});

describe('the shipped registry example', () => {
  const file = fileURLToPath(new URL('../../../config/examples/registry.yaml', import.meta.url));
  const validate = async () => {
    const lines: string[] = [];
    const code = await runValidate(file, { stdout: (l) => lines.push(l), stderr: (l) => lines.push(l) });
    return { code, lines };
  };

  it('is valid once its token is in the environment, and says which variable is missing otherwise', async () => {
    delete process.env.REGISTRY_DEPLOYER_TOKEN;
    const missing = await validate();
    expect(missing.code).toBe(2);
    expect(missing.lines.join('\n')).toMatch(
      /registry\.credentials\.tokens: .*REGISTRY_DEPLOYER_TOKEN is not set/,
    );
    process.env.REGISTRY_DEPLOYER_TOKEN = 'an-example-token-0123456789';
    try {
      expect(await validate()).toEqual({ code: 0, lines: [`ok: ${file}`] });
    } finally {
      delete process.env.REGISTRY_DEPLOYER_TOKEN;
    }
  });
});
