/**
 * The one interface every endpoint source implements: static (the config's `endpoints`), DNS and
 * the service registry. A provider reads its source and publishes into an EndpointSink; the
 * control plane (discovery.ts) applies what it publishes to the upstream's live endpoint set and
 * keeps the per-source status (metrics, admin API, readiness). A provider knows nothing of
 * clusters, pools or balancers.
 *
 * Rules a provider keeps:
 * - Publish the whole set with `replace` first, then either `replace` again or deltas
 *   (`upsert`/`remove`) as the source changes.
 * - Never publish a set it failed to read: call `fail` instead. The upstream keeps what it last
 *   had (last-known-good); an empty `replace` means the source positively lists no endpoint.
 * - After `close()` nothing it publishes is applied; it need not guard against late callbacks.
 */
import type { Logger } from 'pino';
import type { EndpointInfo } from '../dataplane/upstream/endpoint.ts';
import type { DiscoveryOutcome } from '../telemetry/metrics.ts';
import type { DnsDiscoveryConfig, RegistryDiscoveryConfig } from './schema.ts';

/**
 * One endpoint as a source describes it: `url` (an `http://` or `https://` origin, its identity in
 * the upstream), and optionally weight (1-1000), zone, version, metadata, state (`active` |
 * `draining`) and host (Host header and TLS server name, when not the URL's host).
 */
export type DiscoveredEndpoint = EndpointInfo;

/** Why a read of a source failed (bounded: it is a metric label). */
export type DiscoveryFailureReason = Exclude<DiscoveryOutcome, 'success'>;

/** Where a provider publishes. Every call is synchronous and cheap to make. */
export interface EndpointSink {
  /** The complete set the source lists now: the upstream's set becomes exactly this. */
  replace(endpoints: readonly DiscoveredEndpoint[]): void;
  /** One endpoint joined, or changed (weight, zone, version, metadata, state). */
  upsert(endpoint: DiscoveredEndpoint): void;
  /** One endpoint left, by its URL (only the origin counts). */
  remove(url: string): void;
  /**
   * A read failed: the set stays as it is (last-known-good); the failure is counted, logged
   * (rate-limited) and shown. `detail` is a short human-readable cause, never a secret.
   */
  fail(reason: DiscoveryFailureReason, detail: string): void;
}

export interface EndpointProvider {
  /** Begin reading the source and publishing into `sink` (the first publication may be synchronous). */
  start(sink: EndpointSink): void;
  /** Stop reading. Safe to call twice. */
  close(): void | Promise<void>;
  /** Source-specific state for the admin API (e.g. DNS: the last TTL, the next refresh). */
  describe?(): Readonly<Record<string, unknown>>;
}

/** What a provider is told about the upstream it serves. */
export interface ProviderContext {
  readonly upstream: string;
  /** Already bound to the upstream and source. */
  readonly logger: Logger;
}

export type ProviderFactory<C> = (config: C, ctx: ProviderContext) => EndpointProvider;

/**
 * How the gateway builds providers for discovered upstreams. `registry` is absent while no
 * service registry runs in this gateway: a `discovery.registry` upstream then starts with no
 * endpoints (NO_HEALTHY_ENDPOINT) and its source shows as `unavailable`.
 */
export interface ProviderFactories {
  readonly dns: ProviderFactory<DnsDiscoveryConfig>;
  readonly registry?: ProviderFactory<RegistryDiscoveryConfig> | undefined;
}
