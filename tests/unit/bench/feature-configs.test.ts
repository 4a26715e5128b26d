import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  inboundSidecarConfig,
  MESH_CALLER,
  MESH_DESTINATION,
  meshConfigYaml,
  meshIdentity,
  meshProtocolFromEnv,
  outboundSidecarConfig,
} from '../../../bench/lib/mesh-config.ts';
import { ACCURACY_POLICY, accuracyConfigYaml, TRIAL_HEADER } from '../../../bench/lib/ratelimit-config.ts';
import {
  REGISTRY_TOKEN_ENV,
  registryGatewayConfig,
  registryGatewayYaml,
} from '../../../bench/lib/registry-config.ts';
import { ConfigSchema, crossCheck } from '../../../src/config/schema.ts';

const ports = { listenPort: 18080, adminPort: 18081 };
const files = { cert: '/tmp/b/tls.crt', key: '/tmp/b/tls.key', ca: '/tmp/b/ca.crt' };
const common = { adminPort: 18081, registryUrl: 'http://127.0.0.1:18090', files };

function valid(input: unknown) {
  const parsed = ConfigSchema.safeParse(input);
  expect(parsed.error?.issues ?? []).toEqual([]);
  expect(crossCheck(input as Parameters<typeof crossCheck>[0])).toEqual([]);
  return parsed.data!;
}

describe('registry bench gateways', () => {
  it.each(['memory', 'redis'] as const)(
    '%s store: a valid config with an upstream and route per service',
    (store) => {
      const cfg = valid(
        parse(
          registryGatewayYaml({
            ...ports,
            port: 18082,
            store,
            redisUrl: 'redis://127.0.0.1:18083',
            keyPrefix: 'bench-x:',
            services: ['hb-*'],
            upstreams: ['hb-0', 'hb-1'],
            keepAliveTimeout: '30s',
            rateLimit: { perSecond: 100_000, burst: 100_000 },
            maxInstancesPerService: 1000,
          }),
        ),
      );
      expect(cfg.registry?.store).toBe(store);
      expect(cfg.registry?.listener?.keepAliveTimeout).toBe(30_000);
      expect(cfg.registry?.credentials.tokens[0]).toMatchObject({
        env: REGISTRY_TOKEN_ENV,
        services: ['hb-*'],
      });
      expect(cfg.registry?.rateLimit).toEqual({ perSecond: 100_000, burst: 100_000 });
      expect(cfg.registry?.addresses.allowLoopback).toBe(false);
      expect(cfg.upstreams['hb-1']!.discovery).toMatchObject({ registry: 'hb-1', filter: {} });
      expect(cfg.routes.map((r) => [r.match.path, r.upstream])).toEqual([
        ['/hb-0', 'hb-0'],
        ['/hb-1', 'hb-1'],
      ]);
      if (store === 'redis') expect(cfg.redis?.keyPrefix).toBe('bench-x:');
      else expect(cfg.redis).toBeUndefined();
    },
  );

  it('a follower without the registration API, and a Redis store without its Redis refused', () => {
    const follower = valid(
      registryGatewayConfig({ ...ports, store: 'memory', services: ['s'], upstreams: ['s'] }),
    );
    expect(follower.registry?.listener).toBeUndefined();
    expect(() =>
      registryGatewayConfig({ ...ports, store: 'redis', services: ['s'], upstreams: ['s'] }),
    ).toThrow(/redisUrl/);
  });
});

describe('rate-limit accuracy gateways', () => {
  it('count every request in Redis, by the trial header, refusing a request without it', () => {
    const cfg = valid(
      parse(
        accuracyConfigYaml({
          ...ports,
          upstreamOrigin: 'http://127.0.0.1:18084',
          redisUrl: 'redis://127.0.0.1:18083',
          points: 100,
          windowS: 2,
          replicas: 2,
        }),
      ),
    );
    expect(cfg.routes[0]!.policies).toEqual([ACCURACY_POLICY]);
    expect(cfg.policies[ACCURACY_POLICY]).toMatchObject({
      kind: 'rate_limit',
      limits: [{ points: 100, duration: 2 }],
      limitBy: [`header:${TRIAL_HEADER}`],
      ifMissing: 'reject',
      store: { type: 'redis', replicas: 2 },
    });
  });
});

describe('mesh bench sidecars', () => {
  it('the inbound sidecar: mTLS required, only the caller allowed, the upstream as its app', () => {
    const cfg = valid(
      parse(
        meshConfigYaml(
          'inbound',
          inboundSidecarConfig({ ...common, inboundPort: 18082, app: 'http://127.0.0.1:18083' }),
        ),
      ),
    );
    expect(cfg.mode).toBe('sidecar');
    const inbound = cfg.listeners.find((l) => l.name === 'inbound')!;
    expect(inbound.address).toBe('127.0.0.1:18082');
    expect(inbound.tls).toMatchObject({ clientAuth: 'required', clientCa: files.ca, cert: files.cert });
    expect(cfg.routes.find((r) => r.name === 'inbound')?.identity?.allow).toEqual([
      meshIdentity(MESH_CALLER),
    ]);
    expect(cfg.upstreams.inbound!.endpoints).toEqual(['http://127.0.0.1:18083']);
    expect(cfg.sidecar?.registry.token).toEqual({ env: REGISTRY_TOKEN_ENV });
    expect(cfg.telemetry.accessLog.enabled).toBe(false);
    expect(cfg.telemetry.tracing.exporter).toBe('none');
  });

  it('the outbound sidecar: Host bench goes to the registered instances over mTLS, identity checked', () => {
    const cfg = valid(outboundSidecarConfig({ ...common, outboundPort: 18084 }));
    expect(cfg.listeners.map((l) => [l.name, l.address])).toEqual([['outbound', '127.0.0.1:18084']]);
    const up = cfg.upstreams[`outbound.${MESH_DESTINATION}`]!;
    expect(up.discovery).toMatchObject({ registry: MESH_DESTINATION });
    expect(up.tls).toMatchObject({ ca: files.ca, cert: files.cert, key: files.key });
    expect(up.tls?.identity?.expectPattern).toBe('spiffe://bench.local/ns/*/sa/{service}');
    expect(cfg.routes.map((r) => r.match.host)).toContain(MESH_DESTINATION);
    expect(meshIdentity(MESH_DESTINATION)).toBe('spiffe://bench.local/ns/bench/sa/bench');
    // No policy of its own unless asked: the destination gets the upstream defaults.
    expect(up.protocol).toBe('http1');
    expect(
      outboundSidecarConfig({ ...common, outboundPort: 18084, upstream: {} }).sidecar,
    ).not.toHaveProperty('outbound.upstream');
  });

  it('BENCH_MESH_PROTOCOL=h2: the hop speaks HTTP/2; http1 by default; anything else refused', () => {
    expect(meshProtocolFromEnv({})).toEqual({});
    expect(meshProtocolFromEnv({ BENCH_MESH_PROTOCOL: 'http1' })).toEqual({});
    expect(() => meshProtocolFromEnv({ BENCH_MESH_PROTOCOL: 'h3' })).toThrow(/http1 or h2, not "h3"/);
    const upstream = meshProtocolFromEnv({ BENCH_MESH_PROTOCOL: 'h2' });
    const cfg = valid(outboundSidecarConfig({ ...common, outboundPort: 18084, upstream }));
    expect(cfg.upstreams[`outbound.${MESH_DESTINATION}`]!.protocol).toBe('h2');
  });
});
