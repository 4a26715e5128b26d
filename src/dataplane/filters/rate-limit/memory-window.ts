/**
 * A fixed-window counter in this process's memory, answering synchronously: the memory store of a
 * policy and the insurance of a Redis one. It counts as rate-limiter-flexible's RateLimiterMemory
 * (wrapped in its BurstyRateLimiter when the limit has a burst) does, window for window: a key's
 * window opens with its first request and ends `duration` later; a request is counted whole even
 * when it goes over; the request that first goes over starts `blockDuration` for its key; a burst
 * is asked only when the main window is spent, and its answer's time is the earlier of the two.
 * What differs is the cost: that limiter answers through a promise (a Promise, a RateLimiterRes
 * and a microtask hop per request, two more with a burst) and keeps a timer per key and window;
 * this one returns its answer, and one unref'd timer per limiter drops expired keys, in slices
 * between requests (docs/decisions.md, "Memory counters of our own").
 *
 * A window holds at most `maxKeys` keys: a client that picks its keys (an IPv6 /64, a header, a
 * claim it controls) would otherwise add keys faster than expiry drops them, and the heap grows
 * until the process dies. A new key at the cap takes the place of the oldest window's, in
 * constant work (docs/decisions.md, "A cap on memory counters' keys").
 */
import { runInSlices, type Steps } from '../../../slices.ts';

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
  /** Keys held by its fullest window. */
  readonly keys: number;
  /** Stop the expiry timer (idempotent). */
  close(): void;
}

/** How many keys a window holds at most, and where it counts those it drops early to stay there. */
export interface KeyBound {
  readonly maxKeys: number;
  /** Added 1 per key dropped before its window (or block) ended: a metric cell. */
  readonly evicted: { value: number };
}

interface Entry {
  consumed: number;
  /** Date.now() at which the window (or the block) ends. */
  endsAt: number;
}

/** Expired keys are dropped at most this often (and at least once per window). */
const SWEEP_MAX_MS = 10_000;
/**
 * The sweep gives the event loop a turn about this often: deleting 100,000 expired keys takes
 * tens of ms (bench/micro/memory-window-keys.ts), which in one piece would hold every request.
 */
const SWEEP_SLICE_MS = 2;
/** Keys the sweep looks at between two looks at the clock. */
const SWEEP_STEP = 256;

export class MemoryWindow {
  readonly #points: number;
  readonly #durationMs: number;
  readonly #blockMs: number;
  readonly #maxKeys: number;
  readonly #evicted: { value: number };
  /**
   * Keys in the order their window (or block) began, oldest first: a key whose window renews or
   * whose block starts is moved to the end.
   */
  readonly #entries = new Map<string, Entry>();
  /**
   * Where the oldest key is: every key it passed was removed, so its next entry is the oldest.
   * One iterator kept across calls, since a new one starts at the front of the Map's table and
   * steps over every slot deleted there since the table was last rebuilt (up to a third of it).
   */
  #oldest: MapIterator<[string, Entry]> | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  /** A sweep is under way (in slices): the next tick of the timer leaves it be. */
  #sweeping = false;

  constructor(points: number, durationS: number, blockDurationS: number, bound: KeyBound) {
    this.#points = points;
    this.#durationMs = durationS * 1000;
    this.#blockMs = blockDurationS * 1000;
    this.#maxKeys = bound.maxKeys;
    this.#evicted = bound.evicted;
  }

  /**
   * Count `cost` points for `key` now. `consumed` is the window's count after this request; `ms`
   * the time to the window's end (the block's, when this request started one).
   */
  count(key: string, cost: number): { consumed: number; ms: number } {
    const now = Date.now();
    const entries = this.#entries;
    let entry = entries.get(key);
    if (entry === undefined) {
      if (entries.size >= this.#maxKeys) this.#dropOldest(now);
      entry = { consumed: 0, endsAt: now + this.#durationMs };
      entries.set(key, entry);
      if (this.#sweeper === undefined) this.#startSweeping();
    } else if (entry.endsAt <= now) {
      entry.consumed = 0;
      entry.endsAt = now + this.#durationMs;
      this.#renew(key, entry);
    }
    entry.consumed += cost;
    // Block once, when a request first crosses the limit (as rate-limiter-flexible does).
    if (this.#blockMs > 0 && entry.consumed > this.#points && entry.consumed <= this.#points + cost) {
      entry.endsAt = now + this.#blockMs;
      this.#renew(key, entry);
    }
    return { consumed: entry.consumed, ms: entry.endsAt - now };
  }

  get points(): number {
    return this.#points;
  }

  /** Keys held now (expired ones included until they are dropped). */
  get size(): number {
    return this.#entries.size;
  }

  close(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    this.#entries.clear();
    this.#oldest = undefined;
  }

  /** A key whose window or block began now goes to the young end: the last to be dropped. */
  #renew(key: string, entry: Entry): void {
    this.#entries.delete(key);
    this.#entries.set(key, entry);
  }

  /**
   * At the cap, before a new key: drop the oldest key, the one whose window began first. Usually
   * its window has ended (expiry's work, done early); if not, it is an eviction, counted: that key
   * starts a new window with its next request. One entry, whatever the number of keys.
   */
  #dropOldest(now: number): void {
    let next = this.#oldest?.next();
    if (next === undefined || next.done === true) {
      // Exhausted (every key it passed is gone): the oldest is the first entry.
      this.#oldest = this.#entries.entries();
      next = this.#oldest.next();
      if (next.done === true) return;
    }
    const [key, entry] = next.value;
    this.#entries.delete(key);
    if (entry.endsAt > now) this.#evicted.value += 1;
  }

  /** From the first key counted on: a limiter that never counts has no timer. */
  #startSweeping(): void {
    const every = Math.min(SWEEP_MAX_MS, Math.max(1000, this.#durationMs, this.#blockMs));
    this.#sweeper = setInterval(this.#dropExpired, every);
    this.#sweeper.unref();
  }

  #dropExpired = (): void => {
    if (this.#sweeping) return;
    this.#sweeping = true;
    // Nothing in the sweep throws; a small one ends before this returns.
    void runInSlices(this.#sweep(Date.now()), SWEEP_SLICE_MS);
  };

  /** Drop the keys whose window (or block) ended by `now`, in steps (src/slices.ts). */
  *#sweep(now: number): Steps<void> {
    let looked = 0;
    for (const [key, entry] of this.#entries) {
      if (entry.endsAt <= now) this.#entries.delete(key);
      if (++looked % SWEEP_STEP === 0) yield;
    }
    this.#sweeping = false;
  }
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

  get keys(): number {
    return this.#window.size;
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

  get keys(): number {
    return Math.max(this.#main.size, this.#burst.size);
  }

  close(): void {
    this.#main.close();
    this.#burst.close();
  }
}
