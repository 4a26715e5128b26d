/**
 * A fixed-window counter in this process's memory, answering synchronously: the memory store of a
 * policy and the insurance of a Redis one. It counts as rate-limiter-flexible's RateLimiterMemory
 * (wrapped in its BurstyRateLimiter when the limit has a burst) does, window for window: a key's
 * window opens with its first request and ends `duration` later; a request is counted whole even
 * when it goes over; the request that first goes over starts `blockDuration` for its key; a burst
 * is asked only when the main window is spent, and its answer's time is the earlier of the two.
 * What differs is the cost: that limiter answers through a promise (a Promise, a RateLimiterRes
 * and a microtask hop per request, two more with a burst) and keeps a timer per key and window;
 * this one returns its answer, and one unref'd timer per limiter drops expired keys
 * (docs/decisions.md, "Memory counters of our own").
 */

/** What a limit answered for one request (rate-limiter-flexible's RateLimiterRes has the same fields). */
export interface WindowRes {
  /** Points left in the window (0 when over). */
  readonly remainingPoints: number;
  /** Milliseconds to the end of the window, or of the block. */
  readonly msBeforeNext: number;
}

/** One limit's answer for one request. */
export interface LimitResult {
  readonly res: WindowRes;
  /** Over the limit (burst included). */
  readonly over: boolean;
}

/** Synchronous: what a memory limit is asked per request. */
export interface MemoryLimit {
  consume(key: string, cost: number): LimitResult;
  /** Stop the expiry timer (idempotent). */
  close(): void;
}

interface Entry {
  consumed: number;
  /** Date.now() at which the window (or the block) ends. */
  endsAt: number;
}

/** Expired keys are dropped at most this often (and at least once per window). */
const SWEEP_MAX_MS = 10_000;

export class MemoryWindow {
  readonly #points: number;
  readonly #durationMs: number;
  readonly #blockMs: number;
  readonly #entries = new Map<string, Entry>();
  #sweeper: NodeJS.Timeout | undefined;

  constructor(points: number, durationS: number, blockDurationS = 0) {
    this.#points = points;
    this.#durationMs = durationS * 1000;
    this.#blockMs = blockDurationS * 1000;
  }

  /**
   * Count `cost` points for `key` now. `consumed` is the window's count after this request; `ms`
   * the time to the window's end (the block's, when this request started one).
   */
  count(key: string, cost: number): { consumed: number; ms: number } {
    const now = Date.now();
    let entry = this.#entries.get(key);
    if (entry === undefined || entry.endsAt <= now) {
      if (entry === undefined) {
        entry = { consumed: 0, endsAt: 0 };
        this.#entries.set(key, entry);
        if (this.#sweeper === undefined) this.#startSweeping();
      }
      entry.consumed = 0;
      entry.endsAt = now + this.#durationMs;
    }
    entry.consumed += cost;
    // Block once, when a request first crosses the limit (as rate-limiter-flexible does).
    if (this.#blockMs > 0 && entry.consumed > this.#points && entry.consumed <= this.#points + cost)
      entry.endsAt = now + this.#blockMs;
    return { consumed: entry.consumed, ms: entry.endsAt - now };
  }

  get points(): number {
    return this.#points;
  }

  /** Keys counted (for tests). */
  get size(): number {
    return this.#entries.size;
  }

  close(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    this.#entries.clear();
  }

  /** From the first key counted on: a limiter that never counts has no timer. */
  #startSweeping(): void {
    const every = Math.min(SWEEP_MAX_MS, Math.max(1000, this.#durationMs, this.#blockMs));
    this.#sweeper = setInterval(this.#dropExpired, every);
    this.#sweeper.unref();
  }

  #dropExpired = (): void => {
    const now = Date.now();
    for (const [key, entry] of this.#entries) if (entry.endsAt <= now) this.#entries.delete(key);
  };
}

/** A limit without a burst: one window. */
export class SingleLimit implements MemoryLimit {
  readonly #window: MemoryWindow;

  constructor(window: MemoryWindow) {
    this.#window = window;
  }

  consume(key: string, cost: number): LimitResult {
    const { consumed, ms } = this.#window.count(key, cost);
    const points = this.#window.points;
    return consumed > points
      ? { res: { remainingPoints: 0, msBeforeNext: ms }, over: true }
      : { res: { remainingPoints: points - consumed, msBeforeNext: ms }, over: false };
  }

  close(): void {
    this.#window.close();
  }
}

/** A limit with a burst: the burst window is asked only once the main one is spent. */
export class BurstLimit implements MemoryLimit {
  readonly #main: MemoryWindow;
  readonly #burst: MemoryWindow;

  constructor(main: MemoryWindow, burst: MemoryWindow) {
    this.#main = main;
    this.#burst = burst;
  }

  consume(key: string, cost: number): LimitResult {
    const main = this.#main.count(key, cost);
    const points = this.#main.points;
    if (main.consumed <= points)
      return { res: { remainingPoints: points - main.consumed, msBeforeNext: main.ms }, over: false };
    const burst = this.#burst.count(key, cost);
    return {
      res: { remainingPoints: 0, msBeforeNext: Math.min(main.ms, burst.ms) },
      over: burst.consumed > this.#burst.points,
    };
  }

  close(): void {
    this.#main.close();
    this.#burst.close();
  }
}
