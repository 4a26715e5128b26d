import { Pool } from 'undici';
import type { UpstreamConfig } from '../../config/schema.ts';

/**
 * One upstream endpoint origin: its undici pool (keep-alive, no pipelining) and the counters the
 * balancers and the admin API read.
 */
export class Endpoint {
  /** The origin, e.g. `http://10.0.0.5:8080`: also the `endpoint` metric label. */
  readonly id: string;
  readonly url: URL;
  /** Host header value when the route does not preserve the client's. */
  readonly host: string;
  readonly pool: Pool;
  inFlight = 0;
  #closed = false;

  constructor(origin: string, cfg: UpstreamConfig) {
    this.url = new URL(origin);
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
