import type { Clock } from './clock.ts';
import type { RetryConfig } from './policy-schema.ts';
import { SlidingWindowCounter } from './sliding-window.ts';

const EPSILON = 1e-9;

/**
 * A retry budget per upstream (Finagle/Linkerd): retries may add at most `ratio` to the request
 * rate, plus `minRetriesPerSecond` so that low-traffic upstreams can still retry. It is what keeps
 * retries from multiplying an outage: at 100% failure the load on the upstream grows by the
 * ratio, not by `maxAttempts`.
 *
 * A token balance: each request deposits `ratio`, time deposits `minRetriesPerSecond` per second,
 * each retry withdraws 1. The balance is capped at ratio × the requests of the last `window`, plus
 * one second of the floor: credit from old traffic expires, and a quiet spell banks no more than
 * one second of floor, so a burst after it cannot spend a window's worth at once. Since nothing
 * else adds tokens, over any T seconds:
 *
 *   retries ≤ ratio × R + minRetriesPerSecond × (T + 1)
 *
 * where R counts the requests of those T seconds and of the `window` before them (just the burst's
 * own after a quiet window). Linkerd's budget (tower's TpsBudget) keeps a constant reserve of
 * minRetriesPerSecond × ttl instead, which an idle upstream hands out at once (docs/decisions.md).
 */
export class RetryBudget {
  readonly #ratio: number;
  readonly #perMs: number;
  /** One second of `minRetriesPerSecond`: the most floor credit a quiet spell banks. */
  readonly #floor: number;
  readonly #now: Clock;
  readonly #requests: SlidingWindowCounter;
  /** Tokens; compared with a little slack, as 5 × 0.2 adds up to 0.9999999999999999. */
  #balance: number;
  #updatedAt: number;

  constructor(cfg: RetryConfig['budget'], now: Clock) {
    this.#ratio = cfg.ratio;
    this.#perMs = cfg.minRetriesPerSecond / 1000;
    this.#floor = cfg.minRetriesPerSecond;
    this.#now = now;
    const t = now();
    this.#requests = new SlidingWindowCounter(cfg.window, t);
    this.#balance = this.#floor;
    this.#updatedAt = t;
  }

  /** Count one request (not retries): it earns `ratio` of a retry. */
  requestStarted(): void {
    const now = this.#now();
    this.#requests.add(now);
    this.#balance = Math.min(this.#refilled(now) + this.#ratio, this.#cap(now));
    this.#updatedAt = now;
  }

  /** Take one retry from the budget; false when it is spent. */
  tryWithdraw(): boolean {
    const now = this.#now();
    const balance = this.#refilled(now);
    this.#updatedAt = now;
    if (balance < 1 - EPSILON) {
      this.#balance = balance;
      return false;
    }
    this.#balance = Math.max(0, balance - 1);
    return true;
  }

  /** Whole retries available now. */
  remaining(): number {
    return Math.floor(this.#refilled(this.#now()) + EPSILON);
  }

  #cap(now: number): number {
    return this.#ratio * this.#requests.sum(now) + this.#floor;
  }

  #refilled(now: number): number {
    const earned = this.#balance + (now - this.#updatedAt) * this.#perMs;
    return Math.min(earned, this.#cap(now));
  }
}
