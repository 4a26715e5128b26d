/**
 * Where an upstream's endpoints come from, as written in the config: `endpoints: [...]` (the static
 * source) or `discovery:` with exactly one of `registry: <service>` and `dns: <name>`. The YAML form
 * is told apart by key, like a JWT provider's key sources; `endpointSourceOf()` turns it into the
 * discriminated union the code dispatches on. docs/configuration.md lists every key.
 */
import { z } from 'zod';
import { duration } from '../config/fields.ts';
import type { EndpointSpec } from '../dataplane/upstream/policy-schema.ts';
import { SERVICE_NAME_RE } from '../registry/schema.ts';

export const DNS_RECORD_TYPES = ['A', 'AAAA', 'SRV'] as const;
export type DnsRecordType = (typeof DNS_RECORD_TYPES)[number];

/** A DNS name: labels of letters, digits, `-` and `_` (SRV names: `_http._tcp.users.internal`). */
const dnsName = z
  .string()
  .max(253, 'a DNS name has at most 253 characters')
  .regex(
    /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/,
    'expected a DNS name, e.g. users.internal or _http._tcp.users.internal',
  );

/** A service name as the registry knows it (registrations are held to the same syntax). */
const serviceName = z
  .string()
  .regex(
    SERVICE_NAME_RE,
    'service names use lower-case letters, digits, _ . - (at most 63, starting and ending with a letter or digit)',
  );

const metadataKey = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/, 'a metadata key');

export const RegistryFilterSchema = z.strictObject({
  /** Only instances in this zone. */
  zone: z.string().min(1).max(64).optional(),
  /** Only instances of this version. */
  version: z.string().min(1).max(64).optional(),
  /** Only instances whose metadata has every one of these key/value pairs. */
  metadata: z.record(metadataKey, z.string().max(256)).optional(),
});

export const DnsRefreshSchema = z
  .strictObject({
    /** Shortest time between two resolutions, whatever the TTL (a TTL of 0 is common). */
    min: duration('5s'),
    /** Longest time between two resolutions, whatever the TTL. */
    max: duration('60s'),
  })
  .superRefine((r, ctx) => {
    if (r.min > r.max)
      ctx.addIssue({ code: 'custom', path: ['min'], message: 'refresh.min is longer than refresh.max' });
  });

const DiscoveryFields = z
  .strictObject({
    /** Registry discovery: the registered service whose instances are the endpoints. */
    registry: serviceName.optional(),
    /** Registry discovery: which of the service's instances. */
    filter: RegistryFilterSchema.optional(),
    /** DNS discovery: the name resolved. */
    dns: dnsName.optional(),
    /** DNS discovery: A (IPv4), AAAA (IPv6) or SRV (targets and ports). Default A. */
    type: z.enum(DNS_RECORD_TYPES).optional(),
    /** DNS discovery, A and AAAA: the endpoints' port (SRV records carry their own). */
    port: z.number().int().min(1).max(65535).optional(),
    /** DNS discovery: how the endpoints are spoken to. Default http. */
    protocol: z.enum(['http', 'https']).optional(),
    /** DNS discovery: resolved again when the answer's TTL runs out, within these bounds. */
    refresh: DnsRefreshSchema.optional(),
  })
  .meta({ oneOf: [{ required: ['registry'] }, { required: ['dns'] }] });

const REGISTRY_ONLY = ['filter'] as const;
const DNS_ONLY = ['type', 'port', 'protocol', 'refresh'] as const;

export type RegistryFilter = z.output<typeof RegistryFilterSchema>;
export type DnsRefresh = z.output<typeof DnsRefreshSchema>;

export interface RegistryDiscoveryConfig {
  readonly registry: string;
  readonly filter: RegistryFilter;
}

export interface DnsDiscoveryConfig {
  readonly dns: string;
  readonly type: DnsRecordType;
  /** Absent for SRV. */
  readonly port?: number | undefined;
  readonly protocol: 'http' | 'https';
  readonly refresh: DnsRefresh;
}

export type DiscoveryConfig = RegistryDiscoveryConfig | DnsDiscoveryConfig;

const DEFAULT_REFRESH = DnsRefreshSchema.parse({});

/**
 * `discovery:` of an upstream: `{ registry, filter }` or `{ dns, type, port, protocol, refresh }`,
 * exactly one, each with only its own keys. The output keeps the written shape, with defaults.
 */
export const DiscoverySchema = DiscoveryFields.superRefine((d, ctx) => {
  const registry = d.registry !== undefined;
  const dns = d.dns !== undefined;
  if (registry === dns) {
    ctx.addIssue({
      code: 'custom',
      message: registry
        ? 'discovery names one source: `registry` or `dns`, not both'
        : 'discovery needs `registry: <service>` or `dns: <name>`',
    });
    return;
  }
  const foreign = registry ? DNS_ONLY : REGISTRY_ONLY;
  for (const key of foreign) {
    if (d[key] !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `\`${key}\` belongs to ${registry ? 'DNS discovery (`dns: <name>`)' : 'registry discovery (`registry: <service>`)'}`,
      });
  }
  if (!dns) return;
  const type = d.type ?? 'A';
  if (type === 'SRV' && d.port !== undefined)
    ctx.addIssue({
      code: 'custom',
      path: ['port'],
      message: 'SRV records carry their own ports; remove `port`',
    });
  if (type !== 'SRV' && d.port === undefined)
    ctx.addIssue({
      code: 'custom',
      path: ['port'],
      message: `\`port\` is required: ${type} records carry no port`,
    });
}).transform(
  (d): DiscoveryConfig =>
    d.registry !== undefined
      ? { registry: d.registry, filter: d.filter ?? {} }
      : {
          dns: d.dns!,
          type: d.type ?? 'A',
          port: d.port,
          protocol: d.protocol ?? 'http',
          refresh: d.refresh ?? DEFAULT_REFRESH,
        },
);

/** The source of an upstream's endpoints, for the code that runs it. */
export type EndpointSourceConfig =
  | { readonly kind: 'static'; readonly endpoints: readonly EndpointSpec[] }
  | ({ readonly kind: 'registry' } & RegistryDiscoveryConfig)
  | ({ readonly kind: 'dns' } & DnsDiscoveryConfig);

/** The part of an upstream's config that names its endpoint source. */
export interface SourceFields {
  readonly endpoints?: readonly EndpointSpec[] | undefined;
  readonly discovery?: DiscoveryConfig | undefined;
}

export function endpointSourceOf(upstream: SourceFields): EndpointSourceConfig {
  const d = upstream.discovery;
  if (d === undefined) return { kind: 'static', endpoints: upstream.endpoints ?? [] };
  return 'registry' in d ? { kind: 'registry', ...d } : { kind: 'dns', ...d };
}

/**
 * The upstream-level rule: exactly one of `endpoints` and `discovery`. Reads defensively (it runs
 * as a refinement of the upstream object).
 */
export function checkEndpointSource(
  upstream: { endpoints?: unknown; discovery?: unknown },
  ctx: z.RefinementCtx,
): void {
  const hasEndpoints = upstream.endpoints !== undefined;
  const hasDiscovery = upstream.discovery !== undefined;
  if (hasEndpoints && hasDiscovery)
    ctx.addIssue({
      code: 'custom',
      path: ['discovery'],
      message: 'an upstream takes its endpoints from one source: `endpoints` or `discovery`, not both',
    });
  else if (!hasEndpoints && !hasDiscovery)
    ctx.addIssue({
      code: 'custom',
      path: ['endpoints'],
      message:
        'an upstream needs `endpoints: [...]` or `discovery: { registry: <service> }` / `{ dns: <name>, ... }`',
    });
}
