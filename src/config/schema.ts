/**
 * The configuration schema: one source for validation, TypeScript types, defaults and the JSON
 * Schema printed by `peregrine schema`. Static parts (listeners, admin, telemetry, lifecycle) are
 * read once at start; dynamic parts (upstreams, routes) are compiled into a Snapshot and may be
 * reloaded. Defaults live here and nowhere else.
 */
import { z } from 'zod';
import { AdminSchema } from '../admin/schema.ts';
import { RouteIdentitySchema } from '../dataplane/filters/identity/schema.ts';
import { AuthSchema, RouteAuthSchema } from '../dataplane/filters/jwt/schema.ts';
import { checkPolicies, PolicySchema } from '../dataplane/filters/policy-schema.ts';
import { Http2Schema } from '../dataplane/listener/http2-schema.ts';
import { compileRoutePath } from '../dataplane/routing/route-path.ts';
import {
  EndpointsSchema,
  PoolSchema,
  ReplicaSchema,
  TimeoutsSchema,
  upstreamPolicyShape,
} from '../dataplane/upstream/policy-schema.ts';
import { checkEndpointSource, DiscoverySchema } from '../discovery/schema.ts';
import { checkRegistry, RegistrySchema } from '../registry/schema.ts';
import { deriveSidecar } from '../sidecar/derive.ts';
import { checkMode, MODES, type SidecarConfig, SidecarSchema } from '../sidecar/schema.ts';
import { RedisSchema } from '../stores/schema.ts';
import { LATENCY_BUCKETS } from '../telemetry/latency-buckets.ts';
import { checkUpstreamTransport, TlsSchema, UPSTREAM_PROTOCOLS, UpstreamTlsSchema } from '../tls/schema.ts';
import { address, cidr, duration, isRecord, name, size } from './fields.ts';
import { HTTP_METHODS } from './http-methods.ts';

export const ListenerSchema = z.strictObject({
  name,
  address,
  /** Peers whose X-Forwarded-* headers are trusted and extended rather than replaced. */
  trustedProxies: z.array(cidr).default([]),
  /**
   * Response header naming the cause of every response the gateway makes itself (problem+json):
   * the error code, e.g. `CIRCUIT_OPEN`. `false` leaves it out (the body still carries the code).
   */
  reasonHeader: z
    .union([z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'a header name'), z.literal(false)])
    .default('x-peregrine-reason'),
  limits: z
    .strictObject({
      /** Time allowed for the client to send the complete request head (slowloris bound). */
      headersTimeout: duration('10s'),
      /** Time allowed for the whole request to be received; 0 disables. */
      requestTimeout: duration('0ms'),
      /** Idle keep-alive connections are closed after this. */
      keepAliveTimeout: duration('5s'),
      /** Largest request head accepted; larger gets 431. */
      maxHeaderSize: size('16KiB'),
      /**
       * Request headers whose name contains `_`: `drop` them (default), `reject` the request with
       * 400, or `allow` them. Some upstream stacks (CGI, WSGI) fold `_` and `-` together, so
       * `X_Forwarded_For` could pose as `X-Forwarded-For` behind the gateway.
       */
      headersWithUnderscores: z.enum(['drop', 'reject', 'allow']).default('drop'),
    })
    .prefault({}),
  /** TLS (and mTLS) on this listener; absent: plain HTTP/1.1. docs/security.md. */
  tls: TlsSchema.optional(),
  /** HTTP/2 offered over TLS (ALPN h2); ignored on a plain listener. */
  http2: Http2Schema.prefault({}),
});

/** `telemetry.serviceName` when none is set (mode sidecar: `<service>-sidecar`). */
export const DEFAULT_SERVICE_NAME = 'peregrine';

export const TracingSchema = z.strictObject({
  exporter: z.enum(['none', 'otlp', 'console']).default('none'),
  /** OTLP/HTTP base endpoint; `/v1/traces` is appended. OTEL_EXPORTER_OTLP_ENDPOINT overrides. */
  endpoint: z.url().default('http://127.0.0.1:4318'),
  /** Root sampling ratio for requests without a sampled parent (parent-based). */
  sampleRatio: z.number().min(0).max(1).default(0.1),
  /**
   * Put the process's command line on the trace resource (`process.command_args`). Off: a command
   * line can carry secrets.
   */
  commandArgs: z.boolean().default(false),
  /**
   * A trace backend's page for one trace, with `{traceId}` where the id goes (Jaeger:
   * `http://jaeger:16686/trace/{traceId}`): the status page links each local decision to it.
   */
  uiUrl: z
    .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
    .refine((u) => u.includes('{traceId}'), 'the URL needs {traceId} where the trace id goes')
    .optional(),
});

export const TelemetrySchema = z.strictObject({
  serviceName: z.string().min(1).default(DEFAULT_SERVICE_NAME),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  tracing: TracingSchema.prefault({}),
  accessLog: z.strictObject({ enabled: z.boolean().default(true) }).prefault({}),
  metrics: z
    .strictObject({
      /** Attach trace_id exemplars to latency histograms for sampled requests. */
      exemplars: z.boolean().default(true),
      /**
       * Upper bounds (seconds) of the buckets of both latency histograms. Each bucket is one
       * series per label set: fewer buckets, a cheaper scrape (docs/metrics.md, cardinality).
       */
      latencyBuckets: z
        .array(z.number().positive())
        .min(1)
        .max(64)
        .refine((b) => b.every((v, i) => i === 0 || v > b[i - 1]!), 'bucket bounds must increase')
        .default([...LATENCY_BUCKETS]),
      /**
       * Whether a route has a latency histogram of its own unless it says otherwise
       * (`routes[].metrics.histogram`). Routes without one share the `route="_other"` series.
       */
      routeHistograms: z.boolean().default(true),
      /**
       * How often the event-loop monitor samples (`peregrine_nodejs_eventloop_delay_seconds`).
       * Each sample wakes an idle process; stalls shorter than this are seen only by chance.
       */
      eventLoopResolution: duration('50ms').refine((ms) => ms >= 1 && ms <= 1000, 'between 1ms and 1s'),
    })
    .prefault({}),
});

export const LifecycleSchema = z.strictObject({
  /** How long in-flight requests may run after SIGTERM before the process exits anyway. */
  drainTimeout: duration('30s'),
  /** Watch the config file and reload on change (SIGHUP always reloads). */
  watchConfig: z.boolean().default(true),
});

const UpstreamFields = z.strictObject({
  /** Endpoint origins, each a URL string or `{ url, weight, zone, metadata }`; or `discovery`. */
  endpoints: EndpointsSchema.optional(),
  /** Endpoints from the service registry or DNS instead of `endpoints` (src/discovery/schema.ts). */
  discovery: DiscoverySchema.optional(),
  timeouts: TimeoutsSchema.prefault({}),
  pool: PoolSchema.prefault({}),
  /** balancer, retries, circuitBreaker, outlierDetection, bulkhead, healthCheck. */
  ...upstreamPolicyShape,
  /**
   * Named policies (top-level `policies`) asked at admission, in order, for every request and
   * WebSocket handshake to this upstream from any route: rate ceilings (`rate_limit`).
   */
  policies: z.array(name).optional(),
  /** TLS toward `https://` endpoints: trust, client certificate, server name, expected identity. */
  tls: UpstreamTlsSchema.optional(),
  /** What the connections speak (ALPN over TLS): http1, h2 or auto. */
  protocol: z.enum(UPSTREAM_PROTOCOLS).default('http1'),
});

/** An upstream: exactly one endpoint source (`endpoints` or `discovery`) and its policy. */
export const UpstreamSchema = UpstreamFields.superRefine((u, ctx) => {
  checkEndpointSource(u, ctx);
  checkUpstreamTransport(u, (path, message) => ctx.addIssue({ code: 'custom', path, message }));
}).meta({
  // The JSON Schema says it too, for editors.
  oneOf: [{ required: ['endpoints'] }, { required: ['discovery'] }],
});

export const RouteMatchSchema = z.strictObject({
  /** Exact host, or a wildcard suffix `*.example.com`. Absent: any host. */
  host: z
    .string()
    .regex(/^(\*\.)?[A-Za-z0-9.-]+$/, 'host is a name or *.suffix')
    .transform((h) => h.toLowerCase())
    .optional(),
  path: z.string().startsWith('/', 'path must start with /').default('/'),
  /** exact | prefix (on segment boundaries) | template (`/users/:id`). */
  pathType: z.enum(['exact', 'prefix', 'template']).default('prefix'),
  methods: z.array(z.enum(HTTP_METHODS)).min(1).optional(),
  /** Header name → exact value. */
  headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/), z.string()).optional(),
});

/** What the route compiler would refuse: paths normalisation rejects, malformed templates. */
function checkRoutePath(match: z.output<typeof RouteMatchSchema>, ctx: z.RefinementCtx): void {
  const compiled = compileRoutePath(match.path, match.pathType);
  if (compiled.error !== undefined) ctx.addIssue({ code: 'custom', path: ['path'], message: compiled.error });
}

export const RouteSchema = z.strictObject({
  name,
  match: RouteMatchSchema.superRefine(checkRoutePath).prefault({}),
  upstream: name,
  /** Higher wins over specificity. Default 0. */
  priority: z.number().int().default(0),
  rewrite: z
    .strictObject({
      stripPrefix: z.string().startsWith('/').optional(),
      addPrefix: z.string().startsWith('/').optional(),
      /** Replace the Host header sent upstream. */
      host: z
        .string()
        .regex(/^[A-Za-z0-9.-]+(:\d+)?$/)
        .optional(),
    })
    .optional(),
  /** Send the client's Host upstream (true) or the endpoint's host (false). */
  preserveHost: z.boolean().default(true),
  limits: z
    .strictObject({
      /**
       * Largest request body; larger gets 413. A declared Content-Length is checked before the
       * upstream is contacted; a chunked body is counted as it streams and cut at the limit.
       * 0 (the default): no limit.
       */
      maxBodySize: size('0'),
    })
    .optional(),
  /** JWT authentication for this route (docs/security.md). Absent: none. A `jwt` policy inline. */
  auth: RouteAuthSchema.optional(),
  /** Verified mTLS client identities allowed on this route (docs/security.md). Absent: any client. */
  identity: RouteIdentitySchema.optional(),
  /** Named policies (top-level `policies`) run in this order, after the inline `identity` and `auth`. */
  policies: z.array(name).optional(),
  /** Served only on these listeners (by name). Absent: on every listener. */
  listeners: z.array(name).min(1).optional(),
  metrics: z
    .strictObject({
      /** A latency histogram of its own; default `telemetry.metrics.routeHistograms`. */
      histogram: z.boolean().optional(),
    })
    .optional(),
});

export const ConfigSchema = z
  .strictObject({
    /** gateway (the default) or sidecar: one service's sidecar, derived from `sidecar` (docs/mesh.md). */
    mode: z.enum(MODES).default('gateway'),
    /** Mode gateway: at least one. Mode sidecar: derived from `sidecar`, never written. */
    listeners: z.array(ListenerSchema).optional(),
    admin: AdminSchema.prefault({}),
    telemetry: TelemetrySchema.prefault({}),
    lifecycle: LifecycleSchema.prefault({}),
    /** The shared Redis connection (static). Absent: nothing uses Redis. */
    redis: RedisSchema.optional(),
    /** The service registry (static). Absent: no registry. docs/registry.md. */
    registry: RegistrySchema.optional(),
    /** This process among the gateway's replicas (static), for the aperture. docs/resilience.md#aperture. */
    replica: ReplicaSchema.optional(),
    upstreams: z.record(name, UpstreamSchema).default({}),
    routes: z.array(RouteSchema).default([]),
    /** Token issuers (dynamic: reloaded with routes). */
    auth: AuthSchema.prefault({}),
    /** Named route policies, `{ kind, ...settings }`, that routes list in `policies` (dynamic). */
    policies: z.record(name, PolicySchema).default({}),
    /** Mode sidecar: the service, its identity, inbound and outbound sides, its registry. */
    sidecar: SidecarSchema.optional(),
  })
  // The JSON Schema says what each mode needs too, for editors.
  .meta({
    if: { properties: { mode: { const: 'sidecar' } }, required: ['mode'] },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then/else, never awaited
    then: { required: ['sidecar'] },
    else: { required: ['listeners'] },
  })
  // `when`: run even if other parts of the config failed, so one pass reports every problem
  // (zod skips refinements after an aborting issue by default). Some issues (e.g. a non-integer)
  // abort explicitly and still skip it; the loader then runs crossCheck on the raw input itself.
  .superRefine(
    (cfg, ctx) => {
      for (const issue of crossCheck(cfg)) ctx.addIssue({ code: 'custom', ...issue });
    },
    { when: (payload) => isRecord(payload.value) },
  )
  .transform(withSidecarDerived);

/**
 * A sidecar's listeners, upstreams and routes, derived from its `sidecar` section (src/sidecar/),
 * so that everything after validation runs the one pipeline and /v1/config shows what it runs.
 */
function withSidecarDerived<
  C extends { mode: string; listeners?: L[] | undefined; sidecar?: SidecarConfig | undefined },
  L,
>(parsed: C): C & { listeners: L[] } {
  const cfg = { ...parsed, listeners: parsed.listeners ?? [] };
  if (cfg.mode !== 'sidecar' || cfg.sidecar === undefined) return cfg;
  const derived = deriveSidecar(cfg.sidecar, {
    listener: ListenerSchema,
    upstream: UpstreamSchema,
    route: RouteSchema,
  });
  const telemetry = (cfg as unknown as { telemetry: { serviceName: string } }).telemetry;
  return {
    ...cfg,
    ...derived,
    // Its spans are told apart from the application's, which carry the service's own name.
    telemetry:
      telemetry.serviceName === DEFAULT_SERVICE_NAME
        ? { ...telemetry, serviceName: `${cfg.sidecar.service}-sidecar` }
        : telemetry,
  };
}

export interface CrossCheckIssue {
  path: (string | number)[];
  message: string;
}

/**
 * Checks that span sections: unique listener and route names, every route's upstream exists,
 * every route's policies exist and pass their kind's checks (e.g. a JWT policy's providers exist).
 * Reads defensively, so it may run on unvalidated input too.
 */
export function crossCheck(cfg: unknown): CrossCheckIssue[] {
  if (!isRecord(cfg)) return [];
  const issues: CrossCheckIssue[] = [];
  const listeners = Array.isArray(cfg.listeners) ? cfg.listeners : [];
  const seenListeners = new Set<string>();
  listeners.forEach((l: unknown, i) => {
    if (!isRecord(l) || typeof l.name !== 'string') return;
    if (seenListeners.has(l.name))
      issues.push({ path: ['listeners', i, 'name'], message: `duplicate listener ${l.name}` });
    seenListeners.add(l.name);
  });
  checkMode(cfg, issues);
  const routes = Array.isArray(cfg.routes) ? cfg.routes : [];
  // `upstreams` absent means none; of the wrong type, references cannot be judged (no cascade).
  const upstreams = cfg.upstreams === undefined ? {} : isRecord(cfg.upstreams) ? cfg.upstreams : undefined;
  const seenRoutes = new Set<string>();
  routes.forEach((r: unknown, i) => {
    if (!isRecord(r)) return;
    if (typeof r.name === 'string') {
      if (seenRoutes.has(r.name))
        issues.push({ path: ['routes', i, 'name'], message: `duplicate route ${r.name}` });
      seenRoutes.add(r.name);
    }
    if (upstreams && typeof r.upstream === 'string' && !Object.hasOwn(upstreams, r.upstream))
      issues.push({
        path: ['routes', i, 'upstream'],
        message: `unknown upstream ${JSON.stringify(r.upstream)}`,
      });
    if (Array.isArray(r.listeners))
      r.listeners.forEach((l: unknown, j) => {
        if (typeof l === 'string' && !seenListeners.has(l))
          issues.push({
            path: ['routes', i, 'listeners', j],
            message: `unknown listener ${JSON.stringify(l)}`,
          });
      });
  });
  checkPolicies(cfg, issues);
  checkRegistry(cfg, issues);
  return issues;
}

export type ConfigInput = z.input<typeof ConfigSchema>;
export type Config = z.output<typeof ConfigSchema>;
export type ListenerConfig = Config['listeners'][number];
export type AdminConfig = Config['admin'];
export type TelemetryConfig = Config['telemetry'];
export type LifecycleConfig = Config['lifecycle'];
export type { RegistryConfig } from '../registry/schema.ts';
export type { RedisConfig } from '../stores/schema.ts';
export type UpstreamConfig = Config['upstreams'][string];
export type RouteConfig = Config['routes'][number];
export type RouteMatchConfig = RouteConfig['match'];
export type HttpMethod = (typeof HTTP_METHODS)[number];
export { HTTP_METHODS };

/** The part of the config that hot reload may change. */
export interface DynamicConfig {
  upstreams: Config['upstreams'];
  routes: Config['routes'];
  auth: Config['auth'];
  policies: Config['policies'];
}

/** The dynamic part of a config. */
export function dynamicPart(cfg: Config): DynamicConfig {
  return { upstreams: cfg.upstreams, routes: cfg.routes, auth: cfg.auth, policies: cfg.policies };
}
