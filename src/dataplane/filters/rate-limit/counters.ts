/**
 * A policy's counters: one limit (with its burst when the limit has one) per configured limit, in
 * this process's memory (memory-window.ts, answering synchronously) or in the shared Redis
 * (redis-window.ts: rate-limiter-flexible's RateLimiterRedis script and keys, on the rate limits'
 * own connection). A Redis policy waits at most its `timeout` for all its limits together; a limit
 * whose store failed or did not answer in time is decided by the policy's degradation: its
 * insurance limiter (memory, the limit divided by the expected replica count), nothing
 * (fail-open), or a refusal (fail-closed).
 */
import type { RedisConnection } from '../../../stores/redis.ts';
import type { RateLimitStoreResult } from '../../../telemetry/metrics.ts';
import { type Deadlined, DeadlineQueue } from './deadlines.ts';
import {
  BurstLimit,
  type KeyBound,
  type LimitResult,
  type MemoryLimit,
  MemoryWindow,
  SingleLimit,
} from './memory-window.ts';
import { type Answer, type AnswerSink, RedisLimit } from './redis-window.ts';
import type { Degradation, LimitConfig } from './schema.ts';

export type { LimitResult } from './memory-window.ts';

export interface Consumed {
  /** Per limit, in the policy's order; undefined where the store failed and no insurance stood in. */
  readonly results: readonly (LimitResult | undefined)[];
  /**
   * undefined: every limit answered by its store. Otherwise how the failure was handled:
   * `insured` (insurance limiters stood in), `open` (those limits were left out), `closed`.
   */
  readonly degraded: 'insured' | 'open' | 'closed' | undefined;
}

/** What the counters report about their store, for metrics and logs. */
export interface StoreObserver {
  /** One request's wait for the store (all limits), and how it ended. */
  storeCall(result: RateLimitStoreResult, seconds: number): void;
  /** A failed store call (counted on the Redis connection too). */
  storeFailed(err: unknown): void;
}

/** Counters in this process: they answer at once. */
export interface LocalCounters {
  readonly store: 'memory';
  /** Count a request of `cost` points under `key` in every limit; what they answered. */
  count(key: string, cost: number): Consumed;
  /** Keys held by the fullest limit (at most the policy's `maxKeys`). */
  readonly keys: number;
  /** Stop their timers (idempotent). */
  close(): void;
}

/** Counters in a shared store: they answer through a promise. */
export interface SharedCounters {
  readonly store: 'redis';
  /**
   * Count a request of `cost` points under `key` in every limit, and settle to what `then`
   * returns (or reject with what it throws) once they answered or the degradation decided.
   */
  consume<T>(key: string, cost: number, then: (consumed: Consumed) => T): Promise<T>;
  /** Keys held in memory by the fullest insurance limit (0 without insurance). */
  readonly keys: number;
  /** Stop their timers (idempotent). */
  close(): void;
}

/** A policy's counters; `store` tells which kind (the admin API shows it too). */
export type Counters = LocalCounters | SharedCounters;

/** A limit (and its burst) in memory, `divisor` sharing it: memory policies and insurance. */
function memoryLimit(limit: LimitConfig, divisor: number, bound: KeyBound): MemoryLimit {
  const share = (points: number) => Math.max(1, Math.floor(points / divisor));
  const main = new MemoryWindow(share(limit.points), limit.duration, limit.blockDuration ?? 0, bound);
  if (limit.burst === undefined) return new SingleLimit(main);
  return new BurstLimit(main, new MemoryWindow(share(limit.burst.points), limit.burst.duration, 0, bound));
}

/** Keys held by the fullest of `limits`. */
function keysHeld(limits: readonly MemoryLimit[]): number {
  let most = 0;
  for (const l of limits) most = Math.max(most, l.keys);
  return most;
}

/** The Redis key prefix of a limit: the policy and the window, so changing points keeps counting. */
export function limitPrefix(policy: string, limit: LimitConfig): string {
  return `rl:${policy}:${limit.duration}s`;
}

/** Counters in this process: exact (for the keys they hold), synchronous, and never failing. */
export class MemoryCounters implements LocalCounters {
  readonly store = 'memory' as const;
  readonly #limits: readonly MemoryLimit[];

  constructor(limits: readonly LimitConfig[], bound: KeyBound) {
    this.#limits = limits.map((l) => memoryLimit(l, 1, bound));
  }

  count(key: string, cost: number): Consumed {
    const limits = this.#limits;
    if (limits.length === 1) return { results: [limits[0]!.consume(key, cost)], degraded: undefined };
    const results: LimitResult[] = [];
    for (const l of limits) results.push(l.consume(key, cost));
    return { results, degraded: undefined };
  }

  get keys(): number {
    return keysHeld(this.#limits);
  }

  close(): void {
    for (const l of this.#limits) l.close();
  }
}

export interface RedisCountersOptions {
  readonly policy: string;
  readonly limits: readonly LimitConfig[];
  /** The rate limits' connection (RedisConnection.rateLimits()): no per-command timer. */
  readonly redis: RedisConnection;
  readonly timeoutMs: number;
  readonly onError: Degradation;
  /** The replicas sharing the policy: the insurance limits are the limits divided by this. */
  readonly replicas: number;
  /** The insurance limits' bound on keys. */
  readonly keyBound: KeyBound;
  readonly observer: StoreObserver;
}

/**
 * One request's call to the store: every limit's answer, until all answered or the deadline
 * passed (a later answer is not waited for; its count stays in Redis).
 */
class StoreCall<T> implements Deadlined, AnswerSink {
  readonly started: number;
  readonly deadline: number;
  settled = false;
  readonly answers: (Answer | undefined)[];
  #waiting: number;
  readonly #owner: RedisCounters;
  readonly #key: string;
  readonly #cost: number;
  readonly #then: (consumed: Consumed) => T;
  readonly #resolve: (value: T | PromiseLike<T>) => void;
  readonly #reject: (err: unknown) => void;

  constructor(
    owner: RedisCounters,
    key: string,
    cost: number,
    then: (consumed: Consumed) => T,
    resolve: (value: T | PromiseLike<T>) => void,
    reject: (err: unknown) => void,
    limits: number,
    timeoutMs: number,
  ) {
    this.started = performance.now();
    this.deadline = this.started + timeoutMs;
    this.answers = limits === 1 ? [undefined] : new Array<Answer | undefined>(limits).fill(undefined);
    this.#waiting = limits;
    this.#owner = owner;
    this.#key = key;
    this.#cost = cost;
    this.#then = then;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  answer(i: number, a: Answer): void {
    if (this.settled) return;
    this.answers[i] = a;
    if (--this.#waiting === 0) {
      this.#finish(false);
      this.#owner.released();
    }
  }

  expire(): void {
    this.#finish(true);
  }

  #finish(timedOut: boolean): void {
    this.settled = true;
    const consumed = this.#owner.conclude(this.#key, this.#cost, this.answers, timedOut, this.started);
    try {
      this.#resolve(this.#then(consumed));
    } catch (err) {
      this.#reject(err);
    }
  }
}

/** Counters in the shared Redis: one budget for every replica, as long as Redis answers in time. */
export class RedisCounters implements SharedCounters {
  readonly store = 'redis' as const;
  readonly #limits: readonly RedisLimit[];
  readonly #insurance: readonly MemoryLimit[] | undefined;
  readonly #timeoutMs: number;
  readonly #onError: Degradation;
  readonly #observer: StoreObserver;
  readonly #redis: RedisConnection;
  readonly #deadlines = new DeadlineQueue<Deadlined>();

  constructor(opts: RedisCountersOptions) {
    this.#redis = opts.redis;
    const client = opts.redis.client;
    this.#limits = opts.limits.map(
      (l) =>
        new RedisLimit({
          client,
          prefix: opts.redis.ownKeyPrefix + limitPrefix(opts.policy, l),
          points: l.points,
          durationS: l.duration,
          blockDurationS: l.blockDuration ?? 0,
          burst: l.burst === undefined ? undefined : { points: l.burst.points, durationS: l.burst.duration },
        }),
    );
    this.#insurance =
      opts.onError === 'insurance'
        ? opts.limits.map((l) => memoryLimit(l, opts.replicas, opts.keyBound))
        : undefined;
    this.#timeoutMs = opts.timeoutMs;
    this.#onError = opts.onError;
    this.#observer = opts.observer;
  }

  consume<T>(key: string, cost: number, then: (consumed: Consumed) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const limits = this.#limits;
      const call = new StoreCall(this, key, cost, then, resolve, reject, limits.length, this.#timeoutMs);
      this.#deadlines.add(call, this.#timeoutMs);
      for (let i = 0; i < limits.length; i++) limits[i]!.consume(key, cost, call, i);
    });
  }

  /** A call settled by its answers: let the settled ones at the front of the deadline queue go. */
  released(): void {
    this.#deadlines.release();
  }

  /**
   * What a store call came to: the answers, or for the limits that failed or did not answer in
   * time, the degradation's. A Promise only when insurance limiters stand in.
   */
  conclude(
    key: string,
    cost: number,
    answers: readonly (Answer | undefined)[],
    timedOut: boolean,
    started: number,
  ): Consumed {
    let failures = 0;
    for (const a of answers) {
      if (a !== undefined && 'failed' in a) {
        failures++;
        this.#observer.storeFailed(a.failed);
      }
    }
    const now = performance.now();
    // Nothing answered in time is how a silent connection shows (the connection has no timer of its own).
    if (timedOut) this.#redis.stalled(now);
    else this.#redis.answered(now);
    this.#observer.storeCall(timedOut ? 'timeout' : failures > 0 ? 'error' : 'ok', (now - started) / 1000);
    if (!timedOut && failures === 0) return { results: answers as LimitResult[], degraded: undefined };
    if (this.#onError === 'fail-closed') return { results: [], degraded: 'closed' };
    const insurance = this.#insurance;
    if (insurance === undefined)
      return {
        results: answers.map((a) => (a !== undefined && !('failed' in a) ? a : undefined)),
        degraded: 'open',
      };
    return this.#insure(key, cost, answers, insurance);
  }

  #insure(
    key: string,
    cost: number,
    answers: readonly (Answer | undefined)[],
    insurance: readonly MemoryLimit[],
  ): Consumed {
    const results: LimitResult[] = [];
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i];
      results.push(a !== undefined && !('failed' in a) ? a : insurance[i]!.consume(key, cost));
    }
    return { results, degraded: 'insured' };
  }

  get keys(): number {
    return this.#insurance === undefined ? 0 : keysHeld(this.#insurance);
  }

  /** Calls in flight still end by their deadline (the queue's timer stops when it empties). */
  close(): void {
    for (const l of this.#insurance ?? []) l.close();
  }
}
