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

/**
 * What `allow()` returns when the request may not go, and the ticket of a request whose results no
 * longer count (its probe result is in, or it was admitted without a breaker).
 */
export const NO_TICKET = -1;

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
  /** The latest transition and why; null before the first. */
  lastTransition: { from: CircuitStateName; to: CircuitStateName; reason: string; at: string } | null;
}

/**
 * A circuit breaker per upstream, fed by attempt results.
 *
 *   closed ──(consecutive failures, or failure ratio over the window with enough volume)──▶ open
 *   open ──(open duration elapsed; noticed by the next allow() or state read)──▶ half-open
 *   half-open ──(every probe succeeded)──▶ closed;  ──(a probe failed)──▶ open, for longer
 *
 * The open duration doubles with each trip that follows a close by less than `maxOpenDuration`,
 * up to `maxOpenDuration`; a trip after a longer quiet spell starts from `openDuration` again.
 *
 * Results count only for the period their request was admitted in. `allow()` returns a ticket,
 * the number of the current period (a generation, bumped by every transition and by a probe
 * write-off); the caller keeps it with the request and hands it back with each result. A result
 * whose ticket is not the current period's is ignored: a request admitted while closed that ends
 * while half-open is no probe, and a failure from before the trip does not count against the
 * next closed period. Every admission while half-open is a probe; its first result (or its
 * cancellation) is its only one, after which the request holds NO_TICKET (the return values of
 * `onSuccess`, `onFailure`, `onNeutral` and `cancelProbe` say what the request keeps).
 * Hand-written rather than cockatiel's: see docs/decisions.md.
 */
export class CircuitBreaker {
  #state: CircuitState = CLOSED;
  /** The admission period tickets are checked against; never reused. */
  #generation = 0;
  readonly #cfg: CircuitBreakerConfig;
  readonly #now: Clock;
  readonly #probeTimeoutMs: number;
  #onTransition: (t: CircuitTransition) => void;
  readonly #requests: SlidingWindowCounter;
  readonly #failures: SlidingWindowCounter;
  #consecutive = 0;
  #trips = 0;
  #openUntil = 0;
  #closedAt = -Infinity;
  /** Probe slots taken in this half-open period: successes plus probes that have not reported. */
  #probesGranted = 0;
  #probeSuccesses = 0;
  #lastProbeAt = 0;
  /** The latest transition, for the admin view (wall-clock time). */
  #last: { from: CircuitStateName; to: CircuitStateName; reason: string; at: number } | undefined;

  constructor(cfg: CircuitBreakerConfig, opts: CircuitBreakerOptions) {
    this.#cfg = cfg;
    this.#now = opts.now;
    this.#probeTimeoutMs = opts.probeTimeoutMs;
    this.#onTransition = opts.onTransition;
    const now = opts.now();
    this.#requests = new SlidingWindowCounter(cfg.window, now);
    this.#failures = new SlidingWindowCounter(cfg.window, now);
  }

  /**
   * Send transitions to `hook` from now on: a reload's new Cluster takes the breaker over (and
   * gives it back when that reload is abandoned).
   */
  redirectTransitions(hook: (t: CircuitTransition) => void): void {
    this.#onTransition = hook;
  }

  /**
   * The state as of now. An open circuit whose time is up becomes half-open here (one transition,
   * reported once), so that a scrape or the admin API never shows a stale open: no ticket belongs
   * to an open period, so this cannot disturb probe accounting.
   */
  get state(): CircuitState {
    if (this.#state === OPEN && this.#now() >= this.#openUntil) this.#toHalfOpen();
    return this.#state;
  }

  /**
   * May a request go to the upstream? NO_TICKET: no. Otherwise the request's ticket, to pass with
   * each of its results; while half-open the request is a probe (`isProbe`). Closed: yes, without
   * reading the clock.
   */
  allow(): number {
    if (this.#state === CLOSED) return this.#generation;
    const now = this.#now();
    if (this.#state === OPEN) {
      if (now < this.#openUntil) return NO_TICKET;
      this.#toHalfOpen();
    }
    if (this.#probesGranted >= this.#cfg.halfOpenProbes) {
      if (now - this.#lastProbeAt < this.#probeTimeoutMs) return NO_TICKET;
      // Probes that never reported are written off: their slots are free again, and a new
      // generation makes sure their late results or cancellations do not count twice.
      this.#generation++;
      this.#probesGranted = this.#probeSuccesses;
    }
    this.#probesGranted++;
    this.#lastProbeAt = now;
    return this.#generation;
  }

  /** Whether `ticket` is a half-open probe that has not reported yet. */
  isProbe(ticket: number): boolean {
    return ticket === this.#generation && this.#state === HALF_OPEN;
  }

  /**
   * The request holding `ticket` will not reach the upstream after all (the bulkhead refused it,
   * or it ended without an attempt): a probe gives its slot back. Returns the ticket the request
   * keeps (NO_TICKET for a probe: it can give its slot back only once).
   */
  cancelProbe(ticket: number): number {
    if (ticket !== this.#generation) return NO_TICKET;
    if (this.#state !== HALF_OPEN) return ticket;
    this.#probesGranted--;
    return NO_TICKET;
  }

  /** Milliseconds a denied caller should wait: until half-open, or 1 s while probes run. */
  retryAfterMs(): number {
    if (this.#state === OPEN) return Math.max(0, this.#openUntil - this.#now());
    return this.#state === HALF_OPEN ? 1000 : 0;
  }

  /** An attempt of the request holding `ticket` succeeded. Returns the ticket the request keeps. */
  onSuccess(now: number, ticket: number): number {
    if (ticket !== this.#generation) return NO_TICKET;
    if (this.#state === CLOSED) {
      this.#consecutive = 0;
      if (this.#cfg.failureRatio > 0) this.#requests.add(now);
      return ticket;
    }
    // Half-open (no ticket belongs to an open period): this is a probe's result.
    if (++this.#probeSuccesses >= this.#cfg.halfOpenProbes) this.#close(now);
    return NO_TICKET;
  }

  /** An attempt of the request holding `ticket` failed. Returns the ticket the request keeps. */
  onFailure(now: number, ticket: number): number {
    if (ticket !== this.#generation) return NO_TICKET;
    if (this.#state === HALF_OPEN) {
      this.#trip(now, 'half-open probe failed');
      return NO_TICKET;
    }
    const cfg = this.#cfg;
    this.#consecutive++;
    if (cfg.consecutiveFailures > 0 && this.#consecutive >= cfg.consecutiveFailures) {
      this.#trip(now, `${this.#consecutive} consecutive failures`);
      return NO_TICKET;
    }
    if (cfg.failureRatio > 0) {
      this.#requests.add(now);
      this.#failures.add(now);
      const total = this.#requests.sum(now);
      const failed = this.#failures.sum(now);
      if (total >= cfg.minimumRequests && failed >= cfg.failureRatio * total) {
        this.#trip(now, `${failed} of ${total} attempts failed within ${cfg.window} ms`);
        return NO_TICKET;
      }
    }
    return ticket;
  }

  /** An attempt ended without a verdict on the upstream (the client went away). */
  onNeutral(ticket: number): number {
    return this.cancelProbe(ticket);
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
      lastTransition:
        this.#last === undefined ? null : { ...this.#last, at: new Date(this.#last.at).toISOString() },
    };
  }

  #trip(now: number, reason: string): void {
    const from = this.#state;
    const cfg = this.#cfg;
    if (from === CLOSED && now - this.#closedAt >= cfg.maxOpenDuration) this.#trips = 0;
    this.#trips++;
    const openForMs = Math.min(cfg.openDuration * 2 ** (this.#trips - 1), cfg.maxOpenDuration);
    this.#state = OPEN;
    this.#generation++;
    this.#openUntil = now + openForMs;
    this.#consecutive = 0;
    this.#probesGranted = 0;
    this.#probeSuccesses = 0;
    this.#transition({ from: CIRCUIT_STATES[from], to: 'open', reason, openForMs });
  }

  #transition(t: CircuitTransition): void {
    this.#last = { from: t.from, to: t.to, reason: t.reason, at: Date.now() };
    this.#onTransition(t);
  }

  #toHalfOpen(): void {
    this.#state = HALF_OPEN;
    this.#generation++;
    this.#probesGranted = 0;
    this.#probeSuccesses = 0;
    this.#transition({ from: 'open', to: 'half_open', reason: 'open duration elapsed' });
  }

  #close(now: number): void {
    this.#state = CLOSED;
    this.#generation++;
    this.#closedAt = now;
    this.#consecutive = 0;
    this.#requests.reset(now);
    this.#failures.reset(now);
    this.#transition({
      from: 'half_open',
      to: 'closed',
      reason: `${this.#probeSuccesses} half-open probe(s) succeeded`,
    });
  }
}
