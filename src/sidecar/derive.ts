/**
 * What a sidecar runs, derived from its `sidecar` section: two listeners, the upstreams and the
 * routes of the ordinary pipeline. Nothing here runs per request; the gateway compiles the result
 * like any other config, and `/v1/config` shows it.
 *
 *   inbound listener (mTLS, callers' certificates required)
 *     route `inbound` (and `inbound.<name>` per inbound route), allow-list of caller identities
 *       → upstream `inbound`: the local application on loopback
 *   outbound listener (plain HTTP, loopback)
 *     routes `outbound.<service>` (Host `<service>`) and `outbound.<service>.<domain>`
 *       → upstream `outbound.<service>`: the service's registered sidecars, over mTLS, their
 *         SPIFFE ID checked against the identity pattern
 */
import type { z } from 'zod';
import { POLICY_SECTIONS, type SidecarConfig, type UpstreamPolicyConfig } from './schema.ts';

export const INBOUND = 'inbound';
export const OUTBOUND = 'outbound';
const OUTBOUND_PREFIX = `${OUTBOUND}.`;

/** The upstream (and route) of a destination service. */
export function outboundUpstreamName(service: string): string {
  return OUTBOUND_PREFIX + service;
}

/** The destination service of an outbound upstream's name, or undefined. */
export function serviceOfOutboundUpstream(upstream: string): string | undefined {
  return upstream.startsWith(OUTBOUND_PREFIX) ? upstream.slice(OUTBOUND_PREFIX.length) : undefined;
}

/** The identity pattern of the mesh's sidecars. */
export function identityPattern(sidecar: SidecarConfig): string {
  return sidecar.identity.pattern ?? `spiffe://${sidecar.identity.trustDomain}/ns/*/sa/{service}`;
}

/** Caller identities allowed on the inbound side when none are listed: the whole trust domain. */
export function defaultAllow(sidecar: SidecarConfig): string[] {
  return [`spiffe://${sidecar.identity.trustDomain}/*`];
}

/** The destination services, with their own policy sections and filter. */
export function outboundServices(
  sidecar: SidecarConfig,
): { service: string; policy: UpstreamPolicyConfig; filter: object | undefined }[] {
  const services = sidecar.outbound.services;
  if (Array.isArray(services)) return services.map((service) => ({ service, policy: {}, filter: undefined }));
  return Object.entries(services).map(([service, { filter, ...policy }]) => ({ service, policy, filter }));
}

/**
 * To the local application: one endpoint, so no retries (the caller's sidecar retries, elsewhere),
 * no breaker and no ejection (they would only turn a slow application into refusals of its own).
 */
const INBOUND_POLICY = {
  balancer: { kind: 'round_robin' },
  retries: { maxAttempts: 1 },
  circuitBreaker: { enabled: false },
  outlierDetection: { enabled: false },
} as const;

/** Sections written in `layer` replace those of `base`, whole. */
function overlay(
  base: Record<string, unknown>,
  layer: UpstreamPolicyConfig | undefined,
): Record<string, unknown> {
  if (layer === undefined) return base;
  const out = { ...base };
  for (const key of [...POLICY_SECTIONS, 'protocol'] as const)
    if (layer[key] !== undefined) out[key] = layer[key];
  return out;
}

interface Schemas {
  readonly listener: z.ZodType;
  readonly upstream: z.ZodType;
  readonly route: z.ZodType;
}

export interface DerivedSections {
  readonly listeners: unknown[];
  readonly upstreams: Record<string, unknown>;
  readonly routes: unknown[];
}

/**
 * The listeners, upstreams and routes of a validated sidecar section, each put through its own
 * schema (so every default is the ordinary one). Policy sections that came validated from the
 * sidecar section are laid over the parsed upstream as they are.
 */
export function deriveSidecar(sidecar: SidecarConfig, schemas: Schemas): DerivedSections {
  const { identity } = sidecar;
  const listeners: unknown[] = [];
  const upstreams: Record<string, unknown> = {};
  const routes: unknown[] = [];
  const watch = identity.watch;
  const inbound = sidecar.inbound;
  if (inbound !== undefined) {
    listeners.push(
      schemas.listener.parse({
        name: INBOUND,
        address: inbound.address,
        tls: { cert: identity.cert, key: identity.key, clientAuth: 'required', clientCa: identity.ca, watch },
        limits: { keepAliveTimeout: inbound.keepAliveTimeout },
      }),
    );
    const parsed = schemas.upstream.parse({ endpoints: [inbound.app], ...INBOUND_POLICY }) as Record<
      string,
      unknown
    >;
    upstreams[INBOUND] = overlay(parsed, inbound.upstream);
    const allow = inbound.allow ?? defaultAllow(sidecar);
    routes.push(
      schemas.route.parse({ name: INBOUND, listeners: [INBOUND], upstream: INBOUND, identity: { allow } }),
    );
    for (const r of inbound.routes) {
      routes.push(
        schemas.route.parse({
          name: `${INBOUND}.${r.name}`,
          listeners: [INBOUND],
          match: r.match,
          upstream: INBOUND,
          identity: { allow: r.allow },
        }),
      );
    }
  }
  listeners.push(schemas.listener.parse({ name: OUTBOUND, address: sidecar.outbound.address }));
  const expectPattern = identityPattern(sidecar);
  const domain = sidecar.outbound.domain;
  for (const { service, policy, filter } of outboundServices(sidecar)) {
    const upstream = outboundUpstreamName(service);
    const parsed = schemas.upstream.parse({
      discovery: filter === undefined ? { registry: service } : { registry: service, filter },
      tls: { ca: identity.ca, cert: identity.cert, key: identity.key, identity: { expectPattern }, watch },
    }) as Record<string, unknown>;
    upstreams[upstream] = overlay(overlay(parsed, sidecar.outbound.upstream), policy);
    routes.push(
      schemas.route.parse({ name: upstream, listeners: [OUTBOUND], match: { host: service }, upstream }),
    );
    if (domain !== false)
      routes.push(
        schemas.route.parse({
          name: `${upstream}.${domain}`,
          listeners: [OUTBOUND],
          match: { host: `${service}.${domain}` },
          upstream,
        }),
      );
  }
  return { listeners, upstreams, routes };
}

/**
 * What of a sidecar section takes effect only at start: the service and its registration, the
 * identity files' paths, the listeners' addresses and the inbound one's keep-alive, the readiness
 * check, the metric bounds. (The application's origin, the allow-lists, the destinations and
 * their policies reload; a new destination is followed in the registry from then on.)
 */
export function staticSidecarPart(sidecar: SidecarConfig | undefined): unknown {
  if (sidecar === undefined) return undefined;
  return {
    service: sidecar.service,
    identity: sidecar.identity,
    registry: sidecar.registry,
    metrics: sidecar.metrics,
    inbound:
      sidecar.inbound === undefined
        ? undefined
        : {
            address: sidecar.inbound.address,
            readiness: sidecar.inbound.readiness,
            keepAliveTimeout: sidecar.inbound.keepAliveTimeout,
          },
    outbound: { address: sidecar.outbound.address },
  };
}
