import { CIRCUIT_STATES, type CircuitStateName } from '../../telemetry/metrics.ts';
import type { Clock } from './clock.ts';
import type { CircuitBreakerConfig } from './policy-schema.ts';
import { SlidingWindowCounter } from './sliding-window.ts';

/** State numbers are indexes of CIRCUIT_STATES: the gauge's values and the transition labels. */
export const CLOSED = 0;
export const OPEN = 1;
export const HALF_OPEN = 2;
export type CircuitState = typeof CLOSED | typeof OPEN | typeof HALF_OPEN;
export type { CircuitStateName };

/** What `allow()` decided. */
export const DENIED = 0;
export const ALLOWED = 1;
/** Allowed as one of the half-open probes. */
export const PROBE = 2;
export type Admission = typeof DENIED | typeof ALLOWED | typeof PROBE;

export interface CircuitTransition {
  readonly from: CircuitStateName;
  readonly to: CircuitStateName;
  readonly reason: string;
  /** For transitions to open: how long it stays open. */
  readonly openForMs?: number;
}

export interface CircuitBreakerOptions {
  readonly now: Clock;
  /**
   * A half-open probe whose result has not arrived after this long (its request may have ended
   * without an attempt) no longer holds its slot.
   */
  readonly probeTimeoutMs: number;
  readonly onTransition: (t: CircuitTransition) => void;
}

export interface CircuitDescription {
  state: CircuitStateName;
  consecutiveFailures: number;
  windowRequests: number;
  windowFailures: number;
  /** Trips in a row; sets the open duration. */
  trips: number;
  /** Milliseconds until the open circuit admits a probe; 0 unless open. */
  retryAfterMs: number;
  probesInFlight: number;
}

/**
 * A circuit breaker per upstream, fed by attempt results.
 *
 *   closed ──(consecutive failures, or failure ratio over the window with enough volume)──▶ open
 *   open ──(open duration elapsed; checked when a request asks)──▶ half-open
 *   half-open ──(every probe succeeded)──▶ closed;  ──(a probe failed)──▶ open, for longer
 *
 * The open duration doubles with each trip that follows a close by less than `maxOpenDuration`,
 * up to `maxOpenDuration`; a trip after a longer quiet spell starts from `openDuration` again.
 * Results arriving while open belong to attempts admitted before the trip and are ignored.
 * Hand-written rather than cockatiel's: see docs/decisions.md.
 */
export class CircuitBreaker {
  #state: CircuitState = CLOSED;
  readonly #cfg: CircuitBreakerConfig;
  readonly #now: Clock;
  readonly #probeTimeoutMs: number;
  readonly #onTransition: (t: CircuitTransition) => void;
  readonly #requests: SlidingWindowCounter;
  readonly #failures: SlidingWindowCounter;
  #consecutive = 0;
  #trips = 0;
  #openUntil = 0;
  #closedAt = -Infinity;
  /** Probes granted in this half-open period (cancelled ones given back). */
  #probesGranted = 0;
  #probeSuccesses = 0;
  #lastProbeAt = 0;

  constructor(cfg: CircuitBreakerConfig, opts: CircuitBreakerOptions) {
    this.#cfg = cfg;
    this.#now = opts.now;
    this.#probeTimeoutMs = opts.probeTimeoutMs;
    this.#onTransition = opts.onTransition;
    const now = opts.now();
    this.#requests = new SlidingWindowCounter(cfg.window, now);
    this.#failures = new SlidingWindowCounter(cfg.window, now);
  }

  /** The state as of now: an open circuit whose time is up reads (and becomes) half-open. */
  get state(): CircuitState {
    if (this.#state === OPEN && this.#now() >= this.#openUntil) this.#toHalfOpen();
    return this.#state;
  }

  /** May a request go to the upstream? Closed: yes, without reading the clock. */
  allow(): Admission {
    if (this.#state === CLOSED) return ALLOWED;
    const now = this.#now();
    if (this.#state === OPEN) {
      if (now < this.#openUntil) return DENIED;
      this.#toHalfOpen();
    }
    if (this.#probesGranted >= this.#cfg.halfOpenProbes) {
      if (now - this.#lastProbeAt < this.#probeTimeoutMs) return DENIED;
      // Probes that never reported (their requests ended without an attempt) are written off.
      this.#probesGranted = this.#probeSuccesses;
    }
    this.#probesGranted++;
    this.#lastProbeAt = now;
    return PROBE;
  }

  /** A probe granted by `allow()` will not run (e.g. the bulkhead refused the request). */
  cancelProbe(): void {
    if (this.#probesGranted > this.#probeSuccesses) this.#probesGranted--;
  }

  /** Milliseconds a denied caller should wait: until half-open, or 1 s while probes run. */
  retryAfterMs(): number {
    if (this.#state === OPEN) return Math.max(0, this.#openUntil - this.#now());
    return this.#state === HALF_OPEN ? 1000 : 0;
  }

  onSuccess(now: number): void {
    switch (this.#state) {
      case CLOSED:
        this.#consecutive = 0;
        if (this.#cfg.failureRatio > 0) this.#requests.add(now);
        return;
      case HALF_OPEN:
        if (++this.#probeSuccesses >= this.#cfg.halfOpenProbes) this.#close(now);
        return;
    }
  }

  onFailure(now: number): void {
    switch (this.#state) {
      case CLOSED: {
        const cfg = this.#cfg;
        this.#consecutive++;
        if (cfg.consecutiveFailures > 0 && this.#consecutive >= cfg.consecutiveFailures) {
          this.#trip(now, `${this.#consecutive} consecutive failures`);
          return;
        }
        if (cfg.failureRatio > 0) {
          this.#requests.add(now);
          this.#failures.add(now);
          const total = this.#requests.sum(now);
          const failed = this.#failures.sum(now);
          if (total >= cfg.minimumRequests && failed >= cfg.failureRatio * total)
            this.#trip(now, `${failed} of ${total} attempts failed within ${cfg.window} ms`);
        }
        return;
      }
      case HALF_OPEN:
        this.#trip(now, 'half-open probe failed');
        return;
    }
  }

  /** An attempt ended without a verdict on the upstream (the client went away). */
  onNeutral(): void {
    if (this.#state === HALF_OPEN) this.cancelProbe();
  }

  describe(): CircuitDescription {
    const state = this.state;
    const now = this.#now();
    return {
      state: CIRCUIT_STATES[state],
      consecutiveFailures: this.#consecutive,
      windowRequests: this.#requests.sum(now),
      windowFailures: this.#failures.sum(now),
      trips: this.#trips,
      retryAfterMs: state === OPEN ? Math.max(0, this.#openUntil - now) : 0,
      probesInFlight: this.#probesGranted - this.#probeSuccesses,
    };
  }

  #trip(now: number, reason: string): void {
    const from = this.#state;
    const cfg = this.#cfg;
    if (from === CLOSED && now - this.#closedAt >= cfg.maxOpenDuration) this.#trips = 0;
    this.#trips++;
    const openForMs = Math.min(cfg.openDuration * 2 ** (this.#trips - 1), cfg.maxOpenDuration);
    this.#state = OPEN;
    this.#openUntil = now + openForMs;
    this.#consecutive = 0;
    this.#probesGranted = 0;
    this.#probeSuccesses = 0;
    this.#onTransition({ from: CIRCUIT_STATES[from], to: 'open', reason, openForMs });
  }

  #toHalfOpen(): void {
    this.#state = HALF_OPEN;
    this.#probesGranted = 0;
    this.#probeSuccesses = 0;
    this.#onTransition({ from: 'open', to: 'half_open', reason: 'open duration elapsed' });
  }

  #close(now: number): void {
    this.#state = CLOSED;
    this.#closedAt = now;
    this.#consecutive = 0;
    this.#requests.reset(now);
    this.#failures.reset(now);
    this.#onTransition({
      from: 'half_open',
      to: 'closed',
      reason: `${this.#probeSuccesses} half-open probe(s) succeeded`,
    });
  }
}
