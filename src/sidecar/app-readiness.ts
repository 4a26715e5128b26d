/**
 * The local application's readiness, as its readiness path says: `GET <app><path>` every
 * `interval`; a probe passes on a 2xx within `timeout` and fails on anything else (another status,
 * a refused connection, no answer). As Kubernetes' probes: the application turns not ready after
 * `failureThreshold` failures in a row and ready again after `successThreshold` passes in a row, so
 * one slow answer does not drain a healthy instance. The sidecar registers once the application is
 * first ready, and follows it afterwards: an application that stops being ready (it is shutting
 * down, or overloaded) is drained from the registry until it is ready again.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';

export interface AppReadinessOptions {
  /** Origin of the application, e.g. http://127.0.0.1:8080. */
  readonly app: string;
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Failed probes in a row that make a ready application not ready (1 or more). */
  readonly failureThreshold: number;
  /** Passed probes in a row that make a not-ready application ready (1 or more). */
  readonly successThreshold: number;
}

/** What a `change` event carries: the new state, why, and the run of probes that decided it. */
export interface ReadinessChange {
  readonly ready: boolean;
  /** The last probe's result: a status (`200`, `503`), an error code, or `timeout`. */
  readonly check: string;
  /** Probes in a row with this result, the one that decided included. */
  readonly consecutive: number;
}

/**
 * Counts runs of probe results and says when a run crosses its threshold. Before the first
 * change the application counts as not ready: it needs `successThreshold` passes to be ready.
 */
export class ReadinessThresholds {
  readonly #failureThreshold: number;
  readonly #successThreshold: number;
  #ready = false;
  #passes = 0;
  #failures = 0;

  constructor(failureThreshold: number, successThreshold: number) {
    this.#failureThreshold = failureThreshold;
    this.#successThreshold = successThreshold;
  }

  get ready(): boolean {
    return this.#ready;
  }

  /** The run the last result belongs to. */
  get consecutive(): number {
    return Math.max(this.#passes, this.#failures);
  }

  /** Counts one probe result; true when it changes the state. */
  record(passed: boolean): boolean {
    if (passed) {
      this.#failures = 0;
      this.#passes += 1;
      if (this.#ready || this.#passes < this.#successThreshold) return false;
    } else {
      this.#passes = 0;
      this.#failures += 1;
      if (!this.#ready || this.#failures < this.#failureThreshold) return false;
    }
    this.#ready = passed;
    return true;
  }
}

/**
 * Why a probe's timeout is ours and lag-aware: a timer that fires late says the sidecar's event
 * loop was busy, not that the application was slow, and the answer may be waiting unread in the
 * socket (timers run before I/O in a loop turn). So a late timer gives the probe the time the
 * loop took from it again (up to one more timeout), and only a timer that fires on time ends it.
 */
const LATE_MS = 20;

class ProbeDeadline {
  readonly controller = new AbortController();
  readonly #timeoutMs: number;
  #due: number;
  #extendedMs = 0;
  #timer: NodeJS.Timeout;
  timedOut = false;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
    this.#due = performance.now() + timeoutMs;
    this.#timer = setTimeout(ProbeDeadline.fire, timeoutMs, this);
  }

  static fire(this: void, deadline: ProbeDeadline): void {
    deadline.#fire();
  }

  #fire(): void {
    const late = performance.now() - this.#due;
    const room = this.#timeoutMs - this.#extendedMs;
    if (late > LATE_MS && room > 0) {
      const extra = Math.min(late, room);
      this.#extendedMs += extra;
      this.#due = performance.now() + extra;
      this.#timer = setTimeout(ProbeDeadline.fire, extra, this);
      return;
    }
    this.timedOut = true;
    this.controller.abort();
  }

  clear(): void {
    clearTimeout(this.#timer);
  }
}

/** Events: `change` (ReadinessChange), on every change of state. */
export class AppReadiness extends EventEmitter {
  readonly url: string;
  readonly #opts: AppReadinessOptions;
  readonly #agent: Agent;
  readonly #thresholds: ReadinessThresholds;
  /** What the last check found, for the admin API. */
  #last: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #waiters: (() => void)[] = [];

  constructor(opts: AppReadinessOptions) {
    super();
    this.#opts = opts;
    this.url = new URL(opts.path, opts.app).href;
    this.#thresholds = new ReadinessThresholds(opts.failureThreshold, opts.successThreshold);
    // Its own connection: a probe never queues behind the application's traffic.
    this.#agent = new Agent({ connections: 1, keepAliveTimeout: Math.max(1000, opts.intervalMs * 2) });
  }

  get ready(): boolean {
    return this.#thresholds.ready;
  }

  get lastCheck(): string | undefined {
    return this.#last;
  }

  /** Probes in a row with the last probe's result. */
  get consecutive(): number {
    return this.#thresholds.consecutive;
  }

  start(): void {
    if (this.#timer === undefined && !this.#closed) void this.#check();
  }

  /** Resolves the first time the application is ready (at once if it is). */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async #check(): Promise<void> {
    const ok = await this.#probe();
    if (this.#closed) return;
    const thresholds = this.#thresholds;
    if (thresholds.record(ok)) {
      const change: ReadinessChange = {
        ready: ok,
        check: this.#last ?? '',
        consecutive: thresholds.consecutive,
      };
      this.emit('change', change);
      if (ok) for (const w of this.#waiters.splice(0)) w();
    }
    this.#timer = setTimeout(() => void this.#check(), this.#opts.intervalMs);
    this.#timer.unref();
  }

  async #probe(): Promise<boolean> {
    // undici's own timers are off: they would count the sidecar's loop lag as the application's.
    const deadline = new ProbeDeadline(this.#opts.timeoutMs);
    try {
      const res = await request(this.url, {
        dispatcher: this.#agent,
        headersTimeout: 0,
        bodyTimeout: 0,
        signal: deadline.controller.signal,
      });
      await res.body.dump();
      this.#last = `${res.statusCode}`;
      return res.statusCode >= 200 && res.statusCode < 300;
    } catch (err) {
      this.#last = deadline.timedOut
        ? 'timeout'
        : ((err as { code?: string }).code ?? (err as Error).message);
      return false;
    } finally {
      deadline.clear();
    }
  }

  /** Stop probing. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#agent.close();
  }
}
