import pino, { type Logger } from 'pino';
import type { UpstreamConfig } from '../../config/schema.ts';
import { GatewayError } from '../../errors.ts';
import {
  type ENDPOINT_STATES,
  type GatewayMetrics,
  RETRY_REASONS,
  UPSTREAM_DECISIONS,
  type UpstreamResilienceSeries,
  type UpstreamStateSource,
} from '../../telemetry/metrics.ts';
import { type UpstreamTls, UpstreamTlsSet } from '../../tls/upstream-tls.ts';
import { type AttemptOutcome, isNeutral, type UpstreamTlsFailure } from '../forward/upstream-errors.ts';
import { Aperture, type ApertureDescription, type ReplicaPosition, replicaPosition } from './aperture.ts';
import { type Balancer, type PickContext, wasTried } from './balancer.ts';
import { createBalancer, DEFAULT_DECAY_MS, DEFAULT_RTT_MS } from './balancers.ts';
import { Bulkhead } from './bulkhead.ts';
import {
  CircuitBreaker,
  type CircuitDescription,
  type CircuitTransition,
  CLOSED,
  NO_TICKET,
  OPEN,
} from './circuit-breaker.ts';
import { type Clock, monotonicClock, type Random } from './clock.ts';
import {
  Endpoint,
  type EndpointDeps,
  type EndpointInfo,
  type EndpointSource,
  endpointId,
  endpointInfoOf,
  endpointTransport,
} from './endpoint.ts';
import { HealthChecker, type HealthDescription } from './health-checker.ts';
import { OutlierDetector } from './outlier-detector.ts';
import { initRtt, observeRtt, rttEstimate } from './peak-ewma.ts';
import { RetryBudget } from './retry-budget.ts';
import { type RetryDecision, type RetryGates, type RetryInput, RetryPolicy } from './retry-policy.ts';

/** The metric calls a cluster makes; GatewayMetrics has them all. */
export type ClusterMetrics = Pick<
  GatewayMetrics,
  | 'upstreamResilience'
  | 'watchUpstream'
  | 'recordCircuitTransition'
  | 'recordEjection'
  | 'forgetEndpoint'
  | 'upstreamTls'
>;

/** What a cluster needs from the running gateway. All optional: tests and tools build bare clusters. */
export interface ClusterDeps {
  /** Breaker transitions, ejections and returns, health changes and panic mode: one line each. */
  readonly logger?: Logger | undefined;
  readonly metrics?: ClusterMetrics | undefined;
  /** Monotonic milliseconds; performance.now by default. */
  readonly now?: Clock | undefined;
  readonly random?: Random | undefined;
  /** upstreamFingerprint(config), when the caller has computed it already (compileSnapshot has). */
  readonly fingerprint?: string | undefined;
  /**
   * This process among its replicas (the static `replica` setting), where the aperture's windows
   * start; by default a position hashed from the host name and process id.
   */
  readonly replica?: ReplicaPosition | undefined;
  /**
   * The cluster this one replaces on a reload (its policy changed). Its endpoint set is taken
   * over: endpoints whose transport settings (`endpointTransport`: URL, pool options, connect and
   * body timeouts) are unchanged are the same objects, pools and state included; the others are
   * built again from what their source said. So are its circuit breaker, retry budget and
   * bulkhead taken over where their own settings are unchanged. Without it the set starts as the
   * config's `endpoints` (none for a discovered upstream, until its source publishes).
   */
  readonly previous?: Cluster | undefined;
  /** Where `https://` endpoints take the upstream's TLS from; a set of its own when absent. */
  readonly tls?: UpstreamTlsSet | undefined;
}

/**
 * The policy objects a new cluster took over from the one it replaces, for `abandon()`. Weak: once
 * the reload has committed, the new cluster must not keep the retired one (and every cluster
 * before it) alive.
 */
interface PolicyTakenOver {
  readonly from: WeakRef<Cluster>;
  readonly breaker: boolean;
  readonly bulkhead: boolean;
}

/** Settings compared as canonical JSON (the parsed config keeps the schema's key order). */
function sameSettings(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** How long a half-open probe may stay unreported before its slot is given back. */
function probeTimeoutOf(timeouts: UpstreamConfig['timeouts']): number {
  return timeouts.request > 0 ? timeouts.request : timeouts.response + timeouts.idle;
}

/** A shared endpoint's fields as the previous cluster left them, for `abandon()`. */
interface TakenOver {
  readonly endpoint: Endpoint;
  readonly healthy: boolean;
  readonly ejected: boolean;
}

/**
 * Canonical JSON of an upstream's policy: its config without the endpoint source (`endpoints`,
 * `discovery`). A reload keeps a cluster whose fingerprint is unchanged; endpoint changes are
 * applied to its live set instead (`applyEndpoints`).
 */
export function upstreamFingerprint(config: UpstreamConfig): string {
  // `policies` (admission gates) are compiled into the routes' plans, not held by the cluster.
  const { endpoints: _endpoints, discovery: _discovery, policies: _policies, ...policy } = config;
  return JSON.stringify(policy);
}

/** What an endpoint-set update changed, by endpoint id. */
export interface EndpointChange {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Kept, with a new weight, zone, metadata, state or source. */
  readonly updated: readonly string[];
}

/** A change to one endpoint already in the set; absent fields stay as they are. */
export interface EndpointUpdate {
  readonly weight?: number | undefined;
  readonly zone?: string | undefined;
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  readonly state?: 'active' | 'draining' | undefined;
}

const NO_CHANGE: EndpointChange = Object.freeze({ added: [], removed: [], updated: [] });
/** Endpoint ids named per list in the log line of a set change (the counts are always there). */
const LOGGED_IDS = 10;
/**
 * At most one "endpoint set changed" line per upstream in this long: the first change is logged at
 * once, the ones after it are summed into one line at the end of the interval. With a registry
 * feeding 1,000 instances, one line per registration would drown the log.
 */
export const SET_LOG_INTERVAL_MS = 10_000;
/** How often a widened aperture looks at the peak of attempts in flight to see whether it may narrow. */
export const APERTURE_PERIOD_MS = 30_000;

let defaultReplica: ReplicaPosition | undefined;

/** Set changes not yet logged (SET_LOG_INTERVAL_MS). */
interface PendingSetLog {
  changes: number;
  added: number;
  removed: number;
  updated: number;
  addedIds: string[];
  removedIds: string[];
  timer: NodeJS.Timeout;
}

export interface EndpointDescription {
  id: string;
  /** Which source put it in the set: static (the config file), dns or registry. */
  source: EndpointSource;
  weight: number;
  zone: string | null;
  version: string | null;
  metadata: Readonly<Record<string, string>>;
  inFlight: number;
  /**
   * healthy (eligible) | unhealthy (failing active checks) | ejected (outlier detection) |
   * draining (its source is taking it away: no new requests).
   */
  state: (typeof ENDPOINT_STATES)[number];
  /** Whether the balancer may choose it now (in panic mode, every endpoint may). */
  eligible: boolean;
  /** Whether the balancer chooses among it: eligible and, on a wide upstream, in the aperture. */
  inUse: boolean;
  health: HealthDescription | null;
  ejection: {
    ejected: boolean;
    /** Wall-clock ISO time the ejection ends. */
    until: string | null;
    /** Ejections that set the next one's length (decays while the endpoint behaves). */
    count: number;
    consecutiveGatewayErrors: number;
    consecutive5xx: number;
  };
  /** Peak-EWMA latency estimate, ms. */
  ewmaMs: number;
}

/**
 * What a request carries from `admit()` through its attempts to `release()`: the circuit breaker
 * ticket of its admission (NO_TICKET when its results no longer count). The RequestContext is one.
 */
export interface AdmissionTicket {
  breakerTicket: number;
}

/**
 * An upstream-side policy consulted at admission (an upstream rate ceiling), before the breaker
 * and bulkhead: what it refuses never takes a probe or a slot. Compiled with the snapshot, one per
 * upstream, and passed to `admit` by the pipeline (RoutePlan.admission), so requests and WebSocket
 * handshakes meet it alike and a reload that keeps the Cluster can still change it. `T`: what the
 * gate reads of a request (the pipeline's gates get its RequestContext).
 */
export interface AdmissionGate<T extends AdmissionTicket = AdmissionTicket> {
  /** The policy's name, for decisions and errors. */
  readonly name: string;
  /**
   * undefined: pass; a GatewayError: refuse with it; a Promise only when the decision must wait
   * (a shared store), settling to one of the two.
   */
  admit(req: T): GatewayError | undefined | Promise<GatewayError | undefined>;
}

export interface ClusterDescription {
  name: string;
  balancer: string;
  inFlight: number;
  panic: boolean;
  circuitBreaker: CircuitDescription | null;
  retryBudget: { remaining: number; ratio: number; minRetriesPerSecond: number; windowMs: number } | null;
  bulkhead: { active: number; queued: number; maxConcurrent: number; maxQueued: number } | null;
  /** The subset this replica balances over (null: no aperture, every eligible endpoint). */
  aperture: ApertureDescription | null;
  endpoints: EndpointDescription[];
}

const DECISION = {
  retry: UPSTREAM_DECISIONS.indexOf('retry'),
  budgetExhausted: UPSTREAM_DECISIONS.indexOf('budget_exhausted'),
  circuitOpen: UPSTREAM_DECISIONS.indexOf('circuit_open'),
  overloaded: UPSTREAM_DECISIONS.indexOf('overloaded'),
} as const;
const REASON_INDEX = new Map<string, number>(RETRY_REASONS.map((r, i) => [r, i]));

const SILENT: Logger = pino({ enabled: false });

/** At most one TLS failure line per endpoint and code in this long. */
const TLS_LOG_INTERVAL_MS = 10_000;
const TLS_FAILURE_MESSAGES: Readonly<Record<UpstreamTlsFailure['kind'], string>> = {
  verify: 'upstream TLS certificate verification failed',
  handshake: 'upstream TLS handshake failed',
  identity: 'upstream identity verification failed',
};

/** Counters that go nowhere, for clusters built without metrics. */
function detachedSeries(): UpstreamResilienceSeries {
  const cell = () => ({ labels: {}, value: 0 });
  return { decisions: UPSTREAM_DECISIONS.map(cell), retries: RETRY_REASONS.map(cell) };
}

function flushSetLog(cluster: Cluster): void {
  cluster.flushSetLog();
}

function isGatewayStatus(status: number): boolean {
  return status === 502 || status === 503 || status === 504;
}

/**
 * An upstream by name: its endpoints and their pools, the balancer, and the resilience policy
 * (circuit breaker, retry policy and budget, outlier detection, bulkhead, active health checks).
 * A cluster is runtime state: a reload that leaves the upstream's config unchanged keeps the same
 * Cluster object, and with it every counter below. A reload that changes it builds a new Cluster
 * that takes over the old one's endpoints whose transport settings did not change (`deps.previous`):
 * the two share those Endpoint objects, and each endpoint's pool closes when its last cluster does.
 *
 * Per request, the pipeline calls (docs/resilience.md has the full contract):
 *
 *   admit(ctx) → requestStarted() → [pick(ctx) → attemptStarted(e) → attemptFinished(e, …, ctx)
 *     → retryDecision(…) → (wait delayMs, repeat)] → release(ctx)
 *
 * On the success path none of these allocate.
 */
/** A state change an attempt's result caused: recorded as an event on that request's span. */
export interface ResilienceEvent {
  readonly name: string;
  readonly attributes: Record<string, string | number>;
}

/**
 * The span events caused by the attempt result being recorded (`attemptFinished`). Module-wide, not
 * per cluster: after a reload a taken-over breaker reports to the new cluster while requests that
 * started on the old one still finish there, and their events belong to those requests. All of it
 * is synchronous, so at most one result is being recorded at a time.
 */
let recording = false;
let attemptEvents: ResilienceEvent[] | undefined;

export class Cluster {
  readonly name: string;
  readonly config: UpstreamConfig;
  /** Canonical JSON of the policy, to decide whether a reload changed this upstream. */
  readonly fingerprint: string;
  /** Chooses among the eligible endpoints (all of them in panic mode). */
  readonly balancer: Balancer;
  readonly retryPolicy: RetryPolicy;
  /** Attempts in flight (attemptStarted/attemptFinished). */
  inFlight = 0;

  readonly #logger: Logger;
  readonly #metrics: ClusterMetrics | undefined;
  readonly #series: UpstreamResilienceSeries;
  readonly #now: Clock;
  readonly #decayMs: number;
  readonly #defaultRtt: number;
  /** What its endpoints share: the upstream's TLS, and the names it goes by. */
  readonly #endpointDeps: EndpointDeps;
  /**
   * The upstream's `tls` files, held for the cluster's life: loaded (and checked) when the config
   * is, even before a discovered upstream has its first endpoint.
   */
  #tls: UpstreamTls | undefined;
  readonly #breaker: CircuitBreaker | undefined;
  readonly #breakerStatuses: ReadonlySet<number>;
  readonly #budget: RetryBudget | undefined;
  readonly #bulkhead: Bulkhead | undefined;
  readonly #outliers: OutlierDetector | undefined;
  readonly #health: HealthChecker | undefined;
  readonly #gates: RetryGates;
  readonly #unwatch: () => void;
  readonly #takenOver: readonly TakenOver[];
  #policyTakenOver: PolicyTakenOver | undefined = undefined;
  /** The last TLS failure line per endpoint (tlsFailed). */
  readonly #tlsLogged = new WeakMap<Endpoint, { code: string; at: number; since: number }>();
  /** False once a newer cluster took the bulkhead over: its waiters are that cluster's to reject. */
  #ownsBulkhead = true;
  #eligible: readonly Endpoint[] = [];
  /** What the balancer chooses among: the aperture's window over #eligible, or #eligible itself. */
  #inUse: readonly Endpoint[] = [];
  readonly #aperture: Aperture | undefined;
  /** Whether an endpoint of the set is among #eligible (the rule #refresh applies). */
  readonly #isCandidate = (e: Endpoint): boolean => !e.draining && (this.#panic || (e.healthy && !e.ejected));
  /** Attempts in flight above which the aperture widens (Infinity: it cannot, or there is none). */
  #widenAt = Infinity;
  /** The most attempts in flight since the aperture last looked (APERTURE_PERIOD_MS). */
  #peak = 0;
  /** When a widened aperture looks again (monotonic ms); Infinity while it is at its base size. */
  #bandCheckAt = Infinity;
  #lastSetLogAt = -Infinity;
  #pendingSetLog: PendingSetLog | undefined = undefined;
  /** The live set, in the order endpoints joined; replaced (never mutated) on each change. */
  #members: readonly Endpoint[] = [];
  readonly #byId = new Map<string, Endpoint>();
  /** Removed endpoints whose pools are still closing (in-flight attempts finishing). */
  readonly #leaving = new Set<Endpoint>();
  #panic = false;
  #closed = false;
  /**
   * Why the set is empty or stale, from its discovery source (e.g. `dns users.internal: NXDOMAIN`);
   * part of the NO_HEALTHY_ENDPOINT answer.
   */
  sourceNote: string | undefined = undefined;

  constructor(name: string, config: UpstreamConfig, deps: ClusterDeps = {}) {
    this.name = name;
    this.config = config;
    this.fingerprint = deps.fingerprint ?? upstreamFingerprint(config);
    const now = deps.now ?? monotonicClock;
    const random = deps.random ?? Math.random;
    this.#now = now;
    this.#logger = (deps.logger ?? SILENT).child({ upstream: name });
    this.#metrics = deps.metrics;
    this.#series = deps.metrics?.upstreamResilience(name) ?? detachedSeries();

    const balancerCfg = config.balancer;
    this.#decayMs = balancerCfg.kind === 'peak_ewma' ? balancerCfg.decay : DEFAULT_DECAY_MS;
    const defaultRtt = balancerCfg.kind === 'peak_ewma' ? balancerCfg.defaultRtt : DEFAULT_RTT_MS;
    const t0 = now();
    this.#defaultRtt = defaultRtt;
    const tlsSet = deps.tls ?? new UpstreamTlsSet({ logger: this.#logger, metrics: deps.metrics });
    // An identity pattern's {service}: the registered service it is discovered from, else its name.
    const discovery = config.discovery;
    const service = discovery !== undefined && 'registry' in discovery ? discovery.registry : name;
    this.#endpointDeps = { upstream: name, service, tls: tlsSet };
    this.#tls = config.tls === undefined ? undefined : tlsSet.acquire(name, config.tls, service);
    const previous = deps.previous !== undefined && !deps.previous.#closed ? deps.previous : undefined;
    const adopted: Endpoint[] = [];
    const members: Endpoint[] = [];
    if (previous === undefined) {
      for (const spec of config.endpoints ?? [])
        members.push(this.#build(endpointInfoOf(spec), 'static', t0));
    } else {
      for (const e of previous.#members) {
        if (e.held && e.transport === endpointTransport(e.info(), config)) {
          adopted.push(e);
          members.push(e);
        } else members.push(this.#build(e.info(), e.source, t0));
      }
    }
    this.#members = members;
    for (const e of members) this.#byId.set(e.id, e);
    this.balancer = createBalancer(balancerCfg, members, { now, random });
    if (balancerCfg.kind !== 'consistent_hash' && balancerCfg.aperture.enabled) {
      defaultReplica ??= replicaPosition(undefined);
      this.#aperture = new Aperture(balancerCfg.aperture, deps.replica ?? defaultReplica);
      this.#aperture.setMembers(members);
    }

    const timeouts = config.timeouts;
    this.retryPolicy = new RetryPolicy(config.retries, timeouts.request, random);
    // The breaker, retry budget and bulkhead of the cluster this one replaces are taken over when
    // their own settings did not change: an open circuit stays open, a spent budget stays spent,
    // and requests still running on the old cluster keep holding slots of the same bulkhead.
    const old = deps.previous !== undefined && !deps.previous.#closed ? deps.previous : undefined;
    const oldBudget = old === undefined ? undefined : old.#budget;
    this.#budget =
      config.retries.maxAttempts > 1
        ? oldBudget !== undefined && sameSettings(old!.config.retries.budget, config.retries.budget)
          ? oldBudget
          : new RetryBudget(config.retries.budget, now)
        : undefined;

    const cb = config.circuitBreaker;
    const probeTimeoutMs = probeTimeoutOf(timeouts);
    this.#breakerStatuses = new Set(cb.failureStatuses);
    const oldBreaker = old === undefined ? undefined : old.#breaker;
    const keptBreaker =
      cb.enabled &&
      oldBreaker !== undefined &&
      sameSettings(old!.config.circuitBreaker, cb) &&
      probeTimeoutOf(old!.config.timeouts) === probeTimeoutMs
        ? oldBreaker
        : undefined;
    this.#breaker = cb.enabled
      ? (keptBreaker ??
        new CircuitBreaker(cb, {
          now,
          probeTimeoutMs,
          onTransition: (t) => this.#circuitTransition(t),
        }))
      : undefined;

    const oldBulkhead = old === undefined || !old.#ownsBulkhead ? undefined : old.#bulkhead;
    const keptBulkhead =
      config.bulkhead.maxConcurrent > 0 &&
      oldBulkhead !== undefined &&
      sameSettings(old!.config.bulkhead, config.bulkhead)
        ? oldBulkhead
        : undefined;
    this.#bulkhead =
      config.bulkhead.maxConcurrent > 0 ? (keptBulkhead ?? new Bulkhead(config.bulkhead, name)) : undefined;

    this.#outliers = config.outlierDetection.enabled
      ? new OutlierDetector(config.outlierDetection, members.length, {
          now,
          hooks: {
            onEject: (e, reason, durationMs) => this.#ejected(e, reason, durationMs),
            onReturn: (e) => this.#returned(e),
          },
        })
      : undefined;

    this.#health = config.healthCheck
      ? new HealthChecker(config.healthCheck, members, {
          random,
          now,
          connectTimeoutMs: timeouts.connect,
          hooks: { onChange: (e, healthy, detail) => this.#healthChanged(e, healthy, detail) },
        })
      : undefined;

    const breaker = this.#breaker;
    const budget = this.#budget;
    this.#gates = {
      circuitOpen: () => breaker !== undefined && breaker.state === OPEN,
      tryWithdraw: () => budget === undefined || budget.tryWithdraw(),
      otherEndpoint: (tried) => this.#hasUntried(tried),
    };
    const source: UpstreamStateSource = {
      circuitState: () => breaker?.state ?? CLOSED,
      queued: () => this.#bulkhead?.queued ?? 0,
      retryBudgetRemaining: () => budget?.remaining() ?? 0,
      endpointStates: () => this.#endpointStates(),
      ejectedEndpoints: () => this.#outliers?.ejectedCount ?? 0,
      panicMode: () => this.#panic,
      endpointsInUse: () => this.#inUse.length,
    };
    this.#unwatch = deps.metrics?.watchUpstream(name, source) ?? (() => undefined);
    // Nothing above touched a shared endpoint, so a cluster whose construction throws leaves the
    // previous one as it was; nothing below throws.
    this.#takenOver = adopted.length === 0 ? [] : this.#takeOver(adopted, t0);
    if (old !== undefined && (keptBreaker !== undefined || keptBulkhead !== undefined)) {
      this.#policyTakenOver = {
        from: new WeakRef(old),
        breaker: keptBreaker !== undefined,
        bulkhead: keptBulkhead !== undefined,
      };
      keptBreaker?.redirectTransitions((t) => this.#circuitTransition(t));
      if (keptBulkhead !== undefined) old.#ownsBulkhead = false;
    }
    for (const e of members) e.hold();
    this.#refresh();
    this.#health?.start();
  }

  /** A new Endpoint for this upstream (not yet held). */
  #build(info: EndpointInfo, source: EndpointSource, now: number): Endpoint {
    const e = new Endpoint(info, this.config, source, this.#endpointDeps);
    initRtt(e, this.#defaultRtt, now);
    return e;
  }

  /**
   * Take over endpoints from the cluster this one replaces. They keep their pool, in-flight count,
   * latency estimate, weight, zone, metadata and state. Health and ejection state carry over
   * while this config has the feature (health check counters restart; an ejection runs to its
   * end), and is cleared where it does not.
   */
  #takeOver(adopted: readonly Endpoint[], now: number): TakenOver[] {
    const taken: TakenOver[] = [];
    for (const e of adopted) {
      taken.push({ endpoint: e, healthy: e.healthy, ejected: e.ejected });
      if (this.#health === undefined) e.healthy = true;
      if (this.#outliers === undefined) e.ejected = false;
      else if (e.ejected) this.#outliers.adopt(e, now);
    }
    return taken;
  }

  /** True while too few endpoints are eligible and the balancer spreads over all of them. */
  get panic(): boolean {
    return this.#panic;
  }

  /** The live endpoint set, in the order endpoints joined (a new array after each change). */
  get endpoints(): readonly Endpoint[] {
    return this.#members;
  }

  /** A member of the live set by id (its origin). */
  endpoint(id: string): Endpoint | undefined {
    return this.#byId.get(id);
  }

  /**
   * Make the live set exactly `list` (by origin; a repeated origin counts once, first wins). New
   * origins join; missing ones leave: no new attempts, and their pools close once the attempts in
   * flight on them finish. The others keep their Endpoint object, pool, latency estimate, health
   * and ejection state, and take the listed weight, zone, metadata and state. An origin listed
   * with another URL or host (another transport) is replaced. Nothing else in the cluster is
   * touched: not the breaker, the budget, the bulkhead, nor any other endpoint.
   */
  applyEndpoints(list: readonly EndpointInfo[], source: EndpointSource = 'static'): EndpointChange {
    return this.#upsert(list, source, true);
  }

  /** Add an endpoint, or update it when its origin is in the set already (see applyEndpoints). */
  addEndpoint(info: EndpointInfo, source: EndpointSource = 'static'): EndpointChange {
    return this.#upsert([info], source, false);
  }

  /** Change an endpoint's weight, zone, metadata or state in place. False: no such endpoint. */
  updateEndpoint(id: string, update: EndpointUpdate): boolean {
    const e = this.#byId.get(id);
    if (e === undefined || this.#closed) return false;
    const info = e.info();
    const changed = e.assign(
      {
        url: info.url,
        host: info.host,
        weight: update.weight ?? info.weight,
        zone: 'zone' in update ? update.zone : info.zone,
        version: info.version,
        metadata: update.metadata ?? info.metadata,
        state: update.state ?? info.state,
      },
      e.source,
    );
    if (changed) this.#commit([], [], [e]);
    return true;
  }

  /** No new attempts to this endpoint; those in flight finish. False: no such endpoint. */
  drainEndpoint(id: string): boolean {
    return this.updateEndpoint(id, { state: 'draining' });
  }

  /**
   * Take an endpoint out of the set: no new attempts; its pool closes once the attempts in flight
   * on it finish. False: no such endpoint.
   */
  removeEndpoint(id: string): boolean {
    const e = this.#byId.get(id);
    if (e === undefined || this.#closed) return false;
    this.#commit([], [e], []);
    return true;
  }

  #upsert(list: readonly EndpointInfo[], source: EndpointSource, exact: boolean): EndpointChange {
    if (this.#closed) return NO_CHANGE;
    const now = this.#now();
    const seen = new Set<string>();
    const added: Endpoint[] = [];
    const removed: Endpoint[] = [];
    const updated: Endpoint[] = [];
    for (const info of list) {
      if (this.#cleartext(info)) continue;
      const id = endpointId(info);
      if (seen.has(id)) continue;
      seen.add(id);
      const current = this.#byId.get(id);
      if (current !== undefined && current.transport === endpointTransport(info, this.config)) {
        if (current.assign(info, source)) updated.push(current);
        continue;
      }
      if (current !== undefined) removed.push(current);
      added.push(this.#build(info, source, now));
    }
    if (exact) for (const e of this.#members) if (!seen.has(e.id)) removed.push(e);
    return this.#commit(added, removed, updated);
  }

  /**
   * An `http://` endpoint published for an upstream that speaks TLS (`tls`, or HTTP/2): never used,
   * so a client certificate or an expected identity is never silently dropped. The config's own
   * endpoints are refused by the schema; this is for discovered ones.
   */
  #cleartext(info: EndpointInfo): boolean {
    const tlsOnly = this.config.tls !== undefined || this.config.protocol !== 'http1';
    if (!tlsOnly || !info.url.startsWith('http://')) return false;
    this.#logger.warn(
      { endpoint: info.url },
      'endpoint skipped: the upstream speaks TLS (tls or protocol) and this endpoint is plain http://',
    );
    return true;
  }

  /** Apply a set change: removals first (a replaced origin leaves before its successor joins). */
  #commit(
    added: readonly Endpoint[],
    removed: readonly Endpoint[],
    updated: readonly Endpoint[],
  ): EndpointChange {
    if (added.length === 0 && removed.length === 0 && updated.length === 0) return NO_CHANGE;
    let members = this.#members;
    if (removed.length > 0) {
      const gone = new Set(removed);
      members = members.filter((e) => !gone.has(e));
      for (const e of removed) this.#retire(e);
    }
    if (added.length > 0) {
      members = [...members, ...added];
      for (const e of added) {
        this.#byId.set(e.id, e);
        e.hold();
        this.#health?.add(e);
      }
    }
    this.#members = members;
    this.#outliers?.resize(members.length);
    if (added.length > 0 || removed.length > 0) this.#aperture?.setMembers(members, { added, removed });
    this.#refresh();
    const change: EndpointChange = {
      added: added.map((e) => e.id),
      removed: removed.map((e) => e.id),
      updated: updated.map((e) => e.id),
    };
    this.#logSetChange(change);
    return change;
  }

  /** One log line for this change, or summed into the next one (SET_LOG_INTERVAL_MS). */
  #logSetChange(change: EndpointChange): void {
    const now = this.#now();
    let pending = this.#pendingSetLog;
    if (pending === undefined && now - this.#lastSetLogAt >= SET_LOG_INTERVAL_MS) {
      this.#lastSetLogAt = now;
      this.#logger.info(
        {
          endpoints: this.#members.length,
          added: change.added.length,
          removed: change.removed.length,
          updated: change.updated.length,
          addedIds: change.added.slice(0, LOGGED_IDS),
          removedIds: change.removed.slice(0, LOGGED_IDS),
        },
        'endpoint set changed',
      );
      return;
    }
    if (pending === undefined) {
      const wait = Math.max(0, this.#lastSetLogAt + SET_LOG_INTERVAL_MS - now);
      pending = {
        changes: 0,
        added: 0,
        removed: 0,
        updated: 0,
        addedIds: [],
        removedIds: [],
        timer: setTimeout(flushSetLog, wait, this).unref(),
      };
      this.#pendingSetLog = pending;
    }
    pending.changes++;
    pending.added += change.added.length;
    pending.removed += change.removed.length;
    pending.updated += change.updated.length;
    for (const id of change.added) if (pending.addedIds.length < LOGGED_IDS) pending.addedIds.push(id);
    for (const id of change.removed) if (pending.removedIds.length < LOGGED_IDS) pending.removedIds.push(id);
  }

  /** Log the changes summed since the last line (its timer fired, or the cluster is closing). */
  flushSetLog(): void {
    const pending = this.#pendingSetLog;
    if (pending === undefined) return;
    clearTimeout(pending.timer);
    this.#pendingSetLog = undefined;
    this.#lastSetLogAt = this.#now();
    const { timer: _timer, ...counts } = pending;
    this.#logger.info(
      { endpoints: this.#members.length, ...counts },
      `endpoint set changed (${pending.changes} changes)`,
    );
  }

  /** An endpoint leaves the set: its checks and ejection stop, its pool drains and closes. */
  #retire(e: Endpoint): void {
    if (this.#byId.get(e.id) === e) this.#byId.delete(e.id);
    e.removed = true;
    this.#health?.remove(e);
    this.#outliers?.forget(e);
    this.#leaving.add(e);
    const closed = (): void => {
      this.#leaving.delete(e);
      if (!this.#byId.has(e.id)) this.#metrics?.forgetEndpoint(this.name, e.id);
    };
    void e.release().then(closed, closed);
  }

  /**
   * Why `pick()` found no endpoint, for the NO_HEALTHY_ENDPOINT answer. Not on the success path.
   */
  noEndpointReason(): string {
    const all = this.#members;
    if (all.length === 0)
      return `upstream ${this.name} has no endpoints${this.sourceNote === undefined ? '' : ` (${this.sourceNote})`}`;
    const draining = all.filter((e) => e.draining).length;
    if (draining === all.length) return `upstream ${this.name}: all ${all.length} endpoints are draining`;
    return `upstream ${this.name}: none of its ${all.length - draining} endpoints is eligible (unhealthy or ejected)`;
  }

  /**
   * May a request go to this upstream? undefined: yes, and the caller holds a slot it must give
   * back with `release(req)` exactly once. A GatewayError: no (the gate's refusal, CIRCUIT_OPEN
   * with a Retry-After header, or UPSTREAM_OVERLOADED); nothing to release. A Promise only when the
   * gate or the bulkhead must wait; it settles to one of the two (a request that went away
   * meanwhile releases the slot it is granted). `gate`: the upstream-side policies, asked first.
   * Sets `req.breakerTicket`, which the request's attempt results and its release hand back.
   */
  admit<T extends AdmissionTicket>(
    req: T,
    gate: AdmissionGate<T> | null = null,
  ): GatewayError | undefined | Promise<GatewayError | undefined> {
    req.breakerTicket = NO_TICKET;
    if (gate !== null) {
      const verdict = gate.admit(req);
      if (verdict instanceof Promise) return verdict.then((refused) => refused ?? this.#admitHere(req));
      if (verdict !== undefined) return verdict;
    }
    return this.#admitHere(req);
  }

  /** The breaker, then the bulkhead. */
  #admitHere(req: AdmissionTicket): GatewayError | undefined | Promise<GatewayError | undefined> {
    const breaker = this.#breaker;
    if (breaker !== undefined) {
      const ticket = breaker.allow();
      req.breakerTicket = ticket;
      if (ticket === NO_TICKET) {
        return this.#circuitOpen(breaker);
      }
    }
    const bulkhead = this.#bulkhead;
    if (bulkhead === undefined || bulkhead.tryAcquire()) return undefined;
    if (bulkhead.canQueue()) return this.#queue(bulkhead, req);
    this.#cancelProbe(req);
    this.#series.decisions[DECISION.overloaded]!.value += 1;
    return new GatewayError(
      'UPSTREAM_OVERLOADED',
      `upstream ${this.name}: ${bulkhead.maxConcurrent} requests in flight and ${bulkhead.maxQueued} queued`,
    );
  }

  /**
   * Give back the slot `admit()` granted. A half-open probe whose request ends without a result
   * (no attempt, or none that reported) gives its probe slot back here.
   */
  release(req: AdmissionTicket): void {
    this.#bulkhead?.release();
    this.#cancelProbe(req);
  }

  #cancelProbe(req: AdmissionTicket): void {
    const breaker = this.#breaker;
    if (breaker !== undefined && req.breakerTicket !== NO_TICKET)
      req.breakerTicket = breaker.cancelProbe(req.breakerTicket);
  }

  /** Count one request (once, not per attempt) toward the retry budget. */
  requestStarted(): void {
    this.#budget?.requestStarted();
  }

  /**
   * The endpoint for the next attempt, never one in `ctx.tried` while another is eligible.
   * undefined when no endpoint is eligible (every one unhealthy and panic mode off).
   */
  pick(ctx?: PickContext): Endpoint | undefined {
    return this.balancer.pick(ctx);
  }

  attemptStarted(endpoint: Endpoint): void {
    endpoint.inFlight++;
    const n = ++this.inFlight;
    if (n > this.#peak) this.#peak = n;
    if (n > this.#widenAt) this.#widen(n);
  }

  /**
   * An attempt of the request `req` (admitted by `admit(req)`) ended. `status`: the upstream's
   * status, 0 without a response head. `latencyMs`: dispatch to response head (to the failure when
   * no head came): the latency estimate should not grow with body size. Feeds the breaker (only
   * when `req` was admitted in the breaker's current period; a probe reports once), outlier
   * detection, the latency estimate and the in-flight counts.
   *
   * Returns the breaker transitions and ejections this result caused, as span event names with
   * attributes (usually undefined), so the request that tipped the state can record it.
   */
  attemptFinished(
    endpoint: Endpoint,
    outcome: AttemptOutcome,
    status: number,
    latencyMs: number,
    req: AdmissionTicket,
  ): ResilienceEvent[] | undefined {
    recording = true;
    try {
      this.#recordResult(endpoint, outcome, status, latencyMs, req);
    } finally {
      recording = false;
    }
    const events = attemptEvents;
    attemptEvents = undefined;
    return events;
  }

  #recordResult(
    endpoint: Endpoint,
    outcome: AttemptOutcome,
    status: number,
    latencyMs: number,
    req: AdmissionTicket,
  ): void {
    endpoint.inFlight--;
    this.inFlight--;
    // Only an endpoint whose source changed it while this attempt was in flight is in either state.
    if (endpoint.removed || endpoint.draining) this.#endpointLeft(endpoint);
    const breaker = this.#breaker;
    const ticket = req.breakerTicket;
    if (isNeutral(outcome)) {
      if (breaker !== undefined && ticket !== NO_TICKET) req.breakerTicket = breaker.onNeutral(ticket);
      return;
    }
    const now = this.#now();
    if (now >= this.#bandCheckAt) this.#checkBand(now);
    const noResponse = outcome !== 'success';
    const gatewayError = noResponse || isGatewayStatus(status);
    if (breaker !== undefined && ticket !== NO_TICKET) {
      req.breakerTicket =
        noResponse || this.#breakerStatuses.has(status)
          ? breaker.onFailure(now, ticket)
          : breaker.onSuccess(now, ticket);
    }
    this.#outliers?.onResult(endpoint, gatewayError, gatewayError || status >= 500, now);
    observeRtt(endpoint, latencyMs, gatewayError, now, this.#decayMs);
  }

  #endpointLeft(e: Endpoint): void {
    this.#event(e.removed ? 'peregrine.endpoint_removed' : 'peregrine.endpoint_draining', {
      endpoint: e.id,
      source: e.source,
    });
  }

  /**
   * Whether the balancer has a candidate outside `tried`: its candidates are `#eligible`, which in
   * panic mode is every endpoint but the draining ones (removed ones are out of the set already).
   */
  #hasUntried(tried: readonly Endpoint[] | undefined): boolean {
    for (const e of this.#inUse) if (!wasTried(tried, e)) return true;
    return false;
  }

  /**
   * An attempt failed on TLS with `endpoint`: one warn line naming the reason (Node's code and
   * its folded reason). A failing endpoint fails every connection, so after a line the next ones
   * for that endpoint wait TLS_LOG_INTERVAL_MS (or a different code) and carry the count since.
   */
  tlsFailed(endpoint: Endpoint, failure: UpstreamTlsFailure): void {
    this.#metrics?.upstreamTls.recordFailure(this.name, failure.reason);
    const now = this.#now();
    const last = this.#tlsLogged.get(endpoint);
    if (last !== undefined && last.code === failure.code && now - last.at < TLS_LOG_INTERVAL_MS) {
      last.since++;
      return;
    }
    this.#tlsLogged.set(endpoint, { code: failure.code, at: now, since: 0 });
    this.#logger.warn(
      {
        endpoint: endpoint.id,
        code: failure.code,
        reason: failure.reason,
        ...failure.identity,
        ...(last !== undefined && last.since > 0 ? { suppressed: last.since } : undefined),
      },
      TLS_FAILURE_MESSAGES[failure.kind],
    );
  }

  /** A state change for the span of the request whose attempt result is being recorded, if any. */
  #event(name: string, attributes: Record<string, string | number>): void {
    if (!recording) return;
    const e = { name, attributes };
    if (attemptEvents === undefined) attemptEvents = [e];
    else attemptEvents.push(e);
  }

  /**
   * After a failed attempt: retry it, after `delayMs`, or not (and why). Consults the breaker
   * and, last, withdraws from the retry budget; counts peregrine_upstream_decisions_total and
   * peregrine_upstream_retries_total.
   */
  retryDecision(input: RetryInput): RetryDecision {
    const d = this.retryPolicy.decide(input, this.#gates);
    const series = this.#series;
    if (d.retry) {
      series.decisions[DECISION.retry]!.value += 1;
      series.retries[REASON_INDEX.get(d.reason)!]!.value += 1;
    } else if (d.reason === 'budget_exhausted') series.decisions[DECISION.budgetExhausted]!.value += 1;
    return d;
  }

  /**
   * A retry about to go out after its backoff: the CIRCUIT_OPEN refusal (counted as a
   * `circuit_open` decision) when the breaker has left the closed state since the retry was
   * decided, else undefined. A retry is not a probe: while half-open, only requests admitted as
   * probes by `admit()` reach the upstream.
   */
  retryBlockedByBreaker(): GatewayError | undefined {
    const breaker = this.#breaker;
    if (breaker === undefined || breaker.state === CLOSED) return undefined;
    return this.#circuitOpen(breaker);
  }

  #circuitOpen(breaker: CircuitBreaker): GatewayError {
    this.#series.decisions[DECISION.circuitOpen]!.value += 1;
    const seconds = Math.max(1, Math.ceil(breaker.retryAfterMs() / 1000));
    return new GatewayError('CIRCUIT_OPEN', `upstream ${this.name}: circuit breaker open`, {
      headers: { 'retry-after': String(seconds) },
    });
  }

  /** Whether a response with this status may be retried: the pipeline then holds its head back. */
  isRetryableStatus(status: number): boolean {
    return this.retryPolicy.statuses.has(status);
  }

  /** State for the admin API. */
  describe(): ClusterDescription {
    const now = this.#now();
    const wallNow = Date.now();
    const eligible = new Set(this.#eligible);
    const inUse = this.#inUse === this.#eligible ? eligible : new Set(this.#inUse);
    const budget = this.#budget;
    const bulkhead = this.#bulkhead;
    const retries = this.config.retries;
    return {
      name: this.name,
      balancer: this.balancer.kind,
      inFlight: this.inFlight,
      panic: this.#panic,
      circuitBreaker: this.#breaker?.describe() ?? null,
      retryBudget: budget
        ? {
            remaining: budget.remaining(),
            ratio: retries.budget.ratio,
            minRetriesPerSecond: retries.budget.minRetriesPerSecond,
            windowMs: retries.budget.window,
          }
        : null,
      bulkhead: bulkhead
        ? {
            active: bulkhead.active,
            queued: bulkhead.queued,
            maxConcurrent: bulkhead.maxConcurrent,
            maxQueued: bulkhead.maxQueued,
          }
        : null,
      aperture: this.#aperture?.describe() ?? null,
      endpoints: this.#members.map((e) => ({
        id: e.id,
        source: e.source,
        weight: e.weight,
        zone: e.zone ?? null,
        version: e.version ?? null,
        metadata: e.metadata,
        inFlight: e.inFlight,
        state: e.draining ? 'draining' : !e.healthy ? 'unhealthy' : e.ejected ? 'ejected' : 'healthy',
        eligible: eligible.has(e),
        inUse: inUse.has(e),
        health: this.#health?.describe(e) ?? null,
        ejection: {
          ejected: e.ejected,
          until: e.ejected ? new Date(wallNow + (e.ejectedUntil - now)).toISOString() : null,
          count: e.ejections,
          consecutiveGatewayErrors: e.consecutiveGatewayErrors,
          consecutive5xx: e.consecutive5xx,
        },
        ewmaMs: Math.round(rttEstimate(e, now, this.#decayMs) * 1000) / 1000,
      })),
    };
  }

  /**
   * Graceful: in-flight requests finish on their pools. Endpoints that a newer cluster took over
   * stay open for it. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#stop();
    await Promise.all([this.#health?.close(), ...this.#members.map((e) => e.release())]);
  }

  /** Abort now, except endpoints a newer cluster holds. Also after close(). */
  async destroy(): Promise<void> {
    const holding = !this.#closed;
    this.#stop();
    if (this.#ownsBulkhead) this.#bulkhead?.rejectAll(new GatewayError('SHUTTING_DOWN'));
    await Promise.all([
      this.#health?.close(),
      ...this.#members.map((e) => (holding ? e.release(true) : e.held ? undefined : e.destroy())),
      // Removed endpoints still finishing their attempts: abort those too (shutdown).
      ...[...this.#leaving].map((e) => (e.held ? undefined : e.destroy())),
    ]);
  }

  /**
   * Undo a cluster that never served (the reload that built it failed): the endpoints it took over
   * get back the weight and state the previous cluster gave them, the ones it built are destroyed;
   * a breaker and bulkhead it took over go back to the previous cluster as they are.
   */
  abandon(): Promise<void> {
    for (const t of this.#takenOver) {
      t.endpoint.healthy = t.healthy;
      t.endpoint.ejected = t.ejected;
    }
    const policy = this.#policyTakenOver;
    const from = policy?.from.deref();
    if (policy !== undefined && from !== undefined) {
      if (policy.breaker) this.#breaker?.redirectTransitions((t) => from.#circuitTransition(t));
      if (policy.bulkhead) {
        from.#ownsBulkhead = true;
        this.#ownsBulkhead = false;
      }
    }
    this.#policyTakenOver = undefined;
    return this.destroy();
  }

  #stop(): void {
    this.#closed = true;
    this.#unwatch();
    this.#outliers?.close();
    this.flushSetLog();
    if (this.#tls !== undefined) this.#endpointDeps.tls!.release(this.#tls);
    this.#tls = undefined;
  }

  async #queue(bulkhead: Bulkhead, req: AdmissionTicket): Promise<GatewayError | undefined> {
    const error = await bulkhead.enqueue();
    if (error !== undefined) {
      this.#cancelProbe(req);
      this.#series.decisions[DECISION.overloaded]!.value += 1;
    }
    return error;
  }

  #endpointStates(): number[] {
    const counts = [0, 0, 0, 0];
    for (const e of this.#members) counts[e.draining ? 3 : !e.healthy ? 1 : e.ejected ? 2 : 0]! += 1;
    return counts;
  }

  /**
   * Recompute the eligible set and panic mode after an ejection, a return, a health change or a
   * change of the set. Draining endpoints are never eligible, not even in panic mode.
   */
  #refresh(): void {
    const members = this.#members;
    const all = members.some((e) => e.draining) ? members.filter((e) => !e.draining) : members;
    const eligible = all.filter((e) => e.healthy && !e.ejected);
    const threshold = this.config.balancer.panicThreshold;
    const panic = threshold > 0 && eligible.length * 100 < threshold * all.length;
    if (panic !== this.#panic && !this.#closed) {
      if (panic)
        this.#logger.warn(
          { eligible: eligible.length, endpoints: all.length, panicThreshold: threshold },
          'upstream panic mode: too few eligible endpoints, balancing over all of them',
        );
      else
        this.#logger.info({ eligible: eligible.length, endpoints: all.length }, 'upstream panic mode ended');
    }
    this.#panic = panic;
    this.#eligible = panic ? all : eligible;
    this.#applyWindow();
  }

  /**
   * Give the balancer what it chooses among: the aperture's window over the eligible endpoints, or
   * all of them. Health checks run at the full rate for the endpoints the window covers.
   */
  #applyWindow(): void {
    const candidates = this.#eligible;
    const aperture = this.#aperture;
    const chosen = aperture === undefined ? candidates : aperture.choose(candidates, this.#isCandidate);
    this.#inUse = chosen;
    this.balancer.update(chosen);
    this.#widenAt = chosen === candidates ? Infinity : aperture!.size * aperture!.maxLoad;
    this.#health?.focus(chosen === candidates ? undefined : aperture!.watched);
  }

  /** More attempts in flight than the aperture's window is meant to carry: widen it. */
  #widen(inFlight: number): void {
    const aperture = this.#aperture!;
    const from = aperture.size;
    if (!aperture.grow(inFlight)) return;
    this.#logger.info(
      { from, to: aperture.size, inFlight, maxLoad: aperture.maxLoad },
      'aperture widened: more attempts in flight than its endpoints should carry',
    );
    this.#applyWindow();
    this.#peak = inFlight;
    if (this.#bandCheckAt === Infinity) this.#bandCheckAt = this.#now() + APERTURE_PERIOD_MS;
  }

  /** A period of a widened aperture ended: narrow it if its peak fits in fewer endpoints. */
  #checkBand(now: number): void {
    const aperture = this.#aperture!;
    const from = aperture.size;
    if (aperture.shrink(this.#peak)) {
      this.#logger.info({ from, to: aperture.size, peakInFlight: this.#peak }, 'aperture narrowed');
      this.#applyWindow();
    }
    this.#peak = this.inFlight;
    this.#bandCheckAt = aperture.size > aperture.baseSize ? now + APERTURE_PERIOD_MS : Infinity;
  }

  #circuitTransition(t: CircuitTransition): void {
    this.#metrics?.recordCircuitTransition(this.name, t.from, t.to);
    if (this.#closed) return;
    const fields = { from: t.from, to: t.to, reason: t.reason, openForMs: t.openForMs };
    this.#event('peregrine.circuit_transition', { from: t.from, to: t.to, reason: t.reason });
    if (t.to === 'open') this.#logger.warn(fields, 'circuit breaker opened');
    else if (t.to === 'half_open') this.#logger.info(fields, 'circuit breaker half-open');
    else this.#logger.info(fields, 'circuit breaker closed');
  }

  #ejected(e: Endpoint, reason: string, durationMs: number): void {
    this.#metrics?.recordEjection(this.name, e.id);
    this.#event('peregrine.endpoint_ejected', { endpoint: e.id, reason, ejected_for_ms: durationMs });
    this.#logger.warn(
      { endpoint: e.id, reason, ejections: e.ejections, ejectedForMs: durationMs },
      'endpoint ejected',
    );
    this.#refresh();
  }

  #returned(e: Endpoint): void {
    this.#logger.info({ endpoint: e.id, ejections: e.ejections }, 'endpoint returned from ejection');
    this.#refresh();
  }

  #healthChanged(e: Endpoint, healthy: boolean, detail: string): void {
    if (healthy) this.#logger.info({ endpoint: e.id, detail }, 'endpoint passed health checks');
    else this.#logger.warn({ endpoint: e.id, detail }, 'endpoint failed health checks');
    this.#refresh();
  }
}
