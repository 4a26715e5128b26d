/**
 * The memory counters answer synchronously, count as rate-limiter-flexible's memory limiter does
 * (compared request for request on a fake clock, burst and block included), and drop expired keys
 * with one timer per limiter that close() stops.
 */
import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryCounters } from '../../../../src/dataplane/filters/rate-limit/counters.ts';
import {
  BurstLimit,
  type LimitResult,
  MemoryWindow,
  SingleLimit,
} from '../../../../src/dataplane/filters/rate-limit/memory-window.ts';
import { RateLimitSchema } from '../../../../src/dataplane/filters/rate-limit/schema.ts';

beforeEach(() => {
  vi.useFakeTimers({ now: 1_750_000_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

/** rate-limiter-flexible's answer in the same shape. */
async function flexible(
  l: { consume(k: string, p: number): Promise<RateLimiterRes> },
  key: string,
  cost: number,
): Promise<LimitResult> {
  try {
    const res = await l.consume(key, cost);
    return { res: { remainingPoints: res.remainingPoints, msBeforeNext: res.msBeforeNext }, over: false };
  } catch (err) {
    if (!(err instanceof RateLimiterRes)) throw err;
    return { res: { remainingPoints: err.remainingPoints, msBeforeNext: err.msBeforeNext }, over: true };
  }
}

/** A deterministic pseudo-random sequence (no flaky seeds). */
function lcg(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1_103_515_245 + 12_345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

describe('MemoryWindow against rate-limiter-flexible', () => {
  const cases = [
    { name: 'one limit', points: 5, duration: 2, block: 0, burst: undefined },
    { name: 'with a block', points: 3, duration: 1, block: 3, burst: undefined },
    { name: 'with a burst', points: 2, duration: 1, block: 0, burst: { points: 3, duration: 5 } },
  ] as const;
  for (const c of cases) {
    it(`answers as RateLimiterMemory does, request for request: ${c.name}`, async () => {
      const theirs =
        c.burst === undefined
          ? new RateLimiterMemory({
              points: c.points,
              duration: c.duration,
              blockDuration: c.block,
              keyPrefix: '',
            })
          : new BurstyRateLimiter(
              new RateLimiterMemory({ points: c.points, duration: c.duration, keyPrefix: '' }),
              new RateLimiterMemory({ points: c.burst.points, duration: c.burst.duration, keyPrefix: 'b' }),
            );
      const main = new MemoryWindow(c.points, c.duration, c.block);
      const ours =
        c.burst === undefined
          ? new SingleLimit(main)
          : new BurstLimit(main, new MemoryWindow(c.burst.points, c.burst.duration));
      const random = lcg(7);
      const seen = { over: 0, under: 0 };
      for (let i = 0; i < 2_000; i++) {
        const key = random() < 0.7 ? 'a' : 'b';
        const cost = random() < 0.9 ? 1 : 2;
        const mine = ours.consume(key, cost);
        expect(mine, `request ${i}`).toEqual(await flexible(theirs, key, cost));
        seen[mine.over ? 'over' : 'under']++;
        vi.advanceTimersByTime(Math.floor(random() * 250));
      }
      // Both answers occurred: the comparison covered refusals and admissions.
      expect(seen.over).toBeGreaterThan(100);
      expect(seen.under).toBeGreaterThan(100);
      ours.close();
    });
  }
});

describe('MemoryCounters', () => {
  it('answers at once: what `then` returns, and what it throws is thrown', () => {
    const c = new MemoryCounters(RateLimitSchema.parse({ limits: [{ points: 1, duration: '1s' }] }).limits);
    const first = c.consume('k', 1, (x) => x);
    expect(first).not.toBeInstanceOf(Promise);
    expect(first.results[0]!.over).toBe(false);
    expect(() =>
      c.consume('k', 1, (x) => {
        if (x.results[0]!.over) throw new Error('refused');
        return x;
      }),
    ).toThrow('refused');
    c.close();
  });
});

describe('expiry', () => {
  it('drops expired keys with one timer, which close() stops', () => {
    const w = new MemoryWindow(10, 1);
    expect(vi.getTimerCount()).toBe(0);
    for (let i = 0; i < 100; i++) w.count(`key-${i}`, 1);
    expect(w.size).toBe(100);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(500);
    w.count('late', 1);
    vi.advanceTimersByTime(500);
    // At 1 s the first hundred have expired; `late` has 500 ms left.
    expect(w.size).toBe(1);
    w.close();
    expect(vi.getTimerCount()).toBe(0);
    expect(w.size).toBe(0);
  });
});
