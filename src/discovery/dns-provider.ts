/**
 * DNS discovery: an upstream's endpoints are the addresses a name resolves to (A, AAAA), or the
 * targets and ports of its SRV records, resolved again when the answer's TTL runs out (bounded by
 * `refresh.min` and `refresh.max`). node:dns's Resolver asks the name servers directly (c-ares,
 * no cache in Node: every refresh reaches the wire). A failed resolution (NXDOMAIN, SERVFAIL, no
 * records, timeout) publishes nothing: the upstream keeps its last known endpoints, and the
 * provider tries again after `refresh.min`, doubling up to `refresh.max` while it keeps failing.
 */
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type {
  DiscoveredEndpoint,
  DiscoveryFailureReason,
  EndpointProvider,
  EndpointSink,
  ProviderFactory,
} from './provider.ts';
import type { DnsDiscoveryConfig } from './schema.ts';

export interface DnsProviderOptions {
  /** Name servers, `address` or `address:port`; default: the system's (/etc/resolv.conf). */
  readonly servers?: readonly string[] | undefined;
  /** Per-query timeout (ms) before c-ares tries again; default 2000. */
  readonly timeoutMs?: number | undefined;
  /** Attempts per name server; default 2. */
  readonly tries?: number | undefined;
}

/** An answer: the endpoints and the lowest TTL among the records behind them (seconds). */
export interface DnsAnswer {
  readonly endpoints: DiscoveredEndpoint[];
  readonly ttl: number;
}

/** The highest endpoint weight; SRV weights (0-65535) are scaled into 1..MAX_WEIGHT. */
const MAX_WEIGHT = 1000;

const REASONS: Readonly<Record<string, DiscoveryFailureReason>> = {
  ENOTFOUND: 'nxdomain',
  ENODATA: 'no_data',
  ESERVFAIL: 'servfail',
  EREFUSED: 'refused',
  ETIMEOUT: 'timeout',
  ECONNREFUSED: 'unavailable',
};

/** A resolver error's reason label (bounded) and a short detail. */
export function dnsFailure(err: unknown): { reason: DiscoveryFailureReason; detail: string } {
  const code = (err as { code?: unknown }).code;
  const reason = typeof code === 'string' ? (REASONS[code] ?? 'error') : 'error';
  const detail = typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
  return { reason, detail };
}

/** `host` as the authority part of a URL: IPv6 in brackets, the port unless it is the protocol's. */
function authority(host: string, port: number, protocol: 'http' | 'https'): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return port === (protocol === 'https' ? 443 : 80) ? h : `${h}:${port}`;
}

function withoutDot(name: string): string {
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

function endpointOf(
  address: string,
  port: number,
  name: string,
  protocol: 'http' | 'https',
  weight: number | undefined,
): DiscoveredEndpoint {
  return {
    url: `${protocol}://${authority(address, port, protocol)}`,
    host: authority(withoutDot(name), port, protocol),
    weight,
  };
}

async function addresses(
  resolver: Resolver,
  name: string,
  type: 'A' | 'AAAA',
): Promise<{ address: string; ttl: number }[]> {
  return type === 'A' ? resolver.resolve4(name, { ttl: true }) : resolver.resolve6(name, { ttl: true });
}

/** An SRV target's addresses: IPv4, else IPv6; an address literal as it is (TTL: unbounded). */
async function targetAddresses(
  resolver: Resolver,
  target: string,
): Promise<{ address: string; ttl: number }[]> {
  if (isIP(target) !== 0) return [{ address: target, ttl: Number.POSITIVE_INFINITY }];
  try {
    return await addresses(resolver, target, 'A');
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ENODATA') throw err;
    return addresses(resolver, target, 'AAAA');
  }
}

/**
 * Resolve `config` once. SRV (RFC 2782): only the records of the lowest priority are used (no
 * failover to higher ones), their weights scaled into 1..1000; each target is resolved to its
 * addresses. Node's resolver does not report an SRV record's own TTL, so an SRV answer's TTL is
 * that of its targets' addresses (refresh.max bounds it).
 */
export async function resolveEndpoints(resolver: Resolver, config: DnsDiscoveryConfig): Promise<DnsAnswer> {
  const { dns: name, protocol } = config;
  if (config.type !== 'SRV') {
    const port = config.port!;
    const records = await addresses(resolver, name, config.type);
    let ttl = Number.POSITIVE_INFINITY;
    const endpoints = records.map((r) => {
      ttl = Math.min(ttl, r.ttl);
      return endpointOf(r.address, port, name, protocol, undefined);
    });
    return { endpoints, ttl };
  }
  const records = await resolver.resolveSrv(name);
  if (records.length === 0) throw Object.assign(new Error('no SRV records'), { code: 'ENODATA' });
  const priority = Math.min(...records.map((r) => r.priority));
  const chosen = records.filter((r) => r.priority === priority);
  const heaviest = Math.max(...chosen.map((r) => r.weight));
  const scale = heaviest > MAX_WEIGHT ? MAX_WEIGHT / heaviest : 1;
  const resolved = await Promise.allSettled(chosen.map((r) => targetAddresses(resolver, r.name)));
  const endpoints: DiscoveredEndpoint[] = [];
  let ttl = Number.POSITIVE_INFINITY;
  let firstError: unknown;
  resolved.forEach((result, i) => {
    if (result.status === 'rejected') {
      firstError ??= result.reason;
      return;
    }
    const r = chosen[i]!;
    const weight = Math.max(1, Math.round(r.weight * scale));
    for (const a of result.value) {
      ttl = Math.min(ttl, a.ttl);
      endpoints.push(endpointOf(a.address, r.port, r.name, protocol, weight));
    }
  });
  // Some targets not resolving is a partial answer worth serving; none resolving is a failure.
  if (endpoints.length === 0)
    throw firstError ?? Object.assign(new Error('no SRV targets'), { code: 'ENODATA' });
  return { endpoints, ttl };
}

/** Seconds of TTL → the wait before the next resolution, within the configured bounds. */
export function refreshDelay(ttlSeconds: number, refresh: DnsDiscoveryConfig['refresh']): number {
  const ms = Number.isFinite(ttlSeconds) ? ttlSeconds * 1000 : refresh.max;
  return Math.min(refresh.max, Math.max(refresh.min, ms));
}

/** The wait after `failures` failed resolutions in a row: refresh.min, doubling up to refresh.max. */
export function retryDelay(failures: number, refresh: DnsDiscoveryConfig['refresh']): number {
  return Math.min(refresh.max, refresh.min * 2 ** Math.min(30, Math.max(0, failures - 1)));
}

function runRefresh(provider: DnsProvider): void {
  void provider.refresh();
}

export class DnsProvider implements EndpointProvider {
  readonly #config: DnsDiscoveryConfig;
  readonly #resolver: Resolver;
  #sink: EndpointSink | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #lastTtl: number | undefined;
  #nextAt: number | undefined;
  #closed = false;

  constructor(config: DnsDiscoveryConfig, opts: DnsProviderOptions = {}) {
    this.#config = config;
    this.#resolver = new Resolver({ timeout: opts.timeoutMs ?? 2000, tries: opts.tries ?? 2 });
    if (opts.servers !== undefined) this.#resolver.setServers([...opts.servers]);
  }

  start(sink: EndpointSink): void {
    this.#sink = sink;
    void this.refresh();
  }

  /** Resolve now and publish (or report the failure), then schedule the next resolution. */
  async refresh(): Promise<void> {
    this.#timer = undefined;
    const sink = this.#sink;
    if (sink === undefined || this.#closed) return;
    let delay: number;
    try {
      const answer = await resolveEndpoints(this.#resolver, this.#config);
      if (this.#closed) return;
      this.#failures = 0;
      this.#lastTtl = Number.isFinite(answer.ttl) ? answer.ttl : undefined;
      sink.replace(answer.endpoints);
      delay = refreshDelay(answer.ttl, this.#config.refresh);
    } catch (err) {
      if (this.#closed) return;
      this.#failures++;
      const { reason, detail } = dnsFailure(err);
      sink.fail(reason, detail);
      delay = retryDelay(this.#failures, this.#config.refresh);
    }
    this.#nextAt = Date.now() + delay;
    this.#timer = setTimeout(runRefresh, delay, this).unref();
  }

  describe(): Readonly<Record<string, unknown>> {
    return {
      name: this.#config.dns,
      type: this.#config.type,
      lastTtlSeconds: this.#lastTtl ?? null,
      nextRefreshAt: this.#nextAt === undefined ? null : new Date(this.#nextAt).toISOString(),
      consecutiveFailures: this.#failures,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#resolver.cancel();
  }
}

export function createDnsProviderFactory(opts: DnsProviderOptions = {}): ProviderFactory<DnsDiscoveryConfig> {
  return function dnsProvider(config) {
    return new DnsProvider(config, opts);
  };
}
