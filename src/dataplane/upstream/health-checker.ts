import { Client } from 'undici';
import type { Random } from './clock.ts';
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

interface ProbeState {
  readonly endpoint: Endpoint;
  /** Its endpoint left the checker (removed from the upstream, or the checker closed). */
  stopped: boolean;
  /** Its own connection: a check must not queue behind traffic in the endpoint's busy pool. */
  readonly client: Client;
  timer: NodeJS.Timeout | undefined;
  abort: AbortController | undefined;
  successes: number;
  failures: number;
  lastCheckAt: number;
  lastStatus: number;
  lastError: string | undefined;
}

function runCheck(checker: HealthChecker, state: ProbeState): void {
  state.timer = undefined;
  void checker.check(state);
}

function abortCheck(ac: AbortController): void {
  ac.abort(new Error('health check timed out'));
}

/**
 * Active HTTP health checks: GET `path` on every endpoint each `interval` (with jitter, so that
 * many gateways do not check in step), over a dedicated connection per endpoint. An endpoint
 * turns unhealthy after `unhealthyThreshold` failing checks in a row (a status outside
 * `expectedStatuses`, an error, or no answer within `timeout`) and healthy again after
 * `healthyThreshold` passing ones. Endpoints start healthy, and the first round runs within the
 * first jitter span, so a gateway starting next to a dead endpoint stops using it within seconds.
 * Endpoints join (`add`) and leave (`remove`) one at a time; the others' checks go on undisturbed.
 */
export class HealthChecker {
  readonly #cfg: HealthCheckConfig;
  readonly #random: Random;
  readonly #hooks: HealthHooks;
  readonly #expected: (status: number) => boolean;
  readonly #connectTimeoutMs: number;
  readonly #states = new Map<Endpoint, ProbeState>();
  #started = false;
  #closed = false;

  constructor(
    cfg: HealthCheckConfig,
    endpoints: readonly Endpoint[],
    opts: { random: Random; hooks: HealthHooks; connectTimeoutMs: number },
  ) {
    this.#cfg = cfg;
    this.#random = opts.random;
    this.#hooks = opts.hooks;
    this.#expected = statusMatcher(cfg.expectedStatuses);
    this.#connectTimeoutMs = opts.connectTimeoutMs;
    for (const e of endpoints) this.add(e);
  }

  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    for (const s of this.#states.values()) this.#scheduleFirst(s);
  }

  /** Check one more endpoint; once started, its first check runs within the first jitter span. */
  add(endpoint: Endpoint): void {
    if (this.#closed || this.#states.has(endpoint)) return;
    const cfg = this.#cfg;
    const s: ProbeState = {
      endpoint,
      stopped: false,
      client: new Client(endpoint.id, {
        pipelining: 1,
        connect: endpoint.connector(Math.min(this.#connectTimeoutMs, cfg.timeout)),
        keepAliveTimeout: cfg.interval * 2,
      }),
      timer: undefined,
      abort: undefined,
      successes: 0,
      failures: 0,
      lastCheckAt: 0,
      lastStatus: 0,
      lastError: undefined,
    };
    this.#states.set(endpoint, s);
    if (this.#started) this.#scheduleFirst(s);
  }

  /** Stop checking an endpoint that left the upstream and close its check connection. */
  remove(endpoint: Endpoint): void {
    const s = this.#states.get(endpoint);
    if (s === undefined) return;
    this.#states.delete(endpoint);
    void stopProbe(s);
  }

  #scheduleFirst(s: ProbeState): void {
    const cfg = this.#cfg;
    const first = Math.round(this.#random() * cfg.interval * cfg.jitter);
    s.timer = setTimeout(runCheck, first, this, s).unref();
  }

  /** One check of one endpoint, then the next one is scheduled. */
  async check(s: ProbeState): Promise<void> {
    const cfg = this.#cfg;
    const ac = new AbortController();
    s.abort = ac;
    const timeout = setTimeout(abortCheck, cfg.timeout, ac).unref();
    let ok = false;
    let status = 0;
    let error: string | undefined;
    try {
      const res = await s.client.request({
        method: 'GET',
        path: cfg.path,
        headers: { host: s.endpoint.host, 'user-agent': 'peregrine-health-check' },
        signal: ac.signal,
      });
      status = res.statusCode;
      await res.body.dump();
      ok = this.#expected(status);
      if (!ok) error = `unexpected status ${status}`;
    } catch (err) {
      const e = err as { code?: unknown; message?: unknown };
      error = ac.signal.aborted ? `no answer within ${cfg.timeout} ms` : String(e.code ?? e.message ?? err);
    } finally {
      clearTimeout(timeout);
      s.abort = undefined;
    }
    if (s.stopped) return;
    this.#record(s, ok, status, error);
    s.timer = setTimeout(runCheck, nextCheckDelay(cfg.interval, cfg.jitter, this.#random), this, s).unref();
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
    };
  }

  /** Stop checking and close the check connections. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const states = [...this.#states.values()];
    this.#states.clear();
    await Promise.all(states.map(stopProbe));
  }
}

function stopProbe(s: ProbeState): Promise<void> {
  s.stopped = true;
  if (s.timer !== undefined) clearTimeout(s.timer);
  s.timer = undefined;
  s.abort?.abort(new Error('health checks stopped'));
  return s.client.destroy().catch(() => undefined);
}
