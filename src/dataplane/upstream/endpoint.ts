import { isIP } from 'node:net';
import { Client, type Dispatcher, Pool } from 'undici';
import type { UpstreamConfig } from '../../config/schema.ts';
import { ALPN_OFFERS } from '../../tls/schema.ts';
import { UpstreamTlsSet } from '../../tls/upstream-tls.ts';
import { type Connector, createConnector, type TlsConnect } from './connector.ts';
import type { EndpointSpec } from './policy-schema.ts';

/** Dispatch options with `servername`, which undici reads (core/request.js) but does not type. */
export type EndpointDispatchOptions = Dispatcher.DispatchOptions & { servername: string };

/** Where an endpoint came from: the config file's `endpoints`, DNS, or the service registry. */
export const ENDPOINT_SOURCES = ['static', 'dns', 'registry'] as const;
export type EndpointSource = (typeof ENDPOINT_SOURCES)[number];

/**
 * An endpoint as a source describes it. The origin of `url` is its identity within an upstream
 * (pool, balancer ring position, metric label); the rest may change while it stays.
 */
export interface EndpointInfo {
  /** `http://` or `https://` origin, e.g. `http://10.0.0.5:8080`. */
  readonly url: string;
  /** Relative share of traffic, 1-1000; default 1. */
  readonly weight?: number | undefined;
  readonly zone?: string | undefined;
  /** The version its source reports (the registry's instance version). */
  readonly version?: string | undefined;
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  /** `draining`: in-flight requests finish, new ones go elsewhere. Default `active`. */
  readonly state?: 'active' | 'draining' | undefined;
  /**
   * Host header (when the route does not preserve the client's) and TLS server name, when not the
   * URL's own host: an address resolved from a name is still that name's virtual host.
   */
  readonly host?: string | undefined;
}

const NO_METADATA: Readonly<Record<string, string>> = Object.freeze({});

/** The parts of an upstream's config an endpoint's pool is built from. */
export type EndpointTransportConfig = Pick<UpstreamConfig, 'pool' | 'timeouts' | 'tls' | 'protocol'>;

/** What an endpoint shares with the rest of its upstream. */
export interface EndpointDeps {
  /** The upstream's name: the metric label of its TLS handshakes and reloads. */
  readonly upstream?: string | undefined;
  /** The service an expected identity pattern names (`{service}`); the upstream's name by default. */
  readonly service?: string | undefined;
  /** Where `https://` endpoints take their upstream's TLS from (shared, reference-counted). */
  readonly tls?: UpstreamTlsSet | undefined;
}

/** What the pool's connector is, for the transport key: plain endpoints keep the key they always had. */
function connectKey(url: URL, cfg: EndpointTransportConfig): object {
  const timeout = cfg.timeouts.connect;
  return url.protocol === 'https:' ? { timeout, tls: cfg.tls ?? null, protocol: cfg.protocol } : { timeout };
}

/** How much sooner than a server's advertised keep-alive timeout a pooled connection is dropped. */
export const KEEP_ALIVE_MARGIN_MS = 2000;

function poolOptions(cfg: EndpointTransportConfig, connect: Connector | object): Pool.Options {
  return {
    connections: cfg.pool.connections,
    pipelining: 1,
    // An idle connection is dropped before the upstream's server drops it (docs/resilience.md,
    // "Keep-alive"): at a server's `Keep-Alive: timeout=` hint less the threshold, else after
    // pool.keepAliveTimeout. The hint is not capped by pool.keepAliveTimeout: an upstream that
    // keeps connections a minute keeps them warm (capping cost reconnects, 3% more instructions
    // per request in bench:instructions against a 60 s upstream).
    keepAliveTimeout: cfg.pool.keepAliveTimeout,
    keepAliveTimeoutThreshold: KEEP_ALIVE_MARGIN_MS,
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

/** A config entry (`url` or `{ url, weight, zone, metadata }`) as EndpointInfo. */
export function endpointInfoOf(spec: EndpointSpec | EndpointInfo | string): EndpointInfo {
  return typeof spec === 'string' ? { url: spec } : spec;
}

/** The identity of an endpoint within its upstream: its URL's origin. */
export function endpointId(info: EndpointInfo): string {
  return new URL(info.url).origin;
}

function transportKey(url: URL, host: string, cfg: EndpointTransportConfig): string {
  return `${url.href} ${host} ${JSON.stringify(poolOptions(cfg, connectKey(url, cfg)))}`;
}

/** The host name of a `host[:port]`, without IPv6 brackets. */
function hostnameOf(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const colon = host.lastIndexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}

/** Pool options undici has accepted, as JSON: each is tried once, not once per endpoint. */
const acceptedOptions = new Set<string>();

/**
 * Throw now what undici's Pool constructor would throw for these options, so that a cluster with
 * bad pool options fails to build (and a reload fails) instead of its first request.
 */
function checkPoolOptions(cfg: EndpointTransportConfig): void {
  const options = poolOptions(cfg, {});
  const key = JSON.stringify(options);
  if (acceptedOptions.has(key)) return;
  void new Pool('http://127.0.0.1', options).destroy();
  if (acceptedOptions.size >= 100) acceptedOptions.clear();
  acceptedOptions.add(key);
}

/**
 * Everything an endpoint's pool is built from (its URL, the host it is addressed as, and the pool
 * options: connections, keep-alive, connect and body timeouts, and for `https://` the TLS settings
 * and protocol), as one string. An endpoint is kept, with its pool and its warm connections,
 * exactly while this is unchanged (across reloads and endpoint-set updates); weight, zone,
 * metadata, state and policy are not part of it.
 */
export function endpointTransport(spec: EndpointInfo | string, cfg: EndpointTransportConfig): string {
  const info = endpointInfoOf(spec);
  const url = new URL(info.url);
  return transportKey(url, info.host ?? url.host, cfg);
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
  /** `server.address` and `server.port` of its attempts' spans: the URL's, read once. */
  readonly serverAddress: string;
  readonly serverPort: number;
  /** Which source put it in its upstream's set. */
  source: EndpointSource;
  /**
   * undici's per-request `servername`, the same for every request: undici takes the TLS server
   * name from the request's Host otherwise, and closes a connection when it changes. The name
   * checked and sent as SNI is the connector's (`tls.serverName`, else the endpoint's host),
   * never a client's Host; for plain endpoints it only spares undici deriving one per request.
   */
  readonly servername: string;
  /**
   * Relative share of traffic for weighted balancers (default 1). Not readonly, nor are zone,
   * metadata and draining: an update from the endpoint's source changes them in place.
   */
  weight: number;
  zone: string | undefined;
  version: string | undefined;
  metadata: Readonly<Record<string, string>>;
  /** Draining: no new attempts; the ones in flight finish. */
  draining = false;
  /**
   * Removed from its upstream's set: no new attempts; the pool closes once those in flight finish.
   * Never set back (the same origin added again is a new Endpoint).
   */
  removed = false;
  #pool: Pool | undefined;
  /** Connections of their own (dispatchFresh) still answering. */
  readonly #fresh = new Set<Client>();
  readonly #transportConfig: EndpointTransportConfig;
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
  #destroyed = false;
  /** Clusters holding it: after a reload the new cluster and the one it replaced share it. */
  #holders = 0;
  /** `https://` only: how its connections speak TLS, and where the upstream's TLS was taken from. */
  readonly #tls: { readonly connect: TlsConnect; readonly set: UpstreamTlsSet } | undefined;
  #tlsReleased = false;

  /** Throws UpstreamTlsLoadError when its upstream's TLS files are not a usable set. */
  constructor(
    spec: EndpointInfo | string,
    cfg: EndpointTransportConfig,
    source: EndpointSource = 'static',
    deps: EndpointDeps = {},
  ) {
    const info = endpointInfoOf(spec);
    this.url = new URL(info.url);
    this.id = this.url.origin;
    this.host = info.host ?? this.url.host;
    this.serverAddress = this.url.hostname;
    this.serverPort = Number(this.url.port) || (this.url.protocol === 'https:' ? 443 : 80);
    this.source = source;
    this.weight = info.weight ?? 1;
    this.zone = info.zone;
    this.version = info.version;
    this.metadata = info.metadata ?? NO_METADATA;
    this.draining = info.state === 'draining';
    this.transport = transportKey(this.url, this.host, cfg);
    checkPoolOptions(cfg);
    this.#transportConfig = cfg;
    // The name it is addressed as: an address resolved from a name is still that name's host.
    const hostname = hostnameOf(this.host);
    if (this.url.protocol === 'https:') {
      const serverName = cfg.tls?.serverName;
      this.servername = serverName ?? hostname;
      const set = deps.tls ?? new UpstreamTlsSet();
      const tls = set.acquire(deps.upstream ?? this.id, cfg.tls, deps.service);
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
  }

  /**
   * Its connection pool, made at first use: on a wide upstream most endpoints are outside this
   * replica's aperture and never need one (an undici Pool is about 19 KB before any connection).
   */
  get pool(): Pool {
    let pool = this.#pool;
    if (pool === undefined) {
      const cfg = this.#transportConfig;
      pool = new Pool(this.id, poolOptions(cfg, this.connector(cfg.timeouts.connect)));
      this.#pool = pool;
      // Asked for after close(): a pool in the same state, so nothing can use it.
      if (this.#destroyed) void pool.destroy();
      else if (this.#closed) void pool.close();
    }
    return pool;
  }

  /**
   * Send one request on a connection of its own, outside the pool, closed once it is answered:
   * the replay of a request that met a stale pooled connection (its pool may hold more of them).
   */
  dispatchFresh(opts: EndpointDispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const cfg = this.#transportConfig;
    const { connections: _, ...options } = poolOptions(cfg, this.connector(cfg.timeouts.connect));
    const client = new Client(this.id, options);
    const fresh = this.#fresh;
    fresh.add(client);
    if (this.#destroyed) void client.destroy();
    client.dispatch(opts, handler);
    void client.close().finally(() => fresh.delete(client));
  }

  /** The pool if one was made: for views that must not make one. */
  get openedPool(): Pool | undefined {
    return this.#pool;
  }

  /**
   * A connector to this endpoint as its pool connects (TLS, client certificate, verification),
   * with its own connect timeout: for connections of its own, such as active health checks.
   */
  connector(timeoutMs: number): Connector {
    return createConnector(timeoutMs, this.#tls?.connect);
  }

  /** What its source said about it last, to build it again (a reload that changes its pool). */
  info(): EndpointInfo {
    return {
      url: this.url.href,
      weight: this.weight,
      zone: this.zone,
      version: this.version,
      metadata: this.metadata,
      state: this.draining ? 'draining' : 'active',
      host: this.host === this.url.host ? undefined : this.host,
    };
  }

  /**
   * Take a source's newer description of it (same transport): weight, zone, version, metadata, state.
   * Returns whether anything changed.
   */
  assign(info: EndpointInfo, source: EndpointSource): boolean {
    const weight = info.weight ?? 1;
    const draining = info.state === 'draining';
    const metadata = info.metadata ?? NO_METADATA;
    const changed =
      weight !== this.weight ||
      draining !== this.draining ||
      info.zone !== this.zone ||
      info.version !== this.version ||
      source !== this.source ||
      !sameMetadata(metadata, this.metadata);
    this.weight = weight;
    this.draining = draining;
    this.zone = info.zone;
    this.version = info.version;
    this.metadata = metadata;
    this.source = source;
    return changed;
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
      await this.#pool?.close();
    } finally {
      this.#releaseTls();
    }
  }

  /** Abort everything now (shutdown after the drain timeout). */
  async destroy(): Promise<void> {
    this.#closed = true;
    this.#destroyed = true;
    try {
      for (const c of this.#fresh) void c.destroy();
      await this.#pool?.destroy();
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

function sameMetadata(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  if (a === b) return true;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const k of keys) if (a[k] !== b[k]) return false;
  return true;
}
