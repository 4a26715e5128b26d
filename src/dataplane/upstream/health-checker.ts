import { Client } from 'undici';
import type { Clock, Random } from './clock.ts';
import type { Connector } from './connector.ts';
import type { Endpoint } from './endpoint.ts';
import type { HealthCheckConfig } from './policy-schema.ts';

export interface HealthHooks {
  /** The endpoint crossed a threshold: `healthy` is its new state. */
  onChange(endpoint: Endpoint, healthy: boolean, detail: string): void;
}

export interface HealthDescription {
  consecutiveSuccesses: number;
  consecutiveFailures: number;
  /** Wall-clock ISO time of the last finished check. */
  lastCheckAt: string | null;
  lastStatus: number | null;
  lastError: string | null;
  /** Checked every `interval` (the endpoint is in use) or every `idleInterval` (it is not). */
  rate: 'interval' | 'idle';
}

/** Delay before the next check: interval × a uniform factor in [1 - jitter, 1 + jitter]. */
export function nextCheckDelay(intervalMs: number, jitter: number, random: Random): number {
  return Math.max(1, Math.round(intervalMs * (1 + jitter * (2 * random() - 1))));
}

/** Compile `expectedStatuses` (codes and `200-399` ranges) into a predicate. */
export function statusMatcher(expected: readonly (number | string)[]): (status: number) => boolean {
  const ranges: [number, number][] = expected.map((x) =>
    typeof x === 'number' ? [x, x] : [Number(x.slice(0, 3)), Number(x.slice(4))],
  );
  return function expectedStatus(status: number): boolean {
    for (const [lo, hi] of ranges) if (status >= lo && status <= hi) return true;
    return false;
  };
}

/** The fewest checks allowed in flight at once, whatever the set's size. */
const MIN_IN_FLIGHT = 4;

/**
 * Checks allowed in flight at once for `endpoints` endpoints: enough that a round finishes within
 * the interval even when every check runs into its timeout, and no more (a gateway starting next to
 * 1,000 endpoints does not open 1,000 connections in the same millisecond).
 */
export function maxChecksInFlight(endpoints: number, cfg: HealthCheckConfig): number {
  return Math.max(MIN_IN_FLIGHT, Math.ceil((endpoints * cfg.timeout) / cfg.interval));
}

/**
 * One check's HTTP exchange with an endpoint: resolves to the response status (its body read and
 * dropped), rejects with the failure. `idle`: the endpoint is checked at the idle rate, so the
 * connection is not kept for the next check.
 */
export interface HealthProbes {
  check(endpoint: Endpoint, idle: boolean, signal: AbortSignal): Promise<number>;
  /** The endpoint left: close its check connection. */
  forget(endpoint: Endpoint): Promise<void>;
  close(): Promise<void>;
}

/**
 * Checks over connections of their own: a check must not queue behind traffic in the endpoint's
 * busy pool. An endpoint checked at the full rate keeps one undici Client (made at its first
 * check); one checked at the idle rate gets a Client for that check alone, closed after the
 * answer, so neither a connection nor a Client waits a minute for the next check. Such a check
 * costs about twice one on a kept connection (connect and teardown: about 0.3 against 0.13 ms).
 */
class HttpProbes implements HealthProbes {
  readonly #cfg: HealthCheckConfig;
  readonly #connectTimeoutMs: number;
  /**
   * One connector per endpoint (its TLS: server name, client certificate, verification), kept
   * across its checks: a reconnect can resume the TLS session, and an idle-rate check allocates less.
   */
  readonly #connectors = new Map<Endpoint, Connector>();
  /** The Clients of endpoints checked at the full rate. */
  readonly #kept = new Map<Endpoint, Client>();
  /** Idle-rate checks' Clients while their check runs. */
  readonly #once = new Set<Client>();

  constructor(cfg: HealthCheckConfig, connectTimeoutMs: number) {
    this.#cfg = cfg;
    this.#connectTimeoutMs = Math.min(connectTimeoutMs, cfg.timeout);
  }

  #client(endpoint: Endpoint): Client {
    let connect = this.#connectors.get(endpoint);
    if (connect === undefined) {
      connect = endpoint.connector(this.#connectTimeoutMs);
      this.#connectors.set(endpoint, connect);
    }
    return new Client(endpoint.id, {
      pipelining: 1,
      connect,
      keepAliveTimeout: this.#cfg.interval * 2,
    });
  }

  async check(endpoint: Endpoint, idle: boolean, signal: AbortSignal): Promise<number> {
    if (!idle) {
      let client = this.#kept.get(endpoint);
      if (client === undefined) {
        client = this.#client(endpoint);
        this.#kept.set(endpoint, client);
      }
      return this.#get(client, endpoint, signal);
    }
    // Out of use now: a Client kept from when it was in use goes.
    void this.forget(endpoint, false);
    const client = this.#client(endpoint);
    this.#once.add(client);
    try {
      return await this.#get(client, endpoint, signal);
    } finally {
      this.#once.delete(client);
      void client.close().catch(() => undefined);
    }
  }

  async #get(client: Client, endpoint: Endpoint, signal: AbortSignal): Promise<number> {
    const res = await client.request({
      method: 'GET',
      path: this.#cfg.path,
      headers: { host: endpoint.host, 'user-agent': 'peregrine-health-check' },
      signal,
    });
    await res.body.dump();
    return res.statusCode;
  }

  /** Close the endpoint's kept Client: at once (it left the upstream), or gracefully. */
  forget(endpoint: Endpoint, now = true): Promise<void> {
    if (now) this.#connectors.delete(endpoint);
    const client = this.#kept.get(endpoint);
    if (client === undefined) return Promise.resolve();
    this.#kept.delete(endpoint);
    return (now ? client.destroy() : client.close()).catch(() => undefined);
  }

  async close(): Promise<void> {
    const clients = [...this.#kept.values(), ...this.#once];
    this.#kept.clear();
    this.#once.clear();
    this.#connectors.clear();
    await Promise.all(clients.map((c) => c.destroy().catch(() => undefined)));
  }
}

interface ProbeState {
  readonly endpoint: Endpoint;
  /** Checked every `interval` (in use, or stepped over by the aperture) rather than `idleInterval`. */
  active: boolean;
  /** Its endpoint left the checker (removed from the upstream, or the checker closed). */
  stopped: boolean;
  /** Checks done; the second one sets the endpoint's phase within the interval. */
  checks: number;
  timer: NodeJS.Timeout | undefined;
  /** Monotonic ms the pending timer fires. */
  dueAt: number;
  /** Waiting for a slot (maxChecksInFlight). */
  queued: boolean;
  abort: AbortController | undefined;
  successes: number;
  failures: number;
  lastCheckAt: number;
  lastStatus: number;
  lastError: string | undefined;
}

function runCheck(checker: HealthChecker, state: ProbeState): void {
  state.timer = undefined;
  checker.due(state);
}

function abortCheck(ac: AbortController): void {
  ac.abort(new Error('health check timed out'));
}

export interface HealthCheckerOptions {
  random: Random;
  hooks: HealthHooks;
  connectTimeoutMs: number;
  /** Monotonic ms (performance.now by default). */
  now?: Clock | undefined;
  /** The HTTP exchange (tests give their own); checks over a connection per endpoint by default. */
  probes?: HealthProbes | undefined;
}

/**
 * Active HTTP health checks: GET `path` on each endpoint, over a connection of its own. An endpoint
 * turns unhealthy after `unhealthyThreshold` failing checks in a row (a status outside
 * `expectedStatuses`, an error, or no answer within `timeout`) and healthy again after
 * `healthyThreshold` passing ones. Endpoints start healthy.
 *
 * When: an endpoint in use (`focus`: the aperture's window, or every endpoint) is checked every
 * `interval` and the others every `idleInterval` (or, past `idleChecksPerSecond × idleInterval`
 * of them, as often as that many checks a second allow), each wait times a random factor in
 * [1 - jitter, 1 + jitter] so gateways do not check in step. An endpoint's first check runs within
 * the first jitter span (one in use) or at a random point of the idle interval (one not); its
 * second comes at a random point of the interval after it, so the checks of many endpoints spread
 * over the interval instead of going out in bursts. At most `maxChecksInFlight` checks run at
 * once; the others wait their turn. Endpoints join (`add`) and leave (`remove`) one at a time; the
 * others' checks go on undisturbed.
 */
export class HealthChecker {
  readonly #cfg: HealthCheckConfig;
  readonly #random: Random;
  readonly #hooks: HealthHooks;
  readonly #expected: (status: number) => boolean;
  readonly #now: Clock;
  readonly #probes: HealthProbes;
  /** idleInterval, never shorter than interval. */
  readonly #idleInterval: number;
  readonly #states = new Map<Endpoint, ProbeState>();
  /** The endpoints checked at `interval`; undefined: all of them. */
  #focus: ReadonlySet<Endpoint> | undefined = undefined;
  readonly #waiting: ProbeState[] = [];
  /** Endpoints checked at the idle rate now. */
  #idle = 0;
  #inFlight = 0;
  #maxInFlight = MIN_IN_FLIGHT;
  #started = false;
  #closed = false;

  constructor(cfg: HealthCheckConfig, endpoints: readonly Endpoint[], opts: HealthCheckerOptions) {
    this.#cfg = cfg;
    this.#random = opts.random;
    this.#hooks = opts.hooks;
    this.#expected = statusMatcher(cfg.expectedStatuses);
    this.#now = opts.now ?? (() => performance.now());
    this.#idleInterval = Math.max(cfg.idleInterval, cfg.interval);
    this.#probes = opts.probes ?? new HttpProbes(cfg, opts.connectTimeoutMs);
    for (const e of endpoints) this.add(e);
  }

  /** Checks in flight now (never more than `maxInFlight`). */
  get inFlight(): number {
    return this.#inFlight;
  }

  get maxInFlight(): number {
    return this.#maxInFlight;
  }

  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    for (const s of this.#states.values()) this.#scheduleFirst(s);
  }

  /** Check one more endpoint; once started, its first check runs as `start` says. */
  add(endpoint: Endpoint): void {
    if (this.#closed || this.#states.has(endpoint)) return;
    const s: ProbeState = {
      endpoint,
      active: this.#focus === undefined || this.#focus.has(endpoint),
      stopped: false,
      checks: 0,
      timer: undefined,
      dueAt: 0,
      queued: false,
      abort: undefined,
      successes: 0,
      failures: 0,
      lastCheckAt: 0,
      lastStatus: 0,
      lastError: undefined,
    };
    this.#states.set(endpoint, s);
    if (!s.active) this.#idle++;
    this.#maxInFlight = maxChecksInFlight(this.#states.size, this.#cfg);
    if (this.#started) this.#scheduleFirst(s);
  }

  /** Stop checking an endpoint that left the upstream and close its check connection. */
  remove(endpoint: Endpoint): void {
    const s = this.#states.get(endpoint);
    if (s === undefined) return;
    this.#states.delete(endpoint);
    if (!s.active) this.#idle--;
    this.#maxInFlight = maxChecksInFlight(this.#states.size, this.#cfg);
    this.#stop(s);
    void this.#probes.forget(endpoint);
  }

  /**
   * Which endpoints are in use (the aperture's window, with the ineligible ones it steps over), to
   * be checked every `interval`; the others every `idleInterval`. undefined: every endpoint is. An
   * endpoint that comes into use is checked within the next jitter span.
   */
  focus(inUse: readonly Endpoint[] | undefined): void {
    const previous = this.#focus;
    const focus = inUse === undefined ? undefined : new Set(inUse);
    this.#focus = focus;
    if (previous !== undefined && focus !== undefined) {
      // From one window to the next: only what changed (a window is small, the set may not be).
      for (const e of previous) if (!focus.has(e)) this.#setActive(e, false);
      for (const e of focus) if (!previous.has(e)) this.#setActive(e, true);
      return;
    }
    for (const e of this.#states.keys()) this.#setActive(e, focus === undefined || focus.has(e));
  }

  #setActive(e: Endpoint, active: boolean): void {
    const s = this.#states.get(e);
    if (s === undefined || s.active === active) return;
    s.active = active;
    this.#idle += active ? -1 : 1;
    if (!active || !this.#started || s.timer === undefined) return;
    // Into use: its last idle-rate check may be a minute old.
    const soon = Math.round(this.#random() * this.#cfg.interval * this.#cfg.jitter);
    if (s.dueAt - this.#now() > soon) this.#schedule(s, soon);
  }

  #scheduleFirst(s: ProbeState): void {
    const cfg = this.#cfg;
    const span = s.active ? cfg.interval * cfg.jitter : this.#idlePeriod();
    this.#schedule(s, Math.round(this.#random() * span));
  }

  /** Time between two checks of an endpoint out of use: idleInterval, longer past the rate cap. */
  #idlePeriod(): number {
    return Math.max(this.#idleInterval, (this.#idle * 1000) / this.#cfg.idleChecksPerSecond);
  }

  #schedule(s: ProbeState, delay: number): void {
    if (s.timer !== undefined) clearTimeout(s.timer);
    s.dueAt = this.#now() + delay;
    s.timer = setTimeout(runCheck, delay, this, s).unref();
  }

  /** An endpoint's check is due: run it, or queue it until a check in flight ends. */
  due(s: ProbeState): void {
    if (s.stopped) return;
    if (this.#inFlight >= this.#maxInFlight) {
      s.queued = true;
      this.#waiting.push(s);
      return;
    }
    void this.check(s);
  }

  /** One check of one endpoint, then the next one is scheduled. */
  async check(s: ProbeState): Promise<void> {
    const cfg = this.#cfg;
    const ac = new AbortController();
    s.abort = ac;
    this.#inFlight++;
    const timeout = setTimeout(abortCheck, cfg.timeout, ac).unref();
    let ok = false;
    let status = 0;
    let error: string | undefined;
    try {
      status = await this.#probes.check(s.endpoint, !s.active, ac.signal);
      ok = this.#expected(status);
      if (!ok) error = `unexpected status ${status}`;
    } catch (err) {
      const e = err as { code?: unknown; message?: unknown };
      error = ac.signal.aborted ? `no answer within ${cfg.timeout} ms` : String(e.code ?? e.message ?? err);
    } finally {
      clearTimeout(timeout);
      s.abort = undefined;
      this.#inFlight--;
      this.#next();
    }
    if (s.stopped) return;
    s.checks++;
    this.#record(s, ok, status, error);
    if (s.checks === 1 && s.active) this.#schedule(s, Math.round((0.5 + this.#random()) * cfg.interval));
    else
      this.#schedule(
        s,
        nextCheckDelay(s.active ? cfg.interval : this.#idlePeriod(), cfg.jitter, this.#random),
      );
  }

  /** A slot freed: the longest-waiting due check takes it. */
  #next(): void {
    while (this.#waiting.length > 0 && this.#inFlight < this.#maxInFlight) {
      const s = this.#waiting.shift()!;
      s.queued = false;
      if (!s.stopped) void this.check(s);
    }
  }

  #record(s: ProbeState, ok: boolean, status: number, error: string | undefined): void {
    s.lastCheckAt = Date.now();
    s.lastStatus = status;
    s.lastError = error;
    const e = s.endpoint;
    if (ok) {
      s.successes++;
      s.failures = 0;
      if (!e.healthy && s.successes >= this.#cfg.healthyThreshold) {
        e.healthy = true;
        this.#hooks.onChange(e, true, `${s.successes} checks passed`);
      }
    } else {
      s.failures++;
      s.successes = 0;
      if (e.healthy && s.failures >= this.#cfg.unhealthyThreshold) {
        e.healthy = false;
        this.#hooks.onChange(e, false, `${s.failures} checks failed, last: ${error}`);
      }
    }
  }

  describe(endpoint: Endpoint): HealthDescription | undefined {
    const s = this.#states.get(endpoint);
    if (s === undefined) return undefined;
    return {
      consecutiveSuccesses: s.successes,
      consecutiveFailures: s.failures,
      lastCheckAt: s.lastCheckAt === 0 ? null : new Date(s.lastCheckAt).toISOString(),
      lastStatus: s.lastStatus === 0 ? null : s.lastStatus,
      lastError: s.lastError ?? null,
      rate: s.active ? 'interval' : 'idle',
    };
  }

  #stop(s: ProbeState): void {
    s.stopped = true;
    if (s.timer !== undefined) clearTimeout(s.timer);
    s.timer = undefined;
    if (s.queued) {
      this.#waiting.splice(this.#waiting.indexOf(s), 1);
      s.queued = false;
    }
    s.abort?.abort(new Error('health checks stopped'));
  }

  /** Stop checking and close the check connections. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#states.values()) this.#stop(s);
    this.#states.clear();
    this.#idle = 0;
    await this.#probes.close();
  }
}
