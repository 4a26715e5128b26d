import { isIP } from 'node:net';
import { type Dispatcher, Pool } from 'undici';
import type { UpstreamConfig } from '../../config/schema.ts';
import { ALPN_OFFERS } from '../../tls/schema.ts';
import { UpstreamTlsSet } from '../../tls/upstream-tls.ts';
import { type Connector, createConnector, type TlsConnect } from './connector.ts';
import type { EndpointSpec } from './policy-schema.ts';

/** Dispatch options with `servername`, which undici reads (core/request.js) but does not type. */
export type EndpointDispatchOptions = Dispatcher.DispatchOptions & { servername: string };

/** The parts of an upstream's config an endpoint's pool is built from. */
export type EndpointTransportConfig = Pick<UpstreamConfig, 'pool' | 'timeouts' | 'tls' | 'protocol'>;

/** What an endpoint shares with the rest of its upstream. */
export interface EndpointDeps {
  /** The upstream's name: metric label, and the service an expected identity pattern names. */
  readonly upstream?: string | undefined;
  /** Where `https://` endpoints take their upstream's TLS from (shared, reference-counted). */
  readonly tls?: UpstreamTlsSet | undefined;
}

/** What the pool's connector is, for the transport key: plain endpoints keep the key they always had. */
function connectKey(url: URL, cfg: EndpointTransportConfig): object {
  const timeout = cfg.timeouts.connect;
  return url.protocol === 'https:' ? { timeout, tls: cfg.tls ?? null, protocol: cfg.protocol } : { timeout };
}

function poolOptions(cfg: EndpointTransportConfig, connect: Connector | object): Pool.Options {
  return {
    connections: cfg.pool.connections,
    pipelining: 1,
    keepAliveTimeout: cfg.pool.keepAliveTimeout,
    // Ours, for a connect timeout that fires on time and TLS that follows rotation.
    connect: connect as Connector,
    // The response-head and body idle timeouts are enforced per attempt by the forwarder.
    headersTimeout: 0,
    bodyTimeout: 0,
    // Defaults that matter for a proxy: never follow redirects, keep header limits strict.
    maxHeaderSize: 64 * 1024,
    ...(cfg.protocol !== 'http1' ? { allowH2: true } : undefined),
  };
}

function specUrl(spec: EndpointSpec): string {
  return typeof spec === 'string' ? spec : spec.url;
}

function transportKey(url: URL, cfg: EndpointTransportConfig): string {
  return `${url.href} ${JSON.stringify(poolOptions(cfg, connectKey(url, cfg)))}`;
}

/** A URL's host name without IPv6 brackets. */
function hostnameOf(url: URL): string {
  const h = url.hostname;
  return h.startsWith('[') ? h.slice(1, -1) : h;
}

/**
 * Everything an endpoint's pool is built from (its URL and the pool options: connections,
 * keep-alive, connect and body timeouts, and for `https://` the TLS settings and protocol), as one
 * string. A reload keeps an endpoint, with its pool and its warm connections, exactly when this is
 * unchanged; weight and policy are not part of it.
 */
export function endpointTransport(spec: EndpointSpec, cfg: EndpointTransportConfig): string {
  return transportKey(new URL(specUrl(spec)), cfg);
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
   * undici's per-request `servername`, the same for every request: undici takes the TLS server
   * name from the request's Host otherwise, and closes a connection when it changes. The name
   * checked and sent as SNI is the connector's (`tls.serverName`, else the endpoint's host),
   * never a client's Host; for plain endpoints it only spares undici deriving one per request.
   */
  readonly servername: string;
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
  /** `https://` only: how its connections speak TLS, and where the upstream's TLS was taken from. */
  readonly #tls: { readonly connect: TlsConnect; readonly set: UpstreamTlsSet } | undefined;
  #tlsReleased = false;

  /** Throws UpstreamTlsLoadError when its upstream's TLS files are not a usable set. */
  constructor(spec: EndpointSpec, cfg: EndpointTransportConfig, deps: EndpointDeps = {}) {
    this.url = new URL(specUrl(spec));
    this.weight = typeof spec === 'string' ? 1 : spec.weight;
    this.id = this.url.origin;
    this.host = this.url.host;
    this.transport = transportKey(this.url, cfg);
    const hostname = hostnameOf(this.url);
    if (this.url.protocol === 'https:') {
      const serverName = cfg.tls?.serverName;
      this.servername = serverName ?? hostname;
      const set = deps.tls ?? new UpstreamTlsSet();
      const tls = set.acquire(deps.upstream ?? this.id, cfg.tls);
      this.#tls = {
        set,
        connect: {
          tls,
          // SNI carries DNS names only (RFC 6066): an endpoint addressed by IP sends none.
          serverName: serverName ?? (isIP(hostname) === 0 ? hostname : undefined),
          alpn: ALPN_OFFERS[cfg.protocol],
        },
      };
    } else this.servername = hostname;
    this.pool = new Pool(this.id, poolOptions(cfg, this.connector(cfg.timeouts.connect)));
  }

  /**
   * A connector to this endpoint as its pool connects (TLS, client certificate, verification),
   * with its own connect timeout: for connections of its own, such as active health checks.
   */
  connector(timeoutMs: number): Connector {
    return createConnector(timeoutMs, this.#tls?.connect);
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
    try {
      await this.pool.close();
    } finally {
      this.#releaseTls();
    }
  }

  /** Abort everything now (shutdown after the drain timeout). */
  async destroy(): Promise<void> {
    this.#closed = true;
    try {
      await this.pool.destroy();
    } finally {
      this.#releaseTls();
    }
  }

  #releaseTls(): void {
    if (this.#tlsReleased || this.#tls === undefined) return;
    this.#tlsReleased = true;
    this.#tls.set.release(this.#tls.connect.tls);
  }
}
