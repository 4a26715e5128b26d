/**
 * Configuration of an upstream's endpoints and resilience policy: balancer, retries, circuit
 * breaker, outlier detection, bulkhead and active health checks. Imported by UpstreamSchema in
 * src/config/schema.ts; every default lives here. docs/configuration.md lists each key and
 * docs/resilience.md explains the model.
 */
import { z } from 'zod';
import { duration, size } from '../../config/fields.ts';

const percent = (fallback: number) => z.number().min(0).max(100).default(fallback);
const httpStatus = z.number().int().min(100).max(599);

const endpointUrl = z
  .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL, e.g. http://10.0.0.5:8080' })
  .meta({ description: 'Endpoint origin, e.g. http://10.0.0.5:8080' });

/** An endpoint: its origin as a string (weight 1), or `{ url, weight, zone, metadata }`. */
export const EndpointSchema = z.union(
  [
    endpointUrl,
    z.strictObject({
      url: endpointUrl,
      /** Relative share of traffic for weighted balancers (and of the ring for consistent hashing). */
      weight: z.number().int().min(1).max(1000).default(1),
      /** Where it runs (shown by the admin API). */
      zone: z.string().min(1).max(64).optional(),
      /** Labels shown by the admin API; discovery sources carry theirs the same way. */
      metadata: z
        .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/, 'a metadata key'), z.string().max(256))
        .optional(),
    }),
  ],
  { error: 'expected an endpoint URL or { url, weight, zone, metadata }' },
);

function originOf(endpoint: z.output<typeof EndpointSchema>): string | undefined {
  try {
    return new URL(typeof endpoint === 'string' ? endpoint : endpoint.url).origin;
  } catch {
    return undefined;
  }
}

export const EndpointsSchema = z
  .array(EndpointSchema)
  .min(1, 'an upstream needs at least one endpoint')
  .superRefine((list, ctx) => {
    // The origin is the endpoint's identity (pool, metrics label, ring position).
    const seen = new Set<string>();
    list.forEach((e, i) => {
      const origin = originOf(e);
      if (origin === undefined) return;
      if (seen.has(origin))
        ctx.addIssue({ code: 'custom', path: [i], message: `duplicate endpoint ${origin}` });
      seen.add(origin);
    });
  });

/** Where consistent hashing takes its key. A request without the key goes to a random endpoint. */
export const HashOnSchema = z.discriminatedUnion('source', [
  z.strictObject({ source: z.literal('header'), name: z.string().regex(/^[A-Za-z0-9-]+$/) }),
  z.strictObject({ source: z.literal('cookie'), name: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/) }),
  z.strictObject({ source: z.literal('client_address') }),
]);

const balancerCommon = {
  /**
   * Percent of endpoints that must be eligible (healthy and not ejected); below it the balancer
   * spreads over every endpoint instead of overloading the few left. 0 disables panic mode.
   */
  panicThreshold: percent(50),
};

/**
 * Subsetting for wide upstreams (Finagle's deterministic aperture): each gateway replica balances
 * over a window of the upstream's endpoints rather than all of them, so it holds connections to
 * few, keeps them warm, and the replicas together cover the set (docs/resilience.md#aperture).
 */
export const ApertureSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Endpoints a replica balances over at least; every endpoint when the upstream has no more. */
  minEndpoints: z.number().int().min(1).max(100_000).default(12),
  /**
   * Attempts in flight per endpoint in use above which the window widens; it narrows again when
   * the peak of 30 s would fit in two thirds of it.
   */
  maxLoad: z.number().positive().max(10_000).default(4),
});

/**
 * This process among the gateway replicas that share its upstreams (static): replica `index` of
 * `count` takes window `index` of each upstream's ring, so together they cover every endpoint.
 * Absent: a position from a hash of the host name and process id, and no coverage guarantee.
 */
export const ReplicaSchema = z
  .strictObject({
    index: z.number().int().min(0),
    count: z.number().int().min(1).max(100_000),
  })
  .refine((r) => r.index < r.count, { message: 'index must be below count', path: ['index'] });

/** The default balancer kind; chosen by bench/micro/balancers.ts (see docs/resilience.md). */
export const DEFAULT_BALANCER = 'peak_ewma';

/** Consistent hashing has none: every replica must map a key to the same endpoint. */
const withAperture = { aperture: ApertureSchema.prefault({}) };

export const BalancerSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('least_request'), ...balancerCommon, ...withAperture }),
  z.strictObject({ kind: z.literal('round_robin'), ...balancerCommon, ...withAperture }),
  z.strictObject({
    kind: z.literal('peak_ewma'),
    ...balancerCommon,
    ...withAperture,
    /** Time constant of the latency average's decay. */
    decay: duration('10s'),
    /** Latency assumed for an endpoint before its first response. */
    defaultRtt: duration('30ms'),
  }),
  z.strictObject({ kind: z.literal('consistent_hash'), ...balancerCommon, hashOn: HashOnSchema }),
]);

export const RETRY_CONDITIONS = ['connect-failure', 'refused', 'reset', 'timeout'] as const;

export const RetrySchema = z.strictObject({
  /** Attempts per request, the first included; 1 disables retries. */
  maxAttempts: z.number().int().min(1).max(10).default(2),
  /**
   * Failures that may be retried. connect-failure: no connection (refused, unreachable, DNS,
   * connect timeout); refused: the connection closed before the request was written; reset: the
   * connection failed after the request was sent, before a response head; timeout: no response
   * head within `timeouts.response`.
   */
  retryOn: z.array(z.enum(RETRY_CONDITIONS)).default(['connect-failure', 'refused', 'reset']),
  /** Upstream statuses that are retried (idempotent requests only), e.g. [502, 503, 504]. */
  statuses: z.array(httpStatus).default([]),
  backoff: z
    .strictObject({
      /** First retry waits up to this (full jitter: uniformly between 0 and the bound). */
      base: duration('25ms'),
      /** The bound doubles per retry up to this. */
      max: duration('250ms'),
    })
    .prefault({}),
  /** A Retry-After longer than this is not waited for: the upstream's answer goes to the client. */
  maxRetryAfter: duration('3s'),
  /** Request bodies up to this size may be buffered so the request can be replayed; 0: never. */
  bufferBody: size('64KiB'),
  budget: z
    .strictObject({
      /** Retries allowed per request over the window, e.g. 0.2: one retry per five requests. */
      ratio: z.number().min(0).max(10).default(0.2),
      /** Retries always allowed per second, whatever the request rate. */
      minRetriesPerSecond: z.number().min(0).default(3),
      window: duration('10s'),
    })
    .prefault({}),
});

export const CircuitBreakerSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Open after this many consecutive failed attempts; 0 disables this trigger. */
  consecutiveFailures: z.number().int().min(0).default(5),
  /** Open when at least this share of attempts in the window failed; 0 disables this trigger. */
  failureRatio: z.number().min(0).max(1).default(0.5),
  /** Attempts the window must hold before the ratio is judged. */
  minimumRequests: z.number().int().min(1).default(20),
  window: duration('10s'),
  /** First open period; doubles on each trip that follows closely on the last. */
  openDuration: duration('5s'),
  maxOpenDuration: duration('60s'),
  /** Attempts admitted while half-open; all must succeed to close. */
  halfOpenProbes: z.number().int().min(1).max(100).default(1),
  /** Upstream statuses counted as failures, besides attempts that got no response. */
  failureStatuses: z.array(httpStatus).default([502, 503, 504]),
});

export const OutlierDetectionSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Eject after this many consecutive gateway errors (no response, 502, 503, 504); 0 disables. */
  consecutiveGatewayErrors: z.number().int().min(0).default(5),
  /** Eject after this many consecutive 5xx (any 5xx, or no response); 0 disables. */
  consecutive5xx: z.number().int().min(0).default(0),
  /** An ejection lasts this times the endpoint's ejection count. */
  baseEjectionTime: duration('30s'),
  maxEjectionTime: duration('300s'),
  /** Never eject more than this percent of the upstream's endpoints. */
  maxEjectionPercent: percent(50),
});

export const BulkheadSchema = z.strictObject({
  /** Requests in flight to the upstream at once; 0: unlimited (the bulkhead is off). */
  maxConcurrent: z.number().int().min(0).default(0),
  /** Requests that may wait for a slot; more get 503 UPSTREAM_OVERLOADED. */
  maxQueued: z.number().int().min(0).default(0),
  /** A queued request waits at most this long. */
  queueTimeout: duration('1s'),
});

/** `200`, or an inclusive range such as `200-399`. */
const statusOrRange = z.union([
  httpStatus,
  z
    .string()
    .regex(/^[1-5]\d\d-[1-5]\d\d$/, 'expected a status or a range such as 200-399')
    .refine((r) => Number(r.slice(0, 3)) <= Number(r.slice(4)), 'range is reversed'),
]);

export const HealthCheckSchema = z.strictObject({
  path: z.string().startsWith('/', 'path must start with /').default('/healthz'),
  /** How often an endpoint in use is checked (one in the aperture's window, or any without one). */
  interval: duration('10s'),
  /**
   * How often an endpoint not in use (outside the aperture's window) is checked; never more often
   * than `interval`. Envoy's no-traffic interval: a replica need not watch closely what it does not use.
   */
  idleInterval: duration('60s'),
  /**
   * At most this many checks a second of endpoints not in use, per upstream: past
   * idleChecksPerSecond × idleInterval of them (600), each is checked less often, so the sweep's
   * cost stops growing with the set.
   */
  idleChecksPerSecond: z.number().positive().max(10_000).default(10),
  timeout: duration('1s'),
  /** Consecutive passing checks that make an unhealthy endpoint healthy. */
  healthyThreshold: z.number().int().min(1).default(2),
  /** Consecutive failing checks that make a healthy endpoint unhealthy. */
  unhealthyThreshold: z.number().int().min(1).default(3),
  expectedStatuses: z.array(statusOrRange).min(1).default(['200-399']),
  /** Each wait is the interval times a random factor in [1 - jitter, 1 + jitter]. */
  jitter: z.number().min(0).max(1).default(0.1),
});

/** The resilience keys of UpstreamSchema, spread into it. */
export const upstreamPolicyShape = {
  balancer: BalancerSchema.prefault({ kind: DEFAULT_BALANCER }),
  retries: RetrySchema.prefault({}),
  circuitBreaker: CircuitBreakerSchema.prefault({}),
  outlierDetection: OutlierDetectionSchema.prefault({}),
  bulkhead: BulkheadSchema.prefault({}),
  /** Absent: no active health checks. */
  healthCheck: HealthCheckSchema.optional(),
};

export type EndpointSpec = z.output<typeof EndpointSchema>;
export type BalancerConfig = z.output<typeof BalancerSchema>;
export type BalancerKind = BalancerConfig['kind'];
export type HashOnConfig = z.output<typeof HashOnSchema>;
export type ApertureConfig = z.output<typeof ApertureSchema>;
export type ReplicaConfig = z.output<typeof ReplicaSchema>;
export type RetryConfig = z.output<typeof RetrySchema>;
export type RetryCondition = (typeof RETRY_CONDITIONS)[number];
export type CircuitBreakerConfig = z.output<typeof CircuitBreakerSchema>;
export type OutlierDetectionConfig = z.output<typeof OutlierDetectionSchema>;
export type BulkheadConfig = z.output<typeof BulkheadSchema>;
export type HealthCheckConfig = z.output<typeof HealthCheckSchema>;
