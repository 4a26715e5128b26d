/**
 * The Peregrine config the bench runs: one listener, one route `/` (prefix) to the bench upstream.
 * Metrics are always on in Peregrine (there is no switch), so every profile pays for them.
 *
 * - passthrough: access log off, tracing export off; the upstream's resilience policy at its
 *   defaults (peak-EWMA balancer, retries with a budget, circuit breaker, outlier detection).
 * - lean: passthrough with the resilience layer off (round robin, one attempt, no breaker, no
 *   outlier detection), to price that layer.
 * - jwt: passthrough whose route requires a JWT (ES256, inline JWKS, issuer and audience checked).
 * - https: passthrough on a TLS listener.
 * - observed: access log on, OTLP trace export at 10%.
 * - ratelimit: passthrough whose route has a rate limit policy (memory counters, keyed by client
 *   address) whose limit the bench never reaches: the price of counting, not of refusing.
 * - ratelimit-redis: the same with the counters in a local Redis (`redisUrl`).
 */
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.ts';

export const PEREGRINE_PROFILES = [
  'passthrough',
  'lean',
  'jwt',
  'https',
  'observed',
  'ratelimit',
  'ratelimit-redis',
] as const;
export type PeregrineProfile = (typeof PEREGRINE_PROFILES)[number];

export interface BenchJwtProvider {
  /** The public JWK (with kid) that verifies the bench token. */
  publicJwk: Record<string, unknown>;
  issuer: string;
  audience: string;
}

export interface PeregrineConfigOptions {
  profile: PeregrineProfile;
  listenPort: number;
  adminPort: number;
  upstreamOrigin: string;
  /** OTLP/HTTP base endpoint of the bench sink (observed only). */
  otlpEndpoint?: string;
  /** The token issuer (jwt only). */
  jwt?: BenchJwtProvider;
  /** PEM files of the listener's certificate and key (https only). */
  tls?: { certFile: string; keyFile: string };
  /**
   * The upstream's endpoints, when not just `upstreamOrigin` (a wide upstream: bench/peers/wide-upstream.ts),
   * and settings merged into its policy (e.g. `healthCheck`, `balancer`).
   */
  endpoints?: readonly string[];
  upstream?: Record<string, unknown>;
  /** The Redis the counters live in (ratelimit-redis only). */
  redisUrl?: string;
}

/** Far above what the bench drives in a second: every request is counted, none refused. */
const UNREACHED_LIMIT = 1_000_000_000;

/** Resilience layer off: what `lean` sets on the upstream (the other profiles keep the defaults). */
export const RESILIENCE_OFF = {
  balancer: { kind: 'round_robin' },
  retries: { maxAttempts: 1 },
  circuitBreaker: { enabled: false },
  outlierDetection: { enabled: false },
} as const;

export function peregrineConfig(o: PeregrineConfigOptions): ConfigInput {
  const observed = o.profile === 'observed';
  if (observed && !o.otlpEndpoint) throw new Error('observed profile needs otlpEndpoint');
  if (o.profile === 'jwt' && !o.jwt) throw new Error('jwt profile needs jwt');
  if (o.profile === 'https' && !o.tls) throw new Error('https profile needs tls');
  if (o.profile === 'ratelimit-redis' && !o.redisUrl)
    throw new Error('ratelimit-redis profile needs redisUrl');
  const rateLimited = o.profile === 'ratelimit' || o.profile === 'ratelimit-redis';
  const listener: NonNullable<ConfigInput['listeners']>[number] = {
    name: 'bench',
    address: `127.0.0.1:${o.listenPort}`,
  };
  if (o.profile === 'https' && o.tls) {
    // No file watching: the cert does not change during a run.
    listener.tls = { cert: o.tls.certFile, key: o.tls.keyFile, watch: false };
  }
  const config: ConfigInput = {
    listeners: [listener],
    admin: { address: `127.0.0.1:${o.adminPort}` },
    telemetry: {
      serviceName: `peregrine-bench-${o.profile}`,
      logLevel: 'info',
      tracing: observed
        ? { exporter: 'otlp', endpoint: o.otlpEndpoint, sampleRatio: 0.1 }
        : { exporter: 'none', sampleRatio: 0 },
      accessLog: { enabled: observed },
    },
    // No file watching, and a short drain so stopping between runs is quick.
    lifecycle: { watchConfig: false, drainTimeout: '1s' },
    upstreams: {
      bench: {
        endpoints: o.endpoints === undefined ? [o.upstreamOrigin] : [...o.endpoints],
        ...(o.profile === 'lean' ? RESILIENCE_OFF : {}),
        ...o.upstream,
      },
    },
    routes: [
      {
        name: 'all',
        match: { path: '/' },
        upstream: 'bench',
        ...(o.profile === 'jwt' ? { auth: { mode: 'required' as const, providers: ['bench'] } } : {}),
        ...(rateLimited ? { policies: ['bench'] } : {}),
      },
    ],
  };
  if (rateLimited) {
    config.policies = {
      bench: {
        kind: 'rate_limit',
        limits: [{ points: UNREACHED_LIMIT, duration: '1s' }],
        ...(o.profile === 'ratelimit-redis' ? { store: { type: 'redis', replicas: 1 } } : {}),
      },
    } as ConfigInput['policies'];
  }
  if (o.profile === 'ratelimit-redis') config.redis = { url: o.redisUrl, keyPrefix: 'peregrine-bench:' };
  if (o.profile === 'jwt' && o.jwt) {
    config.auth = {
      providers: {
        bench: {
          issuer: o.jwt.issuer,
          audiences: [o.jwt.audience],
          algorithms: ['ES256'],
          jwks: { keys: [o.jwt.publicJwk] },
        },
      },
    };
  }
  return config;
}

export function peregrineConfigYaml(o: PeregrineConfigOptions): string {
  return `# Generated by bench/lib/peregrine-config.ts (${o.profile})\n${stringify(peregrineConfig(o))}`;
}
