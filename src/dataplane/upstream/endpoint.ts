import { Pool } from 'undici';
import type { UpstreamConfig } from '../../config/schema.ts';
import type { EndpointSpec } from './policy-schema.ts';

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
  /** Relative share of traffic for weighted balancers (config `{ url, weight }`, default 1). */
  readonly weight: number;
  readonly pool: Pool;
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

  constructor(spec: EndpointSpec, cfg: Pick<UpstreamConfig, 'pool' | 'timeouts'>) {
    this.url = new URL(typeof spec === 'string' ? spec : spec.url);
    this.weight = typeof spec === 'string' ? 1 : spec.weight;
    this.id = this.url.origin;
    this.host = this.url.host;
    this.pool = new Pool(this.id, {
      connections: cfg.pool.connections,
      pipelining: 1,
      keepAliveTimeout: cfg.pool.keepAliveTimeout,
      connect: { timeout: cfg.timeouts.connect },
      // The response-head timeout is enforced per attempt by the forwarder (precise timer).
      headersTimeout: 0,
      bodyTimeout: cfg.timeouts.idle,
      // Defaults that matter for a proxy: never follow redirects, keep header limits strict.
      maxHeaderSize: 64 * 1024,
    });
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
