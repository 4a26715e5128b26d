/**
 * RedisLimit (rate-limit/redis-window.ts) against rate-limiter-flexible's RateLimiterRedis (and
 * BurstyRateLimiter) on a real redis-server: the same sequence of requests to each, on keys of
 * their own under one prefix, gets the same answers and leaves the same values and expiries in
 * Redis; and the two counting one key in turn (replicas of two versions during an upgrade) count
 * one budget. Also: a Redis that lost its script cache, and a connection that is not ready.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { BurstyRateLimiter, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LimitResult } from '../../src/dataplane/filters/rate-limit/memory-window.ts';
import { type Answer, RedisLimit } from '../../src/dataplane/filters/rate-limit/redis-window.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';

let redis: TestRedis;
let client: Redis;
let seq = 0;

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url, { keyPrefix: 'pg:', enableOfflineQueue: false, lazyConnect: true });
  await client.connect();
});
afterAll(async () => {
  client?.disconnect();
  await redis?.close();
});

interface Limit {
  points: number;
  durationS: number;
  blockDurationS?: number;
  burst?: { points: number; durationS: number };
}

interface Consumer {
  consume(key: string, cost: number): Promise<Answer>;
}

function ours(prefix: string, l: Limit): Consumer {
  const limit = new RedisLimit({
    client,
    prefix,
    points: l.points,
    durationS: l.durationS,
    blockDurationS: l.blockDurationS ?? 0,
    burst: l.burst,
  });
  return {
    consume: (key, cost) =>
      new Promise((resolve) => limit.consume(key, cost, { answer: (_i, a) => resolve(a) }, 0)),
  };
}

/** rate-limiter-flexible as counters.ts used it, its answer in RedisLimit's shape. */
function flexible(prefix: string, l: Limit): Consumer {
  const make = (points: number, duration: number, blockDuration: number, keyPrefix: string) =>
    new RateLimiterRedis({
      storeClient: client,
      useRedisPackage: false,
      rejectIfRedisNotReady: true,
      points,
      duration,
      blockDuration,
      keyPrefix,
    });
  const main = make(l.points, l.durationS, l.blockDurationS ?? 0, prefix);
  const limiter =
    l.burst === undefined
      ? main
      : new BurstyRateLimiter(main, make(l.burst.points, l.burst.durationS, 0, `${prefix}:burst`));
  const shape = (res: RateLimiterRes, over: boolean): LimitResult => ({
    res: { remainingPoints: res.remainingPoints, msBeforeNext: res.msBeforeNext },
    over,
  });
  return {
    consume: (key, cost) =>
      limiter.consume(key, cost).then(
        (res) => shape(res, false),
        (err: unknown) => (err instanceof RateLimiterRes ? shape(err, true) : { failed: err }),
      ),
  };
}

/** Milliseconds two answers or expiries may differ by: the two calls are a few ms apart. */
const SLACK_MS = 50;

/** What Redis holds for a key: its value and its expiry (ms; negative: none, or no key). */
async function stored(key: string): Promise<{ value: string | null; pttl: number }> {
  const [value, pttl] = await Promise.all([client.get(key), client.pttl(key)]);
  return { value, pttl };
}

function expectSameStored(a: { value: string | null; pttl: number }, b: typeof a): void {
  expect(a.value).toBe(b.value);
  if (a.pttl < 0 || b.pttl < 0) expect(a.pttl).toBe(b.pttl);
  else expect(Math.abs(a.pttl - b.pttl)).toBeLessThanOrEqual(SLACK_MS);
}

/** The same answer: over and remaining exactly, the time to the next window within SLACK_MS. */
function expectSameAnswer(a: Answer, b: Answer): void {
  if ('failed' in a || 'failed' in b) {
    expect(String('failed' in a ? a.failed : 'ok')).toBe(String('failed' in b ? b.failed : 'ok'));
    return;
  }
  expect([a.over, a.res.remainingPoints]).toEqual([b.over, b.res.remainingPoints]);
  expect(Math.abs(a.res.msBeforeNext - b.res.msBeforeNext)).toBeLessThanOrEqual(SLACK_MS);
}

/**
 * Send `steps` (cost per request; a number ≤ 0 waits that many ms instead) to both, each on a key
 * of its own under one prefix, and compare every answer and the keys' values and expiries.
 */
async function sameAsFlexible(l: Limit, steps: readonly number[]): Promise<Answer[]> {
  const prefix = `rl:t${++seq}:${l.durationS}s`;
  const a = flexible(prefix, l);
  const b = ours(prefix, l);
  const answers: Answer[] = [];
  for (const step of steps) {
    if (step <= 0) {
      await sleep(-step);
      continue;
    }
    const [x, y] = await Promise.all([a.consume('flexible', step), b.consume('ours', step)]);
    expectSameAnswer(y, x);
    for (const suffix of ['', ':burst'])
      expectSameStored(await stored(`${prefix}${suffix}:ours`), await stored(`${prefix}${suffix}:flexible`));
    answers.push(y);
  }
  return answers;
}

const over = (answers: readonly Answer[]) => answers.map((a) => ('over' in a ? a.over : 'failed'));

describe('RedisLimit against RateLimiterRedis on a real Redis', () => {
  it("counts with rate-limiter-flexible's own script: the one Redis has cached afterwards", async () => {
    const lua = incrTtlLua();
    await client.script('FLUSH');
    const c = ours(`rl:t${++seq}:10s`, { points: 5, durationS: 10 });
    expect(over([await c.consume('k', 1)])).toEqual([false]);
    expect(await client.script('EXISTS', sha(lua))).toEqual([1]);
  });

  it('a plain limit: the same answers, values and expiries, at every cost, across a window end', async () => {
    const answers = await sameAsFlexible({ points: 4, durationS: 1 }, [1, 2, 1, 1, 3, -1100, 1, 3, 1]);
    expect(over(answers)).toEqual([false, false, false, true, true, false, false, true]);
  });

  it('a block: the request that first goes over starts it, as long as blockDuration', async () => {
    const answers = await sameAsFlexible(
      { points: 2, durationS: 1, blockDurationS: 3 },
      [1, 1, 1, 1, -1100, 1],
    );
    expect(over(answers)).toEqual([false, false, true, true, true]);
    const blocked = answers[2] as LimitResult;
    expect(blocked.res.msBeforeNext).toBe(3000);
  });

  it('a burst: asked once the limit is spent, answering with the earlier of the two window ends', async () => {
    const answers = await sameAsFlexible(
      { points: 2, durationS: 1, burst: { points: 2, durationS: 3 } },
      [1, 1, 1, 1, 1, -1100, 1, 1, 1],
    );
    expect(over(answers)).toEqual([false, false, false, false, true, false, false, true]);
  });

  it('counts one budget with RateLimiterRedis when the two take turns on one key', async () => {
    const l = { points: 5, durationS: 10 };
    const prefix = `rl:t${++seq}:10s`;
    const both = [flexible(prefix, l), ours(prefix, l)];
    const answers: Answer[] = [];
    for (let i = 0; i < 8; i++) answers.push(await both[i % 2]!.consume('shared', 1));
    expect(over(answers)).toEqual([false, false, false, false, false, true, true, true]);
    expect(answers.slice(0, 5).map((a) => (a as LimitResult).res.remainingPoints)).toEqual([4, 3, 2, 1, 0]);
    expect(await client.get(`${prefix}:shared`)).toBe('8');
  });

  it('sends the script itself to a Redis that lost its script cache', async () => {
    const c = ours(`rl:t${++seq}:10s`, { points: 5, durationS: 10 });
    expect(over([await c.consume('k', 1)])).toEqual([false]);
    await client.script('FLUSH');
    expect(await client.script('EXISTS', sha(incrTtlLua()))).toEqual([0]);
    const a = await c.consume('k', 1);
    expect(a).toMatchObject({ over: false, res: { remainingPoints: 3 } });
  });

  it('fails at once while the connection is not ready, without sending anything', async () => {
    const down = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false });
    const limit = new RedisLimit({
      client: down,
      prefix: 'rl:down:1s',
      points: 1,
      durationS: 1,
      blockDurationS: 0,
      burst: undefined,
    });
    let got: Answer | undefined;
    limit.consume('k', 1, { answer: (_i, a) => (got = a) }, 0);
    // Synchronously: no round trip, no deadline to wait for.
    expect(got).toBeDefined();
    expect(String((got as { failed: unknown }).failed)).toMatch(/not ready/);
    down.disconnect();
  });
});

function incrTtlLua(): string {
  return (
    new RateLimiterRedis({ storeClient: client, points: 1, duration: 1 }) as unknown as {
      _incrTtlLuaScript: string;
    }
  )._incrTtlLuaScript;
}

function sha(text: string): string {
  return createHash('sha1').update(text).digest('hex');
}
