/**
 * The `sidecar` section (`mode: sidecar`): a compact description of one service's sidecar, from
 * which derive.ts makes the listeners, upstreams and routes the ordinary pipeline runs.
 * docs/mesh.md explains the model; docs/configuration.md lists each key. Defaults live here.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { address, duration, name } from '../config/fields.ts';
import { HTTP_METHODS } from '../config/http-methods.ts';
import { checkSecretRef, secretRefShape } from '../config/secret-ref.ts';
import { IDENTITY_PATTERN_RE } from '../dataplane/filters/identity/schema.ts';
import { compileRoutePath } from '../dataplane/routing/route-path.ts';
import {
  BalancerSchema,
  BulkheadSchema,
  CircuitBreakerSchema,
  HealthCheckSchema,
  OutlierDetectionSchema,
  PoolSchema,
  RetrySchema,
  TimeoutsSchema,
} from '../dataplane/upstream/policy-schema.ts';
import { RegistryFilterSchema } from '../discovery/schema.ts';
import { SERVICE_NAME_RE } from '../registry/schema.ts';
import { UPSTREAM_PROTOCOLS } from '../tls/schema.ts';
import { isIdentityPattern, isTrustDomain, isWorkloadId, SERVICE_PLACEHOLDER } from '../tls/spiffe.ts';

const serviceName = z
  .string()
  .regex(
    SERVICE_NAME_RE,
    'service names use lower-case letters, digits, _ . - (at most 63, starting and ending with a letter or digit)',
  );

const pemFile = z.string().min(1, 'a file path is required');

const allowPattern = z
  .string()
  .max(2048)
  .regex(
    IDENTITY_PATTERN_RE,
    'expected a SPIFFE ID such as spiffe://prod.example/ns/shop/sa/orders, or one ending in /* for everything below it',
  );

/** Loopback: where the local application listens, and the only place the outbound listener may. */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') ? host.slice(1, -1) : host;
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1';
}

function hostOf(addr: string): string {
  return addr.slice(0, addr.lastIndexOf(':'));
}

/**
 * A section of an upstream's policy that the sidecar config may set. A section written replaces
 * the one below it whole (its own defaults fill what it leaves out); one left out is inherited.
 */
const policySections = {
  timeouts: TimeoutsSchema.optional(),
  pool: PoolSchema.optional(),
  balancer: BalancerSchema.optional(),
  retries: RetrySchema.optional(),
  circuitBreaker: CircuitBreakerSchema.optional(),
  outlierDetection: OutlierDetectionSchema.optional(),
  bulkhead: BulkheadSchema.optional(),
  healthCheck: HealthCheckSchema.optional(),
};

export const POLICY_SECTIONS = Object.keys(policySections) as (keyof typeof policySections)[];

const UpstreamPolicySchema = z.strictObject({
  ...policySections,
  /** What sidecar-to-sidecar connections speak (ALPN): http1 (default), h2 or auto. */
  protocol: z.enum(UPSTREAM_PROTOCOLS).optional(),
});

const OutboundServiceSchema = z.strictObject({
  ...policySections,
  protocol: z.enum(UPSTREAM_PROTOCOLS).optional(),
  /** Only these of the service's registered instances (zone, version, metadata). */
  filter: RegistryFilterSchema.optional(),
});

const InboundRouteSchema = z.strictObject({
  name,
  match: z
    .strictObject({
      path: z.string().startsWith('/', 'path must start with /').default('/'),
      /** exact | prefix (on segment boundaries) | template (`/users/:id`). */
      pathType: z.enum(['exact', 'prefix', 'template']).default('prefix'),
      methods: z.array(z.enum(HTTP_METHODS)).min(1).optional(),
    })
    .superRefine((m, ctx) => {
      const compiled = compileRoutePath(m.path, m.pathType);
      if (compiled.error !== undefined)
        ctx.addIssue({ code: 'custom', path: ['path'], message: compiled.error });
    })
    .prefault({}),
  /** Caller identities allowed on these paths; anyone else gets 403 IDENTITY_DENIED. */
  allow: z.array(allowPattern).min(1, 'list at least one identity pattern'),
});

const appUrl = z
  .url({
    protocol: /^http$/,
    error: 'expected the local application as an http:// URL, e.g. http://127.0.0.1:8080',
  })
  .refine((u) => {
    try {
      const url = new URL(u);
      return isLoopbackHost(url.hostname) && (url.pathname === '/' || url.pathname === '');
    } catch {
      return false;
    }
  }, 'the local application is reached on loopback (127.0.0.1, ::1, localhost), as an origin without a path');

export const SidecarInboundSchema = z.strictObject({
  /** Where mesh peers connect: mTLS, the sidecar's certificate, callers' certificates required. */
  address: address.default('0.0.0.0:15006'),
  /** The local application, on loopback. */
  app: appUrl,
  /**
   * How long an idle connection from a mesh peer stays open. Peers are other sidecars' pools,
   * which keep a connection until 2 s before this (the Keep-Alive hint): long, so that a pool's
   * less busy connections are not closed and made again, each time with a TLS handshake, while
   * the traffic goes on (the edge listener's 5 s suits clients on the internet, not pools).
   */
  keepAliveTimeout: duration('60s'),
  /** The application's readiness: the sidecar registers only once it answers 2xx. */
  readiness: z
    .strictObject({
      /** Path on the application answering 2xx when it can take requests. */
      path: z.string().startsWith('/', 'path must start with /').default('/'),
      interval: duration('1s'),
      timeout: duration('1s'),
      /** Failed probes in a row before a ready application is drained (Kubernetes' default, 3). */
      failureThreshold: z.number().int().min(1).max(100).default(3),
      /** Passed probes in a row before a not-ready application is ready (and first registered). */
      successThreshold: z.number().int().min(1).max(100).default(1),
    })
    .prefault({}),
  /** Caller identities allowed on every path (routes may say otherwise). Default: the whole trust domain. */
  allow: z.array(allowPattern).min(1, 'list at least one identity pattern').optional(),
  /** Paths whose callers differ from `allow`: each its own allow-list. */
  routes: z.array(InboundRouteSchema).max(1000).default([]),
  /** Policy of the connection to the local application (no retries, breaker or ejection by default). */
  upstream: UpstreamPolicySchema.optional(),
});

export const SidecarOutboundSchema = z.strictObject({
  /** Where the local application sends its requests (as to an HTTP proxy). Loopback only. */
  address: address.default('127.0.0.1:15001'),
  /**
   * A destination is named by Host: `orders` or `orders.<domain>`. `false`: the short name only.
   */
  domain: z
    .union([
      z
        .string()
        .regex(
          /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/,
          'a DNS suffix such as mesh or svc.cluster.local',
        ),
      z.literal(false),
    ])
    .default('mesh'),
  /**
   * The services the application may call: names, or name → the policy sections that differ for
   * that service and a registry filter. Any other Host gets 404 ROUTE_NOT_FOUND.
   */
  services: z
    .union([z.array(serviceName).max(1000), z.record(serviceName, OutboundServiceSchema)])
    .default([]),
  /** Policy of every destination (resilience, timeouts, pool, protocol); services may override sections. */
  upstream: UpstreamPolicySchema.optional(),
});

const TokenRefSchema = z.strictObject(secretRefShape).superRefine(checkSecretRef);

export const SidecarRegistrySchema = z
  .strictObject({
    /** The registration API, e.g. https://registry.mesh.internal:9902. */
    url: z.url({ protocol: /^https?$/, error: 'expected the registration API as an http(s):// URL' }),
    /** The registry's SPIFFE ID, verified instead of a host name (its chain against identity.ca). */
    identity: z
      .string()
      .refine(
        isWorkloadId,
        'expected a SPIFFE ID with a path, e.g. spiffe://prod.example/ns/mesh/sa/registry',
      )
      .optional(),
    /** Sent as SNI and checked against the registry's certificate when `identity` is absent. */
    serverName: z.string().min(1).max(253).optional(),
    /**
     * A bearer token instead of the sidecar's certificate (by reference: env or file). Without
     * it the sidecar authenticates with its SPIFFE identity (mTLS).
     */
    token: TokenRefSchema.optional(),
    /** The address registered. Default: the address the registry sees the sidecar's requests come from. */
    address: z
      .string()
      .refine((a) => isIP(a) !== 0, 'an IP address')
      .optional(),
    /** Default `<hostname>-<inbound port>`. */
    instanceId: z
      .string()
      .regex(/^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$/)
      .optional(),
    zone: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/)
      .optional(),
    version: z
      .string()
      .regex(/^[A-Za-z0-9._+-]{1,64}$/)
      .optional(),
    weight: z.number().int().min(1).max(1000).optional(),
    metadata: z
      .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/), z.string().max(256))
      .optional(),
    /** Lease TTL; renewed at a third of it. */
    ttl: duration('15s'),
    /** Between draining the registration and removing it at shutdown: peers stop sending new requests. */
    drainDelay: duration('2s'),
  })
  .superRefine((r, ctx) => {
    if (!r.url.startsWith('http://')) return;
    if (r.token === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['url'],
        message: 'a plain http:// registry cannot see the sidecar certificate: use https://, or a token',
      });
    for (const key of ['identity', 'serverName'] as const)
      if (r[key] !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `${key} verifies the registry's certificate: it needs an https:// url`,
        });
  });

export const SidecarSchema = z
  .strictObject({
    /** The local service: what the sidecar registers, and the name callers reach it by. */
    service: serviceName,
    identity: z.strictObject({
      /** The mesh's trust domain: every peer's SPIFFE ID is in it. */
      trustDomain: z.string().refine(isTrustDomain, 'a trust domain such as prod.example'),
      /** PEM files: this sidecar's X.509-SVID, its key, and the trust domain's CA bundle. */
      cert: pemFile,
      key: pemFile,
      ca: pemFile,
      /**
       * The SPIFFE ID of a service's sidecars: `{service}` names the service, `*` is any one
       * segment. Destinations must present it; callers' service names are read from it.
       * Default `spiffe://<trustDomain>/ns/*\/sa/{service}`.
       */
      pattern: z
        .string()
        .refine(
          (p) => isIdentityPattern(p) && p.split(SERVICE_PLACEHOLDER).length === 2,
          'expected a SPIFFE ID pattern with one {service} segment, e.g. spiffe://prod.example/ns/*/sa/{service}',
        )
        .optional(),
      /** Watch the files and use new contents without a restart. */
      watch: z.boolean().default(true),
    }),
    /** Requests from the mesh to the local application. Absent: an outbound-only sidecar, never registered. */
    inbound: SidecarInboundSchema.optional(),
    /** Requests from the local application to the mesh. */
    outbound: SidecarOutboundSchema.prefault({}),
    /** Where the sidecar registers its service and learns the destinations' instances. */
    registry: SidecarRegistrySchema,
    metrics: z
      .strictObject({
        /** Caller services with series of their own in the mesh metrics; more share `_other`. */
        maxPeers: z.number().int().min(1).max(10_000).default(100),
      })
      .prefault({}),
  })
  .superRefine((s, ctx) => {
    const td = s.identity.trustDomain;
    if (s.identity.pattern !== undefined && !s.identity.pattern.startsWith(`spiffe://${td}/`))
      ctx.addIssue({
        code: 'custom',
        path: ['identity', 'pattern'],
        message: `the pattern must be in the trust domain ${td}`,
      });
    if (!isLoopbackHost(hostOf(s.outbound.address)))
      ctx.addIssue({
        code: 'custom',
        path: ['outbound', 'address'],
        message:
          'the outbound listener takes requests without authentication and sends them with this sidecar identity: bind it to loopback',
      });
    if (
      s.inbound !== undefined &&
      portOf(s.inbound.address) === portOf(s.outbound.address) &&
      portOf(s.inbound.address) !== '0'
    )
      ctx.addIssue({
        code: 'custom',
        path: ['inbound', 'address'],
        message: 'the inbound and outbound listeners need ports of their own',
      });
    const appProtocol = s.inbound?.upstream?.protocol;
    if (appProtocol !== undefined && appProtocol !== 'http1')
      ctx.addIssue({
        code: 'custom',
        path: ['inbound', 'upstream', 'protocol'],
        message: 'the local application is spoken to over plain HTTP/1.1 on loopback (h2c is never spoken)',
      });
    const domain = s.outbound.domain;
    const services = Array.isArray(s.outbound.services)
      ? s.outbound.services
      : Object.keys(s.outbound.services);
    const seen = new Set<string>();
    services.forEach((svc, i) => {
      const path = Array.isArray(s.outbound.services)
        ? ['outbound', 'services', i]
        : ['outbound', 'services', svc];
      if (seen.has(svc)) ctx.addIssue({ code: 'custom', path, message: `duplicate service ${svc}` });
      seen.add(svc);
      const longest = `outbound.${svc}${domain === false ? '' : `.${domain}`}`;
      if (longest.length > 63)
        ctx.addIssue({
          code: 'custom',
          path,
          message: `${svc} is too long for its route name ${longest} (at most 63 characters): shorten the service or the domain`,
        });
    });
    const routeNames = new Set<string>();
    s.inbound?.routes.forEach((r, i) => {
      if (routeNames.has(r.name))
        ctx.addIssue({
          code: 'custom',
          path: ['inbound', 'routes', i, 'name'],
          message: `duplicate route ${r.name}`,
        });
      routeNames.add(r.name);
      if (`inbound.${r.name}`.length > 63)
        ctx.addIssue({
          code: 'custom',
          path: ['inbound', 'routes', i, 'name'],
          message: 'at most 54 characters (the route is named inbound.<name>)',
        });
    });
    if (s.registry.identity !== undefined && !s.registry.identity.startsWith(`spiffe://${td}/`))
      ctx.addIssue({
        code: 'custom',
        path: ['registry', 'identity'],
        message: `the registry's identity must be in the trust domain ${td} (it is verified against identity.ca)`,
      });
  });

function portOf(addr: string): string {
  return addr.slice(addr.lastIndexOf(':') + 1);
}

export type SidecarConfig = z.output<typeof SidecarSchema>;
export type SidecarInboundConfig = z.output<typeof SidecarInboundSchema>;
export type SidecarRegistryConfig = z.output<typeof SidecarRegistrySchema>;
export type UpstreamPolicyConfig = z.output<typeof UpstreamPolicySchema>;

export const MODES = ['gateway', 'sidecar'] as const;
export type Mode = (typeof MODES)[number];

/** The sections a sidecar's config derives, and the reason each is not written by hand. */
const DERIVED_SECTIONS: Readonly<Record<string, string>> = {
  listeners: 'the sidecar derives its listeners from sidecar.inbound and sidecar.outbound',
  upstreams: 'the sidecar derives its upstreams from sidecar.inbound.app and sidecar.outbound.services',
  routes: 'the sidecar derives its routes from sidecar.inbound and sidecar.outbound.services',
  registry:
    'a sidecar does not run a registry: it registers with, and reads, the one sidecar.registry.url names',
};

/**
 * Checks that depend on `mode` (on raw input, defensively): a sidecar has a `sidecar` section and
 * none of the sections it derives; a gateway has listeners and no `sidecar` section.
 */
export function checkMode(
  cfg: Record<string, unknown>,
  issues: { path: (string | number)[]; message: string }[],
): void {
  if (cfg.mode === 'sidecar') {
    if (cfg.sidecar === undefined)
      issues.push({ path: ['sidecar'], message: 'mode sidecar needs the sidecar section' });
    for (const [key, why] of Object.entries(DERIVED_SECTIONS)) {
      const v = cfg[key];
      const written = Array.isArray(v)
        ? v.length > 0
        : typeof v === 'object' && v !== null
          ? Object.keys(v).length > 0
          : v !== undefined;
      if (written) issues.push({ path: [key], message: `not in mode sidecar: ${why}` });
    }
    const policies = cfg.policies;
    if (typeof policies === 'object' && policies !== null && Object.keys(policies).length > 0)
      issues.push({
        path: ['policies'],
        message: 'not in mode sidecar: no route of a sidecar lists named policies',
      });
    const auth = cfg.auth as { providers?: object } | undefined;
    if (auth?.providers !== undefined && Object.keys(auth.providers).length > 0)
      issues.push({
        path: ['auth', 'providers'],
        message:
          'not in mode sidecar: its routes authorise callers by their mesh identity (sidecar.inbound.allow)',
      });
    return;
  }
  if (cfg.sidecar !== undefined)
    issues.push({ path: ['sidecar'], message: 'the sidecar section needs mode: sidecar' });
  if (cfg.listeners === undefined) issues.push({ path: ['listeners'], message: 'required key is missing' });
  else if (Array.isArray(cfg.listeners) && cfg.listeners.length === 0)
    issues.push({ path: ['listeners'], message: 'at least one listener is required' });
}
