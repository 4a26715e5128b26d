import { describe, expect, it } from 'vitest';
import { mintBenchJwt } from '../../../bench/lib/credentials.ts';
import { PEREGRINE_PROFILES, peregrineConfig } from '../../../bench/lib/peregrine-config.ts';
import { wrkArgs } from '../../../bench/lib/wrk.ts';
import { ConfigSchema, crossCheck } from '../../../src/config/schema.ts';

const base = { listenPort: 18080, adminPort: 18081, upstreamOrigin: 'http://127.0.0.1:18082' };

describe('bench Peregrine configs', async () => {
  const jwt = await mintBenchJwt();
  const extras = {
    otlpEndpoint: 'http://127.0.0.1:18083',
    jwt,
    tls: { certFile: '/tmp/bench-cert.pem', keyFile: '/tmp/bench-key.pem' },
    redisUrl: 'redis://127.0.0.1:18084',
  };

  it.each(PEREGRINE_PROFILES)('%s is a valid Peregrine config', (profile) => {
    const input = peregrineConfig({ profile, ...base, ...extras });
    const parsed = ConfigSchema.safeParse(input);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(crossCheck(input)).toEqual([]);
  });

  it('lean turns the resilience layer off; passthrough keeps the defaults', () => {
    const lean = ConfigSchema.parse(peregrineConfig({ profile: 'lean', ...base })).upstreams.bench!;
    expect(lean.balancer.kind).toBe('round_robin');
    expect(lean.retries.maxAttempts).toBe(1);
    expect(lean.circuitBreaker.enabled).toBe(false);
    expect(lean.outlierDetection.enabled).toBe(false);
    const pass = ConfigSchema.parse(peregrineConfig({ profile: 'passthrough', ...base })).upstreams.bench!;
    expect(pass.balancer.kind).toBe('peak_ewma');
    expect(pass.retries.maxAttempts).toBeGreaterThan(1);
    expect(pass.circuitBreaker.enabled).toBe(true);
    expect(pass.outlierDetection.enabled).toBe(true);
  });

  it('jwt requires a token from an inline ES256 key set with issuer and audience', () => {
    const cfg = ConfigSchema.parse(peregrineConfig({ profile: 'jwt', ...base, jwt }));
    expect(cfg.routes[0]!.auth?.mode).toBe('required');
    const p = cfg.auth.providers.bench!;
    expect(p.algorithms).toEqual(['ES256']);
    expect(p.issuer).toBe(jwt.issuer);
    expect(p.audiences).toEqual([jwt.audience]);
    expect(p.jwks?.keys[0]).not.toHaveProperty('d');
    expect(p.jwksUri).toBeUndefined();
  });

  it('https puts TLS on the listener, and only there', () => {
    const https = ConfigSchema.parse(peregrineConfig({ profile: 'https', ...base, ...extras }));
    expect(https.listeners[0]!.tls?.cert).toBe('/tmp/bench-cert.pem');
    const plain = ConfigSchema.parse(peregrineConfig({ profile: 'passthrough', ...base, ...extras }));
    expect(plain.listeners[0]!.tls).toBeUndefined();
  });

  it('ratelimit counts every request of its route with a limit it never reaches, in memory or in Redis', () => {
    for (const profile of ['ratelimit', 'ratelimit-redis'] as const) {
      const cfg = ConfigSchema.parse(peregrineConfig({ profile, ...base, ...extras }));
      expect(cfg.routes[0]!.policies).toEqual(['bench']);
      const policy = cfg.policies.bench as unknown as {
        limits: { points: number }[];
        store: { type: string };
      };
      expect(policy.limits[0]!.points).toBeGreaterThanOrEqual(1_000_000_000);
      expect(policy.store.type).toBe(profile === 'ratelimit' ? 'memory' : 'redis');
    }
  });

  it('refuses a profile without what it needs', () => {
    expect(() => peregrineConfig({ profile: 'jwt', ...base })).toThrow(/jwt/);
    expect(() => peregrineConfig({ profile: 'https', ...base })).toThrow(/tls/);
    expect(() => peregrineConfig({ profile: 'ratelimit-redis', ...base })).toThrow(/redisUrl/);
  });
});

describe('wrkArgs', () => {
  it('passes headers with -H before the URL', () => {
    const args = wrkArgs('https://127.0.0.1:1/', {
      durationS: 5,
      connections: 50,
      headers: { authorization: 'Bearer abc.def.ghi' },
    });
    expect(args).toEqual([
      '-t1',
      '-c50',
      '-d5s',
      '--timeout',
      '5s',
      '-H',
      'authorization: Bearer abc.def.ghi',
      '--latency',
      'https://127.0.0.1:1/',
    ]);
  });

  it('sends no -H without headers', () => {
    expect(wrkArgs('http://x/', { durationS: 1, connections: 1 })).not.toContain('-H');
  });
});
