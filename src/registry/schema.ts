/**
 * Configuration of the service registry (static: read at start): where the registration API
 * listens, who may register what, which addresses may be registered, lease and size bounds, and
 * the store. docs/registry.md explains the model; docs/configuration.md lists each key. Defaults
 * live here and nowhere else.
 */
import { z } from 'zod';
import { address, cidr, duration, name } from '../config/fields.ts';
import { checkSecretRef, secretRefShape } from '../config/secret-ref.ts';
import { TlsSchema } from '../tls/schema.ts';

/** Service names: lower-case DNS-label-like, so they fit metric labels, keys and URLs as they are. */
export const SERVICE_NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
/** Instance ids: letters, digits and `. _ : -`, up to 128 characters (pod names, host:port, UUIDs). */
export const INSTANCE_ID_RE = /^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$/;
/** A service name, or a pattern with `*` standing for any run of service-name characters. */
const SERVICE_PATTERN_RE = /^[a-z0-9*]([a-z0-9._*-]{0,61}[a-z0-9*])?$/;

const servicePattern = z
  .string()
  .regex(SERVICE_PATTERN_RE, 'a service name, or a pattern with * (e.g. payments, payments-*, *)');

/**
 * A SPIFFE ID pattern: `spiffe://<trust domain>/<segments>`, where a segment may be `*` (any one
 * segment) or `{service}` (one segment, which names the one service the identity may register).
 */
const SPIFFE_PATTERN_RE = /^spiffe:\/\/[a-z0-9._-]+(\/([A-Za-z0-9._-]+|\*|\{service\}))+$/;

const IdentityCredentialSchema = z
  .strictObject({
    spiffe: z
      .string()
      .regex(
        SPIFFE_PATTERN_RE,
        'expected spiffe://<trust domain>/<path>, segments may be * or {service}, e.g. spiffe://prod.example/ns/*/sa/{service}',
      ),
    /** Services the identity may register; required unless the pattern has `{service}`. */
    services: z.array(servicePattern).min(1).optional(),
  })
  .superRefine((c, ctx) => {
    const captures = c.spiffe.split('{service}').length - 1;
    if (captures > 1)
      ctx.addIssue({ code: 'custom', path: ['spiffe'], message: '{service} may appear only once' });
    if (captures === 0 && c.services === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['services'],
        message: 'services is required when the pattern has no {service} segment',
      });
    if (captures === 1 && c.services !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['services'],
        message: 'a pattern with {service} names its service itself; leave services out',
      });
  });

const TokenCredentialSchema = z
  .strictObject({
    /** Names the token in logs (the token itself is never logged). */
    name,
    ...secretRefShape,
    /** Services this token may register: names or patterns with `*`. */
    services: z.array(servicePattern).min(1),
  })
  .superRefine(checkSecretRef);

export const RegistryListenerSchema = z.strictObject({
  /** Never the data-plane or admin address: registration is a separate surface. */
  address: address.default('127.0.0.1:9902'),
  /** TLS and mTLS, as on data-plane listeners (docs/security.md). With `clientAuth`, identities register. */
  tls: TlsSchema.optional(),
  /** Time allowed for the request head; the whole request must arrive within `requestTimeout`. */
  headersTimeout: duration('10s'),
  requestTimeout: duration('30s'),
  /**
   * Idle keep-alive. Longer than the renewal interval (a third of the TTL: 5 s by default), so a
   * heartbeat finds its connection open instead of paying for a new one each time.
   */
  keepAliveTimeout: duration('65s'),
});

export const RegistrySchema = z
  .strictObject({
    /** memory: embedded in this gateway; redis: shared by every replica (needs the `redis` section). */
    store: z.enum(['memory', 'redis']).default('memory'),
    /** This gateway's name in `registeredVia`. Default: `<hostname>/<pid>`. */
    gatewayId: z
      .string()
      .regex(/^[A-Za-z0-9._:/-]{1,128}$/)
      .optional(),
    /** The registration API. Absent: no API (the store is still read, e.g. by replicas sharing Redis). */
    listener: RegistryListenerSchema.optional(),
    credentials: z
      .strictObject({
        /** mTLS identities (the listener needs `tls.clientAuth`). */
        identities: z.array(IdentityCredentialSchema).default([]),
        /** Bearer tokens, each by reference (env or file), scoped to services. */
        tokens: z.array(TokenCredentialSchema).default([]),
      })
      .prefault({}),
    /** Which addresses instances may register. */
    addresses: z
      .strictObject({
        /** When not empty, only addresses in these CIDRs may be registered. */
        allow: z.array(cidr).default([]),
        /** Never registered (wins over allow). */
        deny: z.array(cidr).default([]),
        /** 127.0.0.0/8 and ::1 (default off: a registration must not point the gateway at itself). */
        allowLoopback: z.boolean().default(false),
        /** 169.254.0.0/16 and fe80::/10 (default off: cloud metadata endpoints live there). */
        allowLinkLocal: z.boolean().default(false),
      })
      .prefault({}),
    lease: z
      .strictObject({
        /** TTL of a registration that names none. */
        defaultTtl: duration('15s'),
        minTtl: duration('1s'),
        maxTtl: duration('5m'),
      })
      .prefault({}),
    limits: z
      .strictObject({
        /** Services at once; also the bound on metric series per service. */
        maxServices: z.number().int().min(1).max(100_000).default(1000),
        maxInstancesPerService: z.number().int().min(1).max(100_000).default(1000),
        /** Metadata of one instance, as JSON. */
        maxMetadataBytes: z.number().int().min(0).max(65_536).default(4096),
        /** Open watch (server-sent events) streams. */
        maxWatchStreams: z.number().int().min(0).max(10_000).default(64),
      })
      .prefault({}),
    /** Registration requests per credential: a token bucket. */
    rateLimit: z
      .strictObject({
        /** Sustained requests per second. */
        perSecond: z.number().positive().default(100),
        /** Requests allowed at once above the sustained rate. */
        burst: z.number().int().min(1).default(1000),
      })
      .prefault({}),
    sync: z
      .strictObject({
        /** How often expired leases are removed (and, on Redis, their expiry published). */
        sweepInterval: duration('250ms'),
        /** Redis: how often a replica re-reads the whole registry, besides following its events. */
        resyncInterval: duration('30s'),
      })
      .prefault({}),
  })
  .superRefine((r, ctx) => {
    const { minTtl, maxTtl, defaultTtl } = r.lease;
    if (minTtl > maxTtl)
      ctx.addIssue({ code: 'custom', path: ['lease', 'maxTtl'], message: 'maxTtl is below minTtl' });
    else if (defaultTtl < minTtl || defaultTtl > maxTtl)
      ctx.addIssue({
        code: 'custom',
        path: ['lease', 'defaultTtl'],
        message: 'defaultTtl must lie between minTtl and maxTtl',
      });
    if (
      r.listener !== undefined &&
      r.credentials.identities.length === 0 &&
      r.credentials.tokens.length === 0
    )
      ctx.addIssue({
        code: 'custom',
        path: ['credentials'],
        message: 'the registration API refuses every request without credentials: add identities or tokens',
      });
    const clientAuth = r.listener?.tls?.clientAuth ?? 'none';
    if (r.credentials.identities.length > 0 && r.listener !== undefined && clientAuth === 'none')
      ctx.addIssue({
        code: 'custom',
        path: ['credentials', 'identities'],
        message: 'identities need client certificates: set listener.tls.clientAuth to optional or required',
      });
    const names = new Set<string>();
    r.credentials.tokens.forEach((t, i) => {
      if (names.has(t.name))
        ctx.addIssue({
          code: 'custom',
          path: ['credentials', 'tokens', i, 'name'],
          message: `duplicate token ${t.name}`,
        });
      names.add(t.name);
    });
  });

export type RegistryConfig = z.output<typeof RegistrySchema>;
export type RegistryListenerConfig = z.output<typeof RegistryListenerSchema>;
export type IdentityCredentialConfig = RegistryConfig['credentials']['identities'][number];
export type TokenCredentialConfig = RegistryConfig['credentials']['tokens'][number];

/**
 * Checks across sections (on raw input, defensively): a Redis store needs the `redis` section, and
 * the registration API shares no address with a data-plane listener or the admin API.
 */
export function checkRegistry(
  cfg: Record<string, unknown>,
  issues: { path: (string | number)[]; message: string }[],
): void {
  const registry = cfg.registry;
  if (typeof registry !== 'object' || registry === null) return;
  const r = registry as Record<string, unknown>;
  if (r.store === 'redis' && cfg.redis === undefined)
    issues.push({ path: ['registry', 'store'], message: 'store redis needs the redis section' });
  const listener = r.listener as Record<string, unknown> | undefined;
  const address =
    typeof listener === 'object' && listener !== null ? (listener.address ?? '127.0.0.1:9902') : undefined;
  if (typeof address !== 'string' || address.endsWith(':0')) return;
  const admin = (cfg.admin as Record<string, unknown> | undefined)?.address ?? '127.0.0.1:9901';
  const taken = [
    ...(Array.isArray(cfg.listeners) ? cfg.listeners : []).map((l: unknown) =>
      typeof l === 'object' && l !== null ? (l as Record<string, unknown>).address : undefined,
    ),
    admin,
  ];
  const port = address.slice(address.lastIndexOf(':'));
  if (taken.some((a) => typeof a === 'string' && a.slice(a.lastIndexOf(':')) === port))
    issues.push({
      path: ['registry', 'listener', 'address'],
      message: `the registration API needs a port of its own (${port.slice(1)} is a data-plane or admin port)`,
    });
}
