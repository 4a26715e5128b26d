import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  inboundSidecarConfig,
  MESH_CALLER,
  MESH_DESTINATION,
  meshConfigYaml,
  meshIdentity,
  outboundSidecarConfig,
} from '../../../bench/lib/mesh-config.ts';
import { REGISTRY_TOKEN_ENV } from '../../../bench/lib/registry-config.ts';
import { ConfigSchema, crossCheck } from '../../../src/config/schema.ts';

const files = { cert: '/tmp/b/tls.crt', key: '/tmp/b/tls.key', ca: '/tmp/b/ca.crt' };
const common = { adminPort: 18081, registryUrl: 'http://127.0.0.1:18090', files };

function valid(input: unknown) {
  const parsed = ConfigSchema.safeParse(input);
  expect(parsed.error?.issues ?? []).toEqual([]);
  expect(crossCheck(input as Parameters<typeof crossCheck>[0])).toEqual([]);
  return parsed.data!;
}

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
  });
});
