/**
 * A policy's counters: one rate-limiter-flexible limiter per limit (with its burst limiter when
 * the limit has one), in this process's memory or in the shared Redis. A Redis policy waits at
 * most its `timeout` for all its limits together; a limit whose store failed or did not answer in
 * time is decided by the policy's degradation: its insurance limiter (memory, the limit divided by
 * the expected replica count), nothing (fail-open), or a refusal (fail-closed).
 */
import type { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { lazyRequire } from '../../../lazy-require.ts';
import type { RedisConnection } from '../../../stores/redis.ts';
import type { RateLimitStoreResult } from '../../../telemetry/metrics.ts';
import { type Deadlined, DeadlineQueue } from './deadlines.ts';
import type { Degradation, LimitConfig } from './schema.ts';

/** rate-limiter-flexible, loaded with the first policy's counters (about 1.4 MB of live heap). */
const lib = lazyRequire<typeof import('rate-limiter-flexible')>('rate-limiter-flexible');

/** What consume() needs of a limiter: rate-limiter-flexible's limiters and BurstyRateLimiter alike. */
interface Limiter {
  consume(key: string, points: number): Promise<RateLimiterRes>;
}

/** One limit's answer for one request. */
export interface LimitResult {
  /** rate-limiter-flexible's result: remaining points and the time to the window's (or block's) end. */
  readonly res: RateLimiterRes;
  /** Over the limit (burst included). */
  readonly over: boolean;
}

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

export interface Counters {
  /**
   * Count a request of `cost` points under `key` in every limit, and hand what they answered to
   * `then` (one promise for both: this is on every counted request's path).
   */
  consume<T>(key: string, cost: number, then: (consumed: Consumed) => T): Promise<T>;
  /** Where the counters live, for the admin API. */
  readonly store: 'memory' | 'redis';
}

function settledOver(err: unknown): LimitResult {
  if (err instanceof lib().RateLimiterRes) return { res: err, over: true };
  throw err;
}

function settledUnder(res: RateLimiterRes): LimitResult {
  return { res, over: false };
}

/**
 * A memory limiter. No key prefix: each limiter has a store of its own, and a prefix would cost a
 * string concatenation (and its flattening for the lookup) per request.
 */
function memoryLimiter(points: number, duration: number, blockDuration: number): RateLimiterMemory {
  return new (lib().RateLimiterMemory)({ points, duration, blockDuration, keyPrefix: '' });
}

/** Insurance and memory limits: a limit (and its burst) as memory limiters, `divisor` sharing it. */
function memoryLimit(limit: LimitConfig, divisor: number): Limiter {
  const share = (points: number) => Math.max(1, Math.floor(points / divisor));
  const main = memoryLimiter(share(limit.points), limit.duration, limit.blockDuration ?? 0);
  if (limit.burst === undefined) return main;
  return new (lib().BurstyRateLimiter)(
    main,
    memoryLimiter(share(limit.burst.points), limit.burst.duration, 0),
  );
}

/** The Redis key prefix of a limit: the policy and the window, so changing points keeps counting. */
export function limitPrefix(policy: string, limit: LimitConfig): string {
  return `rl:${policy}:${limit.duration}s`;
}

/** Counters in this process: exact, and a consume never fails. */
export class MemoryCounters implements Counters {
  readonly store = 'memory' as const;
  readonly #limiters: readonly Limiter[];

  constructor(limits: readonly LimitConfig[]) {
    this.#limiters = limits.map((l) => memoryLimit(l, 1));
  }

  consume<T>(key: string, cost: number, then: (consumed: Consumed) => T): Promise<T> {
    const limiters = this.#limiters;
    if (limiters.length === 1)
      return limiters[0]!.consume(key, cost).then(
        (res) => then({ results: [{ res, over: false }], degraded: undefined }),
        (err: unknown) => then({ results: [settledOver(err)], degraded: undefined }),
      );
    return Promise.all(limiters.map((l) => l.consume(key, cost).then(settledUnder, settledOver))).then(
      (results) => then({ results, degraded: undefined }),
    );
  }
}

export interface RedisCountersOptions {
  readonly policy: string;
  readonly limits: readonly LimitConfig[];
  readonly redis: RedisConnection;
  readonly timeoutMs: number;
  readonly onError: Degradation;
  /** The replicas sharing the policy: the insurance limits are the limits divided by this. */
  readonly replicas: number;
  readonly observer: StoreObserver;
}

/** The outcome of one limit's Redis call: a result, or the store's failure. */
type Answer = LimitResult | { readonly failed: unknown };

/**
 * One request's call to the store: every limit's answer, until all answered or the deadline
 * passed (a later answer is not waited for; its count stays in Redis).
 */
class StoreCall<T> implements Deadlined {
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
    if (--this.#waiting === 0) this.#finish(false);
  }

  expire(): void {
    this.#finish(true);
  }

  #finish(timedOut: boolean): void {
    this.settled = true;
    const consumed = this.#owner.conclude(this.#key, this.#cost, this.answers, timedOut, this.started);
    if (consumed instanceof Promise) consumed.then(this.#then).then(this.#resolve, this.#reject);
    else {
      try {
        this.#resolve(this.#then(consumed));
      } catch (err) {
        this.#reject(err);
      }
    }
  }
}

/** Counters in the shared Redis: one budget for every replica, as long as Redis answers in time. */
export class RedisCounters implements Counters {
  readonly store = 'redis' as const;
  readonly #limiters: readonly Limiter[];
  readonly #insurance: readonly Limiter[] | undefined;
  readonly #timeoutMs: number;
  readonly #onError: Degradation;
  readonly #observer: StoreObserver;
  readonly #deadlines = new DeadlineQueue<Deadlined>();

  constructor(opts: RedisCountersOptions) {
    const client = opts.redis.client;
    const redisLimiter = (points: number, duration: number, blockDuration: number, prefix: string) =>
      new (lib().RateLimiterRedis)({
        storeClient: client,
        // ioredis, not node-redis; fail at once while the connection is down (no offline queue).
        useRedisPackage: false,
        rejectIfRedisNotReady: true,
        points,
        duration,
        blockDuration,
        keyPrefix: prefix,
      });
    this.#limiters = opts.limits.map((l) => {
      const prefix = limitPrefix(opts.policy, l);
      const main = redisLimiter(l.points, l.duration, l.blockDuration ?? 0, prefix);
      if (l.burst === undefined) return main;
      return new (lib().BurstyRateLimiter)(
        main,
        redisLimiter(l.burst.points, l.burst.duration, 0, `${prefix}:burst`),
      );
    });
    this.#insurance =
      opts.onError === 'insurance' ? opts.limits.map((l) => memoryLimit(l, opts.replicas)) : undefined;
    this.#timeoutMs = opts.timeoutMs;
    this.#onError = opts.onError;
    this.#observer = opts.observer;
  }

  consume<T>(key: string, cost: number, then: (consumed: Consumed) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const limiters = this.#limiters;
      const call = new StoreCall(this, key, cost, then, resolve, reject, limiters.length, this.#timeoutMs);
      this.#deadlines.add(call, this.#timeoutMs);
      for (let i = 0; i < limiters.length; i++) {
        limiters[i]!.consume(key, cost).then(
          (res) => this.#answered(call, i, { res, over: false }),
          (err: unknown) =>
            this.#answered(
              call,
              i,
              err instanceof lib().RateLimiterRes ? { res: err, over: true } : { failed: err },
            ),
        );
      }
    });
  }

  #answered<T>(call: StoreCall<T>, i: number, a: Answer): void {
    call.answer(i, a);
    if (call.settled) this.#deadlines.release();
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
  ): Consumed | Promise<Consumed> {
    let failures = 0;
    for (const a of answers) {
      if (a !== undefined && 'failed' in a) {
        failures++;
        this.#observer.storeFailed(a.failed);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    this.#observer.storeCall(timedOut ? 'timeout' : failures > 0 ? 'error' : 'ok', seconds);
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

  async #insure(
    key: string,
    cost: number,
    answers: readonly (Answer | undefined)[],
    insurance: readonly Limiter[],
  ): Promise<Consumed> {
    const results: LimitResult[] = [];
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i];
      if (a !== undefined && !('failed' in a)) results.push(a);
      else results.push(await insurance[i]!.consume(key, cost).then(settledUnder, settledOver));
    }
    return { results, degraded: 'insured' };
  }
}
