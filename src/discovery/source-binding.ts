/**
 * One upstream's endpoint source at work: its provider, what the provider last managed to do, and
 * the cluster its publications go to. It is the EndpointSink the provider publishes into: each
 * publication is checked and applied to the cluster's live set; each failure leaves the set as
 * it is and is counted, logged (rate-limited) and kept for the admin API.
 */
import type { Logger } from 'pino';
import type { Cluster } from '../dataplane/upstream/cluster.ts';
import { type EndpointInfo, type EndpointSource, endpointId } from '../dataplane/upstream/endpoint.ts';
import type { DiscoveryStateSource, GatewayMetrics } from '../telemetry/metrics.ts';
import type {
  DiscoveredEndpoint,
  DiscoveryFailureReason,
  EndpointProvider,
  EndpointSink,
} from './provider.ts';
import type { EndpointSourceConfig } from './schema.ts';

/** While a source keeps failing, at most one log line per this interval (the rest are counted). */
export const FAILURE_LOG_INTERVAL_MS = 60_000;

export type SourceState = 'pending' | 'ok' | 'failing';

/** A source's status, for the admin API and readiness. */
export interface SourceStatus {
  readonly upstream: string;
  readonly source: EndpointSource;
  /** What is read: `config`, a DNS name and record type, or a registry service. */
  readonly target: string;
  /** pending: no answer yet; ok: the last refresh succeeded; failing: it did not (last-known-good). */
  readonly state: SourceState;
  readonly endpoints: number;
  readonly refreshes: number;
  readonly failures: number;
  readonly consecutiveFailures: number;
  readonly lastSuccessAt: string | null;
  readonly lastFailureAt: string | null;
  readonly lastError: { readonly reason: DiscoveryFailureReason; readonly detail: string } | null;
  /** What the provider itself reports (DNS: TTL, next refresh). */
  readonly provider: Readonly<Record<string, unknown>> | null;
}

export function targetOf(source: EndpointSourceConfig): string {
  switch (source.kind) {
    case 'static':
      return 'config';
    case 'dns':
      return `${source.dns} ${source.type}${source.port === undefined ? '' : ` port ${source.port}`}`;
    case 'registry':
      return `service ${source.registry}`;
  }
}

const MAX_WEIGHT = 1000;

/**
 * A publication's endpoint as the cluster takes it, or a reason it cannot be taken. Providers are
 * code of ours, but their data comes from outside (DNS answers, registrations): checked here once.
 */
export function checkEndpoint(d: DiscoveredEndpoint): EndpointInfo | string {
  let url: URL;
  try {
    url = new URL(d.url);
  } catch {
    return `invalid URL ${JSON.stringify(String(d.url)).slice(0, 100)}`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `not http(s): ${url.origin}`;
  const weight = d.weight === undefined ? 1 : Math.round(d.weight);
  if (!Number.isFinite(weight)) return `invalid weight for ${url.origin}`;
  return {
    url: d.url,
    weight: Math.min(MAX_WEIGHT, Math.max(1, weight)),
    zone: typeof d.zone === 'string' ? d.zone : undefined,
    version: typeof d.version === 'string' ? d.version : undefined,
    metadata: d.metadata,
    state: d.state === 'draining' ? 'draining' : 'active',
    host: typeof d.host === 'string' && d.host !== '' ? d.host : undefined,
  };
}

export class SourceBinding implements EndpointSink, DiscoveryStateSource {
  readonly upstream: string;
  /** The source config as JSON: a reload that leaves it unchanged keeps this binding. */
  readonly key: string;
  readonly kind: EndpointSource;
  readonly target: string;
  readonly #logger: Logger;
  readonly #metrics: GatewayMetrics;
  readonly #now: () => number;
  #provider: EndpointProvider | undefined;
  #cluster: Cluster;
  #unwatch: () => void = () => undefined;
  #state: SourceState = 'pending';
  #refreshes = 0;
  #failures = 0;
  #consecutiveFailures = 0;
  #lastSuccessAt: number | undefined;
  #lastFailureAt: number | undefined;
  #lastError: { reason: DiscoveryFailureReason; detail: string } | undefined;
  #loggedFailureAt = 0;
  #suppressed = 0;
  #closed = false;

  constructor(
    upstream: string,
    source: EndpointSourceConfig,
    cluster: Cluster,
    deps: { logger: Logger; metrics: GatewayMetrics; now: () => number },
  ) {
    this.upstream = upstream;
    this.key = JSON.stringify(source);
    this.kind = source.kind;
    this.target = targetOf(source);
    this.#cluster = cluster;
    this.#logger = deps.logger;
    this.#metrics = deps.metrics;
    this.#now = deps.now;
  }

  /** The provider-facing logger: bound to the upstream and source. */
  get logger(): Logger {
    return this.#logger;
  }

  get source(): string {
    return this.kind;
  }

  get state(): SourceState {
    return this.#state;
  }

  /** Start `provider` publishing here. A provider that throws on start counts as a failed read. */
  start(provider: EndpointProvider): void {
    this.#provider = provider;
    this.#unwatch = this.#metrics.watchDiscovery(this.upstream, this);
    try {
      provider.start(this);
    } catch (err) {
      this.fail('error', `provider failed to start: ${String(err)}`);
    }
  }

  /** The upstream's cluster was rebuilt (its policy changed); it took the live set over. */
  attach(cluster: Cluster): void {
    if (cluster === this.#cluster) return;
    cluster.sourceNote = this.#cluster.sourceNote;
    this.#cluster = cluster;
  }

  replace(endpoints: readonly DiscoveredEndpoint[]): void {
    if (this.#closed) return;
    const valid: EndpointInfo[] = [];
    const problems: string[] = [];
    for (const d of endpoints) {
      const checked = checkEndpoint(d);
      if (typeof checked === 'string') problems.push(checked);
      else valid.push(checked);
    }
    if (problems.length > 0 && valid.length === 0) {
      // Nothing usable is not an empty set: applying it would empty the upstream.
      this.fail('invalid', `${problems.length} endpoints, none usable: ${problems[0]}`);
      return;
    }
    if (problems.length > 0)
      this.#logger.warn(
        { skipped: problems.length, first: problems[0] },
        'endpoint source listed unusable endpoints',
      );
    this.#cluster.applyEndpoints(valid, this.kind);
    this.#succeeded();
  }

  upsert(endpoint: DiscoveredEndpoint): void {
    if (this.#closed) return;
    const checked = checkEndpoint(endpoint);
    if (typeof checked === 'string') {
      this.fail('invalid', checked);
      return;
    }
    this.#cluster.addEndpoint(checked, this.kind);
    this.#succeeded();
  }

  remove(url: string): void {
    if (this.#closed) return;
    let id: string;
    try {
      id = endpointId({ url });
    } catch {
      this.fail('invalid', `invalid URL ${JSON.stringify(String(url)).slice(0, 100)}`);
      return;
    }
    this.#cluster.removeEndpoint(id);
    this.#succeeded();
  }

  fail(reason: DiscoveryFailureReason, detail: string): void {
    if (this.#closed) return;
    const now = this.#now();
    this.#state = 'failing';
    this.#failures++;
    this.#consecutiveFailures++;
    this.#lastFailureAt = now;
    this.#lastError = { reason, detail };
    this.#metrics.recordDiscoveryRefresh(this.upstream, this.kind, reason);
    const kept = this.#cluster.endpoints.length;
    this.#cluster.sourceNote = `${this.kind} ${this.target}: ${reason}: ${detail}`;
    if (this.#consecutiveFailures === 1 || now - this.#loggedFailureAt >= FAILURE_LOG_INTERVAL_MS) {
      this.#logger.warn(
        {
          reason,
          detail,
          consecutiveFailures: this.#consecutiveFailures,
          suppressed: this.#suppressed,
          keptEndpoints: kept,
        },
        'endpoint source refresh failed; keeping the last known endpoints',
      );
      this.#loggedFailureAt = now;
      this.#suppressed = 0;
    } else this.#suppressed++;
  }

  #succeeded(): void {
    const recovered = this.#consecutiveFailures;
    this.#state = 'ok';
    this.#refreshes++;
    this.#consecutiveFailures = 0;
    this.#lastSuccessAt = this.#now();
    this.#metrics.recordDiscoveryRefresh(this.upstream, this.kind, 'success');
    this.#cluster.sourceNote =
      this.#cluster.endpoints.length === 0 ? `${this.kind} ${this.target} lists no endpoints` : undefined;
    if (recovered > 0) {
      this.#logger.info(
        { failures: recovered, endpoints: this.#cluster.endpoints.length },
        'endpoint source recovered',
      );
      this.#suppressed = 0;
    }
  }

  endpointsBySource(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const e of this.#cluster.endpoints) counts[e.source] = (counts[e.source] ?? 0) + 1;
    return counts;
  }

  lastSuccessAt(): number | undefined {
    return this.#lastSuccessAt;
  }

  stale(): boolean {
    return this.#state !== 'ok';
  }

  describe(): SourceStatus {
    const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());
    return {
      upstream: this.upstream,
      source: this.kind,
      target: this.target,
      state: this.#state,
      endpoints: this.#cluster.endpoints.length,
      refreshes: this.#refreshes,
      failures: this.#failures,
      consecutiveFailures: this.#consecutiveFailures,
      lastSuccessAt: iso(this.#lastSuccessAt),
      lastFailureAt: iso(this.#lastFailureAt),
      lastError: this.#lastError ?? null,
      provider: this.#provider?.describe?.() ?? null,
    };
  }

  /** Stop the provider; nothing it publishes afterwards is applied. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch();
    await this.#provider?.close();
  }
}
