import { Pool } from 'undici';
import type { UpstreamConfig } from '../../config/schema.ts';
import { createConnector } from './connector.ts';
import type { EndpointSpec } from './policy-schema.ts';

/** The parts of an upstream's config an endpoint's pool is built from. */
export type EndpointTransportConfig = Pick<UpstreamConfig, 'pool' | 'timeouts'>;

function poolOptions(cfg: EndpointTransportConfig): Pool.Options {
  return {
    connections: cfg.pool.connections,
    pipelining: 1,
    keepAliveTimeout: cfg.pool.keepAliveTimeout,
    // Ours, for a connect timeout that fires on time; it serialises as `{ timeout }` for the key.
    connect: createConnector(cfg.timeouts.connect),
    // The response-head and body idle timeouts are enforced per attempt by the forwarder.
    headersTimeout: 0,
    bodyTimeout: 0,
    // Defaults that matter for a proxy: never follow redirects, keep header limits strict.
    maxHeaderSize: 64 * 1024,
  };
}

function specUrl(spec: EndpointSpec): string {
  return typeof spec === 'string' ? spec : spec.url;
}

function transportKey(url: URL, options: Pool.Options): string {
  return `${url.href} ${JSON.stringify(options)}`;
}

/**
 * Everything an endpoint's pool is built from (its URL and the pool options: connections,
 * keep-alive, connect and body timeouts), as one string. A reload keeps an endpoint, with its pool
 * and its warm connections, exactly when this is unchanged; weight and policy are not part of it.
 */
export function endpointTransport(spec: EndpointSpec, cfg: EndpointTransportConfig): string {
  return transportKey(new URL(specUrl(spec)), poolOptions(cfg));
}

/**
 * One upstream endpoint origin: its undici pool (keep-alive, no pipelining) and the state the
 * balancers, the resilience policy and the admin API read. The state is plain fields so the hot
 * path reads them without lookups; the logic that writes them lives in outlier-detector.ts,
 * health-checker.ts and peak-ewma.ts.
 */
export class Endpoint {
  /** The origin, e.g. `http://10.0.0.5:8080`: also the `endpoint` metric label. */
  readonly id: string;
  readonly url: URL;
  /** Host header value when the route does not preserve the client's. */
  readonly host: string;
  /**
   * Relative share of traffic for weighted balancers (config `{ url, weight }`, default 1). Not
   * readonly: a reload that changes only the weight keeps the endpoint and sets this.
   */
  weight: number;
  readonly pool: Pool;
  /** endpointTransport() of the config it was built from. */
  readonly transport: string;
  /** Attempts in progress (least-request and peak-EWMA read it). */
  inFlight = 0;

  /** Active health checks say so (always true without health checks). */
  healthy = true;
  /** Passive: ejected by outlier detection until `ejectedUntil`. */
  ejected = false;
  /** Monotonic ms; meaningful while `ejected`. */
  ejectedUntil = 0;
  /** Ejections so far; sets the next ejection's length, and decays while the endpoint behaves. */
  ejections = 0;
  /** Monotonic ms of the last return from ejection. */
  returnedAt = 0;
  consecutiveGatewayErrors = 0;
  consecutive5xx = 0;

  /** Peak-EWMA latency estimate (ms) and when it was last updated (monotonic ms). */
  rttMs = 0;
  rttAt = 0;
  #closed = false;
  /** Clusters holding it: after a reload the new cluster and the one it replaced share it. */
  #holders = 0;

  constructor(spec: EndpointSpec, cfg: EndpointTransportConfig) {
    this.url = new URL(specUrl(spec));
    this.weight = typeof spec === 'string' ? 1 : spec.weight;
    this.id = this.url.origin;
    this.host = this.url.host;
    const options = poolOptions(cfg);
    this.transport = transportKey(this.url, options);
    this.pool = new Pool(this.id, options);
  }

  /** Whether a cluster holds it and its pool is open: only then may another cluster take it over. */
  get held(): boolean {
    return this.#holders > 0 && !this.#closed;
  }

  /** A cluster starts using it. */
  hold(): this {
    this.#holders++;
    return this;
  }

  /**
   * A cluster is done with it. The last holder closes the pool: gracefully (in-flight requests
   * finish), or at once with `abort`. Call once per `hold()`.
   */
  release(abort = false): Promise<void> {
    if (--this.#holders > 0) return Promise.resolve();
    return abort ? this.destroy() : this.close();
  }

  /** Let in-flight requests finish, then release sockets. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.pool.close();
  }

  /** Abort everything now (shutdown after the drain timeout). */
  async destroy(): Promise<void> {
    this.#closed = true;
    await this.pool.destroy();
  }
}
