/**
 * The memory counters answer synchronously, count as rate-limiter-flexible's memory limiter does
 * (compared request for request on a fake clock, burst and block included), drop expired keys
 * with one timer per limiter that close() stops, and hold at most `maxKeys` keys: a new key at the
 * cap takes the place of the key whose window began first (compared request for request with a
 * model that keeps its keys in a list).
 */
import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryCounters } from '../../../../src/dataplane/filters/rate-limit/counters.ts';
import {
  BurstLimit,
  type KeyBound,
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

/** A bound no test here reaches, unless it says so. */
function bound(maxKeys = 1_000_000): KeyBound & { evicted: { value: number } } {
  return { maxKeys, evicted: { value: 0 } };
}

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
      const main = new MemoryWindow(c.points, c.duration, c.block, bound());
      const ours =
        c.burst === undefined
          ? new SingleLimit(main)
          : new BurstLimit(main, new MemoryWindow(c.burst.points, c.burst.duration, 0, bound()));
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
  it('answers at once, every limit in order', () => {
    const cfg = RateLimitSchema.parse({
      limits: [
        { points: 1, duration: '1s' },
        { points: 5, duration: '1m' },
      ],
    });
    const c = new MemoryCounters(cfg.limits, bound());
    const first = c.count('k', 1);
    expect(first).not.toBeInstanceOf(Promise);
    expect(first.results.map((r) => [r!.over, r!.res.remainingPoints])).toEqual([
      [false, 0],
      [false, 4],
    ]);
    expect(c.count('k', 1).results.map((r) => r!.over)).toEqual([true, false]);
    c.close();
  });
});

describe('expiry', () => {
  it('drops expired keys with one timer, which close() stops', () => {
    const w = new MemoryWindow(10, 1, 0, bound());
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

describe('a cap on keys', () => {
  it('never holds more than maxKeys, however many distinct keys come, and counts what it dropped', () => {
    const evicting = bound(1_000);
    const w = new MemoryWindow(10, 60, 0, evicting);
    let most = 0;
    // A client with an IPv6 /64 (or a header it writes) can send each request from a new key.
    for (let i = 0; i < 20_000; i++) {
      const { consumed } = w.count(`2001:db8::${i.toString(16)}`, 1);
      expect(consumed).toBe(1);
      most = Math.max(most, w.size);
    }
    expect(most).toBe(1_000);
    expect(w.size).toBe(1_000);
    expect(evicting.evicted.value).toBe(19_000);
    w.close();
  });

  it('drops the key whose window began first; the keys it holds count on exactly', () => {
    const b = bound(3);
    const w = new MemoryWindow(5, 10, 0, b);
    w.count('a', 2);
    vi.advanceTimersByTime(1_000);
    w.count('b', 1);
    vi.advanceTimersByTime(1_000);
    w.count('c', 3);
    vi.advanceTimersByTime(1_000);
    // At t = 3 s the cap is reached: `a` (window opened at 0) makes room for `d`.
    expect(w.count('d', 1)).toEqual({ consumed: 1, ms: 10_000 });
    expect([w.size, b.evicted.value]).toEqual([3, 1]);
    expect(w.count('b', 1)).toEqual({ consumed: 2, ms: 8_000 });
    expect(w.count('c', 1)).toEqual({ consumed: 4, ms: 9_000 });
    // `a` lost its count: it comes back as a new key, with a new window, and `b` goes.
    expect(w.count('a', 1)).toEqual({ consumed: 1, ms: 10_000 });
    expect(b.evicted.value).toBe(2);
    expect(w.count('c', 1)).toEqual({ consumed: 5, ms: 9_000 });
    expect(w.count('b', 1)).toEqual({ consumed: 1, ms: 10_000 });
    w.close();
  });

  it('orders keys by when their window began: a renewed window is the youngest', () => {
    const b = bound(2);
    // A block of 5 s (never reached): expiry sweeps every 5 s, so steady's window renews below.
    const w = new MemoryWindow(5, 1, 5, b);
    w.count('steady', 1);
    vi.advanceTimersByTime(500);
    w.count('other', 1);
    vi.advanceTimersByTime(700);
    // t = 1.2 s: steady's window ended and a new one begins; other's (0.5-1.5 s) is now the oldest.
    expect(w.count('steady', 1)).toEqual({ consumed: 1, ms: 1_000 });
    vi.advanceTimersByTime(100);
    w.count('new', 1);
    expect(b.evicted.value).toBe(1);
    expect(w.count('steady', 1)).toEqual({ consumed: 2, ms: 900 });
    expect(w.count('other', 1)).toEqual({ consumed: 1, ms: 1_000 });
    w.close();
  });

  it('makes room with a key whose window has ended without counting an eviction', () => {
    const b = bound(2);
    // A block of 5 s: expiry sweeps every 5 s, so an ended window waits for it.
    const w = new MemoryWindow(5, 1, 5, b);
    vi.advanceTimersByTime(100);
    w.count('early', 1);
    vi.advanceTimersByTime(100);
    w.count('later', 1);
    // t = 1.15 s: early's window ended at 1.1 s, the sweep comes at 5.1 s.
    vi.advanceTimersByTime(950);
    w.count('new', 1);
    expect(w.size).toBe(2);
    expect(b.evicted.value).toBe(0);
    expect(w.count('later', 1)).toEqual({ consumed: 2, ms: 50 });
    w.close();
  });

  it('moves a key that starts a block to the young end', () => {
    const b = bound(2);
    const w = new MemoryWindow(1, 1, 60, b);
    w.count('abuser', 1);
    vi.advanceTimersByTime(100);
    w.count('other', 1);
    vi.advanceTimersByTime(100);
    // Over the limit at t = 0.2 s: blocked for 60 s, and now the youngest.
    expect(w.count('abuser', 1)).toEqual({ consumed: 2, ms: 60_000 });
    vi.advanceTimersByTime(100);
    w.count('new', 1);
    expect(b.evicted.value).toBe(1);
    expect(w.count('abuser', 1)).toEqual({ consumed: 3, ms: 59_900 });
    expect(w.count('other', 1)).toEqual({ consumed: 1, ms: 1_000 });
    w.close();
  });

  it('answers as a model that keeps its keys in a list, request for request, and never holds more than the cap', () => {
    // The model: entries in the order their window (or block) began; a new key at the cap removes
    // the first; expiry drops ended keys on the sweep's schedule (every max(1 s, window, block)).
    const points = 4;
    const durationMs = 2_000;
    const blockMs = 3_000;
    const cap = 50;
    const sweepEvery = Math.max(1_000, durationMs, blockMs);
    type ModelEntry = { key: string; consumed: number; endsAt: number };
    let model: ModelEntry[] = [];
    let modelEvicted = 0;
    let nextSweep: number | undefined;
    const modelCount = (key: string, cost: number, now: number): { consumed: number; ms: number } => {
      while (nextSweep !== undefined && nextSweep <= now) {
        const at = nextSweep;
        model = model.filter((e) => e.endsAt > at);
        nextSweep += sweepEvery;
      }
      let i = model.findIndex((e) => e.key === key);
      if (i === -1) {
        if (model.length >= cap) {
          if (model[0]!.endsAt > now) modelEvicted++;
          model.shift();
        }
        model.push({ key, consumed: 0, endsAt: now + durationMs });
        i = model.length - 1;
        nextSweep ??= now + sweepEvery;
      } else if (model[i]!.endsAt <= now) {
        model.splice(i, 1);
        model.push({ key, consumed: 0, endsAt: now + durationMs });
        i = model.length - 1;
      }
      const e = model[i]!;
      e.consumed += cost;
      if (e.consumed > points && e.consumed <= points + cost) {
        e.endsAt = now + blockMs;
        model.splice(i, 1);
        model.push(e);
      }
      return { consumed: e.consumed, ms: e.endsAt - now };
    };

    const b = bound(cap);
    const w = new MemoryWindow(points, durationMs / 1000, blockMs / 1000, b);
    const random = lcg(11);
    for (let i = 0; i < 20_000; i++) {
      // A few steady clients among many passing ones: the cap is reached and left again.
      const key = random() < 0.5 ? `steady-${Math.floor(random() * 10)}` : `k-${Math.floor(random() * 400)}`;
      const cost = random() < 0.9 ? 1 : 2;
      expect(w.count(key, cost), `request ${i}`).toEqual(modelCount(key, cost, Date.now()));
      expect(w.size).toBeLessThanOrEqual(cap);
      vi.advanceTimersByTime(Math.floor(random() * (i % 5_000 < 2_500 ? 10 : 200)));
    }
    expect(b.evicted.value).toBe(modelEvicted);
    expect(modelEvicted).toBeGreaterThan(100);
    w.close();
  });
});
