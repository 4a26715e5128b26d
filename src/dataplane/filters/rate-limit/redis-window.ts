/**
 * A limit counted in the shared Redis, as rate-limiter-flexible's RateLimiterRedis counts it
 * (wrapped in its BurstyRateLimiter when the limit has a burst): the library's own Lua script,
 * which a RateLimiterRedis defines on the client as the ioredis command `rlflxIncr` (ioredis sends
 * EVALSHA, and the script itself on a connection that has not loaded it or after NOSCRIPT), the
 * same keys (`<prefix>:<key>`), the same values and expiries, the same block (`SET key <consumed>
 * EX <blockDuration>` in a MULTI with a PTTL) and the same answers. Replicas running either count
 * one budget together. What differs is the per-request path: that limiter wraps each command in
 * its `_operation` and `_consume` promises and the async `_upsert`, each a microtask hop before
 * the request goes on, and builds the argument array twice; this one sends the command itself and
 * hands the reply on from one `.then` on the command's own promise (docs/decisions.md, "Redis
 * counters without rate-limiter-flexible's promise chain"). tests/integration/redis-window.test.ts
 * checks it request for request against RateLimiterRedis on a real redis-server.
 */
import type { Redis } from 'ioredis';
import { lazyRequire } from '../../../lazy-require.ts';
import type { LimitResult } from './memory-window.ts';

/** rate-limiter-flexible, loaded with the first Redis policy (about 1.4 MB of live heap). */
const lib = lazyRequire<typeof import('rate-limiter-flexible')>('rate-limiter-flexible');

/** A client on which rate-limiter-flexible has defined its counting script. */
type IncrClient = Redis & {
  rlflxIncr(key: string, points: string, secDuration: string): Promise<unknown>;
};

const scriptDefined = new WeakSet<Redis>();

/**
 * `client` with rate-limiter-flexible's counting script as the command `rlflxIncr`: a
 * RateLimiterRedis defines it on the client it is given (once per client is enough).
 */
export function withIncrScript(client: Redis): IncrClient {
  if (!scriptDefined.has(client)) {
    new (lib().RateLimiterRedis)({ storeClient: client, points: 1, duration: 1 });
    scriptDefined.add(client);
  }
  return client as IncrClient;
}

/** One limit's outcome of a store call: its answer, or the store's failure. */
export type Answer = LimitResult | { readonly failed: unknown };

/** Who waits for a limit's answer: the request's store call (counters.ts), told which limit answered. */
export interface AnswerSink {
  answer(limit: number, a: Answer): void;
}

/** One window of a limit in Redis: points per duration under a key prefix. */
class Window {
  readonly #client: IncrClient;
  readonly #prefix: string;
  readonly points: number;
  readonly #durationArg: string;
  readonly #blockS: number;

  constructor(client: Redis, prefix: string, points: number, durationS: number, blockDurationS: number) {
    this.#client = withIncrScript(client);
    this.#prefix = `${prefix}:`;
    this.points = points;
    this.#durationArg = String(durationS);
    this.#blockS = blockDurationS;
  }

  /** The key as rate-limiter-flexible's getKey() makes it. */
  key(key: string): string {
    return this.#prefix + key;
  }

  /**
   * Count `cost` for `rlKey`: the reply is `[consumed, ttl ms]`. ioredis sends the script itself
   * where the connection has not loaded it (a new connection, a restarted or flushed Redis).
   */
  incr(rlKey: string, cost: number): Promise<unknown> {
    // rate-limiter-flexible also sends points and window as ARGV[3] and [4], which the script never reads.
    return this.#client.rlflxIncr(rlKey, costArg(cost), this.#durationArg);
  }

  /** The request that first went over starts the block (rate-limiter-flexible's `_block`). */
  startsBlock(consumed: number, cost: number): boolean {
    return this.#blockS > 0 && consumed > this.points && consumed <= this.points + cost;
  }

  block(rlKey: string, consumed: number): Promise<unknown> {
    return this.#client.multi().set(rlKey, consumed, 'EX', this.#blockS).pttl(rlKey).exec();
  }

  get blockMs(): number {
    return this.#blockS * 1000;
  }
}

function costArg(cost: number): string {
  return cost === 1 ? '1' : String(cost);
}

/** The script's reply: `[consumed, ttl ms]` (integers; RateLimiterRedis parseInt()s the first). */
type Reply = readonly [number, number];

export interface RedisLimitOptions {
  readonly client: Redis;
  /**
   * The limit's keys' prefix, whole (the connection's ownKeyPrefix and counters.ts limitPrefix()):
   * the client adds nothing on the rate limits' connection. The burst's is `<prefix>:burst`.
   */
  readonly prefix: string;
  readonly points: number;
  readonly durationS: number;
  readonly blockDurationS: number;
  readonly burst: { readonly points: number; readonly durationS: number } | undefined;
}

/** A limit (and its burst) in Redis. */
export class RedisLimit {
  readonly #client: Redis;
  readonly #main: Window;
  readonly #burst: Window | undefined;

  constructor(o: RedisLimitOptions) {
    this.#client = o.client;
    this.#main = new Window(o.client, o.prefix, o.points, o.durationS, o.blockDurationS);
    this.#burst =
      o.burst === undefined
        ? undefined
        : new Window(o.client, `${o.prefix}:burst`, o.burst.points, o.burst.durationS, 0);
  }

  /**
   * Count `cost` points for `key` and tell `sink` (as limit `i`) what Redis answered. While the
   * connection is not ready it fails at once (rate-limiter-flexible's `rejectIfRedisNotReady`).
   */
  consume(key: string, cost: number, sink: AnswerSink, i: number): void {
    if (this.#client.status !== 'ready') {
      sink.answer(i, { failed: new Error('Redis connection is not ready') });
      return;
    }
    const main = this.#main;
    const rlKey = main.key(key);
    // One .then on the command's own promise: the reply goes on to the request in one microtask.
    const replied = (raw: unknown): void => {
      const consumed = (raw as Reply)[0];
      const ms = (raw as Reply)[1];
      if (consumed <= main.points) {
        sink.answer(i, { res: { remainingPoints: main.points - consumed, msBeforeNext: ms }, over: false });
        return;
      }
      this.#over(key, rlKey, cost, consumed, ms).then(
        (a) => sink.answer(i, a),
        (err: unknown) => sink.answer(i, { failed: err }),
      );
    };
    main.incr(rlKey, cost).then(replied, (err: unknown) => sink.answer(i, { failed: err }));
  }

  /** The main window is spent: the block it may start, then the burst, as BurstyRateLimiter asks it. */
  async #over(key: string, rlKey: string, cost: number, consumed: number, ms: number): Promise<Answer> {
    const main = this.#main;
    let msBeforeNext = ms;
    if (main.startsBlock(consumed, cost)) {
      await main.block(rlKey, consumed);
      msBeforeNext = main.blockMs;
    }
    const burst = this.#burst;
    if (burst === undefined) return { res: { remainingPoints: 0, msBeforeNext }, over: true };
    const b = (await burst.incr(burst.key(key), cost)) as Reply;
    return {
      res: { remainingPoints: 0, msBeforeNext: Math.min(msBeforeNext, b[1]) },
      over: b[0] > burst.points,
    };
  }
}
